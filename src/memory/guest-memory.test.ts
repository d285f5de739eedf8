import assert from 'node:assert/strict';
import test from 'node:test';
import { GuestMemory, GuestMemoryError } from './guest-memory.js';

function mem() {
  const bufs = new Map<bigint, ArrayBuffer>([[1n, new ArrayBuffer(0x1000)], [2n, new ArrayBuffer(0x1000)]]);
  return new GuestMemory([{ gpa: 0, sizeBytes: 0x1000, hva: 1n }, { gpa: 0x10000, sizeBytes: 0x1000, hva: 2n }], (hva) => bufs.get(hva)!);
}

test('typed access inside regions, little-endian', () => {
  const m = mem();
  m.writeU32(0x10, 0x11223344);
  assert.equal(m.readU8(0x10), 0x44);
  assert.equal(m.readU16(0x12), 0x1122);
  m.writeU64(0x10ff8, 0x0102030405060708n);
  assert.equal(m.readU64(0x10ff8), 0x0102030405060708n);
});

test('accesses leaving guest RAM throw instead of touching other memory', () => {
  const m = mem();
  assert.throws(() => m.readU32(0xffe), GuestMemoryError, 'straddles the end of a region');
  assert.throws(() => m.slice(0x2000, 1), GuestMemoryError, 'in the gap');
  assert.throws(() => m.write(0x10fff, Uint8Array.of(1, 2)), GuestMemoryError);
  assert.equal(m.contains(0x10000, 0x1000), true);
  assert.equal(m.contains(0x10000, 0x1001), false);
  m.detach();
  assert.throws(() => m.readU8(0), GuestMemoryError, 'detached memory is gone');
});
