// The VMM's own interrupt controllers (`--irqchip userspace`): the 8259 pair, the IOAPIC, one
// local APIC per vCPU and the APIC bus between them, wired to the vCPUs through the hypervisor
// boundary (HvVcpu.setInterruptPending, setTimerDeadline, initIpi, startupIpi, nmi) and to the
// machine's buses. Everything here runs on the main thread; the vCPU threads ask it for vectors
// (interruptAck) and for due timers (timerDue) through their mailboxes.
// Spec: Intel SDM vol. 3A ch. 10 (APIC), 82093AA datasheet (IOAPIC), 8259A datasheet; the PC
// wiring (ISA IRQ n to PIC line n and IOAPIC pin n, IRQ0 to pin 2) is the MADT's (src/boot/acpi.ts).
import type { Bus } from '../bus/bus.js';
import { ApicBus } from '../devices/apic-bus.js';
import { Ioapic } from '../devices/ioapic.js';
import { Lapic } from '../devices/lapic.js';
import { PicPair } from '../devices/pic8259.js';
import { NMI_SC_PORT, NMI_SC_SIZE_BYTES, PIT_CH0, PIT_PORTS_SIZE_BYTES, Pit8254 } from '../devices/pit8254.js';
import type { HvVcpu } from '../hypervisor/types.js';
import * as layout from '../boot/layout.js';
import { ISA_IRQ0_GSI } from '../boot/acpi.js';

/** A timer device whose next event the BSP's vCPU thread waits for (the PIT). */
export interface DeadlineTimer {
  nextDeadlineNs(): bigint | null;
  onTime(nowNs: bigint): void;
}

/** The MSRs this irqchip answers (SDM vol. 4, table 2-2). */
export const MSR_IA32_APICBASE = 0x1b;
export const MSR_IA32_TSC_DEADLINE = 0x6e0;
export const TRAPPED_MSRS: readonly number[] = [MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE];

/** The local APIC's MMIO page (LAPIC_GPA, 4 KiB). */
const LAPIC_PAGE_BYTES = 0x1000;
/** KVM's IOAPIC decodes 0x100 bytes; the MADT gives the guest its base. */
const IOAPIC_WINDOW_BYTES = 0x100;
const ISA_IRQS = 16;
/** MSI addresses are 0xFEEx_xxxx (SDM 10.11.1): bits 31:20. */
const MSI_ADDRESS_PREFIX = 0xfee;

export interface UserspaceIrqchipOptions {
  cpus: number;
  /** the VMM's clock: what the timers count from (process.hrtime.bigint on a machine) */
  nowNs?: () => bigint;
  /** guest TSC frequency, for TSC-deadline mode */
  tscHz?: bigint;
}

export class UserspaceIrqchip {
  readonly pic: PicPair;
  readonly ioapic: Ioapic;
  readonly lapics: Lapic[] = [];
  readonly apicBus = new ApicBus();
  /** The 8254: KVM_CREATE_PIT2 needs KVM's irqchip, so without it the PIT is ours too. */
  readonly pit: Pit8254;
  private vcpus: readonly HvVcpu[] = [];
  private timers: DeadlineTimer[] = [];
  private readonly nowNs: () => bigint;

  constructor(opts: UserspaceIrqchipOptions) {
    this.nowNs = opts.nowNs ?? (() => process.hrtime.bigint());
    // The PIC's INTR reaches the BSP through its LINT0 (virtual wire), as on a PC.
    this.pic = new PicPair(() => this.update(0));
    this.ioapic = new Ioapic((msg) => this.apicBus.deliver(msg), opts.cpus);
    for (let i = 0; i < opts.cpus; i++) {
      const lapic: Lapic = new Lapic({
        nowNs: this.nowNs,
        sendIpi: (msg) => this.apicBus.sendIpi(msg),
        onEoi: (vector) => this.ioapic.eoi(vector),
        timerChanged: () => this.updateDeadline(i),
        interruptPending: () => this.update(i),
        onNmi: () => this.vcpus[i]?.nmi(),
        onInit: () => { this.vcpus[i]?.initIpi(); this.update(i); },
        onStartup: (vector) => this.vcpus[i]?.startupIpi(vector),
      }, { apicId: i, bsp: i === 0, tscHz: opts.tscHz ?? 1_000_000_000n });
      this.lapics.push(lapic);
      this.apicBus.add(lapic);
    }
    // IRQ0 pulses go to PIC line 0 and IOAPIC pin 2 (setIrq(0) does both), and the BSP's thread
    // waits for the PIT's next edge as for its own timer.
    this.pit = new Pit8254({ nowNs: this.nowNs, setIrq0: (level) => this.setIrq(0, level), timerChanged: () => this.updateDeadline(0) });
    this.timers.push(this.pit);
  }

  /** The vCPUs, by index; events before this are kept in the models and signalled on attach. */
  attach(vcpus: readonly HvVcpu[]): void {
    this.vcpus = vcpus;
    for (let i = 0; i < vcpus.length; i++) {
      this.update(i);
      this.updateDeadline(i);
    }
  }

  /** The guest TSC clock (HvVcpu.tscClock), for TSC-deadline mode: guest TSC = tsc at atNs, rising at tscHz. */
  setTscClock(clock: { tscHz: bigint; tsc: bigint; atNs: bigint }): void {
    const tscAtZero = clock.tsc - (clock.atNs * clock.tscHz) / 1_000_000_000n;
    for (const l of this.lapics) l.setTscClock(clock.tscHz, tscAtZero);
  }

  /**
   * The MSRs KVM leaves to the VMM without an in-kernel APIC (trapped with HvVm.trapMsrs):
   * IA32_TSC_DEADLINE, and IA32_APIC_BASE so the model sees the guest enable, disable or move its
   * APIC. False when the access must #GP.
   */
  msr(vcpu: number, index: number, isWrite: boolean, data: Uint8Array): boolean {
    const lapic = this.lapics[vcpu];
    if (lapic === undefined) return false;
    const view = new DataView(data.buffer, data.byteOffset, 8);
    let ok = true;
    if (index === MSR_IA32_TSC_DEADLINE) {
      if (isWrite) lapic.writeTscDeadline(view.getBigUint64(0, true));
      else view.setBigUint64(0, lapic.readTscDeadline(), true);
    } else if (index === MSR_IA32_APICBASE) {
      if (isWrite) ok = lapic.writeApicBase(view.getBigUint64(0, true));
      else view.setBigUint64(0, lapic.readApicBase(), true);
    } else return false;
    this.updateDeadline(vcpu);
    this.update(vcpu);
    return ok;
  }

  /** A timer whose events the BSP's thread waits for (the PIT: its IRQ0 goes to the BSP). */
  addBspTimer(timer: DeadlineTimer): void {
    this.timers.push(timer);
    this.updateDeadline(0);
  }

  /** Call when a BSP timer's next deadline moved. */
  bspTimerChanged(): void {
    this.updateDeadline(0);
  }

  register(pioBus: Bus, mmioBus: Bus): void {
    pioBus.insert(0x20, 2, 'pic-master', this.pic.master);
    pioBus.insert(0xa0, 2, 'pic-slave', this.pic.slave);
    pioBus.insert(0x4d0, 2, 'pic-elcr', this.pic.elcr);
    pioBus.insert(PIT_CH0, PIT_PORTS_SIZE_BYTES, 'pit', this.pit.ports);
    pioBus.insert(NMI_SC_PORT, NMI_SC_SIZE_BYTES, 'nmi-sc', this.pit.nmiSc);
    mmioBus.insert(layout.IOAPIC_GPA, IOAPIC_WINDOW_BYTES, 'ioapic', this.ioapic);
  }

  /**
   * An interrupt line: GSIs 0-15 are ISA IRQs and go to the PIC line and the IOAPIC pin the MADT
   * names (IRQ0 is pin 2); higher GSIs are IOAPIC pins only.
   */
  setIrq(gsi: number, level: 0 | 1): void {
    if (gsi < ISA_IRQS) this.pic.setIrq(gsi, level);
    this.ioapic.setIrq(gsi === 0 ? ISA_IRQ0_GSI : gsi, level);
  }

  /**
   * An MSI (a device's write of `data` to address hi:lo in the 0xFEExxxxx range) onto the APIC
   * bus, decoded as Intel SDM vol. 3A 10.11.1-2 lays it out: address bits 19:12 destination ID,
   * bit 2 destination mode (1 logical); data bits 7:0 vector, 10:8 delivery mode, 15 trigger.
   * Redirection hint (address bit 3) and level (data bit 14) are not modelled; a message outside
   * the interrupt address range is dropped, as is one with an address above 4 GiB.
   */
  signalMsi(addressLo: number, addressHi: number, data: number): void {
    if (addressHi !== 0 || (addressLo >>> 20) !== MSI_ADDRESS_PREFIX) return;
    this.apicBus.deliver({
      dest: (addressLo >>> 12) & 0xff,
      destMode: (addressLo >>> 2) & 1,
      deliveryMode: (data >>> 8) & 0x7,
      vector: data & 0xff,
      trigger: (data >>> 15) & 1,
    });
  }

  /** MMIO of `vcpu`: its own local APIC answers the LAPIC page. False when `gpa` is not the APIC's. */
  mmio(vcpu: number, gpa: number, isWrite: boolean, data: Uint8Array): boolean {
    const lapic = this.lapics[vcpu];
    if (lapic === undefined) return false;
    const base = lapic.baseGpa;
    if (gpa < base || gpa + data.length > base + LAPIC_PAGE_BYTES || !lapic.hardwareEnabled) return false;
    if (isWrite) {
      lapic.write(gpa - base, data);
      // TPR, EOI and ICR writes change what is injectable, for this vCPU or (IPIs) others.
      this.update(vcpu);
    } else lapic.read(gpa - base, data);
    return true;
  }

  /** The INTA cycle for `vcpu`: the vector to inject, or -1. */
  interruptAck(vcpu: number): number {
    const lapic = this.lapics[vcpu]!;
    const vector = lapic.takeInjectableInterrupt(vcpu === 0 ? this.pic : null);
    this.update(vcpu);
    return vector < 0 ? -1 : vector;
  }

  /** `vcpu`'s deadline passed: fire what is due. */
  timerDue(vcpu: number): void {
    const now = this.nowNs();
    this.lapics[vcpu]?.onTime(now);
    if (vcpu === 0) for (const t of this.timers) t.onTime(now);
    this.updateDeadline(vcpu);
    this.update(vcpu);
  }

  /** The earliest timer instant of `vcpu`, or null. */
  deadlineOf(vcpu: number): bigint | null {
    let next = this.lapics[vcpu]?.nextDeadlineNs() ?? null;
    if (vcpu === 0) {
      for (const t of this.timers) {
        const d = t.nextDeadlineNs();
        if (d !== null && (next === null || d < next)) next = d;
      }
    }
    return next;
  }

  private update(vcpu: number): void {
    const v = this.vcpus[vcpu];
    if (v === undefined) return;
    v.setInterruptPending(this.lapics[vcpu]!.hasInjectableInterrupt(vcpu === 0 ? this.pic : null));
  }

  private updateDeadline(vcpu: number): void {
    this.vcpus[vcpu]?.setTimerDeadline(this.deadlineOf(vcpu));
  }
}
