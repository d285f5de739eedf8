// The KVM backend of the hypervisor boundary: the only module above src/kvm/ that imports it.
import { Worker } from 'node:worker_threads';
import * as abi from '../../kvm/abi.js';
import { KvmError } from '../../kvm/errors.js';
import { EventFd } from '../../kvm/eventfd.js';
import * as io from '../../kvm/ioctls.js';
import { KvmSystem, KvmVcpu, KvmVm, type GsiRoute } from '../../kvm/kvm.js';
import * as libc from '../../kvm/libc.js';
import { hostView, mapAnonymous, unmap, type HostMapping } from '../../kvm/memory.js';
import { DirtyRingReader, dirtyRingSizeBytes } from '../../memory/dirty-ring.js';
import type {
  CpuidEntry, ExitHandlers, HvMemslot, HvMsiRoute, HvVcpu, HvVm, Hypervisor, IrqchipMode, RamSlot, Regs, Sregs, VcpuLocalDevice, VcpuRunState, VcpuStats,
} from '../types.js';
import { regsFromBuffer, regsToBuffer, sregsFromBuffer, sregsToBuffer } from './regs.js';
import { SharedRamTable } from './ram-table.js';
import {
  AccessKind, CONTROL_BLOCK_BYTES, CTRL, Mbox, MBOX_DATA_BYTE_OFFSET, SIG_KICK, STAT_REASONS, VCPU_STATE_NAMES, VcpuCommand,
  type VcpuPeer, type VcpuWorkerData, type VcpuWorkerMessage,
} from './vcpu-protocol.js';

export { KvmError } from '../../kvm/errors.js';
/** TAP devices for virtio-net: a host facility that needs libc, so it is reached through this backend too. */
export { TapDevice, TapError } from '../../kvm/tap.js';
export { canPunchHoles, punchHole } from '../../kvm/host-file.js';

const MSR_IA32_TSC = 0x10;
const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const APIC_MODE_EXTINT = 0x7 << 8;
const APIC_MODE_NMI = 0x4 << 8;

let kickSignalIgnored = false;

export class KvmHypervisor implements Hypervisor {
  readonly name = 'kvm';
  private constructor(readonly system: KvmSystem) {}

  static open(path?: string): KvmHypervisor {
    const system = KvmSystem.open(path);
    if (!kickSignalIgnored) {
      // Process-wide SIG_IGN: a kick that reaches a thread with it unblocked is harmless. vCPU
      // threads keep it blocked except inside KVM_RUN, where KVM turns it into an exit.
      libc.signal(SIG_KICK, libc.SIG_IGN);
      kickSignalIgnored = true;
    }
    return new KvmHypervisor(system);
  }

  maxVcpus(): number {
    return this.system.checkExtension('KVM_CAP_MAX_VCPUS') || this.system.checkExtension('KVM_CAP_NR_VCPUS') || 4;
  }

  supportedCpuid(): CpuidEntry[] {
    return this.system.supportedCpuid();
  }

  allocateRam(sizeBytes: number) {
    const m = mapAnonymous(sizeBytes, 'guest RAM');
    return { hva: m.hva, view: hostView(m.hva, sizeBytes), free: () => unmap(m) };
  }

  viewOf(hva: bigint, sizeBytes: number): ArrayBuffer {
    return hostView(hva, sizeBytes);
  }

  createVm(): HvVm {
    return new KvmVmHandle(this.system, this.system.createVm());
  }

  close(): void {
    this.system.close();
  }
}

/** Pins of the in-kernel IOAPIC: GSIs 0-23 are theirs, MSI routes take the GSIs above. */
const IOAPIC_PINS = 24;

class KvmVmHandle implements HvVm {
  private readonly vcpus: KvmVcpuHandle[] = [];
  /** eventfds to remove and close with the VM */
  private readonly fds: Array<() => void> = [];
  /** shared with every vCPU thread: see beginMapChange */
  private readonly mapSeq = new SharedArrayBuffer(4);
  private readonly mapSeqView = new Int32Array(this.mapSeq);
  /** the current RAM map, shared with every vCPU thread (rewritten by endMapChange) */
  private readonly ramTable: SharedRamTable;
  private msiChecked = false;
  /** The in-kernel irqchip's pin routes (createInterruptControllers), then one MSI route per addMsiRoute GSI. */
  private irqchipRoutes: GsiRoute[] = [];
  private readonly msiRoutes = new Map<number, GsiRoute>();
  /** with enableDirtyRing: the ring size, the VMM's drain, and each vCPU's mapped ring */
  private dirtyRing: { sizeBytes: number; onFull: () => void } | null = null;
  private readonly rings: Array<{ mapping: HostMapping; reader: DirtyRingReader }> = [];
  constructor(readonly system: KvmSystem, readonly vm: KvmVm) {
    // Intel VMX needs these three pages for real-mode emulation; placed outside RAM, below 4 GiB.
    if (system.checkExtension('KVM_CAP_SET_TSS_ADDR')) vm.setTssAddr(0xfffb_d000);
    if (system.checkExtension('KVM_CAP_SET_IDENTITY_MAP_ADDR')) vm.setIdentityMapAddr(0xfffb_c000);
    // Without it KVM answers an emulation failure in guest user mode with a #UD of its own, and
    // an instruction fetch from a range whose memslot a memory-map change has just deleted is one:
    // the guest would take a #UD that the old and the new map both rule out. With it every such
    // failure exits to us; the vCPU re-enters after the change, or injects that #UD itself.
    if (system.checkExtension('KVM_CAP_EXIT_ON_EMULATION_FAILURE')) {
      vm.enableCap(abi.KVM_CAP.KVM_CAP_EXIT_ON_EMULATION_FAILURE, [1], 'asking KVM to exit on every emulation failure');
    }
    // One entry per memslot: RAM regions are memslots.
    this.ramTable = new SharedRamTable(new SharedArrayBuffer(SharedRamTable.bytesFor(this.maxMemslots())));
  }

  maxMemslots(): number {
    // KVM_CAP_NR_MEMSLOTS is at least 32 on every x86 KVM; 0 means an ancient host that has 32.
    return this.system.checkExtension('KVM_CAP_NR_MEMSLOTS') || 32;
  }

  supportsReadonlyMemory(): boolean {
    return this.system.checkExtension('KVM_CAP_READONLY_MEM') > 0;
  }

  setMemslot(slot: number, m: HvMemslot): void {
    if (m.readonly) this.system.require('KVM_CAP_READONLY_MEM', `mapping memslot ${slot} read-only`);
    const flags = (m.logDirty ? abi.KVM_MEM_LOG_DIRTY_PAGES : 0) | (m.readonly ? abi.KVM_MEM_READONLY : 0);
    this.vm.setUserMemoryRegion(slot, flags, m.gpa, m.sizeBytes, m.hva);
  }

  deleteMemslot(slot: number, gpa: number): void {
    this.vm.deleteUserMemoryRegion(slot, gpa);
  }

  getDirtyLog(slot: number, pages: number): BigUint64Array {
    return this.vm.getDirtyLog(slot, pages);
  }

  enableDirtyRing(sizeBytes: number, onFull: () => void): boolean {
    if (this.vcpus.length > 0 || this.dirtyRing !== null) {
      throw new KvmError('capability', 'KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING)', 'vm', 0, 'enabling dirty rings',
        this.dirtyRing !== null ? 'they are enabled already' : 'enable them before creating any vCPU');
    }
    // _ACQ_REL where the host has it: the same ring, with the ordering rule DirtyRingReader keeps anyway.
    const cap = this.system.checkExtension('KVM_CAP_DIRTY_LOG_RING_ACQ_REL') > 0 ? 'KVM_CAP_DIRTY_LOG_RING_ACQ_REL' : 'KVM_CAP_DIRTY_LOG_RING';
    // KVM_CHECK_EXTENSION answers the largest ring in bytes (0: none).
    const bytes = dirtyRingSizeBytes(sizeBytes, this.system.checkExtension(cap));
    if (bytes === 0) return false;
    this.vm.enableDirtyRing(cap, bytes);
    this.dirtyRing = { sizeBytes: bytes, onFull };
    return true;
  }

  harvestDirtyRings(sink: (slot: number, pageOffset: number) => void): number {
    let n = 0;
    for (const r of this.rings) n += r.reader.harvest(sink);
    return n;
  }

  resetDirtyRings(): number {
    return this.dirtyRing === null ? 0 : this.vm.resetDirtyRings();
  }

  /** KVM_EXIT_DIRTY_RING_FULL on some vCPU, on the main thread. */
  private dirtyRingFull(): void {
    if (this.dirtyRing === null) throw new Error('KVM_EXIT_DIRTY_RING_FULL, but this VM has no dirty rings');
    this.dirtyRing.onFull();
  }

  beginMapChange(): void {
    // Odd while changing: a vCPU that sees the sequence move (or odd) across a failed fetch retries.
    Atomics.add(this.mapSeqView, 0, 1);
  }

  endMapChange(ram?: readonly RamSlot[]): void {
    try {
      // Still odd: no vCPU thread takes the table half-written.
      if (ram !== undefined) this.ramTable.write(ram);
    } finally {
      // Even again whatever happened, or vCPUs waiting for the change to end would wait forever.
      Atomics.add(this.mapSeqView, 0, 1);
      Atomics.notify(this.mapSeqView, 0);
    }
  }

  createInterruptControllers(): void {
    this.system.require('KVM_CAP_IRQCHIP', 'creating the in-kernel interrupt controllers');
    this.vm.createIrqchip();
    this.system.require('KVM_CAP_PIT2', 'creating the in-kernel PIT');
    this.vm.createPit2(abi.KVM_PIT_SPEAKER_DUMMY);
    // PC routing, as QEMU sets it: ISA IRQs 0-15 to the two 8259s (pin 2 of the master is the
    // cascade), GSIs 1-23 to the same IOAPIC pin, and GSI 0 (the PIT) to IOAPIC pin 2, which is
    // what the MADT's interrupt source override IRQ0 -> GSI 2 tells the guest. KVM's default
    // routing sends GSI 0 to IOAPIC pin 0, where such a guest never looks.
    const routes: GsiRoute[] = [];
    for (let gsi = 0; gsi < 16; gsi++) {
      if (gsi === 2) continue;
      routes.push(gsi < 8 ? { kind: 'irqchip', gsi, chip: abi.KVM_IRQCHIP_PIC_MASTER, pin: gsi } : { kind: 'irqchip', gsi, chip: abi.KVM_IRQCHIP_PIC_SLAVE, pin: gsi - 8 });
    }
    for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) {
      if (gsi === 2) continue;
      routes.push({ kind: 'irqchip', gsi, chip: abi.KVM_IRQCHIP_IOAPIC, pin: gsi === 0 ? 2 : gsi });
    }
    this.irqchipRoutes = routes;
    this.installRoutes();
  }

  private installRoutes(): void {
    this.vm.setGsiRouting([...this.irqchipRoutes, ...this.msiRoutes.values()]);
  }

  addMsiRoute(addressLo: number, addressHi: number, data: number): HvMsiRoute {
    const doing = 'routing an MSI-X vector to an irqfd';
    const maxRoutes = this.system.require('KVM_CAP_IRQ_ROUTING', doing);
    this.system.require('KVM_CAP_IRQFD', doing);
    if (this.irqchipRoutes.length === 0) {
      throw new KvmError('capability', 'KVM_SET_GSI_ROUTING', 'vm', 0, doing, 'MSI routes need KVM\'s in-kernel irqchip (createInterruptControllers); the userspace irqchip takes MSIs itself');
    }
    // GSIs above the IOAPIC's pins, lowest free first (a removed route's GSI is taken again).
    let gsi = IOAPIC_PINS;
    while (this.msiRoutes.has(gsi)) gsi++;
    if (gsi >= maxRoutes) {
      throw new KvmError('capability', 'KVM_CHECK_EXTENSION(KVM_CAP_IRQ_ROUTING)', 'system', 0, `${doing}: all ${maxRoutes} GSIs KVM allows are in use`, 'use fewer MSI-X vectors');
    }
    const efd = EventFd.create(`MSI GSI ${gsi}`);
    const route = (lo: number, hi: number, d: number): GsiRoute => ({ kind: 'msi', gsi, addressLo: lo, addressHi: hi, data: d });
    this.msiRoutes.set(gsi, route(addressLo, addressHi, data));
    try {
      this.installRoutes();
      this.vm.irqfd(efd.fd, gsi);
    } catch (e) {
      this.msiRoutes.delete(gsi);
      efd.close();
      try { this.installRoutes(); } catch { /* the first failure is the one to report */ }
      throw e;
    }
    let removed = false;
    const remove = () => {
      if (removed) return;
      removed = true;
      try {
        this.vm.irqfd(efd.fd, gsi, true);
      } finally {
        efd.close();
        this.msiRoutes.delete(gsi);
      }
    };
    this.fds.push(remove);
    return {
      gsi,
      trigger: () => efd.signal(),
      update: (lo, hi, d) => {
        if (removed) throw new Error(`MSI route on GSI ${gsi} was removed`);
        this.msiRoutes.set(gsi, route(lo, hi, d));
        this.installRoutes();
      },
      remove: () => {
        remove();
        // The GSI may be handed out again; its stale message must not stay in KVM's table.
        this.installRoutes();
      },
    };
  }

  irqLine(gsi: number, level: 0 | 1): void {
    this.vm.irqLine(gsi, level);
  }

  trapMsrs(indices: readonly number[]): boolean {
    if (!this.system.checkExtension('KVM_CAP_X86_USER_SPACE_MSR') || !this.system.checkExtension('KVM_CAP_X86_MSR_FILTER')) return false;
    this.vm.enableCap(abi.KVM_CAP.KVM_CAP_X86_USER_SPACE_MSR, [abi.KVM_MSR_EXIT_REASON_FILTER], 'enabling MSR exits to userspace for filtered MSRs');
    this.vm.setMsrFilter(indices);
    return true;
  }

  signalMsi(addressLo: number, addressHi: number, data: number): void {
    if (this.msiChecked !== true) {
      this.system.require('KVM_CAP_SIGNAL_MSI', 'delivering an MSI-X message');
      this.msiChecked = true;
    }
    this.vm.signalMsi(addressLo, addressHi, data);
  }

  createVcpu(index: number): HvVcpu {
    const fd = this.vm.createVcpu(index);
    const vcpu = KvmVcpu.map(index, fd, this.system.vcpuMmapSize());
    if (this.dirtyRing !== null) {
      let mapping: HostMapping;
      try {
        mapping = vcpu.mapDirtyRing(this.dirtyRing.sizeBytes);
      } catch (e) {
        vcpu.close();
        throw e;
      }
      this.rings.push({ mapping, reader: new DirtyRingReader(hostView(mapping.hva, mapping.sizeBytes)) });
    }
    const v = new KvmVcpuHandle(vcpu, this.mapSeq, this.ramTable.buffer, () => this.vcpus.map((p) => p.peer()), () => this.dirtyRingFull());
    this.vcpus.push(v);
    return v;
  }

  addIoEventFd(space: 'pio' | 'mmio', addr: number, len: number, datamatch: number | null, onNotify: (count: bigint) => void) {
    this.system.require('KVM_CAP_IOEVENTFD', `adding an ioeventfd on ${space} 0x${addr.toString(16)}`);
    const efd = EventFd.create(`${space} 0x${addr.toString(16)} notifications`);
    try {
      this.vm.ioeventfd(space, addr, len, efd.fd, datamatch);
    } catch (e) {
      efd.close();
      throw e;
    }
    efd.watch(onNotify);
    let removed = false;
    const remove = () => {
      if (removed) return;
      removed = true;
      this.vm.ioeventfd(space, addr, len, efd.fd, datamatch, true);
      efd.close();
    };
    this.fds.push(remove);
    return { remove };
  }

  addIrqFd(gsi: number) {
    this.system.require('KVM_CAP_IRQFD', `adding an irqfd for GSI ${gsi}`);
    const efd = EventFd.create(`GSI ${gsi} interrupts`);
    try {
      this.vm.irqfd(efd.fd, gsi);
    } catch (e) {
      efd.close();
      throw e;
    }
    let removed = false;
    const remove = () => {
      if (removed) return;
      removed = true;
      this.vm.irqfd(efd.fd, gsi, true);
      efd.close();
    };
    this.fds.push(remove);
    return { trigger: () => efd.signal(), remove };
  }

  close(): void {
    for (const remove of this.fds.splice(0)) {
      try { remove(); } catch { /* the VM is going away anyway */ }
    }
    for (const r of this.rings.splice(0)) unmap(r.mapping);
    for (const v of this.vcpus) v.close();
    this.vm.close();
  }
}

class KvmVcpuHandle implements HvVcpu {
  readonly index: number;
  private readonly control = new SharedArrayBuffer(CONTROL_BLOCK_BYTES);
  private readonly ctrl = new Int32Array(this.control);
  private readonly ctrlBytes = new Uint8Array(this.control);
  private readonly ctrlBig = new BigInt64Array(this.control);
  /** the mailbox data as one int32: the interrupt acknowledge answer */
  private readonly mboxInt32 = new Int32Array(this.control, MBOX_DATA_BYTE_OFFSET, 1);
  private readonly run8: Uint8Array;
  private worker: Worker | null = null;
  private exited: Promise<void> = Promise.resolve();
  private commandChain: Promise<void> = Promise.resolve();
  private handlers: ExitHandlers | null = null;
  private stopping = false;
  /** true while the main thread runs a handler for this vCPU's mailbox request */
  private servingMailbox = false;

  constructor(private readonly vcpu: KvmVcpu, private readonly mapSeq: SharedArrayBuffer, private readonly ramTable: SharedArrayBuffer,
    private readonly peers: () => VcpuPeer[],
    private readonly dirtyRingFull: () => void) {
    this.index = vcpu.index;
    this.run8 = new Uint8Array(vcpu.runView());
    // No STARTUP IPI yet. Set here, before the thread exists: a SIPI may be posted while it starts.
    Atomics.store(this.ctrl, CTRL.SIPI_VECTOR, -1);
  }

  /** What another vCPU's thread needs to kick this one. */
  peer(): VcpuPeer {
    return { control: this.control, runHva: this.vcpu.runHva, runSizeBytes: this.vcpu.runSizeBytes };
  }

  setCpuid(entries: CpuidEntry[]): void {
    this.vcpu.setCpuid(entries);
  }

  setRegs(regs: Regs): void {
    this.vcpu.setRegs(regsToBuffer(regs));
  }

  getSregs(): Sregs {
    return sregsFromBuffer(this.vcpu.getSregs());
  }

  setSregs(sregs: Sregs): void {
    this.vcpu.setSregs(sregsToBuffer(sregs, Buffer.from(this.vcpu.getSregs())));
  }

  setupLint(): void {
    const b = Buffer.alloc(abi.kvm_lapic_state.sizeBytes);
    if (libc.ioctlPointer(this.vcpu.fd, io.KVM_GET_LAPIC.number, b) < 0) {
      throw new KvmError('ioctl', 'KVM_GET_LAPIC', this.vcpu.target, libc.errno(), 'reading the local APIC to set LINT0/LINT1');
    }
    b.writeUInt32LE((b.readUInt32LE(APIC_LVT0) & ~0x1_0700) | APIC_MODE_EXTINT, APIC_LVT0);
    b.writeUInt32LE((b.readUInt32LE(APIC_LVT1) & ~0x1_0700) | APIC_MODE_NMI, APIC_LVT1);
    if (libc.ioctlPointer(this.vcpu.fd, io.KVM_SET_LAPIC.number, b) < 0) {
      throw new KvmError('ioctl', 'KVM_SET_LAPIC', this.vcpu.target, libc.errno(), 'setting LINT0 to ExtINT and LINT1 to NMI');
    }
  }

  async start(handlers: ExitHandlers, local: VcpuLocalDevice[], irqchip: IrqchipMode = 'kernel'): Promise<void> {
    this.handlers = handlers;
    const data: VcpuWorkerData = {
      index: this.index, fd: this.vcpu.fd, runHva: this.vcpu.runHva, runSizeBytes: this.vcpu.runSizeBytes,
      control: this.control, mapSeq: this.mapSeq, ramTable: this.ramTable, localDevices: local, peers: this.peers(),
      irqchip, waitForSipi: irqchip === 'userspace' && this.index !== 0,
    };
    const worker = new Worker(new URL('./vcpu-worker.js', import.meta.url), { workerData: data, stdout: false, stderr: false });
    this.worker = worker;
    let onReady!: () => void;
    let onFail!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => { onReady = res; onFail = rej; });
    worker.on('message', (m: VcpuWorkerMessage) => {
      switch (m.type) {
        case 'ready': onReady(); break;
        case 'guest-exit': handlers.guestExit(this.index, m.status, m.reason); break;
        case 'fatal': handlers.fatal(this.index, m.report); break;
        case 'error':
          onFail(new Error(m.message));
          handlers.fatal(this.index, `vcpu ${this.index}: ${m.message}`);
          break;
      }
    });
    this.exited = new Promise((res) => worker.once('exit', () => res()));
    worker.once('error', (e) => { onFail(e); handlers.fatal(this.index, `vcpu ${this.index} thread failed: ${e.message}`); });
    void this.serveMailbox();
    await ready;
  }

  /** Answers device accesses the worker forwards, on the main thread, until the vCPU stops. */
  private async serveMailbox(): Promise<void> {
    const ctrl = this.ctrl;
    for (;;) {
      const state = Atomics.load(ctrl, CTRL.MBOX);
      if (state !== Mbox.Request) {
        if (Atomics.load(ctrl, CTRL.STATE) === 3 /* stopped */ && this.worker === null) return;
        const w = Atomics.waitAsync(ctrl, CTRL.MBOX, state, 200);
        if (w.async) await w.value;
        if (this.stopping && Atomics.load(ctrl, CTRL.STATE) === 3) return;
        continue;
      }
      const kind = ctrl[CTRL.MBOX_KIND] as AccessKind;
      const isWrite = ctrl[CTRL.MBOX_IS_WRITE] === 1;
      const size = ctrl[CTRL.MBOX_SIZE]!;
      const addr = (ctrl[CTRL.MBOX_ADDR_LO]! >>> 0) + (ctrl[CTRL.MBOX_ADDR_HI]! >>> 0) * 0x1_0000_0000;
      const data = this.ctrlBytes.subarray(MBOX_DATA_BYTE_OFFSET, MBOX_DATA_BYTE_OFFSET + size);
      if (!isWrite) data.fill(0xff);
      const h = this.handlers!;
      this.servingMailbox = true;
      try {
        switch (kind) {
          case AccessKind.Pio: h.pio(this.index, addr, isWrite, data); break;
          case AccessKind.Mmio: h.mmio(this.index, addr, isWrite, data); break;
          case AccessKind.Inta: this.mboxInt32[0] = h.interruptAck?.(this.index) ?? -1; break;
          case AccessKind.TimerDue: h.timerDue?.(this.index); break;
          case AccessKind.Idle: h.idle?.(this.index); break;
          case AccessKind.Msr: ctrl[CTRL.MBOX_RESULT] = h.msr?.(this.index, addr, isWrite, data) ? 1 : 0; break;
          case AccessKind.DirtyRingFull: this.dirtyRingFull(); break;
        }
      } catch (e) {
        const where = kind === AccessKind.Pio ? `port 0x${addr.toString(16)}` : kind === AccessKind.Mmio ? `gpa 0x${addr.toString(16)}`
          : kind === AccessKind.DirtyRingFull ? 'the dirty rings (KVM_EXIT_DIRTY_RING_FULL)' : `interrupt controller request ${kind}`;
        h.fatal(this.index, `device error on ${where}: ${(e as Error).message}`);
      } finally {
        this.servingMailbox = false;
      }
      Atomics.store(ctrl, CTRL.MBOX, Mbox.Response);
      Atomics.notify(ctrl, CTRL.MBOX);
      // Wait for the worker to take the response before looking for the next request.
      while (Atomics.load(ctrl, CTRL.MBOX) === Mbox.Response) {
        const w = Atomics.waitAsync(ctrl, CTRL.MBOX, Mbox.Response, 200);
        if (w.async) await w.value;
        if (Atomics.load(ctrl, CTRL.STATE) === 3) break;
      }
    }
  }

  state(): VcpuRunState {
    return VCPU_STATE_NAMES[Atomics.load(this.ctrl, CTRL.STATE)]!;
  }

  /** Forces the vCPU out of KVM_RUN (or makes its next entry return at once, or wakes its halt). */
  kick(): void {
    Atomics.add(this.ctrl, CTRL.KICK_SEQ, 1);
    Atomics.store(this.run8, abi.kvm_run.at.immediate_exit, 1);
    const tid = Atomics.load(this.ctrlBig, CTRL.TID_BIGINT_SLOT);
    if (tid !== 0n) libc.pthreadKill(tid, SIG_KICK);
    this.wake();
  }

  /** Wakes the vCPU thread if it sleeps in a halt (userspace irqchip); harmless otherwise. */
  private wake(): void {
    Atomics.add(this.ctrl, CTRL.HALT_WAKE, 1);
    Atomics.notify(this.ctrl, CTRL.HALT_WAKE);
  }

  /**
   * Makes the vCPU look at its interrupt state before it next enters. Not needed while this
   * thread answers the vCPU's own mailbox request: the vCPU waits for the answer and then passes
   * its entry checks anyway, so a kick would only cost it an extra exit.
   */
  private nudge(): void {
    if (!this.servingMailbox) this.kick();
  }

  setInterruptPending(pending: boolean): void {
    const was = Atomics.exchange(this.ctrl, CTRL.IRQ_PENDING, pending ? 1 : 0);
    // A new interrupt must reach a guest that runs without exits: kick it out to inject.
    if (pending && was === 0) this.nudge();
  }

  setTimerDeadline(deadlineNs: bigint | null): void {
    const next = deadlineNs ?? 0n;
    const old = Atomics.exchange(this.ctrlBig, CTRL.IRQ_DEADLINE_BIGINT_SLOT, next);
    // The vCPU re-arms its timer at its next entry; one sooner than the armed one needs it now.
    if (next !== 0n && (old === 0n || next < old)) this.nudge();
  }

  initIpi(): void {
    Atomics.store(this.ctrl, CTRL.INIT_PENDING, 1);
    this.nudge();
  }

  startupIpi(vector: number): void {
    Atomics.store(this.ctrl, CTRL.SIPI_VECTOR, vector & 0xff);
    this.nudge();
  }

  nmi(): void {
    Atomics.store(this.ctrl, CTRL.NMI_PENDING, 1);
    this.nudge();
  }

  offerIdleWork(on: boolean): void {
    Atomics.store(this.ctrl, CTRL.WANTS_IDLE, on ? 1 : 0);
  }

  tscClock(): { tscHz: bigint; tsc: bigint; atNs: bigint } {
    const tscHz = BigInt(this.vcpu.tscKhz()) * 1000n;
    const before = process.hrtime.bigint();
    const tsc = this.vcpu.getMsr(MSR_IA32_TSC);
    const after = process.hrtime.bigint();
    return { tscHz, tsc, atNs: (before + after) / 2n };
  }

  async runUntil(deadlineNs: bigint): Promise<{ lateNs: bigint }> {
    const timer = Atomics.load(this.ctrlBig, CTRL.TIMER_BIGINT_SLOT);
    // (A stopped worker deletes its timer and zeroes the slot first, so a stale id is never armed.)
    if (this.state() === 'stopped' || timer === 0n) throw new Error(`vcpu ${this.index}: runUntil needs a started vCPU`);
    const reached = Atomics.load(this.ctrl, CTRL.DEADLINES_REACHED);
    Atomics.store(this.ctrlBig, CTRL.DEADLINE_BIGINT_SLOT, deadlineNs);
    Atomics.store(this.ctrl, CTRL.DEADLINE_ARMED, 1);
    const spec = Buffer.alloc(libc.ITIMERSPEC_BYTES);
    spec.writeBigInt64LE(deadlineNs / 1_000_000_000n, 16);
    spec.writeBigInt64LE(deadlineNs % 1_000_000_000n, 24);
    if (libc.timerSettime(timer - 1n, libc.TIMER_ABSTIME, spec, null) !== 0) {
      throw new KvmError('libc', 'timer_settime', this.vcpu.target, libc.errno(), `arming the deadline at ${deadlineNs} ns`);
    }
    // The deadline may already be past: a kick makes the vCPU look now.
    if (process.hrtime.bigint() >= deadlineNs) this.kick();
    while (Atomics.load(this.ctrl, CTRL.DEADLINES_REACHED) === reached) {
      const w = Atomics.waitAsync(this.ctrl, CTRL.DEADLINES_REACHED, reached, 1000);
      if (w.async) await w.value;
      if (this.state() === 'stopped') throw new Error(`vcpu ${this.index} stopped before its deadline`);
    }
    return { lateNs: Atomics.load(this.ctrlBig, CTRL.DEADLINE_LATE_BIGINT_SLOT) };
  }

  private command(cmd: VcpuCommand): Promise<void> {
    const next = this.commandChain.then(async () => {
      if (this.state() === 'stopped') return;
      const before = Atomics.load(this.ctrl, CTRL.ACK);
      Atomics.store(this.ctrl, CTRL.CMD, cmd);
      Atomics.notify(this.ctrl, CTRL.CMD);
      this.kick();
      while (Atomics.load(this.ctrl, CTRL.ACK) === before) {
        const w = Atomics.waitAsync(this.ctrl, CTRL.ACK, before, 100);
        if (w.async) await w.value;
        // A vCPU parked somewhere other than KVM_RUN (or that missed a kick) is kicked again.
        if (Atomics.load(this.ctrl, CTRL.ACK) === before) this.kick();
      }
    });
    this.commandChain = next.catch(() => undefined);
    return next;
  }

  pause(): Promise<void> { return this.command(VcpuCommand.Pause); }
  resume(): Promise<void> { return this.command(VcpuCommand.Resume); }

  async readState(): Promise<{ regs: Regs; sregs: Sregs }> {
    if (this.state() !== 'paused') throw new Error(`vcpu ${this.index}: registers can be read only while paused (state: ${this.state()})`);
    await this.command(VcpuCommand.ReadRegs);
    const off = CTRL.REGS_BYTE_OFFSET;
    return {
      regs: regsFromBuffer(this.ctrlBytes.slice(off, off + abi.kvm_regs.sizeBytes)),
      sregs: sregsFromBuffer(this.ctrlBytes.slice(off + abi.kvm_regs.sizeBytes, off + abi.kvm_regs.sizeBytes + abi.kvm_sregs.sizeBytes)),
    };
  }

  async stop(): Promise<void> {
    if (!this.worker) return;
    this.stopping = true;
    if (this.state() !== 'stopped') await this.command(VcpuCommand.Stop);
    // A worker waiting on the mailbox is released by a response.
    if (Atomics.load(this.ctrl, CTRL.MBOX) === Mbox.Request) {
      Atomics.store(this.ctrl, CTRL.MBOX, Mbox.Response);
      Atomics.notify(this.ctrl, CTRL.MBOX);
    }
    await this.exited;
    this.worker = null;
  }

  stats(): VcpuStats {
    const byReason: VcpuStats['byReason'] = {};
    for (let r = 0; r < STAT_REASONS; r++) {
      const exits = Atomics.load(this.ctrl, CTRL.STAT_EXIT_BASE + r);
      if (exits === 0) continue;
      byReason[abi.KVM_EXIT_NAMES[r] ?? `reason ${r}`] = { exits, syscalls: Atomics.load(this.ctrl, CTRL.STAT_SYSCALL_BASE + r) };
    }
    return {
      exits: Atomics.load(this.ctrl, CTRL.STAT_EXITS), kicks: Atomics.load(this.ctrl, CTRL.STAT_KICKS),
      kickSeq: Atomics.load(this.ctrl, CTRL.KICK_SEQ), kickAck: Atomics.load(this.ctrl, CTRL.KICK_ACK), byReason,
      mwaitIdle: Atomics.load(this.ctrl, CTRL.STAT_MWAIT_IDLE),
    };
  }

  close(): void {
    this.vcpu.close();
  }
}
