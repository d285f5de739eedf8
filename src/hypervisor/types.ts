// The hypervisor boundary: what the VMM asks of an accelerator, in backend-neutral types.
// Code above this line never sees an ioctl number, an fd or a koffi pointer (Cloud Hypervisor's
// hypervisor crate and QEMU's AccelOpsClass are the models).

export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}
export const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11',
  'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;

export interface Segment {
  base: bigint; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}
export interface DescriptorTable { base: bigint; limit: number }
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DescriptorTable; idt: DescriptorTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
}

export interface CpuidEntry {
  function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number;
}

/** Where a vCPU's device accesses go. Called on the main thread. */
export interface ExitHandlers {
  pio(vcpu: number, port: number, isWrite: boolean, data: Uint8Array): void;
  mmio(vcpu: number, gpa: number, isWrite: boolean, data: Uint8Array): void;
  /** the guest asked to end the VM (debug-exit port, system event) */
  guestExit(vcpu: number, status: number, reason: string): void;
  /** the vCPU cannot go on (emulation failure, triple fault, failed entry); `report` is multi-line */
  fatal(vcpu: number, report: string): void;
  // With the VMM's own interrupt controllers (start(..., 'userspace')):
  /** The interrupt acknowledge cycle: the vector to inject now, or -1 when nothing is injectable any more. */
  interruptAck?(vcpu: number): number;
  /** The deadline given with setTimerDeadline passed: run the timers due (they may raise interrupts). */
  timerDue?(vcpu: number): void;
  /** The vCPU halted and nothing wakes it yet: an idle point for deferred work (see offerIdleWork). */
  idle?(vcpu: number): void;
  /** RDMSR/WRMSR of an MSR given to HvVm.trapMsrs (`data`: 8 bytes, little-endian); false injects #GP. */
  msr?(vcpu: number, index: number, isWrite: boolean, data: Uint8Array): boolean;
}

export type IrqchipMode = 'kernel' | 'userspace';

/** Devices served on the vCPU thread itself, with no round trip to the main thread. */
export type VcpuLocalDevice =
  | { kind: 'debug-exit'; port: number; sizeBytes: number }
  | { kind: 'sink'; port: number; sizeBytes: number }
  /** test device: an `out` here makes the vCPU thread add 1 to RAX and rewrite RIP through the state cache */
  | { kind: 'regs-probe'; port: number; sizeBytes: number }
  | { kind: 'regs-probe-ioctl'; port: number; sizeBytes: number }
  /** test device: an `out` here flips the x87 rounding-control bits through one view of the FPU state (XSAVE, KVM_GET_FPU), then rewrites FCW through the other */
  | { kind: 'regs-probe-fpu'; port: number; sizeBytes: number }
  /** test device: a write of N here makes this vCPU's thread kick vCPU N (itself included) */
  | { kind: 'kick-peer'; port: number; sizeBytes: number };

export interface VcpuStats {
  exits: number;
  kicks: number;
  /** kicks requested, and the last one the vCPU has seen at its command point */
  kickSeq: number;
  kickAck: number;
  /** by exit reason name: exits and the syscalls spent on them (KVM_RUN included) */
  byReason: Record<string, { exits: number; syscalls: number }>;
  /** MWAITs the VMM took as idle points (hosts that hand MONITOR/MWAIT to it, userspace irqchip) */
  mwaitIdle: number;
}

export interface RamSlot { gpa: number; sizeBytes: number; hva: bigint }

/** One memslot: guest-physical [gpa, gpa+sizeBytes) backed by host memory at `hva`. */
export interface HvMemslot {
  gpa: number;
  sizeBytes: number;
  hva: bigint;
  /** guest writes exit as MMIO instead of landing in memory */
  readonly: boolean;
  /** the hypervisor records which pages the guest writes */
  logDirty: boolean;
}

export type VcpuRunState = 'created' | 'running' | 'paused' | 'stopped';

export interface HvVcpu {
  readonly index: number;
  setCpuid(entries: CpuidEntry[]): void;
  /** Initial state, before start(). */
  setRegs(regs: Regs): void;
  setSregs(sregs: Sregs): void;
  getSregs(): Sregs;
  /** Points the local APIC's LINT0 at ExtINT and LINT1 at NMI, as firmware does on the BSP. */
  setupLint(): void;
  /**
   * Starts the vCPU thread. With `irqchip` 'userspace' the VMM emulates the interrupt controllers:
   * HLT exits to the VMM, interrupts are injected when the guest can take them, and an AP waits
   * for its STARTUP IPI (startupIpi) before it first runs.
   */
  start(handlers: ExitHandlers, local: VcpuLocalDevice[], irqchip?: IrqchipMode): Promise<void>;
  // ---- the VMM's own interrupt controllers (start(..., 'userspace')); any thread may call these ----
  /** Whether the controller has an interrupt for this vCPU; true makes it call interruptAck at its next window. */
  setInterruptPending(pending: boolean): void;
  /** The vCPU's next timer instant (process.hrtime.bigint() clock), or null; timerDue is called then, halted or not. */
  setTimerDeadline(deadlineNs: bigint | null): void;
  /** An INIT IPI: the vCPU resets and waits for a STARTUP IPI (an AP; INIT to the BSP stops the VM). */
  initIpi(): void;
  /** A STARTUP IPI: a vCPU waiting for one starts in real mode at `vector << 12`; otherwise ignored. */
  startupIpi(vector: number): void;
  nmi(): void;
  /** Whether a halting vCPU should report its idle time (handlers.idle) before it sleeps. */
  offerIdleWork(on: boolean): void;
  /** Before start(): the guest TSC's rate and its value at one instant of the process.hrtime.bigint() clock. */
  tscClock(): { tscHz: bigint; tsc: bigint; atNs: bigint };
  state(): VcpuRunState;
  kick(): void;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Reads registers on the vCPU's own thread; only while paused. */
  readState(): Promise<{ regs: Regs; sregs: Sregs }>;
  stop(): Promise<void>;
  stats(): VcpuStats;
  /**
   * Run-until: the vCPU leaves KVM_RUN at `deadlineNs` (process.hrtime.bigint() clock) even if
   * the guest never exits; resolves with how late the vCPU noticed it. One deadline at a time:
   * a new one replaces the old.
   */
  runUntil(deadlineNs: bigint): Promise<{ lateNs: bigint }>;
}

export interface HvVm {
  /** How many memslots this VM can have at once. */
  maxMemslots(): number;
  /** Whether memslots can be read-only (guest writes exit as MMIO). */
  supportsReadonlyMemory(): boolean;
  /** Creates memslot `slot`, or changes only its flags when it exists with the same range and backing. */
  setMemslot(slot: number, m: HvMemslot): void;
  deleteMemslot(slot: number, gpa: number): void;
  /** The slot's dirty page bitmap since the last call (one bit per 4 KiB page, LSB first), cleared by the read. */
  getDirtyLog(slot: number, pages: number): BigUint64Array;
  /**
   * Records dirty pages in per-vCPU rings of `sizeBytes` each instead of per-slot bitmaps (a power
   * of two, at least 4096; more than the host allows is cut to its maximum). Only before any vCPU
   * is created. False, with nothing changed, when the host has no dirty ring. Once on, getDirtyLog
   * must not be called: slots with logDirty report their pages through harvestDirtyRings.
   * `onFull` runs on the main thread when a vCPU's ring is full; that vCPU stays out of the guest
   * until it returns, so it must harvest and reset.
   */
  enableDirtyRing(sizeBytes: number, onFull: () => void): boolean;
  /**
   * Takes every dirty entry from every vCPU's ring, in ring order: `sink(slot, pageOffset)` (page
   * number within the memslot) for each, as the hypervisor wrote it, so possibly naming a slot
   * that has gone since. Returns how many; after a non-zero harvest, call resetDirtyRings before
   * reading those pages. Pages a running vCPU dirtied may reach its ring only at its next exit.
   */
  harvestDirtyRings(sink: (slot: number, pageOffset: number) => void): number;
  /** Gives the harvested ring entries back; the hypervisor tracks writes to those pages again. Returns how many. */
  resetDirtyRings(): number;
  /**
   * Brackets a series of memslot changes made while vCPUs run. A vCPU whose instruction fetch
   * failed because it hit the gap between a delete and a create enters again once the change is
   * over, instead of reporting an emulation failure.
   */
  beginMapChange(): void;
  /** `ram`: the RAM regions of the map after the change, for the vCPU threads' own view of guest RAM. */
  endMapChange(ram?: readonly RamSlot[]): void;
  /** In-kernel PIC, IOAPIC, LAPICs and PIT. */
  createInterruptControllers(): void;
  irqLine(gsi: number, level: 0 | 1): void;
  /**
   * Sends one MSI (a device's write of `data` to address hi:lo) to the in-kernel LAPICs; needs
   * createInterruptControllers. The VMM's own irqchip takes MSIs itself (UserspaceIrqchip.signalMsi).
   */
  signalMsi(addressLo: number, addressHi: number, data: number): void;
  /**
   * A GSI of its own routed to this message, with an irqfd on it: trigger() sends the message from
   * any thread with one eventfd write, and the hypervisor delivers it (as QEMU routes each MSI-X
   * vector for KVM). Needs createInterruptControllers; throws when the host cannot route MSIs.
   */
  addMsiRoute(addressLo: number, addressHi: number, data: number): HvMsiRoute;
  createVcpu(index: number): HvVcpu;
  /**
   * Guest writes to [addr, addr+len) (equal to `datamatch`, when given) are counted inside the
   * hypervisor with no vCPU exit; `onNotify(count)` runs on the event loop with how many came.
   */
  addIoEventFd(space: 'pio' | 'mmio', addr: number, len: number, datamatch: number | null,
    onNotify: (count: bigint) => void): { remove(): void };
  /** An interrupt line that any thread can raise without a syscall into the VMM's main thread. */
  addIrqFd(gsi: number): { trigger(): void; remove(): void };
  /**
   * RDMSR and WRMSR of these MSRs exit to the VMM (ExitHandlers.msr) instead of being the
   * hypervisor's; false (nothing changed) when the host cannot do that. Before any vCPU runs.
   */
  trapMsrs(indices: readonly number[]): boolean;
  close(): void;
}

/** An MSI message behind an irqfd (HvVm.addMsiRoute). */
export interface HvMsiRoute {
  readonly gsi: number;
  trigger(): void;
  /** The vector was reprogrammed: the GSI now sends this message (the whole routing table is rewritten). */
  update(addressLo: number, addressHi: number, data: number): void;
  remove(): void;
}

export interface Hypervisor {
  readonly name: string;
  maxVcpus(): number;
  supportedCpuid(): CpuidEntry[];
  /** guest RAM allocation; freed with the VM */
  allocateRam(sizeBytes: number): { hva: bigint; view: ArrayBuffer; free(): void };
  viewOf(hva: bigint, sizeBytes: number): ArrayBuffer;
  createVm(): HvVm;
}
