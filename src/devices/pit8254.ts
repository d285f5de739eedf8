// The PC's Intel 8254 programmable interval timer (three counters at 0x40-0x43) and the NMI
// status and control register at 0x61 (channel 2's gate and OUT, the refresh toggle), for
// `--irqchip userspace`, where KVM_CREATE_PIT2 is not available.
// Spec: Intel 8254 / 82C54 datasheet (231164); port 0x61: Intel ICH datasheets, "NMI_SC". Names as
// in Linux include/linux/i8253.h and include/linux/timex.h (PIT_TICK_RATE); where the datasheet
// leaves a choice (power-on state, the control-word register read, BCD), QEMU's hw/timer/i8254.c
// and KVM's arch/x86/kvm/i8254.c are followed, since guests are tested against them.
//
// Time: every counter is clocked by one free-running 1.193182 MHz oscillator whose k-th edge is at
// ceil(k * 1e9 / PIT_HZ) ns of the injected clock, so counts and deadlines are exact integers
// (bigint) on one grid and never drift, however long the VM runs. Nothing here polls: channel 0's
// interrupt edges are deadlines (`nextDeadlineNs`, `onTime`, `timerChanged`), and everything else
// (counts, OUT levels, the refresh bit) is computed from the clock when the guest reads it.
//
// IRQ0 is driven as pulses, not as OUT0's level: each rising edge of OUT0 becomes setIrq0(1) then
// setIrq0(0), as KVM's PIT does. IRQ0 is edge-triggered on every PC (the PIC's ELCR cannot make it
// level, the IOAPIC pin is programmed edge), so only rising edges matter; the true mode 2/3 wave
// would need a second wake-up per period (mode 2's low pulse is one 838 ns clock) for nothing. For
// the same reason the OUT0 transitions a guest causes by reprogramming (a control word setting OUT
// high) raise no interrupt, as in KVM and QEMU. OUT levels read back (read-back status, OUT2 at
// 0x61) are the datasheet's true levels.
//
// Not modelled: BCD counting (the BCD bit is stored and reads back in the status byte, but counters
// count in binary, as in QEMU and KVM); the speaker (its data-enable bit is stored, no sound);
// channel 1's refresh output (nothing is wired to it; the 0x61 refresh toggle runs on its own, as
// on ICH chipsets); the NMI sources of 0x61 (SERR#, IOCHK#: bits 6-7 read 0). Counts of 1 in modes
// 2 and 3 (illegal per the datasheet) hold OUT high and raise no interrupt.
import type { BusDevice } from '../bus/bus.js';
import { IrqchipError } from './irqchip-error.js';

/** The counters' input clock, Linux's PIT_TICK_RATE. */
export const PIT_HZ = 1_193_182;
/** Linux's names for the ports (include/linux/i8253.h). */
export const PIT_CH0 = 0x40;
export const PIT_CH2 = 0x42;
export const PIT_MODE = 0x43;
export const PIT_PORTS_SIZE_BYTES = 4;
/** Offsets within the 0x40-0x43 window. */
export const PIT_COUNTER0 = 0;
export const PIT_COUNTER1 = 1;
export const PIT_COUNTER2 = 2;
export const PIT_CONTROL = 3;

/** Control word (datasheet figure 7): SC1-SC0, RW1-RW0, M2-M0, BCD. */
export const PIT_SC_COUNTER0 = 0x00;
export const PIT_SC_COUNTER1 = 0x40;
export const PIT_SC_COUNTER2 = 0x80;
export const PIT_SC_READBACK = 0xc0;
export const PIT_RW_LATCH = 0x00; // counter latch command
export const PIT_RW_LSB = 0x10;
export const PIT_RW_MSB = 0x20;
export const PIT_RW_LSB_MSB = 0x30;
export const PIT_RW_MASK = 0x30;
/** Modes as control-word fields (bits 3-1); 6 and 7 are aliases of 2 and 3 (X10, X11). */
export const PIT_MODE_INTERRUPT_ON_TC = 0 << 1;
export const PIT_MODE_HW_ONESHOT = 1 << 1;
export const PIT_MODE_RATE_GENERATOR = 2 << 1;
export const PIT_MODE_SQUARE_WAVE = 3 << 1;
export const PIT_MODE_SW_STROBE = 4 << 1;
export const PIT_MODE_HW_STROBE = 5 << 1;
export const PIT_MODE_MASK = 0x0e;
export const PIT_BCD = 0x01;
/** Read-back command (SC = 11): COUNT and STATUS are active low; CNT2-CNT0 select counters. */
export const PIT_READBACK_NO_COUNT = 0x20;
export const PIT_READBACK_NO_STATUS = 0x10;
export const PIT_READBACK_CNT0 = 0x02;
export const PIT_READBACK_CNT1 = 0x04;
export const PIT_READBACK_CNT2 = 0x08;
/** Status byte (datasheet figure 11): OUT, NULL COUNT, then the control word's RW, mode and BCD. */
export const PIT_STATUS_OUTPUT = 0x80;
export const PIT_STATUS_NULL_COUNT = 0x40;

/** NMI status and control register (port 0x61), bit names from the ICH datasheets. */
export const NMI_SC_PORT = 0x61;
export const NMI_SC_SIZE_BYTES = 1;
export const NMI_SC_TIM_CNT2_EN = 0x01; // channel 2's gate
export const NMI_SC_SPKR_DAT_EN = 0x02;
export const NMI_SC_PCI_SERR_EN = 0x04; // written 1 to clear/disable, as Linux's NMI handler does
export const NMI_SC_IOCHK_NMI_EN = 0x08;
export const NMI_SC_REF_TOGGLE = 0x10;
export const NMI_SC_TMR2_OUT_STS = 0x20;
export const NMI_SC_IOCHK_NMI_STS = 0x40;
export const NMI_SC_SERR_NMI_STS = 0x80;
const NMI_SC_WRITABLE = 0x0f;
/**
 * The refresh toggle flips every 18 PIT clocks (15.085 µs), the rate the AT's BIOS gave channel 1
 * for DRAM refresh and ICH chipsets keep; BIOS and bootloader delay loops count its flips.
 */
export const NMI_SC_REFRESH_TICKS = 18n;

/**
 * KVM's min_timer_period_us for the PIT: edges of a periodic mode closer than this to the previous
 * one are dropped (counted as lost ticks), so a guest cannot make the VMM spin on expiries.
 */
export const PIT_MIN_PERIOD_NS = 200_000n;

const NS_PER_S = 1_000_000_000n;
const HZ = BigInt(PIT_HZ);
/** "never": null count stays set until an event (a trigger, the gate) loads the count. */
const FOREVER = 1n << 62n;

const MODE0 = 0, MODE1 = 1, MODE2 = 2, MODE3 = 3, MODE4 = 4, MODE5 = 5;
/** Read states of the output latch: next byte and what follows (as QEMU's RW_STATE_*). */
const LATCH_NONE = 0, LATCH_LSB = 1, LATCH_MSB = 2, LATCH_WORD0 = 3;

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && (a < 0n) !== (b < 0n) ? q - 1n : q;
}
function ceilDiv(a: bigint, b: bigint): bigint {
  return -floorDiv(-a, b);
}
const mod = (a: bigint, b: bigint) => a - floorDiv(a, b) * b;

/** The PIT clock edge at or before `ns` (edge k is at ceil(k * 1e9 / PIT_HZ) ns). */
export function pitTicksAt(ns: bigint): bigint {
  return floorDiv(ns * HZ, NS_PER_S);
}
/** The instant of PIT clock edge `tick`. */
export function nsAtPitTick(tick: bigint): bigint {
  return ceilDiv(tick * NS_PER_S, HZ);
}

/**
 * One counter. Times are PIT clock edges ("ticks"). While counting, the counting element was
 * loaded with `n` at edge `loadTick` and has seen `elapsed = t - loadTick` decrementing edges
 * since; counts and OUT are functions of that. A gate-low pause (modes 0 and 4) freezes `elapsed`.
 */
class Counter {
  /** control word bits 5-0 as written (the status byte shows them) */
  controlBits = PIT_RW_LSB_MSB;
  mode = MODE0;
  rw = PIT_RW_LSB_MSB;
  /** count register: the count last written, 1-65536 (0 written means 65536) */
  cr = 0x10000n;
  /** a whole count was written since the control word (modes 1/2/3/5 need one to start) */
  countWritten = false;
  writeMsbNext = false;
  writeLsb = 0;
  readMsbNext = false;
  latchState = LATCH_NONE;
  latchedCount = 0;
  statusLatched = false;
  status = 0;
  /** NULL COUNT reads 1 before this tick (FOREVER: until an event loads the count) */
  nullCountUntil = FOREVER;
  gate: boolean;

  counting = false;
  loadTick = 0n;
  n = 0x10000n;
  /** OUT between the write/trigger and the edge that loads the count */
  preLoadOut = 0;
  /** modes 0/4 with the gate low: the tick where counting froze */
  pausedAt: bigint | null = null;
  /** not counting: the counting element's frozen value and OUT */
  frozenValue = 0;
  idleOut = 0;
  /** modes 2/3: a count written while counting, taken at `swapTick` (end of period / half-cycle) */
  pending = false;
  swapTick = 0n;
  pendingLoadTick = 0n;
  pendingN = 0n;
  /** the last rising OUT edge already signalled (channel 0); edges at or before it are done */
  lastEdgeTick = 0n;

  constructor(gate: boolean) {
    this.gate = gate;
  }

  get periodic(): boolean {
    return this.mode === MODE2 || this.mode === MODE3;
  }

  /** Takes a count written while counting in modes 2/3 once its reload edge has passed. */
  settle(t: bigint): void {
    if (this.pending && t >= this.swapTick) {
      this.loadTick = this.pendingLoadTick;
      this.n = this.pendingN;
      this.pending = false;
    }
  }

  private elapsed(t: bigint): bigint {
    return (this.pausedAt ?? t) - this.loadTick;
  }

  /** The counting element's value at `t` (16 bits; 65536 reads 0). */
  value(t: bigint): number {
    this.settle(t);
    if (!this.counting) return this.frozenValue;
    const e = this.elapsed(t);
    const n = this.n;
    if (e < 0n) return Number(n & 0xffffn);
    let v: bigint;
    switch (this.mode) {
      case MODE2:
        v = n - (e % n); // n, n-1, ..., 1, reload
        break;
      case MODE3: {
        // Decrements by two (datasheet, mode 3): even n counts n, n-2, ..., 2 in each half; odd n
        // loads n-1 and counts to 0 in the high half (one clock longer), n-1 ... 2 in the low half.
        const p = e % n;
        if ((n & 1n) === 0n) {
          v = n - 2n * (p < n / 2n ? p : p - n / 2n);
        } else {
          const high = (n + 1n) / 2n;
          v = n - 1n - 2n * (p < high ? p : p - high);
        }
        break;
      }
      default:
        v = n - e; // modes 0, 1, 4, 5 keep decrementing past terminal count, wrapping
        break;
    }
    return Number(mod(v, 0x10000n));
  }

  /** OUT at `t`, as the datasheet's waveforms give it. */
  out(t: bigint): number {
    this.settle(t);
    if (!this.counting) return this.idleOut;
    const e = this.elapsed(t);
    if (e < 0n) return this.preLoadOut;
    const n = this.n;
    switch (this.mode) {
      case MODE0:
      case MODE1:
        return e >= n ? 1 : 0; // high at terminal count until reprogrammed / retriggered
      case MODE2:
        return n === 1n || e % n !== n - 1n ? 1 : 0; // low for the clock before each reload
      case MODE3:
        return n === 1n || e % n < (n + 1n) / 2n ? 1 : 0;
      default:
        return e === n ? 0 : 1; // modes 4, 5: a one-clock low strobe at terminal count
    }
  }

  nullCount(t: bigint): number {
    this.settle(t);
    return t < this.nullCountUntil ? 1 : 0;
  }

  /** Starts counting `cr` from the next clock edge after `t`. */
  private load(t: bigint, preLoadOut: number): void {
    this.counting = true;
    this.pending = false;
    this.loadTick = t + 1n; // the datasheet's load cycle: the next CLK loads, without decrementing
    this.n = this.cr;
    this.preLoadOut = preLoadOut;
    this.pausedAt = (this.mode === MODE0 || this.mode === MODE4) && !this.gate ? this.loadTick : null;
    this.lastEdgeTick = this.loadTick; // OUT does not rise at the load itself
    if (this.nullCountUntil > this.loadTick) this.nullCountUntil = this.loadTick;
  }

  private stop(t: bigint, out: number): void {
    this.frozenValue = this.value(t);
    this.counting = false;
    this.pending = false;
    this.pausedAt = null;
    this.idleOut = out;
  }

  /** A control word for this counter (not a latch command). */
  control(cw: number, t: bigint): void {
    this.settle(t);
    let mode = (cw & PIT_MODE_MASK) >> 1;
    if (mode > MODE5) mode -= 4; // X10 and X11 are modes 2 and 3
    // "All control logic is immediately reset and OUT goes to a known initial state": the counter
    // waits for a new count (this is how Linux's pit_shutdown stops channel 0 with 0x30).
    this.stop(t, mode === MODE0 ? 0 : 1);
    this.controlBits = cw & 0x3f;
    this.mode = mode;
    this.rw = cw & PIT_RW_MASK;
    this.countWritten = false;
    this.writeMsbNext = false;
    this.readMsbNext = false;
    this.latchState = LATCH_NONE;
    this.statusLatched = false;
    this.nullCountUntil = FOREVER;
  }

  /** Counter latch command: the count is held until read; a second latch before that is ignored. */
  latchCount(t: bigint): void {
    if (this.latchState !== LATCH_NONE) return;
    this.latchedCount = this.value(t);
    this.latchState = this.rw === PIT_RW_LSB ? LATCH_LSB : this.rw === PIT_RW_MSB ? LATCH_MSB : LATCH_WORD0;
  }

  latchStatus(t: bigint): void {
    if (this.statusLatched) return;
    this.status = (this.out(t) ? PIT_STATUS_OUTPUT : 0) | (this.nullCount(t) ? PIT_STATUS_NULL_COUNT : 0) | this.controlBits;
    this.statusLatched = true;
  }

  /**
   * A read of the counter's port: latched status first, then a latched count, else the live count.
   * A latched count is read in its own sequence (lobyte then hibyte in lobyte/hibyte mode), apart
   * from the flip-flop of unlatched reads, as in QEMU and KVM (the datasheet does not say).
   */
  read(t: bigint): number {
    if (this.statusLatched) {
      this.statusLatched = false;
      return this.status;
    }
    switch (this.latchState) {
      case LATCH_LSB:
        this.latchState = LATCH_NONE;
        return this.latchedCount & 0xff;
      case LATCH_MSB:
        this.latchState = LATCH_NONE;
        return this.latchedCount >> 8;
      case LATCH_WORD0:
        this.latchState = LATCH_MSB;
        return this.latchedCount & 0xff;
      default:
        break;
    }
    const v = this.value(t);
    if (this.rw === PIT_RW_LSB) return v & 0xff;
    if (this.rw === PIT_RW_MSB) return v >> 8;
    // Unlatched lobyte/hibyte reads: the flip-flop alternates, and the count may move in between
    // (which is why Linux latches first).
    this.readMsbNext = !this.readMsbNext;
    return this.readMsbNext ? v & 0xff : v >> 8;
  }

  /** A write of the counter's port: a count byte, in the access mode of the last control word. */
  write(value: number, t: bigint): void {
    this.settle(t);
    let cr: number;
    if (this.rw === PIT_RW_LSB) {
      cr = value;
    } else if (this.rw === PIT_RW_MSB) {
      cr = value << 8;
    } else if (!this.writeMsbNext) {
      this.writeMsbNext = true;
      this.writeLsb = value;
      this.nullCountUntil = FOREVER;
      // Mode 0: writing the first byte of a two-byte count stops counting and sets OUT low at
      // once (datasheet); Linux's one-shot rewrites the count only, so each shot gets a fresh edge.
      if (this.mode === MODE0) this.stop(t, 0);
      return;
    } else {
      this.writeMsbNext = false;
      cr = this.writeLsb | (value << 8);
    }
    this.cr = cr === 0 ? 0x10000n : BigInt(cr);
    this.countWritten = true;
    this.nullCountUntil = FOREVER;
    switch (this.mode) {
      case MODE0:
        this.load(t, 0); // a new count sets OUT low (it stays high only until a new count)
        return;
      case MODE4:
        this.load(t, this.out(t));
        return;
      case MODE1:
      case MODE5:
        return; // used at the next gate trigger; the running one-shot is not affected
      default:
        break;
    }
    // Modes 2 and 3.
    if (!this.counting) {
      if (this.gate) this.load(t, 1);
      return; // gate low: the rising gate loads it
    }
    if (t < this.loadTick) {
      this.n = this.cr; // not loaded yet: the load takes the new count
      this.nullCountUntil = this.loadTick;
      return;
    }
    // Counting: the current period is not affected. Mode 2 takes the new count at the next
    // reload; mode 3 at the end of the current half-cycle. The new sequence is placed on a
    // virtual load tick so that its first rising edge comes out where the datasheet puts it.
    const e = t - this.loadTick;
    const periodStart = this.loadTick + (e / this.n) * this.n;
    const high = (this.n + 1n) / 2n;
    this.pending = true;
    this.pendingN = this.cr;
    if (this.mode === MODE3 && e % this.n < high) {
      this.swapTick = periodStart + high; // end of the high half: the new count starts low
      this.pendingLoadTick = this.swapTick - (this.cr + 1n) / 2n;
    } else {
      this.swapTick = periodStart + this.n; // a reload edge, which is a rising edge of OUT
      this.pendingLoadTick = this.swapTick - this.cr;
    }
    this.nullCountUntil = this.swapTick;
  }

  /** The gate input (channel 2 only; 0 and 1 are tied high). Gates are sampled on clock edges. */
  setGate(level: boolean, t: bigint): void {
    this.settle(t);
    if (level === this.gate) return;
    this.gate = level;
    switch (this.mode) {
      case MODE0:
      case MODE4:
        if (!this.counting) return;
        if (!level) {
          this.pausedAt = t > this.loadTick ? t : this.loadTick;
        } else if (this.pausedAt !== null) {
          const shift = t > this.pausedAt ? t - this.pausedAt : 0n;
          this.loadTick += shift;
          this.lastEdgeTick += shift; // the edge already signalled moves with the frame
          this.pausedAt = null;
        }
        return;
      case MODE1:
      case MODE5:
        // A rising edge triggers (and retriggers) the one-shot from the count register.
        if (level && this.countWritten) this.load(t, this.out(t));
        return;
      default:
        // Modes 2/3: gate low stops counting and sets OUT high at once; a rising gate reloads.
        if (!level) {
          if (this.counting) this.stop(t, 1);
        } else if (this.countWritten) {
          this.load(t, 1);
        }
        return;
    }
  }

  // ---- rising OUT edges, for the interrupt ----

  /** The first grid edge loadTick + k*n (k >= 1) after `after`, or null (no edges for n = 1). */
  private static gridEdgeAfter(loadTick: bigint, n: bigint, after: bigint): bigint | null {
    if (n === 1n) return null;
    let k = floorDiv(after - loadTick, n) + 1n;
    if (k < 1n) k = 1n;
    return loadTick + k * n;
  }

  /** The first rising edge of OUT after tick `after` with no more writes, or null. Pure. */
  edgeAfter(after: bigint): bigint | null {
    if (!this.counting || this.pausedAt !== null) return null;
    if (this.periodic) {
      const old = this.pending && after >= this.swapTick ? null : Counter.gridEdgeAfter(this.loadTick, this.n, after);
      if (!this.pending || (old !== null && old <= this.swapTick)) return old;
      return Counter.gridEdgeAfter(this.pendingLoadTick, this.pendingN, after > this.swapTick ? after : this.swapTick);
    }
    const edge = this.loadTick + this.n + (this.mode === MODE4 || this.mode === MODE5 ? 1n : 0n);
    return edge > after ? edge : null;
  }

  /** The latest rising edge of OUT at or before `t` (after settling at `t`), or null. */
  edgeAtOrBefore(t: bigint): bigint | null {
    this.settle(t);
    if (!this.counting) return null;
    if (this.periodic) {
      if (this.n === 1n || t - this.loadTick < this.n) return null;
      return this.loadTick + ((t - this.loadTick) / this.n) * this.n;
    }
    const edge = this.loadTick + this.n + (this.mode === MODE4 || this.mode === MODE5 ? 1n : 0n);
    return edge <= (this.pausedAt ?? t) ? edge : null;
  }
}

/** What the PIT needs from the VMM. Every callback but `nowNs` may be left out. */
export interface PitHost {
  /** The VMM's monotonic clock in ns; the counters run from it. */
  nowNs(): bigint;
  /** ISA IRQ0 (OUT0): called as a pulse, 1 then 0, for each rising edge of OUT0. */
  setIrq0?(level: 0 | 1): void;
  /** `nextDeadlineNs()` changed: re-arm the VMM's timer. */
  timerChanged?(): void;
}

export interface PitOptions {
  /** the shortest interval between two IRQ0 edges in modes 2 and 3; default PIT_MIN_PERIOD_NS */
  minPeriodNs?: bigint;
}

/** The 0x40-0x43 window: counters 0-2 at offsets 0-2, the control word at 3. */
class CounterPorts implements BusDevice {
  constructor(private readonly pit: Pit8254) {}
  read(offset: number, data: Uint8Array): void {
    // A wider access is split into byte accesses at consecutive ports, as the ISA bus does.
    for (let i = 0; i < data.length; i++) data[i] = this.pit.readPort(offset + i);
  }
  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.pit.writePort(offset + i, data[i]!);
  }
}

class NmiScPort implements BusDevice {
  constructor(private readonly pit: Pit8254) {}
  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset === 0 && data.length > 0) data[0] = this.pit.readNmiSc();
  }
  write(offset: number, data: Uint8Array): void {
    if (offset === 0 && data.length > 0) this.pit.writeNmiSc(data[0]!);
  }
}

/**
 * The 8254 and port 0x61. Register `ports` at PIT_CH0 (0x40, PIT_PORTS_SIZE_BYTES) and `nmiSc` at
 * NMI_SC_PORT (0x61, 1 byte). Channel 0's OUT reaches the host through `setIrq0`.
 *
 * Power-on state (the datasheet leaves it undefined): every counter in mode 0, lobyte/hibyte,
 * waiting for a count, OUT low; channel 2's gate low. So a guest that never programs the PIT costs
 * no timer wake-ups (QEMU instead starts the counters in mode 3, as a BIOS would leave them).
 */
export class Pit8254 {
  readonly ports: BusDevice;
  readonly nmiSc: BusDevice;
  private readonly counters: readonly [Counter, Counter, Counter];
  private nmiScBits = 0;
  private readonly minPeriodTicks: bigint;
  private lastDeadlineNs: bigint | null = null;

  constructor(private readonly host: PitHost, options: PitOptions = {}) {
    const minPeriodNs = options.minPeriodNs ?? PIT_MIN_PERIOD_NS;
    if (minPeriodNs < 0n) throw new IrqchipError('bad-config', `8254 PIT: minPeriodNs ${minPeriodNs} is negative; pass 0n for no limit`);
    const ticks = ceilDiv(minPeriodNs * HZ, NS_PER_S);
    this.minPeriodTicks = ticks < 1n ? 1n : ticks;
    this.counters = [new Counter(true), new Counter(true), new Counter(false)];
    this.ports = new CounterPorts(this);
    this.nmiSc = new NmiScPort(this);
  }

  private now(): bigint {
    return pitTicksAt(this.host.nowNs());
  }

  // ---- channel 0 -> IRQ0 ----

  /** The tick of the next IRQ0 edge, after the throttle of the periodic modes. */
  private nextEdgeTick(): bigint | null {
    const c = this.counters[0];
    return c.edgeAfter(c.periodic ? c.lastEdgeTick + this.minPeriodTicks - 1n : c.lastEdgeTick);
  }

  /**
   * When IRQ0 next gets an edge (a rising edge of OUT0), in VMM ns, or null when none is coming
   * (channel 0 stopped, or past its one terminal count in modes 0, 1, 4 and 5).
   */
  nextDeadlineNs(): bigint | null {
    const tick = this.nextEdgeTick();
    return tick === null ? null : nsAtPitTick(tick);
  }

  /** Signals the IRQ0 edge due at tick `t`, if any: missed periods coalesce into one pulse. */
  private deliver(t: bigint): void {
    const c = this.counters[0];
    const edge = c.edgeAtOrBefore(t);
    if (edge === null) return;
    const after = c.periodic ? c.lastEdgeTick + this.minPeriodTicks - 1n : c.lastEdgeTick;
    if (edge <= after) return;
    c.lastEdgeTick = edge;
    this.host.setIrq0?.(1);
    this.host.setIrq0?.(0);
  }

  private checkDeadline(): void {
    const next = this.nextDeadlineNs();
    if (next !== this.lastDeadlineNs) {
      this.lastDeadlineNs = next;
      this.host.timerChanged?.();
    }
  }

  /**
   * Raises IRQ0 if an edge is due at `nowNs` (one pulse however many periods were missed, like
   * lost ticks); calls `timerChanged` when the next deadline moved.
   */
  onTime(nowNs: bigint): void {
    this.deliver(pitTicksAt(nowNs));
    this.checkDeadline();
  }

  // ---- ports ----

  /** @internal for CounterPorts */
  readPort(offset: number): number {
    if (offset < PIT_COUNTER0 || offset > PIT_COUNTER2) return 0; // the control word is write-only (QEMU, KVM read 0)
    return this.counters[offset]!.read(this.now());
  }

  /** @internal for CounterPorts */
  writePort(offset: number, value: number): void {
    if (offset < 0 || offset > PIT_CONTROL) return;
    const t = this.now();
    // Edges due before this write happened first; signal them before the write changes the counter.
    this.deliver(t);
    if (offset === PIT_CONTROL) this.writeControl(value, t);
    else this.counters[offset]!.write(value, t);
    this.checkDeadline();
  }

  private writeControl(cw: number, t: bigint): void {
    if ((cw & PIT_SC_READBACK) === PIT_SC_READBACK) {
      // Read-back: latch count and/or status of each selected counter; already latched ones keep
      // their first latch, as with the counter latch command.
      for (let i = 0; i < 3; i++) {
        if (!(cw & (PIT_READBACK_CNT0 << i))) continue;
        const c = this.counters[i]!;
        if (!(cw & PIT_READBACK_NO_COUNT)) c.latchCount(t);
        if (!(cw & PIT_READBACK_NO_STATUS)) c.latchStatus(t);
      }
      return;
    }
    const c = this.counters[cw >> 6]!;
    if ((cw & PIT_RW_MASK) === PIT_RW_LATCH) c.latchCount(t);
    else c.control(cw, t);
  }

  /** @internal for NmiScPort */
  readNmiSc(): number {
    const t = this.now();
    const refresh = (t / NMI_SC_REFRESH_TICKS) & 1n ? NMI_SC_REF_TOGGLE : 0;
    return this.nmiScBits | refresh | (this.counters[2].out(t) ? NMI_SC_TMR2_OUT_STS : 0);
  }

  /** @internal for NmiScPort */
  writeNmiSc(value: number): void {
    this.nmiScBits = value & NMI_SC_WRITABLE;
    this.counters[2].setGate((value & NMI_SC_TIM_CNT2_EN) !== 0, this.now());
  }
}
