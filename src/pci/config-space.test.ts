import assert from 'node:assert/strict';
import test from 'node:test';
import {
  PCI_BASE_ADDRESS_0, PCI_CAPABILITY_LIST, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MEMORY, PCI_STATUS,
  PCI_STATUS_CAP_LIST, PCI_STATUS_INTERRUPT, PciConfigSpace, type PciBarSpec,
} from './config-space.js';
import { PciError } from './pci-error.js';

// Offsets typed in from the PCI 3.0 spec (6.1, figure 6-1) rather than taken from the tables.

const NULL_HANDLER = { read: (_o: number, d: Uint8Array) => d.fill(0), write: () => {} };

function space(bars: Array<Omit<PciBarSpec, 'handler'>> = [], intx?: (l: 0 | 1) => void) {
  return new PciConfigSpace({
    name: 'test device', vendorId: 0x1234, deviceId: 0x5678, revisionId: 3, classCode: 0x018001,
    subsystemVendorId: 0xaaaa, subsystemId: 0xbbbb, interruptPin: 1,
  }, { bars: bars.map((b) => ({ ...b, handler: NULL_HANDLER })), ...(intx ? { intx } : {}) });
}

function r(c: PciConfigSpace, offset: number, len: number): number {
  const d = new Uint8Array(len);
  c.read(offset, d);
  return d.reduceRight((v, b) => v * 256 + b, 0);
}

function w(c: PciConfigSpace, offset: number, len: number, value: number): void {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = (value >>> (8 * i)) & 0xff;
  c.write(offset, d);
}

test('type 0 header: IDs, class, revision, subsystem, interrupt pin; read-only fields ignore writes', () => {
  const c = space();
  assert.equal(r(c, 0x00, 4), 0x5678_1234);
  assert.equal(r(c, 0x08, 4), 0x0180_0103, 'class code << 8 | revision');
  assert.equal(r(c, 0x0e, 1), 0, 'header type 0, single function');
  assert.equal(r(c, 0x2c, 4), 0xbbbb_aaaa);
  assert.equal(r(c, 0x3d, 1), 1, 'INTA#');
  assert.equal(r(c, 0x3c, 1), 0xff, 'interrupt line unknown until firmware writes it');
  w(c, 0x00, 4, 0);
  w(c, 0x08, 4, 0);
  w(c, 0x3d, 1, 4);
  assert.equal(r(c, 0x00, 4), 0x5678_1234);
  assert.equal(r(c, 0x08, 4), 0x0180_0103);
  assert.equal(r(c, 0x3d, 1), 1);
  w(c, 0x3c, 1, 11);
  assert.equal(r(c, 0x3c, 1), 11, 'interrupt line is writable');
  w(c, 0x0c, 2, 0x4010);
  assert.equal(r(c, 0x0c, 2), 0x4010, 'cache line size and latency timer are writable');
  assert.equal(r(c, 0x100, 4), 0, 'extended configuration space reads zero');
});

test('command register: only IO, MEMORY, MASTER, PARITY, SERR and INTX_DISABLE stick', () => {
  const c = space();
  w(c, PCI_COMMAND, 2, 0xffff);
  assert.equal(r(c, 0x04, 2), 0x0547);
  w(c, PCI_STATUS, 2, 0xffff);
  assert.equal(r(c, 0x06, 2), 0, 'status is read-only here (no error bits are ever set)');
});

test('BAR sizing the way __pci_read_base does it: all ones in, ~(size - 1) | type bits out, then restored', () => {
  const c = space([
    { index: 0, kind: 'mem32', sizeBytes: 0x1000 },
    { index: 1, kind: 'io', sizeBytes: 0x20 },
    { index: 2, kind: 'mem64', sizeBytes: 0x4000, prefetchable: true },
    { index: 4, kind: 'mem64', sizeBytes: 2 ** 33 },
  ]);
  const probe = (i: number) => {
    const at = 0x10 + 4 * i;
    const old = r(c, at, 4);
    w(c, at, 4, 0xffff_ffff);
    const sz = r(c, at, 4);
    w(c, at, 4, old);
    return [old, sz];
  };
  assert.deepEqual(probe(0), [0, 0xffff_f000]);
  assert.deepEqual(probe(1), [0x1, 0xffff_ffe1], 'I/O BAR: bit 0 set');
  assert.deepEqual(probe(2), [0xc, 0xffff_c00c], '64-bit (bits 2:1 = 10), prefetchable (bit 3)');
  assert.deepEqual(probe(3), [0, 0xffff_ffff], 'upper half of a 64-bit BAR under 4 GiB: all address bits');
  assert.deepEqual(probe(4), [0x4, 0x4], '8 GiB BAR: no low address bits');
  assert.deepEqual(probe(5), [0, 0xffff_fffe], 'upper half of the 8 GiB BAR: bit 32 hard-wired to 0');
  // Unimplemented BARs read zero and stay zero.
  const bare = space();
  w(bare, PCI_BASE_ADDRESS_0, 4, 0xffff_ffff);
  assert.equal(r(bare, 0x10, 4), 0);
  assert.equal(r(bare, 0x30, 4), (w(bare, 0x30, 4, 0xffff_f800), 0), 'no expansion ROM');
});

test('a BAR decodes only with its space enabled in COMMAND and a usable address; barMoved hears each change', () => {
  const c = space([{ index: 0, kind: 'mem32', sizeBytes: 0x1000 }, { index: 2, kind: 'mem64', sizeBytes: 0x1000 }]);
  const moves: string[] = [];
  c.barMoved = (bar, o, n) => moves.push(`${bar.index}:${o?.toString(16) ?? '-'}>${n?.toString(16) ?? '-'}`);
  w(c, 0x10, 4, 0xd000_0000);
  assert.deepEqual(moves, [], 'memory decoding is off');
  w(c, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  assert.deepEqual(moves, ['0:->d0000000'], 'BAR 2 at 0 does not decode');
  w(c, 0x10, 4, 0xd000_1234);
  assert.equal(c.bars[0]!.gpa, 0xd000_1000, 'low bits are hard-wired');
  w(c, 0x18, 4, 0x8000_0000);
  w(c, 0x1c, 4, 0x1);
  assert.equal(c.bars[1]!.gpa, 0x1_8000_0000);
  w(c, 0x10, 4, 0xffff_ffff);
  assert.equal(c.bars[0]!.gpa, 0xffff_f000, 'like hardware, a probe with decoding on decodes at the top');
  w(c, PCI_COMMAND, 2, 0);
  assert.equal(c.bars[0]!.gpa, null);
  assert.equal(c.bars[1]!.gpa, null);
  assert.deepEqual(moves, ['0:->d0000000', '0:d0000000>d0001000', '2:->80000000', '2:80000000>180000000', '0:d0001000>fffff000', '0:fffff000>-', '2:180000000>-']);
});

test('capability list: linked from 0x34, dword aligned, CAP_LIST in status; writes obey the mask', () => {
  const c = space();
  assert.equal(r(c, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0);
  assert.equal(r(c, PCI_CAPABILITY_LIST, 1), 0);
  const a = c.addCapability(0x09, Uint8Array.of(0, 0, 5, 0xaa, 0xbb));
  const mask = new Uint8Array(6);
  mask[4] = 0x0f;
  const b = c.addCapability(0x11, Uint8Array.of(0, 0, 1, 2, 3, 4), mask);
  assert.equal(a, 0x40);
  assert.equal(b, 0x48, 'next capability starts dword aligned');
  assert.ok(r(c, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
  assert.equal(r(c, 0x34, 1), 0x40);
  assert.deepEqual([r(c, 0x40, 1), r(c, 0x41, 1), r(c, 0x48, 1), r(c, 0x49, 1)], [0x09, 0x48, 0x11, 0]);
  w(c, 0x48, 4, 0xffff_ffff);
  w(c, 0x4c, 2, 0xffff);
  assert.equal(r(c, 0x48, 4), 0x0201_0011, 'ID, next and unmasked bytes do not change');
  assert.equal(r(c, 0x4c, 1), 0x0f);
  assert.throws(() => c.addCapability(0x09, new Uint8Array(200)), (e: unknown) => e instanceof PciError && e.kind === 'capability-space');
});

test('INTx: the line follows PCI_STATUS_INTERRUPT unless COMMAND.INTX_DISABLE', () => {
  const levels: number[] = [];
  const c = space([], (l) => levels.push(l));
  c.setInterruptStatus(true);
  assert.ok(r(c, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
  w(c, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
  assert.ok(r(c, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT, 'status still shows it');
  w(c, PCI_COMMAND, 2, 0);
  c.setInterruptStatus(false);
  assert.deepEqual(levels, [1, 0, 1, 0]);
});

test('impossible BARs are refused with PciError', () => {
  const bad = (bars: Array<Omit<PciBarSpec, 'handler'>>, message: RegExp) =>
    assert.throws(() => space(bars), (e: unknown) => e instanceof PciError && e.kind === 'bad-bar' && message.test(e.message));
  bad([{ index: 5, kind: 'mem64', sizeBytes: 0x1000 }], /needs 2 of the BAR slots/);
  bad([{ index: 0, kind: 'mem64', sizeBytes: 0x1000 }, { index: 1, kind: 'mem32', sizeBytes: 0x1000 }], /slot 1 is already used by BAR 0/);
  bad([{ index: 0, kind: 'mem32', sizeBytes: 0x1800 }], /not a power of two/);
  bad([{ index: 0, kind: 'mem32', sizeBytes: 8 }], /not a power of two in 16/);
  bad([{ index: 0, kind: 'io', sizeBytes: 16, prefetchable: true }], /cannot be prefetchable/);
});
