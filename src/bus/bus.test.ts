import assert from 'node:assert/strict';
import test from 'node:test';
import { Bus, BusError, type BusDevice } from './bus.js';

const nop: BusDevice = { read: () => {}, write: () => {} };

test('find returns the covering entry; devices see offsets via base', () => {
  const bus = new Bus('pio');
  bus.insert(0x3f8, 8, 'com1', nop);
  bus.insert(0x60, 5, 'i8042', nop);
  bus.insert(0x2f8, 8, 'com2', nop);
  assert.equal(bus.find(0x3f8)?.name, 'com1');
  assert.equal(bus.find(0x3ff)?.name, 'com1');
  assert.equal(bus.find(0x400), undefined);
  assert.equal(bus.find(0x64)?.base, 0x60);
  assert.equal(bus.find(0x65), undefined);
  assert.equal(bus.find(0), undefined);
});

test('overlapping and empty ranges are refused', () => {
  const bus = new Bus('mmio');
  bus.insert(0x1000, 0x1000, 'a', nop);
  assert.throws(() => bus.insert(0x1800, 0x1000, 'b', nop), BusError);
  assert.throws(() => bus.insert(0x0, 0x1001, 'c', nop), BusError);
  assert.throws(() => bus.insert(0x5000, 0, 'd', nop), BusError);
  bus.insert(0x2000, 0x1000, 'e', nop);
  assert.equal(bus.list().length, 2);
});

test('access hands the device its offset, and reports addresses nobody claims', () => {
  const seen: Array<[string, number, number]> = [];
  const dev: BusDevice = { read: (o, d) => { seen.push(['r', o, d.length]); d.fill(7); }, write: (o, d) => { seen.push(['w', o, d[0]!]); } };
  const bus = new Bus('pio');
  bus.insert(0x3f8, 8, 'com1', dev);
  const d = new Uint8Array(1);
  assert.equal(bus.access(0x3fd, false, d), true);
  assert.equal(d[0], 7);
  assert.equal(bus.access(0x3f8, true, Uint8Array.of(0x41)), true);
  assert.equal(bus.access(0x400, true, Uint8Array.of(1)), false);
  assert.deepEqual(seen, [['r', 5, 1], ['w', 0, 0x41]]);
});
