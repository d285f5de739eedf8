import test from 'node:test';
import assert from 'node:assert/strict';
import { decodeLz4Block, decodeLz4Legacy, Lz4Error, LZ4_LEGACY_MAGIC } from './lz4.js';

const ascii = (text: string) => new TextEncoder().encode(text);
const fromHex = (hexText: string) => Uint8Array.from(hexText.match(/../g) ?? [], (b) => parseInt(b, 16));

function u32le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

function legacyFrame(...blocks: Uint8Array[]): Uint8Array {
  const bytes: number[] = u32le(LZ4_LEGACY_MAGIC);
  for (const block of blocks) bytes.push(...u32le(block.length), ...block);
  return Uint8Array.from(bytes);
}

/** The same LCG as the Python that made the vector below: x = x * 1103515245 + 12345 mod 2^31. */
function lcgBytes(count: number): Uint8Array {
  const out = new Uint8Array(count);
  let x = 1n;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245n + 12345n) % (1n << 31n);
    out[i] = Number((x >> 16n) & 0xffn);
  }
  return out;
}

test('lz4 -l -9 output of a short text decodes (overlapping matches, run of one byte)', () => {
  // printf '<text>' | lz4 -l -9   (lz4 1.9.4)
  const text = 'tsvmm tsvmm tsvmm tsvmm tsvmm tsvmm! ' + 'a'.repeat(83) + ' end';
  const frame = fromHex('02214c18170000006f7473766d6d2006000a3f21206101003e506120656e64');
  assert.deepEqual(decodeLz4Legacy(frame), ascii(text));
});

test('lz4 -l output of a literal-only block decodes', () => {
  assert.deepEqual(decodeLz4Legacy(fromHex('02214c180400000030616263')), ascii('abc'));
});

test('lz4 -l output with 255-extended literal and match lengths decodes', () => {
  // 400 LCG bytes then 700 zeros, compressed by lz4 -l: 404 literals (15 + 255 + 134),
  // then offset 4 with match length 4 + 15 + 255 + 255 + 162, then 5 literal zeros.
  const expected = new Uint8Array(1100);
  expected.set(lcgBytes(400));
  const block = Uint8Array.from([0xff, 0xff, 0x86, ...lcgBytes(400), 0, 0, 0, 0, 0x04, 0x00, 0xff, 0xff, 0xa2, 0x50, 0, 0, 0, 0, 0]);
  assert.equal(block.length, 0x1a2);
  assert.deepEqual(decodeLz4Legacy(legacyFrame(block)), expected);
});

test('blocks are independent, output sized by expectedSizeBytes, trailer skipped', () => {
  const frame = legacyFrame(fromHex('30616263'), fromHex('1178010000'));
  const withTrailer = Uint8Array.from([...frame, ...u32le(3 + 6)]);
  assert.deepEqual(decodeLz4Legacy(withTrailer, { expectedSizeBytes: 9, trailerBytes: 4 }), ascii('abcxxxxxx'));
  // The second block may not reach back into the first one.
  const crossing = legacyFrame(fromHex('30616263'), fromHex('00030000'));
  assert.throws(() => decodeLz4Legacy(crossing), /points before the start of the block/);
});

test('concatenated legacy frames decode as one stream', () => {
  const one = legacyFrame(fromHex('30616263'));
  const two = Uint8Array.from([...one, ...one]);
  assert.deepEqual(decodeLz4Legacy(two), ascii('abcabc'));
});

/** One literal `byte`, a run of 4 + 15 + 255 * n copies of it, then a final literal '.'. */
function runBlock(byte: number, n: number): Uint8Array {
  return Uint8Array.from([0x1f, byte, 0x01, 0x00, ...new Array<number>(n).fill(255), 0x00, 0x10, 0x2e]);
}

test('output grows past the first 8 MiB when the size is not known', () => {
  // Two blocks of ~6 MiB each from ~48 kB of input.
  const out = decodeLz4Legacy(legacyFrame(runBlock(0x61, 24000), runBlock(0x62, 24000)));
  const blockOut = 1 + 4 + 15 + 255 * 24000 + 1;
  assert.equal(out.length, 2 * blockOut);
  assert.equal(out[blockOut - 2], 0x61);
  assert.equal(out[blockOut - 1], 0x2e);
  assert.equal(out[blockOut], 0x62);
});

test('a legacy block may not produce more than 8 MiB', () => {
  assert.throws(() => decodeLz4Legacy(legacyFrame(runBlock(0x61, 33000))), /overflows the output/);
});

test('damaged input is refused with a position, never read or written out of bounds', () => {
  const cases: [string, Uint8Array][] = [
    ['literal length past end', fromHex('f0')],
    ['literals past end', fromHex('50616263')],
    ['offset past end', fromHex('106101')],
    ['offset zero', fromHex('1061000000')],
    ['offset before start', fromHex('1061020000')],
    ['match length past end', fromHex('1f610100')],
  ];
  for (const [what, block] of cases) {
    assert.throws(() => decodeLz4Block(block, new Uint8Array(64)), Lz4Error, what);
  }
  // Output limit: a 2-byte output cannot hold 3 literals.
  assert.throws(() => decodeLz4Block(fromHex('30616263'), new Uint8Array(2)), /overflow the output/);
  assert.throws(() => decodeLz4Block(fromHex('1061010000'), new Uint8Array(4)), /overflows the output/);
  assert.throws(() => decodeLz4Legacy(fromHex('04224d18')), /no LZ4 legacy frame magic/);
  assert.throws(() => decodeLz4Legacy(Uint8Array.from([...u32le(LZ4_LEGACY_MAGIC), ...u32le(100), 1, 2])), /claims 100 bytes/);
  assert.throws(() => decodeLz4Legacy(legacyFrame(fromHex('30616263')), { expectedSizeBytes: 4 }), /decoded 3 bytes, expected 4/);
});
