// The ACPI PM registers against ACPI 6.5 4.8.3: PM1 status write-1-to-clear, PM1_CNT SCI_EN
// always set and SLP_EN a write-only trigger, the PM timer at 3.579545 MHz wrapping at 24 bits.
import assert from 'node:assert/strict';
import test from 'node:test';
import { AcpiPm, PM1_CNT_SCI_EN, PM1_CNT_SLP_EN, PM1_EN, PM1_STS, PM_TIMER_MASK } from './acpi-pm.js';
import { ACPI_S5_SLP_TYP } from '../boot/layout.js';

function pm(start = 0n) {
  let now = start;
  const sleeps: number[] = [];
  const dev = new AcpiPm({ nowNs: () => now, sleep: (t) => sleeps.push(t) });
  return { dev, sleeps, advance: (ns: bigint) => { now += ns; } };
}
const u16 = (v: number) => new Uint8Array([v & 0xff, v >> 8]);
const read16 = (d: { read(o: number, b: Uint8Array): void }, offset: number) => { const b = new Uint8Array(2); d.read(offset, b); return b[0]! | (b[1]! << 8); };
const read32 = (d: { read(o: number, b: Uint8Array): void }) => { const b = new Uint8Array(4); d.read(0, b); return new DataView(b.buffer).getUint32(0, true); };

test('PM1_CNT reads SCI_EN at reset and keeps it; SLP_TYP=5 with SLP_EN asks for S5 once, and SLP_EN reads back 0', () => {
  const { dev, sleeps } = pm();
  assert.equal(read16(dev.controlBlock, 0), PM1_CNT_SCI_EN);
  dev.controlBlock.write(0, u16(ACPI_S5_SLP_TYP << 10)); // SLP_TYP without SLP_EN: no transition
  assert.deepEqual(sleeps, []);
  assert.equal(read16(dev.controlBlock, 0), (ACPI_S5_SLP_TYP << 10) | PM1_CNT_SCI_EN);
  dev.controlBlock.write(0, u16((ACPI_S5_SLP_TYP << 10) | PM1_CNT_SLP_EN)); // Linux's acpi_hw_legacy_sleep
  assert.deepEqual(sleeps, [ACPI_S5_SLP_TYP]);
  assert.equal(read16(dev.controlBlock, 0) & PM1_CNT_SLP_EN, 0);
});

test('PM1_CNT: a byte write to the high byte merges with the low byte', () => {
  const { dev, sleeps } = pm();
  dev.controlBlock.write(1, new Uint8Array([((ACPI_S5_SLP_TYP << 10) | PM1_CNT_SLP_EN) >> 8]));
  assert.deepEqual(sleeps, [ACPI_S5_SLP_TYP]);
  assert.equal(read16(dev.controlBlock, 0) & PM1_CNT_SCI_EN, PM1_CNT_SCI_EN);
});

test('PM1_EN holds what is written; PM1_STS is write-1-to-clear and reads 0 with no events', () => {
  const { dev } = pm();
  dev.eventBlock.write(PM1_EN, u16(0x0121));
  assert.equal(read16(dev.eventBlock, PM1_EN), 0x0121);
  assert.equal(read16(dev.eventBlock, PM1_STS), 0);
  dev.eventBlock.write(PM1_STS, u16(0xffff)); // clearing nothing that is set changes nothing
  assert.equal(read16(dev.eventBlock, PM1_STS), 0);
  assert.equal(read16(dev.eventBlock, PM1_EN), 0x0121, 'a status write leaves PM1_EN alone');
  // One 32-bit access covers both registers, as some OSes do.
  dev.eventBlock.write(0, new Uint8Array([0xff, 0xff, 0x00, 0x01]));
  assert.equal(read16(dev.eventBlock, PM1_EN), 0x0100);
});

test('PM timer: 3.579545 MHz from the clock, 24 bits, wrapping', () => {
  const { dev, advance } = pm(123_456_789n);
  assert.equal(read32(dev.timer), 0);
  advance(1_000_000_000n);
  assert.equal(read32(dev.timer), 3_579_545);
  advance(4_000_000_000n); // 5 s in all: 17,897,725 ticks, past 2^24 once
  assert.equal(read32(dev.timer), 17_897_725 & PM_TIMER_MASK);
  const lo = new Uint8Array(1);
  dev.timer.read(0, lo);
  assert.equal(lo[0], 17_897_725 & 0xff, 'a byte read gives the low byte');
});
