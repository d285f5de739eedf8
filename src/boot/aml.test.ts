import test from 'node:test';
import assert from 'node:assert/strict';
import * as aml from './aml.js';
import { concatBytes } from './struct.js';

// Expected bytes below were produced by compiling the ASL shown with iasl 20200925 (Debian
// acpica-tools), `iasl -on` (no name-path shortening, as this encoder writes paths as given),
// and copied from the .aml after its 36-byte table header. The tests do not need iasl.

const fromHex = (hexText: string) => Uint8Array.from(hexText.replace(/\s+/g, '').match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

function assertBytes(actual: Uint8Array, expectedHex: string): void {
  assert.equal(toHex(actual), toHex(fromHex(expectedHex)));
}

test('PkgLength: 1 byte up to 63, then 2/3/4 bytes with the length counting itself', () => {
  assertBytes(aml.pkgLength(0), '01');
  assertBytes(aml.pkgLength(62), '3f');
  assertBytes(aml.pkgLength(63), '4104'); // 63 + 2 = 65 = 0x041
  assertBytes(aml.pkgLength(0xffd), '4fff');
  assertBytes(aml.pkgLength(0xffe), '810001'); // 0xffe + 3 = 0x1001
  assertBytes(aml.pkgLength(0x100000), 'c4000001'); // 0x100000 + 4
  // From iasl: Device (BIG1) { 100 x Name (Nnnn, 0x12345678) } -> 5b 82 4e 3e,
  // Device (BIG2) { 500 names } -> 5b 82 8f 38 01, the Scope holding both -> 10 89 78 01.
  assertBytes(aml.pkgLength(4 + 100 * 10), '4e3e');
  assertBytes(aml.pkgLength(4 + 500 * 10), '8f3801');
  assert.throws(() => aml.pkgLength(1 << 28), RangeError);
});

test('PkgLength inside a real Device matches iasl for the 2- and 3-byte forms', () => {
  const names = (prefix: string, count: number) =>
    Array.from({ length: count }, (_, i) => aml.name(`${prefix}${String(i).padStart(3, '0')}`, aml.integer(0x12345678)));
  const big1 = aml.device('BIG1', ...names('N', 100));
  assertBytes(big1.subarray(0, 10), '5b824e3e' + '42494731' + '084e');
  assert.equal(big1.length, 2 + 1006);
  const big2 = aml.device('BIG2', ...names('M', 500));
  assertBytes(big2.subarray(0, 11), '5b828f3801' + '42494732' + '084d');
  assert.equal(big2.length, 2 + 5007);
});

test('integers take the shortest encoding, as iasl emits them', () => {
  // Name (\I000, 0x00) ... Name (\IO, 0xFFFFFFFFFFFFFFFF), default iasl optimisation.
  const cases: [number | bigint, string][] = [
    [0, '00'],
    [1, '01'],
    [2, '0a02'],
    [0xff, '0aff'],
    [0x100, '0b0001'],
    [0xffff, '0bffff'],
    [0x10000, '0c00000100'],
    [0x1_0000_0000, '0e0000000001000000'],
    [0xffff_ffff_ffff_ffffn, 'ff'],
  ];
  for (const [value, expected] of cases) assertBytes(aml.integer(value), expected);
  assert.throws(() => aml.integer(-1), RangeError);
});

test('name strings: root, parent, single, dual and multi segment; padding with _', () => {
  assertBytes(aml.nameString('\\I000'), '5c49303030');
  assertBytes(aml.nameString('\\IW'), '5c49575f5f');
  assertBytes(aml.nameString('^BAR'), '5e4241525f');
  assertBytes(aml.nameString('PCI0.QUX'), '2e504349305155585f');
  assertBytes(aml.nameString('\\_SB.PCI0.ISA'), '5c2f035f53425f504349304953415f');
  assert.throws(() => aml.nameString('\\_SB.TOOLONG'), RangeError);
  assert.throws(() => aml.nameString('1ABC'), RangeError);
});

test('Scope, Device, Name with dual and parent paths match iasl', () => {
  // Scope (\_SB) { Device (PCI0) { Name (FOO, 1) } Name (PCI0.QUX, 4) }
  // Scope (\_SB.PCI0) { Name (^BAR, 2) }
  const actual = concatBytes([
    aml.scope('\\_SB', aml.device('PCI0', aml.name('FOO', aml.integer(1))), aml.name('PCI0.QUX', aml.integer(4))),
    aml.scope('\\_SB.PCI0', aml.name('^BAR', aml.integer(2))),
  ]);
  assertBytes(actual, '101f5c5f53425f5b820b5043493008464f4f5f01082e504349305155585f0a0410135c2e5f53425f50434930085e4241525f0a02');
});

test('EISAID and strings', () => {
  assert.equal(aml.eisaId('PNP0501'), 0x0105d041);
  assert.equal(aml.eisaId('PNP0A03'), 0x030ad041);
  assertBytes(aml.name('_HID', aml.integer(aml.eisaId('PNP0501'))), '085f4849440c41d00501');
  assertBytes(aml.string('LNRO0005'), '0d4c4e524f3030303500');
  assert.throws(() => aml.eisaId('pnp0501'), RangeError);
});

test('Package', () => {
  // Name (\_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
  assertBytes(aml.name('\\_S5', aml.pkg(aml.integer(5), aml.integer(0), aml.integer(0), aml.integer(0))), '085c5f53355f1207040a05000000');
});

/** The last byte of a template (its End Tag checksum), which iasl leaves 0: check it, then zero it to compare. */
function withIaslChecksum(template: Uint8Array): Uint8Array {
  // A resource template is Buffer(PkgLength, BufferSize, bytes): find the descriptors by the BufferSize prefix.
  const sizeAt = template[1] < 0x40 ? 2 : 3;
  const descriptorsAt = sizeAt + (template[sizeAt] === aml.BytePrefix ? 2 : 3);
  let sum = 0;
  for (const b of template.subarray(descriptorsAt)) sum += b;
  assert.equal(sum & 0xff, 0, 'resource template sums to 0 including its End Tag checksum');
  const copy = template.slice();
  copy[copy.length - 1] = 0;
  return copy;
}

test('ResourceTemplate: IO + IRQNoFlags (COM1), End Tag checksum makes it sum to 0', () => {
  // ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, ) IRQNoFlags () {4} }
  const template = aml.resourceTemplate(aml.ioPort(0x3f8, 0x3f8, 0, 8), aml.irqNoFlags(4));
  assertBytes(withIaslChecksum(template), '11100a0d4701f803f80300082210007900');
  assert.equal(template[template.length - 1], 0x0f);
});

test('ResourceTemplate: Memory32Fixed + Interrupt, edge and level (virtio-mmio)', () => {
  // Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000, ) Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {5}
  assertBytes(
    withIaslChecksum(aml.resourceTemplate(aml.memory32Fixed(0xd0000000, 0x1000), aml.extendedInterrupt([5]))),
    '111a0a17860900010000' + '00d000100000' + '890600030105000000' + '7900',
  );
  // ... Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) {6}
  assertBytes(
    withIaslChecksum(aml.resourceTemplate(aml.memory32Fixed(0xd0001000, 0x1000), aml.extendedInterrupt([6], { trigger: 'level' }))),
    '111a0a17860900010010' + '00d000100000' + '890600010106000000' + '7900',
  );
  assert.throws(() => aml.irqNoFlags(16), RangeError);
});

test('Address space descriptors of a host bridge _CRS: WordBusNumber, WordIO, DWordMemory, QWordMemory match iasl', () => {
  // iasl -on of (inside one ResourceTemplate, each shown here on its own):
  //   WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, 0x0000, 0x0000, 0x0000, 0x0001,,, )
  //   WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, 0xC000, 0xCFFF, 0x0000, 0x1000,,, , TypeStatic, DenseTranslation)
  //   DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000,
  //     0xC0000000, 0xCFFFFFFF, 0x00000000, 0x10000000,,, , AddressRangeMemory, TypeStatic)
  //   QWordMemory (... NonCacheable, ReadWrite, 0x0, 0x0000004000000000, 0x0000004FFFFFFFFF, 0x0, 0x0000001000000000,,, , AddressRangeMemory, TypeStatic)
  assertBytes(aml.wordBusNumber(0, 0), '880d00020c0000000000000000000100');
  assertBytes(aml.wordIo(0xc000, 0x1000), '880d00010c03000000c0ffcf00000010');
  assertBytes(aml.dwordMemory(0xc000_0000, 0x1000_0000), '871700000c0100000000000000c0ffffffcf0000000000000010');
  assertBytes(aml.qwordMemory(0x40_0000_0000, 0x10_0000_0000),
    '8a2b00000c01' + '0000000000000000' + '0000000040000000' + 'ffffffff4f000000' + '0000000000000000' + '0000000010000000');
  assertBytes(aml.dwordMemory(0xc000_0000, 0x1000, { cacheable: true }).subarray(5, 6), '03');
  assert.throws(() => aml.dwordMemory(0xffff_f000, 0x2000), RangeError);
  assert.throws(() => aml.wordBusNumber(0, 256), RangeError);
  assert.throws(() => aml.wordIo(0xf000, 0x2000), RangeError);
});
