import test from 'node:test';
import assert from 'node:assert/strict';
import { alignDown, alignUp, concatBytes, setAscii, struct } from './struct.js';

test('struct declarations are checked: fields inside sizeof, no overlaps', () => {
  assert.throws(() => struct('s', 4, { a: [0, 'u32'], b: [4, 'u8'] }), /field b \[4, 5\) is outside sizeof 4/);
  assert.throws(() => struct('s', 8, { a: [0, 'u32'], b: [2, 'u16'] }), /field b overlaps a/);
  assert.throws(() => struct('s', 8, { a: [0, { bytes: 4 }], b: [3, 'u8'] }), /overlaps/);
  struct('s', 8, { a: [0, 'u32'], b: [6, 'u16'] }); // holes are fine (reserved fields)
});

test('fields read and write little-endian at their offsets; values that do not fit are refused', () => {
  const s = struct('s', 24, { b: [1, 'u8'], w: [2, 'u16'], d: [4, 'u32'], q: [8, 'u64'], raw: [16, { bytes: 8 }] });
  const bytes = s.encode({ b: 0x12, w: 0x3456, d: 0x789abcde, q: 0x1_2345_6789 });
  assert.deepEqual([...bytes.subarray(0, 16)], [0, 0x12, 0x56, 0x34, 0xde, 0xbc, 0x9a, 0x78, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0]);
  assert.equal(s.get(bytes, 0, 'q'), 0x1_2345_6789);
  assert.equal(s.offsetOf('raw'), 16);
  assert.equal(s.sizeOf('raw'), 8);
  s.bytesOf(bytes, 0, 'raw').fill(7);
  assert.equal(bytes[23], 7);
  assert.throws(() => s.set(bytes, 0, 'b', 256), RangeError);
  assert.throws(() => s.set(bytes, 0, 'd', -1), RangeError);
  assert.throws(() => s.set(bytes, 0, 'w', 1.5), RangeError);
  assert.throws(() => s.set(bytes, 0, 'raw', 1), TypeError);
  // A struct inside a larger buffer, at a base offset.
  const big = new Uint8Array(64);
  s.encode({ d: 1 }, big, 32);
  assert.equal(big[36], 1);
  big.fill(0xff, 40, 48);
  assert.throws(() => s.get(big, 32, 'q'), /does not fit a JS number/);
});

test('helpers', () => {
  const field = new Uint8Array(6);
  setAscii(field, 'TSVMM');
  assert.equal(String.fromCharCode(...field), 'TSVMM ');
  assert.throws(() => setAscii(field, 'TOOLONG'), RangeError);
  assert.deepEqual(concatBytes([Uint8Array.of(1), Uint8Array.of(), Uint8Array.of(2, 3)]), Uint8Array.of(1, 2, 3));
  assert.equal(alignUp(0x1001, 0x1000), 0x2000);
  assert.equal(alignDown(0x1fff, 0x1000), 0x1000);
});
