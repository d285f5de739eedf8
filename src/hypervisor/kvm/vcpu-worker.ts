// The vCPU thread: one worker_threads Worker per vCPU, looping on KVM_RUN. Exits that need a
// device are dispatched here to thread-local devices (debug-exit, sinks) or forwarded to the main
// thread through the control block; commands (pause/resume/stop) arrive the same way, each after
// a kick. Spec: Documentation/virt/kvm/api.rst (KVM_RUN, kvm_run, KVM_SET_SIGNAL_MASK, immediate_exit).
import { parentPort, workerData } from 'node:worker_threads';
import * as abi from '../../kvm/abi.js';
import * as io from '../../kvm/ioctls.js';
import { KvmVcpu } from '../../kvm/kvm.js';
import * as libc from '../../kvm/libc.js';
import { hostView } from '../../kvm/memory.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import {
  AccessKind, CTRL, Mbox, MBOX_DATA_BYTE_OFFSET, SIG_KICK, STAT_REASONS, VcpuCommand, VcpuState,
  type LocalDeviceSpec, type VcpuWorkerData, type VcpuWorkerMessage,
} from './vcpu-protocol.js';
import { formatBytes, hex, identifyInstruction } from './diagnose.js';
import { readRamTable, SharedRamTable } from './ram-table.js';
import { fieldId, VcpuStateCache } from './state-cache.js';

const EINTR = 4;
const KVM_RUN_NR = io.KVM_RUN.number;
const ioctlValue = libc.ioctlValue;
const EAGAIN = 11;
const IMMEDIATE_EXIT = abi.kvm_run.at.immediate_exit;

const data = workerData as VcpuWorkerData;
const post = (m: VcpuWorkerMessage) => parentPort!.postMessage(m);

const ctrl = new Int32Array(data.control);
const ctrlBytes = new Uint8Array(data.control);
const ctrlBig = new BigInt64Array(data.control);
const vcpu = new KvmVcpu(data.index, data.fd, data.runHva, data.runSizeBytes);
const vcpuFd = data.fd;
const runBuf = vcpu.runView();
const run8 = new Uint8Array(runBuf);
const run = new DataView(runBuf);
const mapSeq = new Int32Array(data.mapSeq);
// Guest RAM as this thread reads it (the bytes at RIP, a MONITORed line): the VM's current map,
// taken again from the shared RAM table whenever the map sequence has moved.
const ramTable = new SharedRamTable(data.ramTable);
const memory = new GuestMemory([], hostView);
let memorySeq = -1;

/** Guest RAM through the current map; null while the map is changing (or changed during the read). */
function currentMemory(): GuestMemory | null {
  if (Atomics.load(mapSeq, 0) === memorySeq) return memory;
  const t = readRamTable(ramTable, mapSeq);
  if (t === null) return null;
  memory.remap(t.slots);
  memorySeq = t.seq;
  return memory;
}
/** the memory-map sequence when this vCPU last entered KVM_RUN */
let mapSeqAtEntry = 0;

// Syscall accounting by exit reason: every state ioctl is charged to the exit being handled.
let currentReason = 0;
const syscalls = { count(n = 1) { ctrl[CTRL.STAT_SYSCALL_BASE + currentReason]! += n; } };
const cache = new VcpuStateCache(data.fd, vcpu.target, runBuf, run, syscalls);
const RAX = fieldId('rax');
const RIP = fieldId('rip');
const XSAVE_FCW = fieldId('xsave.fcw');
const FPU_FCW = fieldId('fcw');
const FCW_ROUNDING_CONTROL = 0xc00n; // x87 FCW bits 11:10 (SDM vol. 1 8.1.5)
let fpuProbes = 0;

// Local devices: a short list scanned linearly (there are two of them).
const localPorts: Array<{ base: number; end: number; kind: LocalDeviceSpec['kind'] }> =
  data.localDevices.map((d) => ({ base: d.port, end: d.port + d.sizeBytes, kind: d.kind }));

// Preallocated windows over the PIO data area and the MMIO data bytes: no allocation per exit.
// KVM puts PIO data at one fixed offset (the page after kvm_run), so one view per size serves
// every single (non-string) access; other offsets go through a small map.
let ioDataOffset = -1;
const ioDataBySize: Uint8Array[] = [];
const ioDataCache = new Map<number, Uint8Array>();
function ioData(offset: number, size: number): Uint8Array {
  if (offset === ioDataOffset) return ioDataBySize[size]!;
  if (ioDataOffset === -1) {
    ioDataOffset = offset;
    for (const n of [1, 2, 4]) ioDataBySize[n] = new Uint8Array(runBuf, offset, n);
    return ioDataBySize[size]!;
  }
  const key = offset * 16 + size;
  let v = ioDataCache.get(key);
  if (v === undefined) {
    v = new Uint8Array(runBuf, offset, size);
    if (ioDataCache.size < 64) ioDataCache.set(key, v);
  }
  return v;
}
const msrData = new Uint8Array(runBuf, abi.RUN.msr + abi.kvm_run_msr.at.data, 8);
const mmioData = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => new Uint8Array(runBuf, abi.RUN.mmio + abi.kvm_run_mmio.at.data, n));

// ---- kicking any vCPU of the VM from this thread --------------------------------------------
// The same three steps as the main thread's kick (backend.ts KvmVcpuHandle.kick): count it, set
// immediate_exit, signal the thread. Kicking itself works the same way: the signal stays pending
// (blocked here) and immediate_exit makes the next KVM_RUN return at once, so it is not lost.
const peerKicks = data.peers.map((p) => ({
  ctrl: new Int32Array(p.control), ctrlBig: new BigInt64Array(p.control), run8: new Uint8Array(hostView(p.runHva, p.runSizeBytes)),
}));

function kickPeer(index: number): void {
  const p = peerKicks[index];
  if (p === undefined) return; // a guest naming a vCPU that does not exist: nothing to kick
  Atomics.add(p.ctrl, CTRL.KICK_SEQ, 1);
  Atomics.store(p.run8, IMMEDIATE_EXIT, 1);
  const tid = Atomics.load(p.ctrlBig, CTRL.TID_BIGINT_SLOT);
  if (tid !== 0n) libc.pthreadKill(tid, SIG_KICK);
  Atomics.add(p.ctrl, CTRL.HALT_WAKE, 1); // a vCPU halted in the VMM (userspace irqchip) wakes too
  Atomics.notify(p.ctrl, CTRL.HALT_WAKE);
}

// ---- kick signal set-up -------------------------------------------------------------------
const kickSet = Buffer.alloc(libc.GLIBC_SIGSET_BYTES);
kickSet[(SIG_KICK - 1) >> 3]! |= 1 << ((SIG_KICK - 1) & 7);
const zeroTimeout = Buffer.alloc(16);
const siginfo = Buffer.alloc(128);

function setUpKickSignal(): void {
  // Blocked in this thread at all times, so a kick arriving between runs stays pending...
  if (libc.pthreadSigmask(libc.SIG_BLOCK, kickSet, null) !== 0) throw new Error('pthread_sigmask(SIG_BLOCK) failed');
  // ...and unblocked only while KVM_RUN runs the guest, where it makes KVM_RUN return EINTR.
  const current = Buffer.alloc(libc.GLIBC_SIGSET_BYTES);
  libc.pthreadSigmask(libc.SIG_BLOCK, null, current);
  current[(SIG_KICK - 1) >> 3]! &= ~(1 << ((SIG_KICK - 1) & 7));
  vcpu.setSignalMask(current);
  Atomics.store(ctrlBig, CTRL.TID_BIGINT_SLOT, BigInt(libc.pthreadSelf()));
}

// ---- deadline timer -----------------------------------------------------------------------
// KVM_RUN takes no timeout, so a per-thread POSIX timer sends this thread the kick signal at the
// deadline: the vCPU leaves KVM_RUN exactly then, even if the guest never exits on its own.
function setUpDeadlineTimer(): void {
  const sev = Buffer.alloc(libc.SIGEVENT_BYTES);
  sev.writeInt32LE(SIG_KICK, libc.SIGEVENT_SIGNO);
  sev.writeInt32LE(libc.SIGEV_THREAD_ID, libc.SIGEVENT_NOTIFY);
  sev.writeInt32LE(libc.gettid(), libc.SIGEVENT_TID);
  const id = Buffer.alloc(8);
  if (libc.timerCreate(libc.CLOCK_MONOTONIC, sev, id) !== 0) throw new Error(`timer_create failed: errno ${libc.errno()}`);
  // Stored + 1: timer id 0 is valid, and 0 in the slot means "no timer".
  Atomics.store(ctrlBig, CTRL.TIMER_BIGINT_SLOT, id.readBigInt64LE(0) + 1n);
}

/** At the command point: a deadline that has passed is reported and disarmed. */
function checkDeadline(): void {
  if (Atomics.load(ctrl, CTRL.DEADLINE_ARMED) === 0) return; // a plain Int32 load: no BigInt per exit
  const deadline = Atomics.load(ctrlBig, CTRL.DEADLINE_BIGINT_SLOT);
  if (deadline === 0n) return;
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, the timer's clock
  if (now < deadline) return;
  // Disarm before taking the deadline: a new deadline stored meanwhile fails the exchange and re-arms.
  Atomics.store(ctrl, CTRL.DEADLINE_ARMED, 0);
  if (Atomics.compareExchange(ctrlBig, CTRL.DEADLINE_BIGINT_SLOT, deadline, 0n) !== deadline) {
    Atomics.store(ctrl, CTRL.DEADLINE_ARMED, 1);
    return;
  }
  Atomics.store(ctrlBig, CTRL.DEADLINE_LATE_BIGINT_SLOT, now - deadline);
  Atomics.add(ctrl, CTRL.DEADLINES_REACHED, 1);
  Atomics.notify(ctrl, CTRL.DEADLINES_REACHED);
}

function drainKicks(): void {
  // Each call consumes one queued kick; the last one finds none (EAGAIN).
  do syscalls.count(); while (libc.sigtimedwait(kickSet, siginfo, zeroTimeout) > 0);
}

// ---- forwarding to the main thread -------------------------------------------------------
function forward(kind: AccessKind, addr: number, isWrite: boolean, bytes: Uint8Array): void {
  ctrl[CTRL.MBOX_KIND] = kind;
  ctrl[CTRL.MBOX_IS_WRITE] = isWrite ? 1 : 0;
  ctrl[CTRL.MBOX_SIZE] = bytes.length;
  ctrl[CTRL.MBOX_ADDR_LO] = addr >>> 0;
  ctrl[CTRL.MBOX_ADDR_HI] = Math.floor(addr / 0x1_0000_0000);
  if (isWrite) ctrlBytes.set(bytes, MBOX_DATA_BYTE_OFFSET);
  Atomics.store(ctrl, CTRL.MBOX, Mbox.Request);
  Atomics.notify(ctrl, CTRL.MBOX);
  while (Atomics.load(ctrl, CTRL.MBOX) === Mbox.Request) Atomics.wait(ctrl, CTRL.MBOX, Mbox.Request);
  if (!isWrite) bytes.set(ctrlBytes.subarray(MBOX_DATA_BYTE_OFFSET, MBOX_DATA_BYTE_OFFSET + bytes.length));
  Atomics.store(ctrl, CTRL.MBOX, Mbox.Idle);
}

// ---- userspace interrupt controllers --------------------------------------------------------
// With irqchip 'userspace' KVM has no PIC, IOAPIC or LAPIC: HLT exits here, interrupts are
// injected with KVM_INTERRUPT when kvm_run says the guest can take one (asking for an interrupt
// window otherwise), and the controllers themselves live on the main thread. This thread asks
// them through the mailbox (AccessKind.Inta, TimerDue, Idle) and is told through the control
// block (IRQ_PENDING, INIT_PENDING, SIPI_VECTOR, NMI_PENDING, IRQ_DEADLINE), with HALT_WAKE to
// wake it while it sleeps in a halt. Spec: api.rst (KVM_INTERRUPT, request_interrupt_window,
// ready_for_interrupt_injection, KVM_EXIT_HLT, KVM_EXIT_IRQ_WINDOW_OPEN); SDM vol. 3A 9.4 (INIT, SIPI).
const USERSPACE_IRQCHIP = data.irqchip === 'userspace';
const REQUEST_INTERRUPT_WINDOW = abi.kvm_run.at.request_interrupt_window;
const READY_FOR_INJECTION = abi.kvm_run.at.ready_for_interrupt_injection;
const IF_FLAG = abi.kvm_run.at.if_flag;
const RFLAGS = fieldId('rflags');
const RFLAGS_IF = 1n << 9n;
const CS_SELECTOR = fieldId('cs.selector');
const CS_BASE = fieldId('cs.base');
const EXCEPTION_INJECTED = fieldId('exception_injected');
const EXCEPTION_NR = fieldId('exception_nr');
const EXCEPTION_HAS_ERROR_CODE = fieldId('exception_has_error_code');
const EXCEPTION_ERROR_CODE = fieldId('exception_error_code');
const UD_VECTOR = 6;
/** The guest executed HLT and nothing has woken it yet (it does not enter KVM_RUN meanwhile). */
let halted = false;
/** An AP between INIT (or creation) and its STARTUP IPI. */
let waitingForSipi = data.waitForSipi;
/** The register state an INIT returns to: the vCPU's state at creation (APs are created in reset state). */
let resetRegs: Uint8Array | null = null;
let resetSregs: Uint8Array | null = null;
/** The irq deadline this thread's irq timer is armed for (0: disarmed). */
let irqTimerArmedNs = 0n;
let irqTimerId = 0n;
const irqTimerSpec = Buffer.alloc(libc.ITIMERSPEC_BYTES);
const mboxVector = new Int32Array(data.control, MBOX_DATA_BYTE_OFFSET, 1);

/** Asks the main thread something that is not a device access; returns the int32 answer. */
function ask(kind: AccessKind): number {
  forward(kind, 0, false, ioNone);
  return mboxVector[0]!;
}
const ioNone = new Uint8Array(4);

function setUpIrqTimer(): void {
  const sev = Buffer.alloc(libc.SIGEVENT_BYTES);
  sev.writeInt32LE(SIG_KICK, libc.SIGEVENT_SIGNO);
  sev.writeInt32LE(libc.SIGEV_THREAD_ID, libc.SIGEVENT_NOTIFY);
  sev.writeInt32LE(libc.gettid(), libc.SIGEVENT_TID);
  const id = Buffer.alloc(8);
  if (libc.timerCreate(libc.CLOCK_MONOTONIC, sev, id) !== 0) throw new Error(`timer_create (interrupt controller timer) failed: errno ${libc.errno()}`);
  irqTimerId = id.readBigInt64LE(0) + 1n;
}

/** Arms this thread's irq timer for IRQ_DEADLINE when that moved, so KVM_RUN leaves on time. */
function armIrqTimer(deadlineNs: bigint): void {
  if (deadlineNs === irqTimerArmedNs) return;
  irqTimerArmedNs = deadlineNs;
  irqTimerSpec.fill(0);
  irqTimerSpec.writeBigInt64LE(deadlineNs / 1_000_000_000n, 16);
  irqTimerSpec.writeBigInt64LE(deadlineNs % 1_000_000_000n, 24);
  syscalls.count();
  if (libc.timerSettime(irqTimerId - 1n, libc.TIMER_ABSTIME, irqTimerSpec, null) !== 0) {
    throw new Error(`timer_settime (interrupt controller deadline ${deadlineNs} ns) failed: errno ${libc.errno()}`);
  }
}

/** The main thread's timers for this vCPU are due: let it run them (it may raise interrupts). */
function runDueTimers(): void {
  const deadline = Atomics.load(ctrlBig, CTRL.IRQ_DEADLINE_BIGINT_SLOT);
  if (deadline !== 0n && process.hrtime.bigint() >= deadline) ask(AccessKind.TimerDue);
}

/** An NMI, INIT or SIPI is pending: each ends a HLT or an MWAIT. */
function nmiInitOrSipiPending(): boolean {
  return Atomics.load(ctrl, CTRL.NMI_PENDING) !== 0 || sipiOrInitPending();
}

/** Whether something would end a HLT: an interrupt the guest accepts (IF set), an NMI, INIT, SIPI. */
function wakesFromHalt(): boolean {
  if (nmiInitOrSipiPending()) return true;
  return Atomics.load(ctrl, CTRL.IRQ_PENDING) === 1 && (cache.getById(RFLAGS) & RFLAGS_IF) !== 0n;
}

function sipiOrInitPending(): boolean {
  return Atomics.load(ctrl, CTRL.SIPI_VECTOR) >= 0 || Atomics.load(ctrl, CTRL.INIT_PENDING) === 1;
}

/** The longest a sleeping vCPU waits before it looks again, in case a notify was lost. */
const HALT_SLICE_MS = 50;

/**
 * Sleeps until HALT_WAKE moves (a kick, a command, an interrupt, INIT/SIPI) or, when `timed`,
 * the irq deadline passes, whichever is first; at most `sliceMs` at a time (50 ms: so nothing
 * waits on a lost notify; less where `wakes()` must be polled). Returns at once when `wakes()`
 * already holds.
 */
function sleepUntilWoken(wakes: () => boolean, timed: boolean, sliceMs = HALT_SLICE_MS): void {
  const wake = Atomics.load(ctrl, CTRL.HALT_WAKE);
  if (wakes() || Atomics.load(ctrl, CTRL.CMD) !== VcpuCommand.None) return;
  const deadline = timed ? Atomics.load(ctrlBig, CTRL.IRQ_DEADLINE_BIGINT_SLOT) : 0n;
  let timeoutMs = sliceMs;
  if (deadline !== 0n) {
    const leftNs = deadline - process.hrtime.bigint();
    if (leftNs <= 0n) return;
    timeoutMs = Math.min(timeoutMs, Number(leftNs) / 1e6);
  }
  Atomics.wait(ctrl, CTRL.HALT_WAKE, wake, timeoutMs);
}

/**
 * Before each entry: INIT and SIPI, a halt that nothing has ended yet, due timers, NMIs and
 * interrupt injection. Returns false when the vCPU must not enter yet (the caller goes back to
 * its command point, which also handles stop and pause).
 */
function prepareEntry(): boolean {
  if (Atomics.exchange(ctrl, CTRL.INIT_PENDING, 0) === 1) {
    if (data.index === 0 || resetRegs === null || resetSregs === null) {
      fatal('INIT IPI to the bootstrap processor: tsvmm does not reset the BSP; the VM is stopped');
      throw new VcpuStop();
    }
    cache.setGroup('regs', resetRegs);
    cache.setGroup('sregs', resetSregs);
    waitingForSipi = true;
    halted = false;
  }
  if (waitingForSipi) {
    const vector = Atomics.exchange(ctrl, CTRL.SIPI_VECTOR, -1);
    if (vector < 0) {
      // A CPU waiting for SIPI takes nothing else (SDM 9.4.2): interrupts and NMIs stay pending.
      sleepUntilWoken(sipiOrInitPending, false);
      return false;
    }
    // SDM 9.4.4: the AP starts in real mode at CS = vector << 8 (base vector << 12), IP = 0.
    cache.setById(CS_SELECTOR, BigInt(vector << 8));
    cache.setById(CS_BASE, BigInt(vector) << 12n);
    cache.setById(RIP, 0n);
    waitingForSipi = false;
  } else Atomics.store(ctrl, CTRL.SIPI_VECTOR, -1); // a SIPI outside wait-for-SIPI is ignored
  runDueTimers();
  if (halted) {
    if (stillIdle(wakesFromHalt, HALT_SLICE_MS)) return false;
    halted = false;
  }
  if (mwaiting) {
    if (stillIdle(wakesFromMwait, MWAIT_POLL_MS)) return false;
    // MWAIT has ended, and with it the monitor (SDM: the next MWAIT needs a new MONITOR).
    mwaiting = false;
    monitorGpa = -1;
  }
  if (Atomics.exchange(ctrl, CTRL.NMI_PENDING, 0) === 1) {
    syscalls.count();
    vcpu.nmi();
  }
  if (Atomics.load(ctrl, CTRL.IRQ_PENDING) === 1) {
    // As QEMU does (kvm_arch_pre_run): inject when KVM says the guest can take it, and keep an
    // interrupt window open while anything is still pending.
    if (run8[READY_FOR_INJECTION] && run8[IF_FLAG]) {
      const vector = ask(AccessKind.Inta);
      if (vector >= 0) {
        syscalls.count();
        vcpu.interrupt(vector);
      }
    }
    run8[REQUEST_INTERRUPT_WINDOW] = Atomics.load(ctrl, CTRL.IRQ_PENDING) === 1 ? 1 : 0;
  } else run8[REQUEST_INTERRUPT_WINDOW] = 0;
  armIrqTimer(Atomics.load(ctrlBig, CTRL.IRQ_DEADLINE_BIGINT_SLOT));
  return true;
}

/**
 * An idle vCPU (HLT, MWAIT) that `wakes()` does not end yet sleeps (`sliceMs` at most), then runs
 * its due timers; true when it is still idle after that (the caller goes back to its command point).
 */
function stillIdle(wakes: () => boolean, sliceMs: number): boolean {
  if (wakes()) return false;
  sleepUntilWoken(wakes, true, sliceMs);
  runDueTimers();
  return !wakes();
}

/** An idle point (HLT, MWAIT) that `wakes()` does not end at once: the VMM's deferred work first, if it has any. */
function offerIdleTime(wakes: () => boolean): void {
  if (Atomics.load(ctrl, CTRL.WANTS_IDLE) === 1 && !wakes()) ask(AccessKind.Idle);
}

/** HLT exited to the VMM: an idle point. */
function onHalt(): void {
  halted = true;
  offerIdleTime(wakesFromHalt);
}

// ---- MONITOR/MWAIT -------------------------------------------------------------------------
// Hosts whose KVM cannot emulate MONITOR/MWAIT (this one: HOST.md) stop the vCPU with an emulation
// failure instead of treating them as NOPs as KVM on VMX/SVM does. tsvmm then emulates them: MONITOR
// arms the 64-byte line at DS:rAX; with the userspace irqchip MWAIT is an idle point like HLT (the
// vCPU hands its time to deferred work and sleeps until the line changes, an interrupt is pending,
// with IF set or ECX bit 0 set, or an NMI, INIT or SIPI arrives), with KVM's it returns at once
// (tsvmm cannot see the in-kernel LAPIC's pending interrupts, and an early return is one of
// MWAIT's allowed wake-ups). Writes by other vCPUs never exit, so the sleeping thread compares the
// line with its contents at MONITOR every MWAIT_POLL_MS: a store of the value already there goes
// unseen, which guests that wait for a flag to change never do. Spec: Intel SDM vol. 2B MONITOR,
// MWAIT; vol. 3A 9.10.4 (the monitored line, CPUID leaf 5).
const MONITOR_LINE_BYTES = 64;
const MWAIT_POLL_MS = 0.5;
const MONITOR_OPCODE = 0xc8; // 0f 01 c8
const MWAIT_OPCODE = 0xc9; // 0f 01 c9
const MWAIT_ECX_INTERRUPT_BREAK = 1n; // interrupts end MWAIT even with IF clear
const RCX = fieldId('rcx');
const DS_BASE = fieldId('ds.base');
const CS_L = fieldId('cs.l');
const CS_DB = fieldId('cs.db');
const monitorLine = new Uint8Array(MONITOR_LINE_BYTES);
/** the armed line's gpa, -1 when no MONITOR is armed */
let monitorGpa = -1;
/** the guest is in MWAIT (userspace irqchip) */
let mwaiting = false;
let mwaitInterruptBreak = false;
const insnBytes = new Uint8Array(runBuf, abi.RUN.internal + abi.kvm_run_emulation_failure.at.insn_bytes!, 15);

/** The bytes of the instruction KVM failed to emulate: from the exit where KVM gives them, else from RAM. */
function failedInstruction(): Uint8Array {
  const base = abi.RUN.internal;
  const flags = run.getBigUint64(base + abi.kvm_run_emulation_failure.at.flags!, true);
  const size = run8[base + abi.kvm_run_emulation_failure.at.insn_size!]!;
  if (run.getUint32(base + abi.kvm_run_emulation_failure.at.ndata!, true) >= 2 &&
    (flags & abi.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) !== 0n && size > 0) return insnBytes.subarray(0, Math.min(size, 15));
  syscalls.count(); // KVM_TRANSLATE
  return readCode(cache.getById(CS_BASE) + cache.getById(RIP));
}

/** Emulates MONITOR or MWAIT at CPL0 after an emulation failure; false for any other instruction. */
function emulateMonitorMwait(): boolean {
  const code = failedInstruction();
  if (code.length < 3 || code[0] !== 0x0f || code[1] !== 0x01 || (code[2] !== MONITOR_OPCODE && code[2] !== MWAIT_OPCODE)) return false;
  cache.setById(RIP, cache.getById(RIP) + 3n);
  if (code[2] === MONITOR_OPCODE) monitor();
  else mwait();
  return true;
}

function monitor(): void {
  monitorGpa = -1;
  // The effective address is rAX in the address size of the code (no prefixes: they are not matched).
  const long = cache.getById(CS_L) !== 0n;
  let linear = cache.getById(RAX);
  if (!long) linear = (cache.getById(DS_BASE) + (linear & (cache.getById(CS_DB) !== 0n ? 0xffff_ffffn : 0xffffn))) & 0xffff_ffffn;
  syscalls.count(); // KVM_TRANSLATE
  const t = vcpu.translate(linear);
  const mem = currentMemory();
  if (!t.valid || mem === null) return; // unarmed: the MWAIT that follows returns at once
  const gpa = Number(t.gpa) - (Number(t.gpa) % MONITOR_LINE_BYTES);
  if (!mem.contains(gpa, MONITOR_LINE_BYTES)) return; // not RAM (MMIO): nothing to watch
  monitorLine.set(mem.slice(gpa, MONITOR_LINE_BYTES));
  monitorGpa = gpa;
}

function mwait(): void {
  if (!USERSPACE_IRQCHIP || monitorGpa < 0 || monitorLineWritten()) {
    monitorGpa = -1;
    return;
  }
  mwaiting = true;
  mwaitInterruptBreak = (cache.getById(RCX) & MWAIT_ECX_INTERRUPT_BREAK) !== 0n;
  Atomics.add(ctrl, CTRL.STAT_MWAIT_IDLE, 1);
  offerIdleTime(wakesFromMwait);
}

/** The monitored line differs from what MONITOR saw (or the map is changing: a spurious wake-up, which MWAIT allows). */
function monitorLineWritten(): boolean {
  const mem = currentMemory();
  if (mem === null || !mem.contains(monitorGpa, MONITOR_LINE_BYTES)) return true;
  const line = mem.slice(monitorGpa, MONITOR_LINE_BYTES);
  for (let i = 0; i < MONITOR_LINE_BYTES; i++) if (line[i] !== monitorLine[i]) return true;
  return false;
}

function wakesFromMwait(): boolean {
  if (nmiInitOrSipiPending()) return true;
  if (Atomics.load(ctrl, CTRL.IRQ_PENDING) === 1 && (mwaitInterruptBreak || (cache.getById(RFLAGS) & RFLAGS_IF) !== 0n)) return true;
  return monitorLineWritten();
}

class VcpuStop extends Error {}

// ---- exits ---------------------------------------------------------------------------------
let guestExitStatus = -1;

function pio(): void {
  const base = abi.RUN.io;
  const isWrite = run8[base + abi.kvm_run_io.at.direction] === abi.KVM_EXIT_IO_OUT;
  const size = run8[base + abi.kvm_run_io.at.size]!;
  const port = run.getUint16(base + abi.kvm_run_io.at.port, true);
  const count = run.getUint32(base + abi.kvm_run_io.at.count, true);
  // data_offset is a u64 but always inside the vCPU mmap; its low half avoids a BigInt per exit.
  const dataOffset = run.getUint32(base + abi.kvm_run_io.at.data_offset, true);
  for (let i = 0; i < count; i++) {
    const bytes = ioData(dataOffset + i * size, size);
    let handled = false;
    for (let d = 0; d < localPorts.length; d++) {
      const dev = localPorts[d]!;
      if (port >= dev.base && port < dev.end) {
        handled = true;
        if (dev.kind === 'sink') { if (!isWrite) bytes.fill(0xff); }
        else if (dev.kind === 'regs-probe') {
          // A handler that reads and writes RAX and RIP: the state cache must make this free.
          cache.setById(RAX, cache.getById(RAX) + 1n);
          cache.setById(RIP, cache.getById(RIP));
        } else if (dev.kind === 'regs-probe-ioctl') {
          // The same handler without the cache, as VMMs without one do it: the baseline for the cache.
          const regs = vcpu.getRegs();
          regs.writeBigUInt64LE(regs.readBigUInt64LE(abi.kvm_regs.at.rax!) + 1n, abi.kvm_regs.at.rax!);
          vcpu.setRegs(regs);
          syscalls.count(2);
        } else if (dev.kind === 'regs-probe-fpu') {
          // The x87 control word through both views of the same state, in turn each way round:
          // one view's copy changed, then the other view read and written, which must see that
          // change (the cache writes a dirty view back before it loads the other, and drops a
          // view's copy once the other's is dirty). Flushed in table order, a stale FPU view would
          // be undone by XSAVE's, and a stale XSAVE view would undo FPU's.
          const [first, second] = (fpuProbes++ & 1) === 0 ? [XSAVE_FCW, FPU_FCW] : [FPU_FCW, XSAVE_FCW];
          cache.setById(first, cache.getById(first) ^ FCW_ROUNDING_CONTROL);
          cache.setById(second, cache.getById(second));
        } else if (dev.kind === 'kick-peer') {
          if (isWrite) kickPeer(bytes[0]!);
          else bytes.fill(0xff);
        } else if (isWrite) {
          // isa-debug-exit semantics, with the written value as our exit status.
          let v = 0;
          for (let b = size - 1; b >= 0; b--) v = v * 256 + bytes[b]!;
          guestExitStatus = v & 0xff;
        } else bytes.fill(0xff);
        break;
      }
    }
    if (!handled) forward(AccessKind.Pio, port, isWrite, bytes);
  }
}

function mmio(): void {
  const base = abi.RUN.mmio;
  const gpa = Number(run.getBigUint64(base + abi.kvm_run_mmio.at.phys_addr, true));
  const len = run.getUint32(base + abi.kvm_run_mmio.at.len, true);
  const isWrite = run8[base + abi.kvm_run_mmio.at.is_write] !== 0;
  if (len < 1 || len > 8) return;
  forward(AccessKind.Mmio, gpa, isWrite, mmioData[len - 1]!);
}

function readCode(linear: bigint): Uint8Array {
  const t = vcpu.translate(linear);
  const gpa = t.valid ? Number(t.gpa) : Number(linear);
  const mem = currentMemory();
  for (let len = 15; mem !== null && len > 0; len--) {
    if (mem.contains(gpa, len)) return mem.read(gpa, len);
  }
  return new Uint8Array(0);
}

function describeState(): string {
  const regs = Buffer.from(cache.group('regs'));
  const sregs = Buffer.from(cache.group('sregs'));
  const r = abi.kvm_regs.at;
  const s = abi.kvm_sregs.at;
  const g = (name: keyof typeof r) => hex(regs.readBigUInt64LE(r[name]!), 16);
  const rip = regs.readBigUInt64LE(r.rip!);
  const csBase = sregs.readBigUInt64LE(s.cs! + abi.kvm_segment.at.base!);
  const csSel = sregs.readUInt16LE(s.cs! + abi.kvm_segment.at.selector!);
  const csL = sregs[s.cs! + abi.kvm_segment.at.l!];
  const csDb = sregs[s.cs! + abi.kvm_segment.at.db!];
  const cpl = sregs[s.cs! + abi.kvm_segment.at.dpl!];
  const mode = csL ? '64-bit' : csDb ? '32-bit' : '16-bit';
  const code = readCode(csBase + rip);
  const known = identifyInstruction(code);
  const lines = [
    `  rip=${hex(rip, 16)} cs=${hex(csSel, 4)} (${mode}, cpl ${cpl}) rflags=${g('rflags')}`,
    `  rax=${g('rax')} rbx=${g('rbx')} rcx=${g('rcx')} rdx=${g('rdx')}`,
    `  rsi=${g('rsi')} rdi=${g('rdi')} rsp=${g('rsp')} rbp=${g('rbp')}`,
    `  cr0=${hex(sregs.readBigUInt64LE(s.cr0!))} cr3=${hex(sregs.readBigUInt64LE(s.cr3!))} cr4=${hex(sregs.readBigUInt64LE(s.cr4!))} efer=${hex(sregs.readBigUInt64LE(s.efer!))}`,
    `  code at rip: ${code.length ? formatBytes(code) : '(not in guest RAM)'}`,
  ];
  if (known) lines.push(`  instruction: ${known.name}${known.note ? ` (${known.note})` : ''}`);
  return lines.join('\n');
}

function fatal(what: string): void {
  let state = '';
  try { state = describeState(); } catch (e) { state = `  (registers unavailable: ${(e as Error).message})`; }
  post({ type: 'fatal', report: `vcpu ${data.index}: ${what}\n${state}` });
}

/** Handles one exit; returns false when the vCPU must stop. */
function dispatch(): boolean {
  const reason = run.getUint32(abi.kvm_run.at.exit_reason, true);
  switch (reason) {
    case abi.KVM_EXIT_IO:
      pio();
      if (guestExitStatus >= 0) {
        post({ type: 'guest-exit', status: guestExitStatus, reason: 'debug-exit port' });
        return false;
      }
      return true;
    case abi.KVM_EXIT_MMIO:
      mmio();
      return true;
    case abi.KVM_EXIT_HLT:
      if (USERSPACE_IRQCHIP) {
        onHalt();
        return true;
      }
      // Only without an in-kernel LAPIC; nothing will ever wake this vCPU, so treat it as power-off.
      post({ type: 'guest-exit', status: 0, reason: 'hlt with no interrupt controller' });
      return false;
    case abi.KVM_EXIT_X86_RDMSR:
    case abi.KVM_EXIT_X86_WRMSR: {
      // Only MSRs the VMM trapped (HvVm.trapMsrs); `error` 1 makes KVM inject #GP.
      const base = abi.RUN.msr;
      const index = run.getUint32(base + abi.kvm_run_msr.at.index, true);
      forward(AccessKind.Msr, index, reason === abi.KVM_EXIT_X86_WRMSR, msrData);
      run8[base + abi.kvm_run_msr.at.error] = Atomics.load(ctrl, CTRL.MBOX_RESULT) === 1 ? 0 : 1;
      return true;
    }
    case abi.KVM_EXIT_IRQ_WINDOW_OPEN:
      // The guest can take an interrupt now; prepareEntry injects it.
      return true;
    case abi.KVM_EXIT_SHUTDOWN: {
      // KVM on AMD resets the vCPU before it reports a shutdown (its VMCB is undefined after
      // one), so the registers below are then the reset state, not where the guest faulted.
      const reset = cache.getById(RIP) === 0xfff0n && cache.getById(CS_SELECTOR) === 0xf000n;
      fatal('KVM_EXIT_SHUTDOWN: the guest triple-faulted (an exception it could not handle); the VM is stopped' +
        (reset ? '. The registers are the reset state: KVM reset this vCPU at the shutdown (as it does on AMD), so where it faulted is lost; rerun with earlyprintk or a guest-side exception log to find it' : ''));
      return false;
    }
    case abi.KVM_EXIT_SYSTEM_EVENT: {
      const type = run.getUint32(abi.RUN.system_event, true);
      const status = type === abi.KVM_SYSTEM_EVENT_CRASH ? 1 : 0;
      post({ type: 'guest-exit', status, reason: `system event ${type}` });
      return false;
    }
    case abi.KVM_EXIT_INTERNAL_ERROR: {
      const sub = run.getUint32(abi.RUN.internal, true);
      if (sub === abi.KVM_INTERNAL_ERROR_EMULATION && mapChangedSinceEntry()) return true;
      if (sub === abi.KVM_INTERNAL_ERROR_EMULATION && (cache.getById(CS_SELECTOR) & 3n) === 0n && emulateMonitorMwait()) return true;
      if (sub === abi.KVM_INTERNAL_ERROR_EMULATION && (cache.getById(CS_SELECTOR) & 3n) !== 0n) {
        // Guest user mode: what KVM itself does without KVM_CAP_EXIT_ON_EMULATION_FAILURE (a #UD
        // for the guest kernel to handle), so a guest program cannot stop the VM this way.
        injectException(UD_VECTOR);
        return true;
      }
      const subName = sub === abi.KVM_INTERNAL_ERROR_EMULATION ? 'emulation failure: KVM could not emulate the instruction at RIP'
        : sub === abi.KVM_INTERNAL_ERROR_SIMUL_EX ? 'exception raised while delivering another exception'
          : sub === abi.KVM_INTERNAL_ERROR_DELIVERY_EV ? 'event delivery failed'
            : `suberror ${sub}`;
      fatal(`KVM_EXIT_INTERNAL_ERROR (${subName})`);
      return false;
    }
    case abi.KVM_EXIT_FAIL_ENTRY: {
      const why = run.getBigUint64(abi.RUN.fail_entry, true);
      fatal(`KVM_EXIT_FAIL_ENTRY (hardware entry failure reason ${hex(why)}): the initial CPU state is invalid`);
      return false;
    }
    case abi.KVM_EXIT_INTR:
      return true;
    case abi.KVM_EXIT_DIRTY_RING_FULL:
      // KVM would only exit again: the main thread harvests every ring and resets them before it
      // answers, and only then does this vCPU enter again.
      ask(AccessKind.DirtyRingFull);
      return true;
    default:
      fatal(`unhandled exit KVM_EXIT_${abi.KVM_EXIT_NAMES[reason] ?? reason}`);
      return false;
  }
}

/** Queues a fault without an error code for the next entry (KVM_SET_VCPU_EVENTS, through the cache). */
function injectException(vector: number): void {
  cache.setById(EXCEPTION_INJECTED, 1n);
  cache.setById(EXCEPTION_NR, BigInt(vector));
  cache.setById(EXCEPTION_HAS_ERROR_CODE, 0n);
  cache.setById(EXCEPTION_ERROR_CODE, 0n);
}

/**
 * An instruction fetch from a range whose memslot was being replaced (deleted, not yet created)
 * fails as an emulation failure. If the map changed while this vCPU ran, wait for the change to
 * end and enter again: RIP has not moved, so the guest retries the fetch against the new map. A
 * real failure repeats with the map unchanged and is reported then.
 */
function mapChangedSinceEntry(): boolean {
  let seq = Atomics.load(mapSeq, 0);
  if (seq === mapSeqAtEntry && (seq & 1) === 0) return false;
  while ((seq & 1) === 1) {
    Atomics.wait(mapSeq, 0, seq, 100);
    seq = Atomics.load(mapSeq, 0);
  }
  return true;
}

// ---- commands ------------------------------------------------------------------------------
function ack(): void {
  Atomics.add(ctrl, CTRL.ACK, 1);
  Atomics.notify(ctrl, CTRL.ACK);
}

function setState(s: VcpuState): void {
  Atomics.store(ctrl, CTRL.STATE, s);
  Atomics.notify(ctrl, CTRL.STATE);
}

/** Handles pending commands; returns false when the vCPU must stop. Blocks while paused. */
function handleCommands(): boolean {
  let paused = false;
  for (;;) {
    const cmd = Atomics.exchange(ctrl, CTRL.CMD, VcpuCommand.None) as VcpuCommand;
    switch (cmd) {
      case VcpuCommand.None:
        if (!paused) return true;
        Atomics.wait(ctrl, CTRL.CMD, VcpuCommand.None);
        continue;
      case VcpuCommand.Pause:
        paused = true;
        setState(VcpuState.Paused);
        break;
      case VcpuCommand.Resume:
        paused = false;
        setState(VcpuState.Running);
        ack();
        return true;
      case VcpuCommand.Stop:
        return false;
      case VcpuCommand.ReadRegs: {
        ctrlBytes.set(cache.group('regs'), CTRL.REGS_BYTE_OFFSET);
        ctrlBytes.set(cache.group('sregs'), CTRL.REGS_BYTE_OFFSET + abi.kvm_regs.sizeBytes);
        break;
      }
    }
    ack();
  }
}

function loop(): void {
  for (;;) {
    // The command point: every kick issued before this load has now been seen by this vCPU.
    Atomics.store(ctrl, CTRL.KICK_ACK, Atomics.load(ctrl, CTRL.KICK_SEQ));
    checkDeadline();
    if (Atomics.load(ctrl, CTRL.CMD) !== VcpuCommand.None && !handleCommands()) return;
    if (USERSPACE_IRQCHIP && !prepareEntry()) continue;
    cache.flush();
    mapSeqAtEntry = Atomics.load(mapSeq, 0);
    // KVM_RUN straight through the libc binding: the hot path skips the wrapper's extra calls.
    let r = ioctlValue(vcpuFd, KVM_RUN_NR, 0);
    if (r < 0) r = -libc.errno();
    cache.afterExit();
    if (r < 0) {
      // EAGAIN: an AP that just took INIT/SIPI (or any vCPU not yet runnable); enter again.
      if (r === -EAGAIN) continue;
      if (r === -EINTR) {
        // A kick: clear immediate_exit before draining, so a kick that lands after the drain
        // still finds either the flag or a pending signal on the next entry.
        currentReason = abi.KVM_EXIT_INTR;
        ctrl[CTRL.STAT_EXIT_BASE + currentReason]!++;
        syscalls.count();
        Atomics.store(run8, IMMEDIATE_EXIT, 0);
        drainKicks();
        Atomics.add(ctrl, CTRL.STAT_KICKS, 1);
        continue;
      }
      fatal(`KVM_RUN failed: errno ${-r}`);
      return;
    }
    const reason = run.getUint32(abi.kvm_run.at.exit_reason, true);
    currentReason = reason < STAT_REASONS ? reason : 0;
    ctrl[CTRL.STAT_EXITS]!++;
    ctrl[CTRL.STAT_EXIT_BASE + currentReason]!++;
    ctrl[CTRL.STAT_SYSCALL_BASE + currentReason]!++; // the KVM_RUN that produced this exit
    if (!dispatch()) return;
  }
}

try {
  setUpKickSignal();
  setUpDeadlineTimer();
  if (USERSPACE_IRQCHIP) {
    setUpIrqTimer();
    if (data.index !== 0) {
      // Created in reset state: what an INIT brings the AP back to.
      resetRegs = Uint8Array.from(cache.group('regs'));
      resetSregs = Uint8Array.from(cache.group('sregs'));
    }
  }
  // Sync regs come back in kvm_run on every exit; the hot path then needs no KVM_GET_REGS.
  run.setBigUint64(abi.kvm_run.at.kvm_valid_regs, BigInt(VcpuStateCache.SYNC_ON_EXIT), true);
  setState(VcpuState.Running);
  post({ type: 'ready' });
  loop();
} catch (e) {
  if (!(e instanceof VcpuStop)) post({ type: 'error', message: (e as Error).message });
} finally {
  if (irqTimerId !== 0n) libc.timerDelete(irqTimerId - 1n);
  const timer = Atomics.load(ctrlBig, CTRL.TIMER_BIGINT_SLOT);
  if (timer !== 0n) {
    Atomics.store(ctrlBig, CTRL.TIMER_BIGINT_SLOT, 0n);
    libc.timerDelete(timer - 1n);
  }
  setState(VcpuState.Stopped);
  ack();
}
