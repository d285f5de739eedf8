// A tsvmm machine: one VM with its RAM, in-kernel interrupt controllers and PIT, COM1, i8042,
// debug-exit, virtio-mmio devices (virtio-devices.ts), and N vCPU threads. Builds the guest's boot
// state and runs it until it ends.
import { Bus, offsetDevice, type BusDevice } from '../bus/bus.js';
import { loadGuest, type LoadedGuest } from '../boot/loader.js';
import * as fs from 'node:fs';
import { cpuidForVcpu, hostHasInvariantTsc, setInvariantTsc, withoutInKernelApicFeatures } from '../boot/cpuid.js';
import * as layout from '../boot/layout.js';
import { AcpiPm, PM1_CNT_BYTES, PM1_EVT_BYTES, PM_TMR_BYTES } from '../devices/acpi-pm.js';
import { I8042 } from '../devices/i8042.js';
import { Serial8250 } from '../devices/serial8250.js';
import type { ExitHandlers, HvVcpu, HvVm, Hypervisor, IrqchipMode, VcpuLocalDevice } from '../hypervisor/types.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { ConsoleSink } from './console.js';
import { attachVirtioDevices, virtioAcpiDevices, type VirtioSlot, type VirtioSlotConfig } from './virtio-devices.js';
import { attachVirtioPci, type VirtioPciHost } from './virtio-pci-devices.js';
import { DeferredWorkQueue } from './deferred-work.js';
import { MemoryMap } from './memory-map.js';
import { TRAPPED_MSRS, UserspaceIrqchip } from './userspace-irqchip.js';

/** Deferred work waits at most this long for an idle vCPU. */
const DEFERRED_WORK_MAX_DELAY_NS = 10_000_000n;

/** Boot RAM regions are named ram0 (below the MMIO hole) and ram1 (from 4 GiB). */
export const RAM_REGION_PREFIX = 'ram';

export interface MachineConfig {
  kernel: Uint8Array;
  kernelName: string;
  initrd?: Uint8Array | null;
  cmdline: string;
  cpus: number;
  memoryBytes: number;
  console: ConstructorParameters<typeof ConsoleSink>[0];
  /** keep every serial byte in `serialOutput()` (tests) */
  captureSerial?: boolean;
  /** log unclaimed accesses to stderr (once per address) */
  logUnclaimed?: boolean;
  /** offer INVTSC (CPUID 0x80000007 EDX bit 8): 'auto' when the host TSC is invariant; on blocks migration */
  invtsc?: 'on' | 'off' | 'auto';
  /** tests: a port whose writes make the vCPU thread add 1 to RAX through the state cache */
  regsProbePort?: number;
  /**
   * Whose interrupt controllers: KVM's in-kernel PIC, IOAPIC, LAPICs and PIT ('kernel', the
   * default), or tsvmm's own (src/vmm/userspace-irqchip.ts), with HLT exiting to the VMM.
   */
  irqchip?: IrqchipMode;
  /** tests: a port whose write of N makes the writing vCPU's thread kick vCPU N */
  kickPeerPort?: number;
  /**
   * tests and benchmarks: the probe goes through the state cache (default) or straight ioctls;
   * 'fpu' makes it a probe of the cache's two views of the FPU state (XSAVE and KVM_GET_FPU)
   */
  regsProbeVia?: 'cache' | 'ioctl' | 'fpu';
  /**
   * virtio devices, in slot order (slot n at VIRTIO_MMIO_BASE_GPA + n * VIRTIO_MMIO_STRIDE_BYTES,
   * GSI VIRTIO_MMIO_FIRST_IRQ + n). The machine closes them when it goes, even if it fails to start.
   */
  virtio?: readonly VirtioSlotConfig[];
  /**
   * Dirty pages from KVM's per-vCPU dirty rings instead of KVM_GET_DIRTY_LOG, where the host has
   * them (off by default; machine.memoryMap.usesDirtyRing tells whether the host had them).
   */
  dirtyRing?: boolean;
}

export interface MachineResult {
  /** process exit status: the guest's debug-exit value, 0 for reset/power-off, 1 for a VMM-side stop */
  status: number;
  reason: string;
  fatal?: string;
}

export class Machine implements ExitHandlers {
  readonly memory: GuestMemory;
  readonly pioBus = new Bus('pio');
  readonly mmioBus = new Bus('mmio');
  readonly vcpus: HvVcpu[] = [];
  readonly serial: Serial8250;
  readonly guest: LoadedGuest;
  readonly unclaimed = new Map<string, number>();
  /** Why this VM must not be snapshotted or migrated; snapshot and migration code refuse while non-empty. */
  readonly migrationBlockers: string[] = [];
  /** the hypervisor VM, for wiring devices (ioeventfd, irqfd) */
  readonly vm: HvVm;
  /** the guest memory map: regions, memslots, dirty tracking (see memory-map.ts) */
  readonly memoryMap: MemoryMap;
  /** tsvmm's own interrupt controllers, with `irqchip: 'userspace'` */
  readonly irqchip: UserspaceIrqchip | null = null;
  /**
   * VMM work that can wait: run when a vCPU halts (userspace irqchip: HLT exits to the VMM), or at
   * the item's deadline otherwise. Any subsystem may post to it.
   */
  readonly deferredWork = new DeferredWorkQueue({
    nowNs: () => process.hrtime.bigint(),
    defaultMaxDelayNs: DEFERRED_WORK_MAX_DELAY_NS,
    armFallback: (deadlineNs) => this.armDeferredWorkFallback(deadlineNs),
    onError: (name, e) => process.stderr.write(`tsvmm: deferred work "${name}" failed: ${(e as Error)?.message ?? String(e)}\n`),
  });
  private fallbackTimer: NodeJS.Timeout | null = null;
  /** the virtio devices in their slots (empty without config.virtio) */
  virtioSlots: readonly VirtioSlot[] = [];
  /** the PCI host bridge and its virtio-pci devices (null: no device asked for PCI, and the machine has no PCI) */
  virtioPci: VirtioPciHost | null = null;
  private readonly console: ConsoleSink;
  private result: MachineResult | null = null;
  private finished!: (r: MachineResult) => void;
  private readonly done = new Promise<MachineResult>((res) => { this.finished = res; });
  private stopped = false;
  private virtioClosed = false;
  private readonly startedAtNs = process.hrtime.bigint();
  firstSerialByteNs: bigint | null = null;

  constructor(private readonly hv: Hypervisor, readonly config: MachineConfig) {
    try {
      this.vm = hv.createVm();
    } catch (e) {
      this.closeVirtioConfigs();
      throw e;
    }
    try {
      const userspaceIrqchip = config.irqchip === 'userspace';
      // Without KVM's APIC, KVM drops IA32_TSC_DEADLINE writes: the guest gets TSC-deadline mode
      // only when the MSR can be trapped to our LAPIC.
      let msrsTrapped = false;
      if (userspaceIrqchip) {
        this.irqchip = new UserspaceIrqchip({ cpus: config.cpus });
        this.irqchip.register(this.pioBus, this.mmioBus);
        msrsTrapped = this.vm.trapMsrs(TRAPPED_MSRS);
      } else this.vm.createInterruptControllers();
      // RAM: below the 32-bit MMIO hole, and the rest from 4 GiB; one host allocation and one
      // region each, committed before any vCPU exists.
      this.memoryMap = new MemoryMap({
        vm: this.vm, makeView: (hva, size) => hv.viewOf(hva, size), vcpus: () => this.vcpus, dirtyRing: config.dirtyRing === true,
      });
      const tx = this.memoryMap.begin();
      layout.ramRegions(config.memoryBytes).forEach((s, i) => {
        const id = `${RAM_REGION_PREFIX}${i}`;
        this.memoryMap.defineHost(id, { ...hv.allocateRam(s.sizeBytes), sizeBytes: s.sizeBytes });
        tx.add({ id, kind: 'ram', gpa: s.gpa, sizeBytes: s.sizeBytes, priority: 0, backing: { hostId: id, offsetBytes: 0 } });
      });
      this.memoryMap.commitNow(tx);
      this.memory = this.memoryMap.memory;

      this.console = new ConsoleSink(config.console);
      if (config.captureSerial) this.console.captured = [];
      this.serial = new Serial8250({
        output: (b) => {
          if (this.firstSerialByteNs === null) this.firstSerialByteNs = process.hrtime.bigint();
          this.console.write(b);
        },
        setIrq: (level) => this.irqLine(layout.COM1_IRQ, level),
      });
      this.pioBus.insert(layout.COM1_PORT, 8, 'com1', this.serial);
      const i8042 = new I8042(() => this.end({ status: 0, reason: 'i8042 reset' }));
      insertI8042(this.pioBus, i8042);
      // The FADT's PM1a blocks and PM timer: Linux's clocksource and its ACPI power-off (\_S5).
      const acpiPm = new AcpiPm({
        nowNs: () => process.hrtime.bigint(),
        sleep: (slpTyp) => { if (slpTyp === layout.ACPI_S5_SLP_TYP) this.end({ status: 0, reason: 'acpi power-off' }); },
      });
      this.pioBus.insert(layout.ACPI_PM1A_EVT_PORT, PM1_EVT_BYTES, 'acpi-pm1a-evt', acpiPm.eventBlock);
      this.pioBus.insert(layout.ACPI_PM1A_CNT_PORT, PM1_CNT_BYTES, 'acpi-pm1a-cnt', acpiPm.controlBlock);
      this.pioBus.insert(layout.ACPI_PM_TMR_PORT, PM_TMR_BYTES, 'acpi-pm-tmr', acpiPm.timer);
      const virtio = (config.virtio ?? []).filter((c) => (c.transport ?? 'mmio') === 'mmio');
      const chip = this.irqchip;
      const pulse = chip ? (gsi: number) => ({ trigger: () => { chip.setIrq(gsi, 1); chip.setIrq(gsi, 0); }, remove: () => {} }) : undefined;
      if (virtio.length > 0) this.virtioSlots = attachVirtioDevices(virtio, this.vm, this.memory, this.mmioBus, pulse);
      // virtio-pci: MSI-X through an irqfd per vector on a GSI routed to its message (KVM's
      // irqchip), or to the userspace APIC bus; INTA# through irqLine.
      this.virtioPci = attachVirtioPci(config.virtio ?? [], {
        vm: this.vm, memory: this.memory, pioBus: this.pioBus, mmioBus: this.mmioBus,
        signalMsi: chip ? (lo, hi, data) => chip.signalMsi(lo, hi, data) : (lo, hi, data) => this.vm.signalMsi(lo, hi, data),
        ...(chip ? {} : { msiRoute: (lo: number, hi: number, data: number) => this.vm.addMsiRoute(lo, hi, data) }),
        irqLine: (gsi, level) => this.irqLine(gsi, level),
      });

      this.guest = loadGuest(this.memory, {
        kernel: config.kernel, kernelName: config.kernelName, initrd: config.initrd ?? null,
        cmdline: config.cmdline, cpus: config.cpus, memoryBytes: config.memoryBytes,
        virtioMmio: virtioAcpiDevices(virtio.length), ...(this.virtioPci ? { pci: this.virtioPci.acpi } : {}),
      });

      const invtsc = (config.invtsc ?? 'auto') === 'auto' ? hostInvariantTsc() : config.invtsc === 'on';
      if (invtsc) {
        this.migrationBlockers.push('INVTSC is offered to the guest (--cpu-invtsc): a guest that relies on an invariant TSC cannot move to a host with another TSC rate');
      }
      let supported = setInvariantTsc(hv.supportedCpuid(), invtsc);
      if (userspaceIrqchip) supported = withoutInKernelApicFeatures(supported, { tscDeadline: msrsTrapped });
      for (let i = 0; i < config.cpus; i++) {
        const v = this.vm.createVcpu(i);
        v.setCpuid(cpuidForVcpu(supported, i, config.cpus));
        this.vcpus.push(v);
      }
      const bsp = this.vcpus[0]!;
      // KVM's LAPIC needs LINT0/LINT1 set as firmware leaves them; ours starts that way.
      if (!userspaceIrqchip) bsp.setupLint();
      else if (msrsTrapped) this.irqchip!.setTscClock(bsp.tscClock());
      const state = this.guest.bootState(bsp.getSregs());
      bsp.setSregs(state.sregs);
      bsp.setRegs(state.regs);
    } catch (e) {
      this.release();
      throw e;
    }
  }

  /** Starts every vCPU thread; resolves when all are running. */
  async start(): Promise<void> {
    const local: VcpuLocalDevice[] = [
      { kind: 'debug-exit', port: layout.DEBUG_EXIT_PORT, sizeBytes: layout.DEBUG_EXIT_PORT_SIZE },
      { kind: 'sink', port: layout.POST_PORT, sizeBytes: 1 },
    ];
    if (this.config.kickPeerPort !== undefined) local.push({ kind: 'kick-peer', port: this.config.kickPeerPort, sizeBytes: 1 });
    if (this.config.regsProbePort !== undefined) local.push({ kind: this.config.regsProbeVia === 'ioctl' ? 'regs-probe-ioctl' : this.config.regsProbeVia === 'fpu' ? 'regs-probe-fpu' : 'regs-probe', port: this.config.regsProbePort, sizeBytes: 1 });
    // All at once: an AP that is not in KVM_RUN yet when the BSP sends INIT/SIPI still gets them,
    // because the in-kernel LAPIC latches them until the AP runs.
    this.irqchip?.attach(this.vcpus);
    await Promise.all(this.vcpus.map((v) => v.start(this, local, this.config.irqchip ?? 'kernel')));
  }

  /** How the machine ended, once it has (set before its RAM and vCPUs are released); else null. */
  get endResult(): MachineResult | null {
    return this.result;
  }

  /** Resolves when the guest ends (debug-exit, reset) or a vCPU cannot go on. */
  wait(): Promise<MachineResult> {
    return this.done;
  }

  async run(): Promise<MachineResult> {
    await this.start();
    return this.wait();
  }

  serialOutput(): string {
    return Buffer.from(this.console.captured ?? []).toString('latin1');
  }

  // ---- ExitHandlers (main thread) ----
  pio(_vcpu: number, port: number, isWrite: boolean, data: Uint8Array): void {
    if (!this.pioBus.access(port, isWrite, data)) this.noteUnclaimed('port', port, isWrite, data);
  }

  mmio(vcpu: number, gpa: number, isWrite: boolean, data: Uint8Array): void {
    if (this.irqchip?.mmio(vcpu, gpa, isWrite, data)) return;
    // Memory in the current map: the vCPU hit the gap of a map change, or wrote to read-only memory.
    if (this.memoryMap.completeAgainstRam(gpa, isWrite, data)) return;
    if (!this.mmioBus.access(gpa, isWrite, data)) this.noteUnclaimed('mmio', gpa, isWrite, data);
  }

  private noteUnclaimed(space: 'port' | 'mmio', addr: number, isWrite: boolean, data: Uint8Array): void {
    if (!isWrite) data.fill(0xff); // nothing drives the bus: reads float high
    const key = `${space} 0x${addr.toString(16)}`;
    const n = this.unclaimed.get(key) ?? 0;
    this.unclaimed.set(key, n + 1);
    if (n === 0 && this.config.logUnclaimed) {
      process.stderr.write(`tsvmm: unclaimed ${space} ${isWrite ? 'write' : 'read'} at 0x${addr.toString(16)} (size ${data.length}); further accesses there are counted, not logged\n`);
    }
  }

  interruptAck(vcpu: number): number {
    return this.irqchip?.interruptAck(vcpu) ?? -1;
  }

  timerDue(vcpu: number): void {
    this.irqchip?.timerDue(vcpu);
  }

  msr(vcpu: number, index: number, isWrite: boolean, data: Uint8Array): boolean {
    return this.irqchip?.msr(vcpu, index, isWrite, data) ?? false;
  }

  /** A halted vCPU hands its idle time to deferred work, up to its next timer. */
  idle(vcpu: number): void {
    const until = this.irqchip?.deadlineOf(vcpu) ?? null;
    if (this.deferredWork.wantsIdleTime(until)) this.deferredWork.runIdle(until);
  }

  /** Drives interrupt line `gsi` of whichever interrupt controllers the machine has. */
  irqLine(gsi: number, level: 0 | 1): void {
    if (this.irqchip) this.irqchip.setIrq(gsi, level);
    else this.vm.irqLine(gsi, level);
  }

  guestExit(_vcpu: number, status: number, reason: string): void {
    this.end({ status, reason });
  }

  fatal(_vcpu: number, report: string): void {
    this.end({ status: 1, reason: 'vcpu stopped', fatal: report });
  }

  /** Halting vCPUs offer their time while work is queued; a timer runs it at its deadline anyway. */
  private armDeferredWorkFallback(deadlineNs: bigint | null): void {
    for (const v of this.vcpus) v.offerIdleWork(deadlineNs !== null);
    if (this.fallbackTimer) clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
    if (deadlineNs === null || this.stopped) return;
    // Rounded up: the event loop's clock counts whole milliseconds, and a timer that fires before
    // the deadline runs nothing (runDue then arms it again).
    const ms = Math.max(0, Math.ceil(Number(deadlineNs - process.hrtime.bigint()) / 1e6));
    this.fallbackTimer = setTimeout(() => { this.fallbackTimer = null; this.deferredWork.runDue(); }, ms);
    this.fallbackTimer.unref();
  }

  private end(r: MachineResult): void {
    if (this.result) return;
    this.result = r;
    void this.shutdown().then(() => this.finished(r));
  }

  /** Stops every vCPU and frees the VM. Safe to call more than once. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.fallbackTimer) clearTimeout(this.fallbackTimer);
    await Promise.all(this.vcpus.map((v) => v.stop()));
    this.console.flush();
    this.release();
    if (!this.result) {
      this.result = { status: 1, reason: 'stopped by the VMM' };
      this.finished(this.result);
    }
  }

  private release(): void {
    try { this.console?.close(); } catch { /* already closed */ }
    // Before the VM and RAM go: no socket input or device completion may touch guest RAM after.
    this.closeVirtioConfigs();
    try { this.vm.close(); } catch { /* fds already gone */ }
    this.memoryMap?.close();
  }

  /** Detaches every virtio slot, then closes each device's host side (disk file, socket) once. */
  private closeVirtioConfigs(): void {
    if (this.virtioClosed) return;
    this.virtioClosed = true;
    for (const slot of this.virtioSlots ?? []) {
      try { slot.detach(); } catch (e) {
        process.stderr.write(`tsvmm: detaching virtio slot ${slot.index} (${slot.config.label}): ${(e as Error).message}\n`);
      }
    }
    try { this.virtioPci?.detach(); } catch (e) {
      process.stderr.write(`tsvmm: detaching the virtio-pci devices: ${(e as Error).message}\n`);
    }
    for (const c of this.config.virtio ?? []) {
      try { c.close?.(); } catch (e) {
        process.stderr.write(`tsvmm: closing virtio device ${c.label}: ${(e as Error).message}\n`);
      }
    }
  }

  elapsedToFirstSerialByteMs(): number | null {
    return this.firstSerialByteNs === null ? null : Number(this.firstSerialByteNs - this.startedAtNs) / 1e6;
  }
}

function hostInvariantTsc(): boolean {
  try {
    return hostHasInvariantTsc(fs.readFileSync('/proc/cpuinfo', 'latin1'));
  } catch {
    return false;
  }
}

/**
 * Puts the i8042 on the port bus as two one-byte ranges, 0x60 and 0x64, not 0x60+5: port 0x61 is
 * NMI_SC, which the userspace irqchip's PIT owns.
 */
export function insertI8042(pioBus: Bus, i8042: BusDevice): void {
  pioBus.insert(layout.I8042_DATA_PORT, 1, 'i8042', i8042);
  pioBus.insert(layout.I8042_COMMAND_PORT, 1, 'i8042', offsetDevice(i8042, layout.I8042_COMMAND_PORT - layout.I8042_DATA_PORT));
}
