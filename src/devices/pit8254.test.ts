import assert from 'node:assert/strict';
import test from 'node:test';
import { Bus } from '../bus/bus.js';
import { IrqchipError } from './irqchip-error.js';
import { IOAPIC_REG_REDTBL_BASE, IOAPIC_REG_SELECT, IOAPIC_REG_WINDOW, Ioapic, type IoapicMessage } from './ioapic.js';
import { PicPair } from './pic8259.js';
import * as p from './pit8254.js';

const HZ = 1_193_182n;
const NS = 1_000_000_000n;
/** Independent of the module: the tick at or before `ns`, and the instant of tick `k`. */
const tickAt = (ns: bigint) => (ns * HZ) / NS;
const nsAt = (k: bigint) => (k * NS + HZ - 1n) / HZ;

interface Rig {
  pit: p.Pit8254;
  bus: Bus;
  now: bigint;
  irq: number[];
  timerChanges: number;
  outb(port: number, v: number): void;
  inb(port: number): number;
  /** edges seen so far (each is the pulse 1, 0) */
  pulses(): number;
}

function rig(options: p.PitOptions = {}): Rig {
  const r = { now: 0n, irq: [], timerChanges: 0 } as unknown as Rig;
  let lastNs = 0n;
  r.pit = new p.Pit8254({
    nowNs: () => {
      assert.ok(r.now >= lastNs, 'the test clock is monotonic, as the VMM promises');
      lastNs = r.now;
      return r.now;
    },
    setIrq0: (level) => r.irq.push(level),
    timerChanged: () => { r.timerChanges++; },
  }, options);
  r.bus = new Bus('pio');
  r.bus.insert(p.PIT_CH0, p.PIT_PORTS_SIZE_BYTES, 'pit', r.pit.ports);
  r.bus.insert(p.NMI_SC_PORT, p.NMI_SC_SIZE_BYTES, 'nmi-sc', r.pit.nmiSc);
  r.outb = (port, v) => { assert.ok(r.bus.access(port, true, Uint8Array.of(v))); };
  r.inb = (port) => {
    const d = new Uint8Array(1);
    assert.ok(r.bus.access(port, false, d));
    return d[0]!;
  };
  r.pulses = () => {
    for (let i = 0; i < r.irq.length; i++) assert.equal(r.irq[i], i % 2 === 0 ? 1 : 0, 'IRQ0 is driven as 1,0 pulses');
    assert.equal(r.irq.length % 2, 0);
    return r.irq.length / 2;
  };
  return r;
}

/** Linux's pit_set_periodic / the default guest: channel 0, lobyte/hibyte, mode 2, binary. */
function programCh0(r: Rig, cw: number, count: number) {
  r.outb(p.PIT_MODE, cw);
  r.outb(p.PIT_CH0, count & 0xff);
  r.outb(p.PIT_CH0, count >> 8);
}

/** Linux's i8253 clocksource read: latch channel 0, read lobyte then hibyte. */
function latchCh0(r: Rig): number {
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER0 | p.PIT_RW_LATCH);
  const lo = r.inb(p.PIT_CH0);
  return lo | (r.inb(p.PIT_CH0) << 8);
}

/** Read-back status of one counter. */
function status(r: Rig, counter: 0 | 1 | 2): number {
  r.outb(p.PIT_MODE, p.PIT_SC_READBACK | p.PIT_READBACK_NO_COUNT | (p.PIT_READBACK_CNT0 << counter));
  return r.inb(p.PIT_CH0 + counter);
}

test('spec constants: Linux LATCH for HZ=1000, control words, ports', () => {
  assert.equal(Math.floor((p.PIT_HZ + 500) / 1000), 1193);
  assert.equal(p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | p.PIT_MODE_RATE_GENERATOR, 0x34);
  assert.equal(p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | p.PIT_MODE_INTERRUPT_ON_TC, 0x30);
  assert.equal(p.PIT_SC_COUNTER2 | p.PIT_RW_LSB_MSB | p.PIT_MODE_INTERRUPT_ON_TC, 0xb0);
  assert.equal(p.PIT_MODE, 0x43);
  assert.equal(p.nsAtPitTick(p.PIT_MIN_PERIOD_NS * HZ / NS), 199_467n);
  assert.equal(p.pitTicksAt(p.nsAtPitTick(123_456_789n)), 123_456_789n, 'the instant of tick k is in tick k');
  assert.equal(p.pitTicksAt(p.nsAtPitTick(123_456_789n) - 1n), 123_456_788n, 'and 1 ns earlier is not');
});

test("Linux's HZ=1000 programming: 10000 ticks at exactly the expected deadlines, no drift", () => {
  const r = rig();
  const LATCH = (1193182 + 1000 / 2) / 1000 | 0;
  r.now = 5_000_123n;
  programCh0(r, 0x34, LATCH);
  assert.equal(r.timerChanges, 1, 'one re-arm: the count write armed the timer');
  const load = tickAt(5_000_123n) + 1n; // the datasheet's load cycle: the next clock loads
  const loadNs = Number(load) * 1e9 / p.PIT_HZ;
  for (let k = 1n; k <= 10000n; k++) {
    const deadline = nsAt(load + k * 1193n);
    assert.equal(r.pit.nextDeadlineNs(), deadline, `deadline ${k}`);
    r.now = deadline - 1n;
    r.pit.onTime(r.now);
    assert.equal(r.pulses(), Number(k) - 1, `no edge 1 ns before deadline ${k}`);
    r.now = deadline;
    r.pit.onTime(r.now);
    assert.equal(r.pulses(), Number(k), `edge ${k} at its deadline`);
    // Drift: the integer deadline stays within 1 ns of the exact rational instant.
    assert.ok(Math.abs(Number(deadline) - (loadNs + Number(k) * 1193 * 1e9 / p.PIT_HZ)) <= 1, `drift at ${k}`);
  }
  assert.equal(r.now, nsAt(load + 11_930_000n));
  assert.equal(r.now, 10_003_475_581n, '10000 periods of 1193/1193182 s after the load at 5000914 ns');
  assert.equal(r.timerChanges, 10001, 'one re-arm per tick');
});

test('the default tsvmm guest (0x34, divisor 1193) at t=0, with IRQ0 wired to the PIC line 0', () => {
  const pic = new PicPair();
  let now = 0n;
  const pit = new p.Pit8254({ nowNs: () => now, setIrq0: (level) => pic.setIrq(0, level) });
  const bus = new Bus('pio');
  bus.insert(p.PIT_CH0, p.PIT_PORTS_SIZE_BYTES, 'pit', pit.ports);
  const outb = (port: number, v: number) => bus.access(port, true, Uint8Array.of(v));
  // PIC: ICW1-4, vectors 0x20, unmask IRQ0 only (default-guest.ts).
  pic.master.write(0, Uint8Array.of(0x11));
  pic.master.write(1, Uint8Array.of(0x20));
  pic.master.write(1, Uint8Array.of(0x04));
  pic.master.write(1, Uint8Array.of(0x01));
  pic.master.write(1, Uint8Array.of(0xfe));
  outb(p.PIT_MODE, 0x34);
  outb(p.PIT_CH0, 1193 & 0xff);
  outb(p.PIT_CH0, 1193 >> 8);
  // Written at t=0: loaded at tick 1, edges at ticks 1 + 1193k.
  assert.equal(pit.nextDeadlineNs(), nsAt(1194n));
  assert.equal(pit.nextDeadlineNs(), 1_000_686n);
  assert.equal(pic.hasInterrupt(), false);
  now = 1_000_686n;
  pit.onTime(now);
  assert.equal(pic.hasInterrupt(), true, 'the pulse latched IRR0 in the edge-triggered PIC');
  assert.equal(pic.acknowledge(), 0x20);
  pic.master.write(0, Uint8Array.of(0x20)); // EOI
  assert.equal(pic.hasInterrupt(), false);
  assert.equal(pit.nextDeadlineNs(), nsAt(1n + 2n * 1193n));
  // Three periods late: one edge (lost ticks coalesce), the next deadline still on the grid.
  now = nsAt(1n + 4n * 1193n) + 500n;
  pit.onTime(now);
  assert.equal(pic.acknowledge(), 0x20);
  pic.master.write(0, Uint8Array.of(0x20));
  assert.equal(pic.hasInterrupt(), false, 'one edge for the missed periods');
  assert.equal(pit.nextDeadlineNs(), nsAt(1n + 5n * 1193n));
});

test('IRQ0 wired to IOAPIC GSI 2 (edge): one message per tick', () => {
  const sent: IoapicMessage[] = [];
  const ioapic = new Ioapic((m) => sent.push({ ...m }));
  let now = 0n;
  const pit = new p.Pit8254({ nowNs: () => now, setIrq0: (level) => ioapic.setIrq(2, level) });
  const w = (off: number, v: number) => { const d = new Uint8Array(4); new DataView(d.buffer).setUint32(0, v, true); ioapic.write(off, d); };
  const ioWrite = (reg: number, v: number) => { w(IOAPIC_REG_SELECT, reg); w(IOAPIC_REG_WINDOW, v); };
  ioWrite(IOAPIC_REG_REDTBL_BASE + 2 * 2 + 1, 0); // destination APIC 0
  ioWrite(IOAPIC_REG_REDTBL_BASE + 2 * 2, 0x30); // vector 0x30, fixed, edge, unmasked
  pit.ports.write(p.PIT_CONTROL, Uint8Array.of(0x34));
  pit.ports.write(p.PIT_COUNTER0, Uint8Array.of(1193 & 0xff));
  pit.ports.write(p.PIT_COUNTER0, Uint8Array.of(1193 >> 8));
  for (let k = 1n; k <= 5n; k++) {
    now = pit.nextDeadlineNs()!;
    assert.equal(now, nsAt(1n + k * 1193n));
    pit.onTime(now);
    assert.equal(sent.length, Number(k));
    assert.equal(sent.at(-1)!.vector, 0x30);
  }
});

test('mode 0: one edge at terminal count, OUT stays high, the count wraps; re-armed by a count write', () => {
  const r = rig();
  r.now = 10_000n;
  assert.equal(status(r, 0), 0x30 | p.PIT_STATUS_NULL_COUNT, 'power-on: mode 0, lobyte/hibyte, OUT low, no count');
  programCh0(r, 0x30, 1000);
  const load = tickAt(10_000n) + 1n;
  assert.equal(status(r, 0), 0x30 | p.PIT_STATUS_NULL_COUNT, 'OUT low; the count loads on the next clock');
  r.now = nsAt(load);
  assert.equal(status(r, 0), 0x30, 'loaded: NULL COUNT clears');
  assert.equal(latchCh0(r), 1000);
  const deadline = nsAt(load + 1000n);
  assert.equal(r.pit.nextDeadlineNs(), deadline);
  r.now = deadline - 1n;
  r.pit.onTime(r.now);
  assert.equal(latchCh0(r), 1);
  assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, 0);
  assert.equal(r.pulses(), 0);
  r.now = deadline;
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1);
  assert.equal(status(r, 0), 0x30 | p.PIT_STATUS_OUTPUT);
  assert.equal(latchCh0(r), 0);
  assert.equal(r.pit.nextDeadlineNs(), null, 'mode 0 fires once');
  r.now = nsAt(load + 1005n);
  assert.equal(latchCh0(r), 65531, 'the counter keeps decrementing past terminal count, wrapping');
  r.now += 5_000_000_000n;
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1, 'still one edge after 5 s');
  assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, p.PIT_STATUS_OUTPUT);
  // Linux's pit_next_event: the count only, no control word. The first byte sets OUT low.
  r.outb(p.PIT_CH0, 100);
  assert.equal(status(r, 0), 0x30 | p.PIT_STATUS_NULL_COUNT, 'first byte: OUT low at once, counting stopped');
  const frozen = latchCh0(r);
  r.now += 1_000_000n;
  assert.equal(latchCh0(r), frozen, 'no counting between the two bytes');
  r.outb(p.PIT_CH0, 0);
  const load2 = tickAt(r.now) + 1n;
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load2 + 100n));
  r.now = nsAt(load2 + 100n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 2);
  assert.equal(r.pit.nextDeadlineNs(), null);
});

test('latch and read-back of a running count: values from the clock, held until read', () => {
  const r = rig();
  r.now = 777n;
  programCh0(r, 0x34, 1193);
  const load = tickAt(777n) + 1n;
  const expect = (ns: bigint) => 1193 - Number((tickAt(ns) - load) % 1193n);
  for (const ns of [nsAt(load), nsAt(load) + 123_456n, 3_333_333n, 37_654_321n]) {
    r.now = ns;
    assert.equal(latchCh0(r), expect(ns), `count at ${ns} ns`);
  }
  // A latch holds the value while time moves; a second latch before reading is ignored.
  r.now = 50_000_000n;
  const held = expect(r.now);
  r.outb(p.PIT_MODE, 0x00);
  r.now += 400_000n;
  r.outb(p.PIT_MODE, 0x00);
  assert.equal(r.inb(p.PIT_CH0) | (r.inb(p.PIT_CH0) << 8), held);
  assert.notEqual(expect(r.now), held);
  // Read-back, count and status of counter 0: status first, then the count.
  r.outb(p.PIT_MODE, p.PIT_SC_READBACK | p.PIT_READBACK_CNT0);
  r.now += 1_000n;
  assert.equal(r.inb(p.PIT_CH0), p.PIT_STATUS_OUTPUT | 0x34);
  const rb = expect(r.now - 1_000n);
  assert.equal(r.inb(p.PIT_CH0), rb & 0xff);
  assert.equal(r.inb(p.PIT_CH0), rb >> 8);
  // Read-back of the count only.
  r.outb(p.PIT_MODE, p.PIT_SC_READBACK | p.PIT_READBACK_NO_STATUS | p.PIT_READBACK_CNT0);
  const c = expect(r.now);
  r.now += 10_000n;
  assert.equal(r.inb(p.PIT_CH0) | (r.inb(p.PIT_CH0) << 8), c);
  // OUT is low for the one clock before each reload (mode 2).
  const k = tickAt(r.now) - load;
  const beforeReload = load + (k / 1193n + 1n) * 1193n - 1n;
  r.now = nsAt(beforeReload);
  assert.equal(status(r, 0), 0x34, 'OUT low, count 1');
  assert.equal(latchCh0(r), 1);
  r.now = nsAt(beforeReload + 1n);
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | 0x34);
  assert.equal(latchCh0(r), 1193, 'reloaded');
  // Read-back on all three counters at once latches each one; counter 2 is unprogrammed.
  r.outb(p.PIT_MODE, p.PIT_SC_READBACK | p.PIT_READBACK_NO_COUNT | p.PIT_READBACK_CNT0 | p.PIT_READBACK_CNT1 | p.PIT_READBACK_CNT2);
  assert.equal(r.inb(p.PIT_CH0 + 2), 0x30 | p.PIT_STATUS_NULL_COUNT);
  assert.equal(r.inb(p.PIT_CH0 + 1), 0x30 | p.PIT_STATUS_NULL_COUNT);
  assert.equal(r.inb(p.PIT_CH0), p.PIT_STATUS_OUTPUT | 0x34);
  // A status latched twice returns the first.
  r.outb(p.PIT_MODE, 0xe2);
  r.now = nsAt(beforeReload + 1193n);
  r.outb(p.PIT_MODE, 0xe2);
  assert.equal(r.inb(p.PIT_CH0), p.PIT_STATUS_OUTPUT | 0x34, 'the first status (OUT high), not the second (OUT low)');
});

test('lobyte/hibyte flip-flop across unlatched reads; lobyte-only and hibyte-only modes', () => {
  const r = rig();
  programCh0(r, 0x34, 0x1234);
  r.now = nsAt(1n); // loaded: 0x1234
  assert.equal(r.inb(p.PIT_CH0), 0x34);
  r.now = nsAt(1n + 0x34n); // count 0x1200
  assert.equal(r.inb(p.PIT_CH0), 0x12, 'second read: the high byte of the count now');
  assert.equal(r.inb(p.PIT_CH0), 0x00, 'third: low byte again');
  // A latched count is read in its own sequence; the unlatched flip-flop stays where it was.
  r.outb(p.PIT_MODE, 0x00);
  assert.equal(r.inb(p.PIT_CH0), 0x00);
  assert.equal(r.inb(p.PIT_CH0), 0x12);
  assert.equal(r.inb(p.PIT_CH0), 0x12, 'unlatched: the high byte, as the flip-flop said');
  // A control word resets the flip-flops (write and read).
  r.outb(p.PIT_CH0, 0x99); // half a count
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB | p.PIT_MODE_RATE_GENERATOR);
  r.outb(p.PIT_CH0, 0x80); // lobyte only: count 0x0080
  const load = tickAt(r.now) + 1n;
  r.now = nsAt(load + 0x10n);
  assert.equal(r.inb(p.PIT_CH0), 0x70);
  assert.equal(r.inb(p.PIT_CH0), 0x70, 'lobyte-only reads never flip');
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER0 | p.PIT_RW_MSB | p.PIT_MODE_RATE_GENERATOR);
  r.outb(p.PIT_CH0, 0x02); // hibyte only: count 0x0200
  const load2 = tickAt(r.now) + 1n;
  r.now = nsAt(load2 + 0xffn); // 0x0101
  assert.equal(r.inb(p.PIT_CH0), 0x01);
  r.now = nsAt(load2 + 0x101n); // 0x00ff
  assert.equal(r.inb(p.PIT_CH0), 0x00, 'hibyte-only reads never flip');
  r.outb(p.PIT_MODE, 0x00);
  r.now = nsAt(load2 + 0x201n); // 0x01ff
  assert.equal(r.inb(p.PIT_CH0), 0x00, 'latched in hibyte mode: one byte');
  assert.equal(r.inb(p.PIT_CH0), 0x01, 'then live again');
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load2 + 0x200n));
});

test('count 0 means 65536 (mode 2 period, mode 0 terminal count, lobyte-only 0)', () => {
  const r = rig({ minPeriodNs: 0n });
  programCh0(r, 0x34, 0);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(1n + 65536n));
  r.now = nsAt(1n);
  assert.equal(latchCh0(r), 0, '65536 reads as 0');
  r.now = nsAt(2n);
  assert.equal(latchCh0(r), 65535);
  r.now = nsAt(1n + 65536n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(1n + 2n * 65536n));
  const r0 = rig();
  r0.outb(p.PIT_MODE, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB | p.PIT_MODE_INTERRUPT_ON_TC);
  r0.outb(p.PIT_CH0, 0);
  assert.equal(r0.pit.nextDeadlineNs(), nsAt(1n + 65536n), 'a lobyte-only 0 is 65536 too');
  assert.equal(r0.pit.nextDeadlineNs(), 54_926_240n);
});

test('channel 2 and port 0x61: the classic TSC calibration (gate high, mode 0, poll OUT2)', () => {
  const r = rig();
  r.now = 1_000_000n;
  assert.equal(r.inb(p.NMI_SC_PORT) & ~p.NMI_SC_REF_TOGGLE, 0, 'power-on: gate low, speaker off, OUT2 low');
  // Linux pit_calibrate_tsc: gate high, speaker off; channel 2 mode 0; CAL_LATCH (50 ms).
  r.outb(p.NMI_SC_PORT, (r.inb(p.NMI_SC_PORT) & ~p.NMI_SC_SPKR_DAT_EN) | p.NMI_SC_TIM_CNT2_EN);
  const latch = 1193182 / (1000 / 50) | 0;
  assert.equal(latch, 59659);
  r.outb(p.PIT_MODE, 0xb0);
  r.outb(p.PIT_CH2, latch & 0xff);
  r.outb(p.PIT_CH2, latch >> 8);
  const load = tickAt(r.now) + 1n;
  let polls = 0;
  while ((r.inb(p.NMI_SC_PORT) & p.NMI_SC_TMR2_OUT_STS) === 0) {
    polls++;
    r.now += 997n; // one poll per ~1 µs
    assert.ok(polls < 100_000, 'OUT2 must rise');
  }
  const rise = nsAt(load + 59659n);
  assert.ok(r.now >= rise && r.now < rise + 997n, `OUT2 rose at the programmed count: ${r.now} vs ${rise}`);
  assert.equal(rise, 51_000_602n);
  assert.equal(r.inb(p.NMI_SC_PORT) & 0x2f, p.NMI_SC_TMR2_OUT_STS | p.NMI_SC_TIM_CNT2_EN, 'bits 0-3 read back, OUT2 set');
  assert.equal(r.pulses(), 0, 'channel 2 never touches IRQ0');
  // Linux quick_pit_calibrate: mode 0 from 0xffff, unlatched lobyte/hibyte reads, watching the MSB.
  r.outb(p.PIT_MODE, 0xb0);
  r.outb(p.PIT_CH2, 0xff);
  r.outb(p.PIT_CH2, 0xff);
  const load2 = tickAt(r.now) + 1n;
  const msbAt = (k: bigint) => { r.now = nsAt(load2 + k); r.inb(p.PIT_CH2); return r.inb(p.PIT_CH2); };
  assert.deepEqual([msbAt(0n), msbAt(0xffn), msbAt(0x100n), msbAt(0x1ffn), msbAt(0x200n)], [0xff, 0xff, 0xfe, 0xfe, 0xfd]);
  assert.equal(r.pit.nextDeadlineNs(), null);
});

test('channel 2 gate: mode 0 pauses while low; mode 1 and 5 trigger on its rising edge; mode 2 restarts', () => {
  const r = rig();
  const ch2 = () => {
    r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LATCH);
    return r.inb(p.PIT_CH2) | (r.inb(p.PIT_CH2) << 8);
  };
  const out2 = () => (r.inb(p.NMI_SC_PORT) & p.NMI_SC_TMR2_OUT_STS) >> 5;
  // Mode 0 with the gate low: loaded, not counting.
  r.outb(p.PIT_MODE, 0xb0);
  r.outb(p.PIT_CH2, 100);
  r.outb(p.PIT_CH2, 0);
  r.now = nsAt(50n);
  assert.equal(ch2(), 100, 'gate low: no counting');
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN); // gate high at tick 50
  r.now = nsAt(80n);
  assert.equal(ch2(), 70);
  r.outb(p.NMI_SC_PORT, 0); // low at tick 80
  r.now = nsAt(500n);
  assert.equal(ch2(), 70, 'paused');
  assert.equal(out2(), 0);
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN); // resume at 500: terminal count at 570
  r.now = nsAt(569n);
  assert.equal(out2(), 0);
  r.now = nsAt(570n);
  assert.equal(out2(), 1);
  assert.equal(ch2(), 0);
  // Mode 1: OUT high, waits for a trigger; the rising gate loads the count, OUT low until TC.
  r.outb(p.NMI_SC_PORT, 0);
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LSB_MSB | p.PIT_MODE_HW_ONESHOT);
  r.outb(p.PIT_CH2, 10);
  r.outb(p.PIT_CH2, 0);
  r.now = nsAt(1000n);
  assert.equal(out2(), 1);
  assert.equal(status(r, 2), p.PIT_STATUS_OUTPUT | p.PIT_STATUS_NULL_COUNT | 0x32, 'count not loaded until the trigger');
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN); // trigger at tick 1000: loaded at 1001
  r.now = nsAt(1001n);
  assert.equal(out2(), 0);
  assert.equal(status(r, 2), 0x32);
  r.now = nsAt(1006n);
  r.outb(p.NMI_SC_PORT, 0);
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN); // retrigger at 1006: reload at 1007, TC at 1017
  r.now = nsAt(1016n);
  assert.equal(out2(), 0, 'retriggered: still low');
  assert.equal(ch2(), 1);
  r.now = nsAt(1017n);
  assert.equal(out2(), 1);
  // Mode 5: strobe low for one clock at TC after a trigger.
  r.outb(p.NMI_SC_PORT, 0);
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LSB | p.PIT_MODE_HW_STROBE);
  r.outb(p.PIT_CH2, 4);
  r.now = nsAt(2000n);
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN); // load at 2001, TC at 2005
  const levels = [2001n, 2004n, 2005n, 2006n].map((k) => { r.now = nsAt(k); return out2(); });
  assert.deepEqual(levels, [1, 1, 0, 1]);
  // Mode 2: gate low forces OUT high and stops; the rising gate reloads.
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LSB_MSB | p.PIT_MODE_RATE_GENERATOR);
  r.outb(p.PIT_CH2, 10);
  r.outb(p.PIT_CH2, 0); // gate high: loaded at the next clock
  const load = tickAt(r.now) + 1n;
  r.now = nsAt(load + 9n);
  assert.equal(out2(), 0, 'count 1: OUT low');
  r.outb(p.NMI_SC_PORT, 0);
  assert.equal(out2(), 1, 'gate low: OUT high at once');
  r.now = nsAt(load + 100n);
  assert.equal(ch2(), 1, 'stopped');
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN);
  r.now = nsAt(load + 101n);
  assert.equal(ch2(), 10, 'reloaded on the clock after the rising gate');
});

test('mode 3 square wave: true OUT levels and counts (even and odd), edges at each period', () => {
  const r = rig({ minPeriodNs: 0n });
  r.outb(p.NMI_SC_PORT, p.NMI_SC_TIM_CNT2_EN);
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LSB | p.PIT_MODE_SQUARE_WAVE);
  r.outb(p.PIT_CH2, 5); // loaded at tick 1
  const seq = (from: bigint, n: number) => Array.from({ length: n }, (_, i) => {
    r.now = nsAt(from + BigInt(i));
    r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LATCH);
    return [r.inb(p.PIT_CH2), (r.inb(p.NMI_SC_PORT) & p.NMI_SC_TMR2_OUT_STS) >> 5];
  });
  // Odd count 5: high for 3 clocks (4, 2, 0), low for 2 (4, 2).
  assert.deepEqual(seq(1n, 10), [[4, 1], [2, 1], [0, 1], [4, 0], [2, 0], [4, 1], [2, 1], [0, 1], [4, 0], [2, 0]]);
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER2 | p.PIT_RW_LSB | p.PIT_MODE_SQUARE_WAVE);
  r.outb(p.PIT_CH2, 6);
  const load = tickAt(r.now) + 1n;
  // Even count 6: 6, 4, 2 high, then 6, 4, 2 low.
  assert.deepEqual(seq(load, 7), [[6, 1], [4, 1], [2, 1], [6, 0], [4, 0], [2, 0], [6, 1]]);
  // Channel 0 in mode 3: one edge per period, at each rising edge.
  programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | p.PIT_MODE_SQUARE_WAVE, 1000);
  const l0 = tickAt(r.now) + 1n;
  for (let k = 1n; k <= 3n; k++) {
    assert.equal(r.pit.nextDeadlineNs(), nsAt(l0 + 1000n * k));
    r.now = nsAt(l0 + 1000n * k - 500n); // the falling edge: no interrupt
    r.pit.onTime(r.now);
    assert.equal(r.pulses(), Number(k) - 1);
    r.now = nsAt(l0 + 1000n * k);
    r.pit.onTime(r.now);
    assert.equal(r.pulses(), Number(k));
  }
});

test('modes 2 and 3: a new count during counting takes effect at the next reload / half-cycle', () => {
  const r = rig({ minPeriodNs: 0n });
  programCh0(r, 0x34, 1000); // loaded at tick 1, edges 1001, 2001, ...
  r.now = nsAt(1500n);
  r.pit.onTime(r.now); // the edge at 1001
  r.outb(p.PIT_CH0, 300 & 0xff);
  r.outb(p.PIT_CH0, 300 >> 8);
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | p.PIT_STATUS_NULL_COUNT | 0x34, 'written, not loaded');
  assert.equal(latchCh0(r), 501, 'the current period continues');
  assert.equal(r.pit.nextDeadlineNs(), nsAt(2001n), 'the period ends as programmed');
  r.now = nsAt(2001n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 2);
  assert.equal(latchCh0(r), 300);
  assert.equal(status(r, 0) & p.PIT_STATUS_NULL_COUNT, 0);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(2301n));
  // Coalescing across the switch: a VMM that wakes late still sees the grid of the new count.
  r.now = nsAt(2301n + 300n * 5n + 7n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 3);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(2301n + 300n * 6n));
  // A second count before the first was loaded (same clock): the load takes the second.
  programCh0(r, 0x34, 1000);
  r.outb(p.PIT_CH0, 500 & 0xff);
  r.outb(p.PIT_CH0, 500 >> 8);
  const early = tickAt(r.now) + 1n;
  assert.equal(r.pit.nextDeadlineNs(), nsAt(early + 500n));
  r.now = nsAt(early);
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | 0x34, 'loaded: NULL COUNT clears');
  assert.equal(latchCh0(r), 500);
  // Mode 3, count written in the high half: the new count starts with its low half at the old
  // half-cycle's end.
  programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | p.PIT_MODE_SQUARE_WAVE, 1000);
  const load = tickAt(r.now) + 1n;
  r.now = nsAt(load + 100n);
  r.outb(p.PIT_CH0, 200);
  r.outb(p.PIT_CH0, 0);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load + 500n + 100n), 'half of 1000, then the low half of 200');
  r.now = nsAt(load + 499n);
  assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, p.PIT_STATUS_OUTPUT);
  r.now = nsAt(load + 500n);
  assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, 0);
  assert.equal(latchCh0(r), 200);
  r.now = nsAt(load + 600n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 4);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load + 800n));
});

test('mode 4 strobes once, N+1 clocks after the write; modes 1 and 5 on channel 0 never trigger', () => {
  const r = rig();
  r.now = nsAt(10n);
  programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | p.PIT_MODE_SW_STROBE, 50); // load 11, TC 61
  assert.equal(r.pit.nextDeadlineNs(), nsAt(62n), 'OUT rises after the one-clock strobe');
  r.now = nsAt(61n);
  assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, 0);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 0);
  r.now = nsAt(62n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1);
  assert.equal(r.pit.nextDeadlineNs(), null);
  for (const mode of [p.PIT_MODE_HW_ONESHOT, p.PIT_MODE_HW_STROBE]) {
    programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | mode, 50);
    assert.equal(r.pit.nextDeadlineNs(), null, 'the gate is tied high: no rising edge, no trigger');
    r.now += 1_000_000n;
    r.pit.onTime(r.now);
    assert.equal(status(r, 0) & p.PIT_STATUS_OUTPUT, p.PIT_STATUS_OUTPUT);
  }
  assert.equal(r.pulses(), 1);
});

test("control word 0x30 stops channel 0 (Linux's pit_shutdown); modes 6/7 alias 2/3; BCD stored, counting binary", () => {
  const r = rig();
  programCh0(r, 0x34, 1193);
  const changes = r.timerChanges;
  r.outb(p.PIT_MODE, 0x30);
  assert.equal(r.pit.nextDeadlineNs(), null);
  assert.equal(r.timerChanges, changes + 1, 'the VMM is told to disarm');
  r.now = 1_000_000_000n;
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 0);
  programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | (6 << 1), 1193);
  const load = tickAt(r.now) + 1n;
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load + 1193n), 'mode 6 is mode 2');
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | p.PIT_STATUS_NULL_COUNT | 0x3c, 'not loaded before the next clock');
  r.now = nsAt(load);
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | 0x3c, 'status shows the mode bits as written');
  programCh0(r, p.PIT_SC_COUNTER0 | p.PIT_RW_LSB_MSB | (7 << 1) | p.PIT_BCD, 0x1000);
  const load2 = tickAt(r.now) + 1n;
  assert.equal(r.pit.nextDeadlineNs(), nsAt(load2 + 0x1000n), 'mode 7 is mode 3; 0x1000 counts 4096 clocks (binary)');
  r.now = nsAt(load2 + 1n);
  assert.equal(status(r, 0), p.PIT_STATUS_OUTPUT | 0x3f);
  assert.equal(latchCh0(r), 0x0ffe, 'mode 3 counts down by two, in binary');
});

test('periodic modes are held to minPeriodNs; the count still runs at the programmed rate', () => {
  const r = rig();
  programCh0(r, 0x34, 10); // 8.4 µs: edges at 1 + 10k
  const minTicks = 239n; // ceil(200 µs * 1.193182 MHz)
  assert.equal(r.pit.nextDeadlineNs(), nsAt(1n + 240n), 'the first grid edge at least 239 clocks after the load');
  r.now = nsAt(241n);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1);
  assert.equal(r.pit.nextDeadlineNs(), nsAt(241n + 240n));
  r.now = nsAt(241n + minTicks);
  r.pit.onTime(r.now);
  assert.equal(r.pulses(), 1, 'an edge 230 clocks after the last one is dropped');
  r.now = nsAt(485n);
  assert.equal(latchCh0(r), 6, 'tick 484 of a count of 10');
  const free = rig({ minPeriodNs: 0n });
  programCh0(free, 0x34, 10);
  assert.equal(free.pit.nextDeadlineNs(), nsAt(11n));
});

test('the PIT has no mask: IRQ0 edges go out every period whatever else the guest does', () => {
  const r = rig();
  programCh0(r, 0x34, 1193);
  let k = 0n;
  const tick = () => { k++; r.now = nsAt(1n + k * 1193n); r.pit.onTime(r.now); };
  tick();
  r.outb(p.NMI_SC_PORT, 0xff); // every writable bit of 0x61 (none of them is channel 0's)
  tick();
  r.outb(p.NMI_SC_PORT, 0x00);
  r.outb(p.PIT_MODE, p.PIT_SC_COUNTER1 | p.PIT_RW_LSB | p.PIT_MODE_INTERRUPT_ON_TC);
  r.outb(p.PIT_MODE, 0xb0);
  tick();
  r.outb(p.PIT_MODE, 0x00); // a latch of channel 0 left unread
  r.outb(p.PIT_MODE, 0xc2); // and a read-back
  tick();
  assert.equal(r.pulses(), 4, 'no acknowledge, no mask: one edge per period');
  assert.equal(r.inb(p.NMI_SC_PORT) & 0x0f, 0, 'bits 0-3 read back as written');
});

test('refresh toggle (bit 4 of 0x61) flips every 18 PIT clocks, ~15 µs', () => {
  const r = rig();
  let flips = 0;
  let last = r.inb(p.NMI_SC_PORT) & p.NMI_SC_REF_TOGGLE;
  for (r.now = 0n; r.now < 1_000_000n; r.now += 100n) {
    const bit = r.inb(p.NMI_SC_PORT) & p.NMI_SC_REF_TOGGLE;
    if (bit !== last) {
      flips++;
      assert.ok(r.now >= nsAt(18n * BigInt(flips)) && r.now < nsAt(18n * BigInt(flips)) + 100n, `flip ${flips} at ${r.now}`);
    }
    last = bit;
  }
  assert.equal(flips, 66, '1 ms = 1193 clocks = 66 whole periods of 18');
  const r2 = rig();
  r2.now = nsAt(17n);
  assert.equal(r2.inb(p.NMI_SC_PORT) & p.NMI_SC_REF_TOGGLE, 0);
  r2.now = nsAt(18n);
  assert.equal(r2.inb(p.NMI_SC_PORT) & p.NMI_SC_REF_TOGGLE, p.NMI_SC_REF_TOGGLE);
  r2.now = nsAt(36n);
  assert.equal(r2.inb(p.NMI_SC_PORT) & p.NMI_SC_REF_TOGGLE, 0);
  assert.equal(r.inb(p.NMI_SC_PORT) & (p.NMI_SC_SERR_NMI_STS | p.NMI_SC_IOCHK_NMI_STS), 0, 'no NMI sources');
});

test('guest misbehaviour never throws; a VMM wiring mistake does', () => {
  const r = rig({ minPeriodNs: 0n });
  let seed = 12345;
  const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
  let armed = 0;
  for (let i = 0; i < 20000; i++) {
    const port = [0x40, 0x41, 0x42, 0x43, 0x61][rand() % 5]!;
    r.now += i % 50 === 0 ? 60_000_000n : BigInt(rand() % 5000); // now and then past any count
    const write = (rand() & 1) === 1;
    if (write) r.outb(port, rand() & 0xff);
    else r.inb(port);
    if (i % 7 === 0) r.pit.onTime(r.now);
    if (!write && i % 7 !== 0) continue; // time passed without a write or onTime: a deadline may be due
    // Whatever the guest wrote, a write or onTime never leaves a deadline in the past (the VMM
    // would spin on it): edges due are signalled first.
    const next = r.pit.nextDeadlineNs();
    if (next !== null) armed++;
    assert.ok(next === null || next > r.now, `deadline ${next} at ${r.now} after step ${i}`);
  }
  assert.ok(armed > 30 && r.pulses() > 5, `the fuzz reached armed timers (${armed}) and edges (${r.pulses()})`);
  assert.equal(r.inb(p.PIT_MODE), 0, 'the control word register is write-only and reads 0 (QEMU, KVM)');
  // Wider accesses are split into byte accesses at consecutive ports.
  const d = new Uint8Array(4);
  r.pit.ports.write(0, Uint8Array.of(0, 0, 0, 0x34)); // the last byte is a control word at 0x43
  r.pit.ports.read(2, d);
  assert.equal(d[1], 0, 'the second byte is the write-only 0x43');
  assert.deepEqual([d[2], d[3]], [0, 0], 'and beyond the window there is nothing');
  assert.equal(status(r, 0) & 0x3f, 0x34, 'the control word took');
  assert.throws(() => new p.Pit8254({ nowNs: () => 0n }, { minPeriodNs: -1n }), (e: unknown) => e instanceof IrqchipError && e.kind === 'bad-config');
});
