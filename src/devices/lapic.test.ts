import assert from 'node:assert/strict';
import test from 'node:test';
import * as am from './apic-message.js';
import { IrqchipError } from './irqchip-error.js';
import * as a from './lapic.js';

interface Rig {
  l: a.Lapic;
  now: bigint;
  ipis: am.IpiMessage[];
  eois: number[];
  events: string[];
  timerChanges: number;
  rd(off: number): number;
  wr(off: number, v: number): void;
}

function rig(options: Partial<a.LapicOptions> = {}): Rig {
  const r = { now: 0n, ipis: [], eois: [], events: [], timerChanges: 0 } as unknown as Rig;
  const host: a.LapicHost = {
    nowNs: () => r.now,
    sendIpi: (m) => r.ipis.push({ ...m }),
    onEoi: (v) => r.eois.push(v),
    timerChanged: () => { r.timerChanges++; },
    interruptPending: () => r.events.push('pending'),
    onNmi: () => r.events.push('nmi'),
    onInit: () => r.events.push('init'),
    onStartup: (v) => r.events.push(`sipi 0x${v.toString(16)}`),
  };
  r.l = new a.Lapic(host, { apicId: 0, bsp: true, tscHz: 2_000_000_000n, ...options });
  r.rd = (off) => {
    const d = new Uint8Array(4);
    r.l.read(off, d);
    return new DataView(d.buffer).getUint32(0, true);
  };
  r.wr = (off, v) => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    r.l.write(off, d);
  };
  return r;
}

/** What Linux's setup_local_APIC leaves (flat logical mode, spurious vector 0xff, LINT1 NMI). */
function enable(r: Rig, logicalBit = 1) {
  r.wr(a.APIC_DFR, a.APIC_DFR_FLAT);
  r.wr(a.APIC_LDR, logicalBit << 24);
  r.wr(a.APIC_TASKPRI, 0);
  r.wr(a.APIC_SPIV, a.APIC_SPIV_APIC_ENABLED | 0xff);
  r.wr(a.APIC_LVT1, a.APIC_DM_NMI);
}

test('reset state: ID, version, SVR, masked LVTs, the BSP in virtual-wire mode, APIC_BASE', () => {
  const bsp = rig({ apicId: 0 });
  assert.equal(bsp.rd(a.APIC_ID), 0);
  assert.equal(bsp.rd(a.APIC_LVR), 0x0005_0014, 'integrated APIC, max LVT 5');
  assert.equal(bsp.rd(a.APIC_SPIV), 0xff, 'software-disabled');
  assert.equal(bsp.rd(a.APIC_DFR), 0xffff_ffff);
  assert.equal(bsp.rd(a.APIC_LVTT), a.APIC_LVT_MASKED);
  assert.equal(bsp.rd(a.APIC_LVT0), a.APIC_DM_EXTINT, 'BSP LINT0: unmasked ExtINT');
  assert.equal(bsp.rd(a.APIC_LVT1), a.APIC_LVT_MASKED);
  assert.equal(bsp.l.readApicBase(), 0xfee0_0900n);
  assert.equal(bsp.l.acceptsPicInterrupts(), true);
  const ap = rig({ apicId: 3, bsp: false });
  assert.equal(ap.rd(a.APIC_ID), 0x0300_0000);
  assert.equal(ap.rd(a.APIC_LVT0), a.APIC_LVT_MASKED);
  assert.equal(ap.l.readApicBase(), 0xfee0_0800n);
  assert.equal(ap.l.acceptsPicInterrupts(), false);
  assert.equal(ap.l.isWaitingForSipi, true);
  assert.equal(ap.l.baseGpa, 0xfee0_0000);
});

test('register write masks: LDR, DFR, SVR, TPR, read-only registers', () => {
  const r = rig();
  r.wr(a.APIC_LDR, 0xffff_ffff);
  assert.equal(r.rd(a.APIC_LDR), 0xff00_0000);
  r.wr(a.APIC_DFR, 0);
  assert.equal(r.rd(a.APIC_DFR), a.APIC_DFR_CLUSTER);
  r.wr(a.APIC_SPIV, 0xffff_ffff);
  assert.equal(r.rd(a.APIC_SPIV), 0x3ff);
  r.wr(a.APIC_TASKPRI, 0x1ff);
  assert.equal(r.rd(a.APIC_TASKPRI), 0xff);
  r.wr(a.APIC_LVR, 0);
  assert.equal(r.rd(a.APIC_LVR), 0x0005_0014);
  r.wr(a.APIC_LVT0, 0xffff_ffff);
  assert.equal(r.rd(a.APIC_LVT0), 0x1_a7ff, 'LINT0: mask, trigger, polarity, mode, vector; not remote IRR/status');
  r.wr(a.APIC_LVTERR, 0xffff_ffff);
  assert.equal(r.rd(a.APIC_LVTERR), 0x1_00ff);
});

test('narrow and misaligned accesses: reads see part of a register, writes are dropped', () => {
  const r = rig({ apicId: 5 });
  const d = new Uint8Array(1);
  r.l.read(a.APIC_ID + 3, d);
  assert.equal(d[0], 5);
  r.l.write(a.APIC_TASKPRI, Uint8Array.of(0x40));
  assert.equal(r.rd(a.APIC_TASKPRI), 0, 'a 1-byte write does nothing');
  r.l.write(a.APIC_TASKPRI + 4, Uint8Array.of(1, 2, 3, 4));
  assert.equal(r.rd(a.APIC_TASKPRI), 0);
});

test('fixed interrupt: IRR -> acknowledge -> ISR -> EOI', () => {
  const r = rig();
  enable(r);
  r.l.acceptInterrupt(0x31, am.APIC_TRIGGER_EDGE);
  assert.deepEqual(r.events, ['pending']);
  assert.equal(r.rd(a.APIC_IRR + 0x10), 1 << 17, 'vector 0x31 is bit 17 of IRR word 1');
  assert.equal(r.l.highestPending(), 0x31);
  assert.equal(r.l.acknowledge(), 0x31);
  assert.equal(r.rd(a.APIC_IRR + 0x10), 0);
  assert.equal(r.rd(a.APIC_ISR + 0x10), 1 << 17);
  assert.equal(r.rd(a.APIC_PROCPRI), 0x30, 'PPR follows the in-service class');
  r.wr(a.APIC_EOI, 0);
  assert.equal(r.rd(a.APIC_ISR + 0x10), 0);
  assert.deepEqual(r.eois, [], 'edge vectors are not broadcast to the IOAPIC');
  assert.equal(r.l.hasPendingInterrupt(), false);
});

test('TPR masks by priority class; lowering it makes the held vector deliverable', () => {
  const r = rig();
  enable(r);
  r.wr(a.APIC_TASKPRI, 0x50);
  r.l.acceptInterrupt(0x5f, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.hasPendingInterrupt(), false, 'class 5 is not above TPR class 5');
  assert.equal(r.rd(a.APIC_PROCPRI), 0x50);
  assert.deepEqual(r.events, []);
  r.l.acceptInterrupt(0x61, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.highestPending(), 0x61);
  assert.equal(r.l.acknowledge(), 0x61);
  r.wr(a.APIC_EOI, 0);
  r.events.length = 0;
  r.l.taskPriority = 0x40; // the VMM's CR8 sync path
  assert.deepEqual(r.events, ['pending']);
  assert.equal(r.l.highestPending(), 0x5f);
});

test('ISR nesting: a higher class preempts, EOI retires the highest first, same class waits', () => {
  const r = rig();
  enable(r);
  r.l.acceptInterrupt(0x40, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.acknowledge(), 0x40);
  r.l.acceptInterrupt(0x80, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.acknowledge(), 0x80, 'class 8 nests over class 4');
  r.l.acceptInterrupt(0x45, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.hasPendingInterrupt(), false);
  assert.equal(r.rd(a.APIC_PROCPRI), 0x80);
  r.wr(a.APIC_EOI, 0);
  assert.equal(r.rd(a.APIC_ISR + 0x40), 0, '0x80 retired first');
  assert.equal(r.rd(a.APIC_ISR + 0x20), 1, '0x40 still in service');
  assert.equal(r.l.hasPendingInterrupt(), false, '0x45 is the class of 0x40, still in service');
  r.wr(a.APIC_EOI, 0);
  assert.equal(r.l.acknowledge(), 0x45);
});

test('acknowledge with nothing deliverable answers the spurious vector and leaves ISR alone', () => {
  const r = rig();
  enable(r);
  r.wr(a.APIC_SPIV, a.APIC_SPIV_APIC_ENABLED | 0xef);
  assert.equal(r.l.acknowledge(), 0xef);
  for (let i = 0; i < 8; i++) assert.equal(r.rd(a.APIC_ISR + 0x10 * i), 0);
});

test('level-triggered vectors set TMR and their EOI goes to the IOAPIC', () => {
  const r = rig();
  enable(r);
  r.l.acceptInterrupt(0x61, am.APIC_TRIGGER_LEVEL);
  assert.equal(r.rd(a.APIC_TMR + 0x30), 1 << 1);
  r.l.acknowledge();
  r.wr(a.APIC_EOI, 0);
  assert.deepEqual(r.eois, [0x61]);
  r.l.acceptInterrupt(0x61, am.APIC_TRIGGER_EDGE);
  assert.equal(r.rd(a.APIC_TMR + 0x30), 0, 'an edge delivery clears TMR');
});

test('illegal vectors: receive and send errors show in ESR after an ESR write, as Linux reads it', () => {
  const r = rig();
  enable(r);
  r.l.acceptInterrupt(0x05, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.hasPendingInterrupt(), false);
  r.wr(a.APIC_ICR, 0x0a); // fixed IPI with vector 10
  assert.equal(r.ipis.length, 0);
  assert.equal(r.rd(a.APIC_ESR), 0, 'not latched yet');
  r.wr(a.APIC_ESR, 0);
  assert.equal(r.rd(a.APIC_ESR), a.APIC_ESR_RECVILL | a.APIC_ESR_SENDILL);
  r.wr(a.APIC_ESR, 0);
  assert.equal(r.rd(a.APIC_ESR), 0);
});

test('error LVT raises its vector on an error', () => {
  const r = rig();
  enable(r);
  r.wr(a.APIC_LVTERR, 0xfe);
  r.l.acceptInterrupt(0x01, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.highestPending(), 0xfe);
});

test('software disable masks every LVT and keeps them masked; fixed messages are dropped', () => {
  const r = rig();
  enable(r);
  r.wr(a.APIC_LVTT, 0x20);
  r.wr(a.APIC_SPIV, 0xff);
  assert.equal(r.rd(a.APIC_LVTT), a.APIC_LVT_MASKED | 0x20);
  assert.equal(r.rd(a.APIC_LVT1), a.APIC_LVT_MASKED | a.APIC_DM_NMI);
  r.wr(a.APIC_LVTT, 0x21);
  assert.equal(r.rd(a.APIC_LVTT), a.APIC_LVT_MASKED | 0x21);
  r.l.receive(am.APIC_DELIVERY_MODE_FIXED, 0x40, am.APIC_TRIGGER_EDGE, 1);
  assert.equal(r.rd(a.APIC_IRR + 0x20), 0);
  r.l.receive(am.APIC_DELIVERY_MODE_NMI, 0, am.APIC_TRIGGER_EDGE, 1);
  assert.deepEqual(r.events, ['nmi'], 'NMI still gets through');
});

// ---- timer ----

const TIMER_VECTOR = 0xec; // Linux's LOCAL_TIMER_VECTOR

function timerRig(mode: number, options: Partial<a.LapicOptions> = {}) {
  const r = rig(options);
  enable(r);
  r.wr(a.APIC_LVTT, mode | TIMER_VECTOR);
  return r;
}

function takeTimer(r: Rig): boolean {
  if (r.l.highestPending() !== TIMER_VECTOR) return false;
  r.l.acknowledge();
  r.wr(a.APIC_EOI, 0);
  return true;
}

test('one-shot: fires once at initial * divide ticks, current count counts down to 0', () => {
  const r = timerRig(a.APIC_LVT_TIMER_ONESHOT);
  r.now = 5_000n;
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_16);
  const changes = r.timerChanges;
  r.wr(a.APIC_TMICT, 1000);
  assert.equal(r.timerChanges, changes + 1, 'timerChanged on arming');
  assert.equal(r.l.nextDeadlineNs(), 5_000n + 16_000n);
  assert.equal(r.rd(a.APIC_TMCCT), 1000);
  r.now += 8_000n;
  assert.equal(r.rd(a.APIC_TMCCT), 500);
  r.now = 5_000n + 15_999n;
  assert.equal(r.rd(a.APIC_TMCCT), 1);
  r.l.onTime(r.now);
  assert.equal(takeTimer(r), false, 'not yet');
  r.now += 1n;
  assert.equal(r.rd(a.APIC_TMCCT), 0, 'reads 0 at expiry even before onTime');
  r.l.onTime(r.now);
  assert.equal(takeTimer(r), true);
  assert.equal(r.l.nextDeadlineNs(), null);
  assert.equal(r.timerChanges, changes + 2, 'timerChanged on expiry');
  r.now += 1_000_000n;
  r.l.onTime(r.now);
  assert.equal(takeTimer(r), false, 'one-shot stays stopped');
  assert.equal(r.rd(a.APIC_TMCCT), 0);
  assert.equal(r.rd(a.APIC_TMICT), 1000, 'initial count is kept');
});

test('periodic: fires exactly at start + k * period, no drift over 1000 periods', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.now = 123n;
  r.wr(a.APIC_TMICT, 250_000); // 250 us at 1 GHz
  for (let k = 1n; k <= 1000n; k++) {
    const d = r.l.nextDeadlineNs();
    assert.equal(d, 123n + k * 250_000n);
    r.l.onTime(d! - 1n);
    assert.equal(takeTimer(r), false);
    // Every third expiry the VMM is late; the grid must not move.
    r.now = k % 3n === 0n ? d! + 77_000n : d!;
    r.l.onTime(r.now);
    assert.equal(takeTimer(r), true, `expiry ${k}`);
  }
});

test('periodic with a period that is not a whole number of ns stays on the exact grid', () => {
  // 7 MHz timer clock, 7001 ticks: 1000142.857... ns per period. Rounding each period would
  // accumulate to 1000143000 ns after 1000 periods; the exact grid is ceil(1000142857.14).
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC, { timerHz: 7_000_000n });
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.wr(a.APIC_TMICT, 7001);
  for (let k = 1; k <= 1000; k++) {
    r.now = r.l.nextDeadlineNs()!;
    r.l.onTime(r.now);
    assert.equal(takeTimer(r), true);
  }
  assert.equal(r.now, 1_000_142_858n);
});

test('periodic: current count reloads; a late VMM gets one interrupt, not a burst', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_2);
  r.wr(a.APIC_TMICT, 500_000); // 1 ms
  r.now = 2_500_000n;
  assert.equal(r.rd(a.APIC_TMCCT), 250_000, 'half-way through the third period');
  r.l.onTime(r.now);
  assert.equal(takeTimer(r), true);
  assert.equal(takeTimer(r), false, 'missed periods coalesce');
  assert.equal(r.l.nextDeadlineNs(), 3_000_000n);
});

test('periodic faster than 200 us is held to 200 us (a guest cannot make the VMM spin)', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.wr(a.APIC_TMICT, 1);
  assert.equal(r.l.nextDeadlineNs(), a.APIC_MIN_PERIOD_NS);
});

test('divide configuration: bits 0, 1 and 3 select 2..128, 0b1011 is divide by 1', () => {
  const expected: [number, bigint][] = [[0x0, 2n], [0x1, 4n], [0x2, 8n], [0x3, 16n], [0x8, 32n], [0x9, 64n], [0xa, 128n], [0xb, 1n], [0x4, 2n]];
  for (const [tdcr, divide] of expected) {
    const r = timerRig(a.APIC_LVT_TIMER_ONESHOT);
    r.wr(a.APIC_TDCR, tdcr);
    assert.equal(r.rd(a.APIC_TDCR), tdcr & 0xb, 'bit 2 is reserved');
    r.wr(a.APIC_TMICT, 10);
    assert.equal(r.l.nextDeadlineNs(), 10n * divide, `TDCR 0x${tdcr.toString(16)}`);
  }
});

test('changing the divider mid-count keeps the count and runs the rest at the new rate', () => {
  const r = timerRig(a.APIC_LVT_TIMER_ONESHOT);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.wr(a.APIC_TMICT, 1000);
  r.now = 400n;
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_2);
  assert.equal(r.rd(a.APIC_TMCCT), 600);
  assert.equal(r.l.nextDeadlineNs(), 400n + 1200n);
});

test('masked timer counts and reloads but raises nothing', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC | a.APIC_LVT_MASKED);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.wr(a.APIC_TMICT, 1_000_000);
  r.now = 1_000_000n;
  r.l.onTime(r.now);
  assert.equal(r.l.hasPendingInterrupt(), false);
  assert.equal(r.l.nextDeadlineNs(), 2_000_000n, 'still periodic');
  r.wr(a.APIC_LVTT, a.APIC_LVT_TIMER_PERIODIC | TIMER_VECTOR);
  r.now = 2_000_000n;
  r.l.onTime(r.now);
  assert.equal(takeTimer(r), true, 'unmasked: the next expiry interrupts');
});

test('writing 0 to the initial count stops the timer', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC);
  r.wr(a.APIC_TMICT, 1_000_000);
  assert.notEqual(r.l.nextDeadlineNs(), null);
  r.wr(a.APIC_TMICT, 0);
  assert.equal(r.l.nextDeadlineNs(), null);
  assert.equal(r.rd(a.APIC_TMCCT), 0);
});

test('TSC-deadline: fires once when the TSC reaches the deadline, then the MSR reads 0', () => {
  // 2 GHz TSC that read 1_000_000 at clock 0.
  const r = timerRig(a.APIC_LVT_TIMER_TSCDEADLINE, { tscAtZero: 1_000_000n });
  r.now = 10_000n;
  assert.equal(r.l.tscAt(r.now), 1_020_000n);
  r.l.writeTscDeadline(1_020_000n + 3_001n); // 1500.5 ns ahead: the first whole ns is 1501
  assert.equal(r.l.readTscDeadline(), 1_023_001n);
  assert.equal(r.l.nextDeadlineNs(), 11_501n);
  r.l.onTime(11_500n);
  assert.equal(takeTimer(r), false);
  r.l.onTime(11_501n);
  assert.equal(takeTimer(r), true);
  assert.equal(r.l.readTscDeadline(), 0n);
  assert.equal(r.l.nextDeadlineNs(), null);
  r.l.onTime(20_000n);
  assert.equal(takeTimer(r), false, 'fires once');
});

test('TSC-deadline: a deadline in the past fires at once; 0 disarms; TMICT is ignored, TMCCT reads 0', () => {
  const r = timerRig(a.APIC_LVT_TIMER_TSCDEADLINE);
  r.now = 1_000n;
  r.l.writeTscDeadline(5n);
  assert.equal(takeTimer(r), true);
  r.l.writeTscDeadline(1_000_000n);
  assert.notEqual(r.l.nextDeadlineNs(), null);
  r.l.writeTscDeadline(0n);
  assert.equal(r.l.nextDeadlineNs(), null);
  r.wr(a.APIC_TMICT, 1234);
  assert.equal(r.rd(a.APIC_TMICT), 0);
  assert.equal(r.rd(a.APIC_TMCCT), 0);
  assert.equal(r.l.nextDeadlineNs(), null);
});

test('mode switches to and from TSC-deadline disarm (SDM 10.5.4.1); the MSR is ignored outside it', () => {
  const r = timerRig(a.APIC_LVT_TIMER_ONESHOT);
  r.wr(a.APIC_TMICT, 1_000_000);
  r.wr(a.APIC_LVTT, a.APIC_LVT_TIMER_TSCDEADLINE | TIMER_VECTOR);
  assert.equal(r.l.nextDeadlineNs(), null, 'one-shot count disarmed');
  assert.equal(r.rd(a.APIC_TMICT), 0);
  r.l.writeTscDeadline(10_000_000n);
  assert.notEqual(r.l.nextDeadlineNs(), null);
  r.wr(a.APIC_LVTT, a.APIC_LVT_TIMER_PERIODIC | TIMER_VECTOR);
  assert.equal(r.l.nextDeadlineNs(), null, 'deadline disarmed');
  r.l.writeTscDeadline(10_000_000n);
  assert.equal(r.l.readTscDeadline(), 0n, 'ignored in periodic mode');
  assert.equal(r.l.nextDeadlineNs(), null);
  r.now = 100_000_000n;
  r.l.onTime(r.now);
  assert.equal(r.l.hasPendingInterrupt(), false);
});

test('one-shot -> periodic keeps the running count, then reloads', () => {
  const r = timerRig(a.APIC_LVT_TIMER_ONESHOT);
  r.wr(a.APIC_TDCR, a.APIC_TDR_DIV_1);
  r.wr(a.APIC_TMICT, 1_000_000);
  r.now = 300_000n;
  r.wr(a.APIC_LVTT, a.APIC_LVT_TIMER_PERIODIC | TIMER_VECTOR);
  assert.equal(r.rd(a.APIC_TMCCT), 700_000);
  assert.equal(r.l.nextDeadlineNs(), 1_000_000n);
  r.l.onTime(1_000_000n);
  assert.equal(takeTimer(r), true);
  assert.equal(r.l.nextDeadlineNs(), 2_000_000n);
});

// ---- IPIs, INIT/SIPI, MSRs, PIC ----

test('ICR: writing the low half sends; the message carries every field; busy always reads 0', () => {
  const r = rig({ apicId: 2 });
  enable(r);
  r.wr(a.APIC_ICR2, 0x0500_0000);
  assert.equal(r.ipis.length, 0, 'the high half does not send');
  r.wr(a.APIC_ICR, a.APIC_INT_ASSERT | a.APIC_DM_FIXED | 0xfd);
  assert.deepEqual(r.ipis, [{ destination: 5, destMode: am.APIC_DEST_PHYSICAL, shorthand: am.APIC_SHORTHAND_NONE, deliveryMode: am.APIC_DELIVERY_MODE_FIXED, vector: 0xfd, level: 1, trigger: am.APIC_TRIGGER_EDGE, sourceId: 2 }]);
  assert.equal(r.rd(a.APIC_ICR) & a.APIC_ICR_BUSY, 0, 'apic_wait_icr_idle returns at once');
  r.wr(a.APIC_ICR, a.APIC_DEST_ALLBUT | a.APIC_DM_NMI | a.APIC_DEST_LOGICAL);
  assert.equal(r.ipis[1]!.shorthand, am.APIC_SHORTHAND_ALL_EXCLUDING_SELF);
  assert.equal(r.ipis[1]!.deliveryMode, am.APIC_DELIVERY_MODE_NMI);
  assert.equal(r.ipis[1]!.destMode, am.APIC_DEST_LOGICAL);
  r.wr(a.APIC_ICR, a.APIC_INT_LEVELTRIG | a.APIC_DM_INIT);
  assert.deepEqual([r.ipis[2]!.deliveryMode, r.ipis[2]!.level, r.ipis[2]!.trigger], [am.APIC_DELIVERY_MODE_INIT, 0, am.APIC_TRIGGER_LEVEL]);
});

test('INIT resets the APIC (not its ID) and an AP then waits for exactly one SIPI', () => {
  const r = rig({ apicId: 1, bsp: false });
  enable(r);
  r.wr(a.APIC_TASKPRI, 0x20);
  r.l.receive(am.APIC_DELIVERY_MODE_INIT, 0, am.APIC_TRIGGER_LEVEL, 1);
  assert.deepEqual(r.events, ['init']);
  assert.equal(r.rd(a.APIC_ID), 0x0100_0000);
  assert.equal(r.rd(a.APIC_TASKPRI), 0);
  assert.equal(r.rd(a.APIC_SPIV), 0xff);
  assert.equal(r.rd(a.APIC_LVT1), a.APIC_LVT_MASKED);
  assert.equal(r.l.isWaitingForSipi, true);
  r.l.receive(am.APIC_DELIVERY_MODE_INIT, 0, am.APIC_TRIGGER_LEVEL, 0);
  assert.deepEqual(r.events, ['init'], 'the INIT level de-assert does nothing');
  r.l.receive(am.APIC_DELIVERY_MODE_STARTUP, 0x9a, am.APIC_TRIGGER_EDGE, 1);
  r.l.receive(am.APIC_DELIVERY_MODE_STARTUP, 0x9a, am.APIC_TRIGGER_EDGE, 1);
  assert.deepEqual(r.events, ['init', 'sipi 0x9a'], 'the second SIPI finds the AP running');
  assert.equal(r.l.isWaitingForSipi, false);
});

test('a SIPI to a CPU that was never INITed but is running (the BSP) is ignored', () => {
  const r = rig({ bsp: true });
  r.l.receive(am.APIC_DELIVERY_MODE_STARTUP, 0x10, am.APIC_TRIGGER_EDGE, 1);
  assert.deepEqual(r.events, []);
});

test('INIT disarms the timer', () => {
  const r = timerRig(a.APIC_LVT_TIMER_PERIODIC);
  r.wr(a.APIC_TMICT, 1_000_000);
  r.l.receive(am.APIC_DELIVERY_MODE_INIT, 0, am.APIC_TRIGGER_EDGE, 1);
  assert.equal(r.l.nextDeadlineNs(), null);
});

test('APIC_BASE: x2APIC and reserved bits are refused; disabling turns the page off and hands INTR to the PIC', () => {
  const r = rig({ bsp: false });
  enable(r);
  assert.equal(r.l.writeApicBase(0xfee0_0000n | a.MSR_IA32_APICBASE_ENABLE | a.X2APIC_ENABLE), false);
  assert.equal(r.l.writeApicBase(1n), false);
  assert.equal(r.l.readApicBase(), 0xfee0_0800n);
  assert.equal(r.l.writeApicBase(0xfee0_0000n), true);
  assert.equal(r.l.hardwareEnabled, false);
  assert.equal(r.rd(a.APIC_LVR), 0, 'no registers');
  assert.equal(r.l.acceptsPicInterrupts(), true);
  r.l.acceptInterrupt(0x40, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.hasPendingInterrupt(), false);
  assert.equal(r.l.writeApicBase(0xfed0_0000n | a.MSR_IA32_APICBASE_ENABLE), true);
  assert.equal(r.l.baseGpa, 0xfed0_0000, 'relocated');
  assert.equal(r.rd(a.APIC_SPIV), 0xff, 'back in the reset state');
});

test('PIC and LAPIC combined: ExtINT through virtual-wire LINT0 first, else the LAPIC', () => {
  const r = rig({ bsp: true });
  enable(r);
  let picPending = true;
  const pic = { hasInterrupt: () => picPending, acknowledge: () => { picPending = false; return 0x30; } };
  r.l.acceptInterrupt(0x41, am.APIC_TRIGGER_EDGE);
  assert.equal(r.l.hasInjectableInterrupt(pic), true);
  assert.equal(r.l.takeInjectableInterrupt(pic), 0x30);
  assert.equal(r.rd(a.APIC_ISR + 0x10), 0, 'ExtINT bypasses ISR');
  assert.equal(r.l.takeInjectableInterrupt(pic), 0x41);
  assert.equal(r.l.takeInjectableInterrupt(pic), -1);
  // Linux masks LINT0 once the IOAPIC takes over: the PIC no longer reaches the CPU.
  r.wr(a.APIC_LVT0, a.APIC_LVT_MASKED | a.APIC_DM_EXTINT);
  picPending = true;
  assert.equal(r.l.hasInjectableInterrupt(pic), false);
  // ...except through an ExtINT message (IOAPIC pin 0 in ExtINT mode).
  r.l.receive(am.APIC_DELIVERY_MODE_EXTINT, 0, am.APIC_TRIGGER_EDGE, 1);
  assert.equal(r.l.takeInjectableInterrupt(pic), 0x30);
});

test('LINT1 in NMI mode delivers an NMI; masked it does nothing', () => {
  const r = rig();
  enable(r);
  r.l.assertLint(1);
  assert.deepEqual(r.events, ['nmi']);
  r.wr(a.APIC_LVT1, a.APIC_LVT_MASKED | a.APIC_DM_NMI);
  r.l.assertLint(1);
  assert.deepEqual(r.events, ['nmi']);
});

test('APR: TPR when it is above IRR and ISR classes, else the highest class', () => {
  const r = rig();
  enable(r);
  r.wr(a.APIC_TASKPRI, 0x35);
  assert.equal(r.rd(a.APIC_ARBPRI), 0x35);
  r.l.acceptInterrupt(0x51, am.APIC_TRIGGER_EDGE);
  assert.equal(r.rd(a.APIC_ARBPRI), 0x50);
});

test('a bad APIC ID in the VMM\'s configuration is an IrqchipError', () => {
  assert.throws(() => rig({ apicId: 255 }), (e: unknown) => e instanceof IrqchipError && e.kind === 'bad-config');
});
