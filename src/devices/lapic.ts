// One vCPU's local APIC in xAPIC mode: the MMIO register file, interrupt acceptance and priority
// (IRR/ISR/TMR, TPR/PPR), EOI, IPIs through the ICR, LVTs and the timer (one-shot, periodic,
// TSC-deadline), plus the IA32_APIC_BASE and IA32_TSC_DEADLINE MSRs.
// Spec: Intel SDM vol. 3A ch. 10; names as in Linux arch/x86/include/asm/apicdef.h and
// arch/x86/include/asm/msr-index.h. Where the SDM leaves a choice, KVM's arch/x86/kvm/lapic.c is
// followed (it is what guests are tested against).
//
// The timer is deadline-driven: nothing here polls. The VMM asks `nextDeadlineNs()`, arranges to
// call `onTime()` then (e.g. a vCPU run-until deadline), and re-asks when `timerChanged` fires.
//
// Not modelled: x2APIC (setting IA32_APIC_BASE.EXTD is refused, so CPUID must not offer it),
// SMI (dropped), directed EOI / EOI-broadcast suppression, the focus processor, CMCI and the
// remote read delivery mode, the delivery-status (send pending) bit (an IPI is delivered before
// the ICR write returns, so it always reads idle), LINT0/LINT1 remote IRR.
import {
  APIC_DELIVERY_MODE_EXTINT, APIC_DELIVERY_MODE_FIXED, APIC_DELIVERY_MODE_INIT, APIC_DELIVERY_MODE_LOWESTPRIO,
  APIC_DELIVERY_MODE_NMI, APIC_DELIVERY_MODE_STARTUP, APIC_TRIGGER_EDGE, APIC_TRIGGER_LEVEL, type IpiMessage,
} from './apic-message.js';
import type { BusDevice } from '../bus/bus.js';
import { IrqchipError } from './irqchip-error.js';

export type { IpiMessage } from './apic-message.js';

/** Register offsets within the 4 KiB xAPIC page. */
export const APIC_ID = 0x20;
export const APIC_LVR = 0x30;
export const APIC_TASKPRI = 0x80; // TPR
export const APIC_ARBPRI = 0x90; // APR
export const APIC_PROCPRI = 0xa0; // PPR
export const APIC_EOI = 0xb0;
export const APIC_RRR = 0xc0;
export const APIC_LDR = 0xd0;
export const APIC_DFR = 0xe0;
export const APIC_SPIV = 0xf0;
export const APIC_ISR = 0x100; // 8 registers, 0x10 apart
export const APIC_TMR = 0x180;
export const APIC_IRR = 0x200;
export const APIC_ESR = 0x280;
export const APIC_ICR = 0x300;
export const APIC_ICR2 = 0x310;
export const APIC_LVTT = 0x320;
export const APIC_LVTTHMR = 0x330;
export const APIC_LVTPC = 0x340;
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
export const APIC_LVTERR = 0x370;
export const APIC_TMICT = 0x380;
export const APIC_TMCCT = 0x390;
export const APIC_TDCR = 0x3e0;
export const APIC_MMIO_SIZE_BYTES = 0x1000;

/** Version register: integrated APIC 0x14, six LVT entries (timer, thermal, perf, LINT0/1, error). */
export const APIC_VERSION = 0x14;
export const APIC_MAX_LVT = 5;
export const APIC_SPIV_APIC_ENABLED = 1 << 8;
export const APIC_SPIV_FOCUS_DISABLED = 1 << 9;
export const APIC_VECTOR_MASK = 0xff;
export const APIC_MODE_MASK = 0x700;
export const APIC_SEND_PENDING = 1 << 12;
export const APIC_INPUT_POLARITY = 1 << 13;
export const APIC_LVT_REMOTE_IRR = 1 << 14;
export const APIC_LVT_LEVEL_TRIGGER = 1 << 15;
export const APIC_LVT_MASKED = 1 << 16;
export const APIC_LVT_TIMER_ONESHOT = 0 << 17;
export const APIC_LVT_TIMER_PERIODIC = 1 << 17;
export const APIC_LVT_TIMER_TSCDEADLINE = 2 << 17;
export const APIC_LVT_TIMER_MASK = 3 << 17;
/** ICR low bits. */
export const APIC_DEST_LOGICAL = 0x800;
export const APIC_ICR_BUSY = 0x1000;
export const APIC_INT_ASSERT = 0x4000;
export const APIC_INT_LEVELTRIG = 0x8000;
export const APIC_DEST_SELF = 0x40000;
export const APIC_DEST_ALLINC = 0x80000;
export const APIC_DEST_ALLBUT = 0xc0000;
export const APIC_DM_FIXED = 0x000;
export const APIC_DM_LOWEST = 0x100;
export const APIC_DM_NMI = 0x400;
export const APIC_DM_INIT = 0x500;
export const APIC_DM_STARTUP = 0x600;
export const APIC_DM_EXTINT = 0x700;
/** DFR models (bits 31:28). */
export const APIC_DFR_FLAT = 0xffff_ffff;
export const APIC_DFR_CLUSTER = 0x0fff_ffff;
/** Error status bits. */
export const APIC_ESR_SENDILL = 0x20;
export const APIC_ESR_RECVILL = 0x40;
/** Timer divide configuration: bits 0, 1 and 3 (SDM figure 10-10). */
export const APIC_TDR_DIV_1 = 0xb;
export const APIC_TDR_DIV_2 = 0x0;
export const APIC_TDR_DIV_16 = 0x3;
export const APIC_TDR_DIV_128 = 0xa;

export const MSR_IA32_APICBASE = 0x1b;
export const MSR_IA32_TSC_DEADLINE = 0x6e0;
export const MSR_IA32_APICBASE_BSP = 1n << 8n;
export const X2APIC_ENABLE = 1n << 10n;
export const MSR_IA32_APICBASE_ENABLE = 1n << 11n;
/** Base address field, up to a 52-bit physical address. */
export const MSR_IA32_APICBASE_BASE = 0xf_ffff_ffff_f000n;
export const APIC_DEFAULT_PHYS_BASE = 0xfee0_0000;

/**
 * KVM's min_timer_period_us: a periodic timer faster than this is slowed to it, so a guest cannot
 * make the VMM spin on timer expiries.
 */
export const APIC_MIN_PERIOD_NS = 200_000n;
const NS_PER_S = 1_000_000_000n;
const NO_VECTOR = -1;

/** LVT registers in offset order, and the bits the guest may write in each. */
const LVT_MASK = APIC_LVT_MASKED | APIC_VECTOR_MASK;
const LINT_MASK = LVT_MASK | APIC_MODE_MASK | APIC_INPUT_POLARITY | APIC_LVT_LEVEL_TRIGGER;
const LVT_WRITABLE = [LVT_MASK | APIC_LVT_TIMER_MASK, LVT_MASK | APIC_MODE_MASK, LVT_MASK | APIC_MODE_MASK, LINT_MASK, LINT_MASK, LVT_MASK];
const LVT_TIMER = 0;
const LVT_LINT0 = 3;
const LVT_LINT1 = 4;
const LVT_ERROR = 5;
const ICR_WRITABLE = 0x000c_cfff; // everything but the busy bit and reserved ones

/** What the LAPIC needs from the VMM. Every callback but `nowNs` may be left out. */
export interface LapicHost {
  /** The VMM's monotonic clock in ns; the timer and the guest TSC are read from it. */
  nowNs(): bigint;
  /** An ICR write: route the IPI on the APIC bus (the message object is reused; copy it). */
  sendIpi?(msg: Readonly<IpiMessage>): void;
  /** EOI of a level-triggered vector (TMR set): broadcast it to the IOAPICs. */
  onEoi?(vector: number): void;
  /** `nextDeadlineNs()` changed: re-arm the vCPU's wake-up. */
  timerChanged?(): void;
  /** Something became injectable (see `hasInjectableInterrupt`): kick the vCPU or open an interrupt window. */
  interruptPending?(): void;
  /** An NMI was delivered (LINT1, IPI or IOAPIC): inject it (KVM_NMI). */
  onNmi?(): void;
  /** An INIT was delivered: the LAPIC has reset itself; the VMM resets the vCPU (an AP then waits for SIPI). */
  onInit?(): void;
  /** A SIPI reached a vCPU waiting for one: start it in real mode at CS = vector << 8, IP = 0. */
  onStartup?(vector: number): void;
}

export interface LapicOptions {
  apicId: number;
  /** the bootstrap processor: APIC_BASE.BSP set, LINT0 in ExtINT (virtual wire) at reset, no wait for SIPI */
  bsp: boolean;
  /** guest TSC frequency in Hz, for TSC-deadline mode */
  tscHz: bigint;
  /** guest TSC value at `nowNs() === 0` (guest TSC = tscAtZero + nowNs * tscHz / 1e9) */
  tscAtZero?: bigint;
  /** the timer's input clock before the divider; default 1 GHz, KVM's APIC bus clock */
  timerHz?: bigint;
}

/** The PIC side of ExtINT: the 8259's INTR pin and INTA cycle. */
export interface ExtIntSource {
  hasInterrupt(): boolean;
  acknowledge(): number;
}

/** ceil(a / b) for b > 0 and any sign of a (BigInt division truncates toward zero). */
function ceilDiv(a: bigint, b: bigint): bigint {
  return a > 0n ? (a + b - 1n) / b : a / b;
}

/** Highest set bit of a 256-bit register held as eight 32-bit words, or NO_VECTOR. */
function highestBit(words: Uint32Array): number {
  for (let i = 7; i >= 0; i--) {
    const w = words[i]!;
    if (w !== 0) return i * 32 + 31 - Math.clz32(w);
  }
  return NO_VECTOR;
}

const setBit = (words: Uint32Array, v: number) => { words[v >> 5] = words[v >> 5]! | (1 << (v & 31)); };
const clearBit = (words: Uint32Array, v: number) => { words[v >> 5] = words[v >> 5]! & ~(1 << (v & 31)); };
const testBit = (words: Uint32Array, v: number) => (words[v >> 5]! & (1 << (v & 31))) !== 0;

export class Lapic implements BusDevice {
  private apicBase: bigint;
  private idReg: number;
  private tpr = 0;
  private ldr = 0;
  private dfr = APIC_DFR_FLAT;
  private svr = 0xff;
  private readonly isr = new Uint32Array(8);
  private readonly tmr = new Uint32Array(8);
  private readonly irr = new Uint32Array(8);
  private esr = 0;
  private esrPending = 0;
  private icrLow = 0;
  private icrHigh = 0;
  private readonly lvt = new Uint32Array(6);
  private tmict = 0;
  private tdcr = 0;
  private extIntPending = false;
  private waitingForSipi: boolean;

  // Timer: expiry k (k = 1, 2, ...) of the current arming is at epoch + ceil(k * num / den) ns.
  private timerArmed = false;
  private timerEpochNs = 0n;
  private timerPeriodNum = 1n;
  private timerPeriodDen = 1n;
  /** expiries already fired in this arming */
  private timerFired = 0n;
  /** IA32_TSC_DEADLINE; 0 = disarmed */
  private tscDeadline = 0n;
  private lastDeadlineNs: bigint | null = null;

  private tscHz: bigint;
  private tscAtZero: bigint;
  private readonly timerHz: bigint;
  private readonly ipi: IpiMessage = {
    destination: 0, destMode: 0, shorthand: 0, deliveryMode: 0, vector: 0, level: 0, trigger: 0, sourceId: 0,
  };

  constructor(private readonly host: LapicHost, options: LapicOptions) {
    if (!Number.isInteger(options.apicId) || options.apicId < 0 || options.apicId > 0xfe) {
      throw new IrqchipError('bad-config', `LAPIC: APIC ID ${options.apicId} is not an xAPIC ID (0-254; 255 is broadcast)`);
    }
    if (options.tscHz <= 0n || (options.timerHz !== undefined && options.timerHz <= 0n)) {
      throw new IrqchipError('bad-config', `LAPIC ${options.apicId}: TSC and timer frequencies must be positive`);
    }
    this.tscHz = options.tscHz;
    this.tscAtZero = options.tscAtZero ?? 0n;
    this.timerHz = options.timerHz ?? NS_PER_S;
    this.idReg = options.apicId << 24;
    this.apicBase = BigInt(APIC_DEFAULT_PHYS_BASE) | MSR_IA32_APICBASE_ENABLE | (options.bsp ? MSR_IA32_APICBASE_BSP : 0n);
    this.waitingForSipi = !options.bsp;
    this.resetRegisters();
  }

  // ---- identity, as the APIC bus sees it ----

  get apicId(): number {
    return this.idReg >>> 24;
  }
  get logicalId(): number {
    return this.ldr >>> 24;
  }
  /** true: flat model (DFR 0xf...), false: cluster model (DFR 0x0...) */
  get flatModel(): boolean {
    return (this.dfr >>> 28) === 0xf;
  }
  get hardwareEnabled(): boolean {
    return (this.apicBase & MSR_IA32_APICBASE_ENABLE) !== 0n;
  }
  get softwareEnabled(): boolean {
    return (this.svr & APIC_SPIV_APIC_ENABLED) !== 0;
  }
  get isBsp(): boolean {
    return (this.apicBase & MSR_IA32_APICBASE_BSP) !== 0n;
  }
  /** An AP after reset or INIT, until its SIPI. */
  get isWaitingForSipi(): boolean {
    return this.waitingForSipi;
  }
  /** Guest-physical base of the register page (IA32_APIC_BASE); the VMM maps this device there. */
  get baseGpa(): number {
    return Number(this.apicBase & MSR_IA32_APICBASE_BASE);
  }

  // ---- priorities ----

  /** PPR (SDM 10.8.3.1): TPR, or the class of the highest in-service vector when that is higher. */
  processorPriority(): number {
    const isrv = Math.max(highestBit(this.isr), 0);
    return (this.tpr & 0xf0) >= (isrv & 0xf0) ? this.tpr : isrv & 0xf0;
  }

  /** APR (SDM 10.8.3.1, figure 10-15), the priority lowest-priority delivery compares. */
  arbitrationPriority(): number {
    const irrv = Math.max(highestBit(this.irr), 0);
    const isrv = Math.max(highestBit(this.isr), 0);
    if ((this.tpr & 0xf0) >= (irrv & 0xf0) && (this.tpr & 0xf0) > (isrv & 0xf0)) return this.tpr;
    return Math.max(this.tpr & 0xf0, isrv & 0xf0, irrv & 0xf0);
  }

  /** TPR, for the VMM's CR8 sync (CR8 = TPR >> 4). */
  get taskPriority(): number {
    return this.tpr;
  }
  set taskPriority(value: number) {
    this.tpr = value & 0xff;
    this.signalIfPending();
  }

  // ---- interrupt acceptance and delivery to the CPU ----

  /** A fixed interrupt arrives (from the timer, an LVT, the IOAPIC or an IPI): IRR, and TMR for level. */
  acceptInterrupt(vector: number, trigger: number): void {
    if (!this.hardwareEnabled) return;
    vector &= 0xff;
    if (vector < 16) {
      this.recordError(APIC_ESR_RECVILL); // vectors 0-15 are exceptions, illegal here
      return;
    }
    setBit(this.irr, vector);
    if (trigger === APIC_TRIGGER_LEVEL) setBit(this.tmr, vector);
    else clearBit(this.tmr, vector);
    this.signalIfPending();
  }

  /** The highest requested vector the CPU may take now (its class above PPR), or -1. */
  highestPending(): number {
    if (!this.hardwareEnabled) return NO_VECTOR;
    const irrv = highestBit(this.irr);
    if (irrv === NO_VECTOR || (irrv & 0xf0) <= (this.processorPriority() & 0xf0)) return NO_VECTOR;
    return irrv;
  }

  hasPendingInterrupt(): boolean {
    return this.highestPending() !== NO_VECTOR;
  }

  /**
   * The CPU takes the interrupt (the VMM is about to inject it with KVM_INTERRUPT): IRR -> ISR.
   * With nothing deliverable any more, the spurious vector, leaving ISR alone, as the SDM says.
   */
  acknowledge(): number {
    const v = this.highestPending();
    if (v === NO_VECTOR) return this.svr & 0xff;
    clearBit(this.irr, v);
    setBit(this.isr, v);
    return v;
  }

  /**
   * PIC interrupts may reach this CPU: LINT0 is unmasked in ExtINT mode (virtual wire), or the APIC
   * is hardware-disabled (a CPU without an APIC takes INTR directly).
   */
  acceptsPicInterrupts(): boolean {
    if (!this.hardwareEnabled) return true;
    const lint0 = this.lvt[LVT_LINT0]!;
    return !(lint0 & APIC_LVT_MASKED) && (lint0 & APIC_MODE_MASK) === APIC_DM_EXTINT;
  }

  /** There is something to inject: from the PIC (ExtINT, see `acceptsPicInterrupts`) or the LAPIC. */
  hasInjectableInterrupt(pic: ExtIntSource | null): boolean {
    if (pic && (this.extIntPending || this.acceptsPicInterrupts()) && pic.hasInterrupt()) return true;
    return this.hasPendingInterrupt();
  }

  /**
   * The vector to inject now, or -1: the PIC's (its INTA cycle; ExtINT bypasses IRR/ISR) before
   * the LAPIC's, as KVM orders them. Call when the vCPU can take an interrupt (IF=1, no
   * interrupt shadow: kvm_run.ready_for_interrupt_injection).
   */
  takeInjectableInterrupt(pic: ExtIntSource | null): number {
    if (pic && (this.extIntPending || this.acceptsPicInterrupts()) && pic.hasInterrupt()) {
      this.extIntPending = false;
      return pic.acknowledge();
    }
    this.extIntPending = false;
    return this.hasPendingInterrupt() ? this.acknowledge() : NO_VECTOR;
  }

  /**
   * A message from the APIC bus (the router calls this for each LAPIC it selected). Fixed and
   * lowest-priority need a software-enabled APIC; NMI, INIT and SIPI do not (SDM 10.4.7.2).
   */
  receive(deliveryMode: number, vector: number, trigger: number, level: number): void {
    if (!this.hardwareEnabled) return;
    switch (deliveryMode) {
      case APIC_DELIVERY_MODE_FIXED:
      case APIC_DELIVERY_MODE_LOWESTPRIO:
        if (this.softwareEnabled) this.acceptInterrupt(vector, trigger);
        return;
      case APIC_DELIVERY_MODE_NMI:
        this.host.onNmi?.();
        return;
      case APIC_DELIVERY_MODE_INIT:
        // The INIT level de-assert Linux still sends after INIT (for the 82489DX) does nothing.
        if (trigger === APIC_TRIGGER_LEVEL && level === 0) return;
        this.init();
        return;
      case APIC_DELIVERY_MODE_STARTUP:
        // A SIPI only starts a CPU that waits for one; Linux's second SIPI finds it running.
        if (!this.waitingForSipi) return;
        this.waitingForSipi = false;
        this.host.onStartup?.(vector & 0xff);
        return;
      case APIC_DELIVERY_MODE_EXTINT:
        // The IOAPIC forwards the PIC (virtual wire through pin 0): the vector comes from the PIC.
        this.extIntPending = true;
        this.host.interruptPending?.();
        return;
      default:
        return; // SMI, remote read, reserved: not modelled
    }
  }

  /** An edge on LINT0/LINT1 (e.g. the NMI button on LINT1), delivered as its LVT says. */
  assertLint(pin: 0 | 1): void {
    const entry = this.lvt[pin === 0 ? LVT_LINT0 : LVT_LINT1]!;
    if (!this.hardwareEnabled || entry & APIC_LVT_MASKED) return;
    const mode = (entry & APIC_MODE_MASK) >> 8;
    if (mode === APIC_DELIVERY_MODE_FIXED) {
      this.acceptInterrupt(entry & 0xff, entry & APIC_LVT_LEVEL_TRIGGER ? APIC_TRIGGER_LEVEL : APIC_TRIGGER_EDGE);
    } else if (mode === APIC_DELIVERY_MODE_NMI) {
      this.host.onNmi?.();
    } else if (mode === APIC_DELIVERY_MODE_EXTINT) {
      this.host.interruptPending?.();
    }
  }

  /** INIT (SDM 10.4.7.3): everything but the APIC ID and APIC_BASE returns to reset. */
  private init(): void {
    this.resetRegisters();
    this.waitingForSipi = !this.isBsp;
    this.timerUpdate();
    this.host.onInit?.();
  }

  private resetRegisters(): void {
    this.tpr = 0;
    this.ldr = 0;
    this.dfr = APIC_DFR_FLAT;
    this.svr = 0xff;
    this.isr.fill(0);
    this.tmr.fill(0);
    this.irr.fill(0);
    this.esr = 0;
    this.esrPending = 0;
    this.icrLow = 0;
    this.icrHigh = 0;
    this.lvt.fill(APIC_LVT_MASKED);
    // KVM_X86_QUIRK_LINT0_REENABLED: the BSP comes up in virtual-wire mode, as firmware would
    // leave it, so a guest that never programs the APIC still gets PIC interrupts.
    if (this.isBsp) this.lvt[LVT_LINT0] = APIC_DM_EXTINT;
    this.tmict = 0;
    this.tdcr = 0;
    this.extIntPending = false;
    this.timerArmed = false;
    this.tscDeadline = 0n;
  }

  private signalIfPending(): void {
    if (this.hasPendingInterrupt()) this.host.interruptPending?.();
  }

  /** Errors go to ESR (visible after the next ESR write) and raise the error LVT. */
  private recordError(bits: number): void {
    const alreadyPending = (this.esrPending & bits) === bits;
    this.esrPending |= bits;
    const entry = this.lvt[LVT_ERROR]!;
    // `alreadyPending` stops an illegal error-LVT vector from recursing through itself.
    if (!alreadyPending && !(entry & APIC_LVT_MASKED)) this.acceptInterrupt(entry & 0xff, APIC_TRIGGER_EDGE);
  }

  // ---- EOI ----

  private eoi(): void {
    const v = highestBit(this.isr);
    if (v === NO_VECTOR) return;
    clearBit(this.isr, v);
    if (testBit(this.tmr, v)) this.host.onEoi?.(v);
    this.signalIfPending();
  }

  // ---- IPIs ----

  private sendIcr(): void {
    const low = this.icrLow;
    const m = this.ipi;
    m.vector = low & 0xff;
    m.deliveryMode = (low & APIC_MODE_MASK) >> 8;
    m.destMode = low & APIC_DEST_LOGICAL ? 1 : 0;
    m.level = low & APIC_INT_ASSERT ? 1 : 0;
    m.trigger = low & APIC_INT_LEVELTRIG ? APIC_TRIGGER_LEVEL : APIC_TRIGGER_EDGE;
    m.shorthand = (low >> 18) & 3;
    m.destination = this.icrHigh >>> 24;
    m.sourceId = this.apicId;
    if ((m.deliveryMode === APIC_DELIVERY_MODE_FIXED || m.deliveryMode === APIC_DELIVERY_MODE_LOWESTPRIO) && m.vector < 16) {
      this.recordError(APIC_ESR_SENDILL);
      return;
    }
    this.host.sendIpi?.(m);
  }

  // ---- timer ----

  private timerMode(): number {
    return this.lvt[LVT_TIMER]! & APIC_LVT_TIMER_MASK;
  }

  private divide(): bigint {
    const v = (this.tdcr & 3) | ((this.tdcr & 8) >> 1);
    return v === 7 ? 1n : 2n << BigInt(v);
  }

  /**
   * The guest TSC's rate and offset, once the VMM knows them (the hypervisor reports them per
   * vCPU after creation): guest TSC = tscAtZero + nowNs * tscHz / 1e9.
   */
  setTscClock(tscHz: bigint, tscAtZero: bigint): void {
    if (tscHz <= 0n) throw new IrqchipError('bad-config', `LAPIC ${this.apicId}: TSC frequency ${tscHz} Hz is not positive`);
    this.tscHz = tscHz;
    this.tscAtZero = tscAtZero;
    this.timerUpdate();
  }

  /** The guest TSC at VMM time `ns`. */
  tscAt(ns: bigint): bigint {
    return this.tscAtZero + (ns * this.tscHz) / NS_PER_S;
  }

  /** The first VMM time at which the guest TSC reaches `tsc`. */
  private nsAtTsc(tsc: bigint): bigint {
    return ceilDiv((tsc - this.tscAtZero) * NS_PER_S, this.tscHz);
  }

  /** Sets the period from TMICT and TDCR; the periodic mode is held to APIC_MIN_PERIOD_NS. */
  private setPeriod(): void {
    this.timerPeriodNum = BigInt(this.tmict) * this.divide() * NS_PER_S;
    this.timerPeriodDen = this.timerHz;
    if (this.timerMode() === APIC_LVT_TIMER_PERIODIC && this.timerPeriodNum < APIC_MIN_PERIOD_NS * this.timerPeriodDen) {
      this.timerPeriodNum = APIC_MIN_PERIOD_NS;
      this.timerPeriodDen = 1n;
    }
  }

  private startTimer(nowNs: bigint): void {
    this.setPeriod();
    this.timerEpochNs = nowNs;
    this.timerFired = 0n;
    this.timerArmed = true;
  }

  /** TMCCT: computed from the clock, never stored. */
  private currentCount(nowNs: bigint): number {
    if (!this.timerArmed || this.timerMode() === APIC_LVT_TIMER_TSCDEADLINE) return 0;
    const elapsed = nowNs - this.timerEpochNs;
    if (elapsed < 0n) return this.tmict;
    const pos = elapsed * this.timerPeriodDen;
    const periods = pos / this.timerPeriodNum;
    if (this.timerMode() !== APIC_LVT_TIMER_PERIODIC && periods > this.timerFired) return 0; // expired
    const intoPeriod = pos % this.timerPeriodNum;
    return this.tmict - Number((intoPeriod * BigInt(this.tmict)) / this.timerPeriodNum);
  }

  /** When the timer next fires, in VMM ns, or null when it is not armed. */
  nextDeadlineNs(): bigint | null {
    if (!this.hardwareEnabled) return null;
    if (this.timerMode() === APIC_LVT_TIMER_TSCDEADLINE) return this.tscDeadline === 0n ? null : this.nsAtTsc(this.tscDeadline);
    if (!this.timerArmed) return null;
    return this.timerEpochNs + ceilDiv((this.timerFired + 1n) * this.timerPeriodNum, this.timerPeriodDen);
  }

  /**
   * Fires the timer if it is due at `nowNs`: the LVT timer vector goes to IRR unless masked. A
   * periodic timer reloads (expiries stay on the epoch + k * period grid, however late this is
   * called; missed periods coalesce into one interrupt, as one IRR bit would); one-shot and
   * TSC-deadline disarm. Calls `timerChanged` when the next deadline moved.
   */
  onTime(nowNs: bigint): void {
    if (this.hardwareEnabled) {
      if (this.timerMode() === APIC_LVT_TIMER_TSCDEADLINE) {
        if (this.tscDeadline !== 0n && this.tscAt(nowNs) >= this.tscDeadline) {
          this.tscDeadline = 0n; // SDM 10.5.4.1: the MSR reads 0 once the timer fired
          this.fireTimer();
        }
      } else if (this.timerArmed) {
        const elapsed = nowNs - this.timerEpochNs;
        const periods = elapsed < 0n ? 0n : (elapsed * this.timerPeriodDen) / this.timerPeriodNum;
        if (periods > this.timerFired) {
          if (this.timerMode() === APIC_LVT_TIMER_PERIODIC) this.timerFired = periods;
          else this.timerArmed = false;
          this.fireTimer();
        }
      }
    }
    const next = this.nextDeadlineNs();
    if (next !== this.lastDeadlineNs) {
      this.lastDeadlineNs = next;
      this.host.timerChanged?.();
    }
  }

  private fireTimer(): void {
    const entry = this.lvt[LVT_TIMER]!;
    // Masked, the timer still counts and reloads; it just interrupts nobody (SDM 10.5.1).
    if (!(entry & APIC_LVT_MASKED)) this.acceptInterrupt(entry & 0xff, APIC_TRIGGER_EDGE);
  }

  private timerUpdate(): void {
    this.onTime(this.host.nowNs());
  }

  // ---- MSRs ----

  readApicBase(): bigint {
    return this.apicBase;
  }

  /**
   * WRMSR IA32_APIC_BASE. Returns false for a value the CPU would #GP on (reserved bits, x2APIC,
   * which is not modelled): the VMM injects #GP. Clearing the enable bit hardware-disables the
   * APIC and resets its state, as the SDM allows (10.4.3).
   */
  writeApicBase(value: bigint): boolean {
    const allowed = MSR_IA32_APICBASE_BASE | MSR_IA32_APICBASE_ENABLE | MSR_IA32_APICBASE_BSP;
    if ((value & ~allowed) !== 0n) return false;
    const wasEnabled = this.hardwareEnabled;
    this.apicBase = value;
    if (wasEnabled && !this.hardwareEnabled) this.resetRegisters();
    this.timerUpdate();
    return true;
  }

  /** RDMSR IA32_TSC_DEADLINE: the armed deadline, 0 when disarmed or not in TSC-deadline mode. */
  readTscDeadline(): bigint {
    return this.timerMode() === APIC_LVT_TIMER_TSCDEADLINE ? this.tscDeadline : 0n;
  }

  /** WRMSR IA32_TSC_DEADLINE: arms (0 disarms); ignored outside TSC-deadline mode (SDM 10.5.4.1). */
  writeTscDeadline(value: bigint): void {
    if (!this.hardwareEnabled || this.timerMode() !== APIC_LVT_TIMER_TSCDEADLINE) return;
    this.tscDeadline = BigInt.asUintN(64, value);
    this.timerUpdate(); // a deadline already past fires at once
  }

  // ---- MMIO ----

  private readRegister(reg: number): number {
    if (reg >= APIC_ISR && reg < APIC_ISR + 0x80) return this.isr[(reg - APIC_ISR) >> 4]!;
    if (reg >= APIC_TMR && reg < APIC_TMR + 0x80) return this.tmr[(reg - APIC_TMR) >> 4]!;
    if (reg >= APIC_IRR && reg < APIC_IRR + 0x80) return this.irr[(reg - APIC_IRR) >> 4]!;
    if (reg >= APIC_LVTT && reg <= APIC_LVTERR) return this.lvt[(reg - APIC_LVTT) >> 4]!;
    switch (reg) {
      case APIC_ID: return this.idReg;
      case APIC_LVR: return APIC_VERSION | (APIC_MAX_LVT << 16);
      case APIC_TASKPRI: return this.tpr;
      case APIC_ARBPRI: return this.arbitrationPriority();
      case APIC_PROCPRI: return this.processorPriority();
      case APIC_LDR: return this.ldr;
      case APIC_DFR: return this.dfr;
      case APIC_SPIV: return this.svr;
      case APIC_ESR: return this.esr;
      case APIC_ICR: return this.icrLow;
      case APIC_ICR2: return this.icrHigh;
      case APIC_TMICT: return this.tmict;
      case APIC_TMCCT: return this.currentCount(this.host.nowNs());
      case APIC_TDCR: return this.tdcr;
      default: return 0; // EOI is write-only; reserved registers read 0
    }
  }

  private writeRegister(reg: number, value: number): void {
    if (reg >= APIC_LVTT && reg <= APIC_LVTERR) {
      this.writeLvt((reg - APIC_LVTT) >> 4, value);
      return;
    }
    switch (reg) {
      case APIC_ID:
        this.idReg = value & 0xff00_0000; // xAPIC IDs are writable; the router reads them live
        return;
      case APIC_TASKPRI:
        this.taskPriority = value;
        return;
      case APIC_EOI:
        this.eoi();
        return;
      case APIC_LDR:
        this.ldr = value & 0xff00_0000;
        return;
      case APIC_DFR:
        this.dfr = (value | 0x0fff_ffff) >>> 0;
        return;
      case APIC_SPIV:
        this.svr = value & 0x3ff;
        if (!this.softwareEnabled) {
          // Software-disabling masks every LVT (SDM 10.4.7.2); they stay masked until re-enabled
          // and rewritten.
          for (let i = 0; i < this.lvt.length; i++) this.lvt[i] = this.lvt[i]! | APIC_LVT_MASKED;
        }
        this.signalIfPending();
        return;
      case APIC_ESR:
        // A write latches the errors seen since the previous write (Linux writes, then reads).
        this.esr = this.esrPending;
        this.esrPending = 0;
        return;
      case APIC_ICR:
        this.icrLow = value & ICR_WRITABLE;
        this.sendIcr();
        return;
      case APIC_ICR2:
        this.icrHigh = value & 0xff00_0000;
        return;
      case APIC_TMICT:
        if (this.timerMode() === APIC_LVT_TIMER_TSCDEADLINE) return; // ignored in TSC-deadline mode
        this.tmict = value >>> 0;
        if (this.tmict === 0) this.timerArmed = false; // a zero count stops the timer
        else this.startTimer(this.host.nowNs());
        this.timerUpdate();
        return;
      case APIC_TDCR: {
        const now = this.host.nowNs();
        const count = this.currentCount(now);
        this.tdcr = value & 0xb;
        if (this.timerArmed && this.timerMode() !== APIC_LVT_TIMER_TSCDEADLINE) {
          // The count so far stands; what remains runs at the new rate (the cycle restarts from a
          // virtual epoch so that the current count is unchanged).
          this.setPeriod();
          const ticksDone = BigInt(this.tmict - count);
          this.timerEpochNs = now - (ticksDone * this.timerPeriodNum) / (BigInt(this.tmict) * this.timerPeriodDen);
          this.timerFired = 0n;
        }
        this.timerUpdate();
        return;
      }
      default:
        return; // read-only and reserved registers ignore writes
    }
  }

  private writeLvt(index: number, value: number): void {
    let entry = value & LVT_WRITABLE[index]!;
    if (!this.softwareEnabled) entry |= APIC_LVT_MASKED; // cannot unmask while software-disabled
    if (index !== LVT_TIMER) {
      this.lvt[index] = entry;
      return;
    }
    const oldMode = this.timerMode();
    this.lvt[index] = entry;
    const newMode = this.timerMode();
    if ((oldMode === APIC_LVT_TIMER_TSCDEADLINE) !== (newMode === APIC_LVT_TIMER_TSCDEADLINE)) {
      // SDM 10.5.4.1: moving into or out of TSC-deadline mode disarms the timer.
      this.timerArmed = false;
      this.tmict = 0;
      this.tscDeadline = 0n;
    } else if (oldMode !== newMode && this.timerArmed) {
      // One-shot <-> periodic keeps the running count (as KVM does); only the reload changes.
      const now = this.host.nowNs();
      const count = this.currentCount(now);
      const ticksDone = BigInt(this.tmict - count);
      this.setPeriod();
      this.timerEpochNs = now - (ticksDone * this.timerPeriodNum) / (BigInt(this.tmict) * this.timerPeriodDen);
      this.timerFired = 0n;
    }
    this.timerUpdate();
  }

  /** Registers are 32 bits on 16-byte boundaries; narrower reads see part of one (as KVM allows). */
  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (!this.hardwareEnabled || offset < 0 || offset >= APIC_MMIO_SIZE_BYTES) return;
    const within = offset & 0xf;
    if (within >= 4) return;
    const value = this.readRegister(offset & 0xff0);
    for (let i = 0; i < data.length && within + i < 4; i++) data[i] = (value >>> (8 * (within + i))) & 0xff;
  }

  /** Only aligned 32-bit writes do anything (SDM 10.4.1: other sizes are undefined; KVM drops them). */
  write(offset: number, data: Uint8Array): void {
    if (!this.hardwareEnabled || data.length !== 4 || offset & 0xf || offset < 0 || offset >= APIC_MMIO_SIZE_BYTES) return;
    const value = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
    this.writeRegister(offset, value);
  }
}
