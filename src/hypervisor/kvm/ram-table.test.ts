import assert from 'node:assert/strict';
import test from 'node:test';
import { readRamTable, SharedRamTable } from './ram-table.js';

const slots = [
  { gpa: 0, sizeBytes: 0x400_0000, hva: 0x7f12_3456_0000n },
  { gpa: 0x1_0000_0000, sizeBytes: 0x1000, hva: 0x7fff_ffff_f000n },
];

test('RAM table: what is written reads back, host addresses exact', () => {
  const t = new SharedRamTable(new SharedArrayBuffer(SharedRamTable.bytesFor(4)));
  assert.equal(t.capacity, 4);
  assert.deepEqual(t.read(), []);
  t.write(slots);
  assert.deepEqual(t.read(), slots);
  t.write(slots.slice(1));
  assert.deepEqual(t.read(), slots.slice(1));
});

test('RAM table: more regions than memslots is refused, the table unchanged', () => {
  const t = new SharedRamTable(new SharedArrayBuffer(SharedRamTable.bytesFor(1)));
  t.write(slots.slice(0, 1));
  assert.throws(() => t.write(slots), /2 RAM regions, but room for 1/);
  assert.deepEqual(t.read(), slots.slice(0, 1));
});

test('RAM table: a reader gets nothing while the map sequence is odd or moves', () => {
  const t = new SharedRamTable(new SharedArrayBuffer(SharedRamTable.bytesFor(2)));
  const seq = new Int32Array(new SharedArrayBuffer(4));
  t.write(slots);
  assert.deepEqual(readRamTable(t, seq), { slots, seq: 0 });
  seq[0] = 1;
  assert.equal(readRamTable(t, seq), null);
  seq[0] = 2;
  assert.deepEqual(readRamTable(t, seq)?.seq, 2);
});
