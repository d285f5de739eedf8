import assert from 'node:assert/strict';
import test from 'node:test';
import { PciConfigSpace } from './config-space.js';
import { Msix, type MsixVectorState } from './msix.js';

// Register offsets typed in from PCI 3.0 6.8.2 (capability: control at +2, table at +4, PBA at +8;
// entry: address lo/hi, data, vector control at 0/4/8/12).

function rig(vectors = 4) {
  const sent: Array<[number, number, number]> = [];
  /** The vector each message was for (the VMM picks the vector's irqfd by it). */
  const sentVectors: number[] = [];
  const changes: Array<[number, MsixVectorState]> = [];
  const msix = new Msix({
    vectors, tableBar: 2, tableOffset: 0x2000, pbaBar: 2, pbaOffset: 0x3000,
    signalMsi: (lo, hi, data, vector) => { sent.push([lo, hi, data]); sentVectors.push(vector); },
    onVectorChanged: (v, s) => changes.push([v, s]),
  });
  const config = new PciConfigSpace({ name: 'msix test', vendorId: 1, deviceId: 2, classCode: 0 });
  const cap = msix.addTo(config);
  const ctrl = (value: number) => {
    config.write(cap + 2, Uint8Array.of(value & 0xff, value >>> 8));
    msix.controlWritten();
  };
  const entry = (v: number, field: number, value: number) => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, value, true);
    msix.tableWrite(v * 16 + field, d);
  };
  const table32 = (offset: number) => {
    const d = new Uint8Array(4);
    msix.tableRead(offset, d);
    return new DataView(d.buffer).getUint32(0, true);
  };
  const pba = () => {
    const d = new Uint8Array(8);
    msix.pbaRead(0, d);
    return Number(new DataView(d.buffer).getBigUint64(0, true));
  };
  return { msix, config, cap, sent, sentVectors, changes, ctrl, entry, table32, pba };
}

test('capability: table size - 1, BIR and offsets; only Enable and Function Mask are writable', () => {
  const { config, cap, ctrl } = rig(5);
  assert.equal(config.u8(cap), 0x11);
  assert.equal(config.u16(cap + 2), 4, 'table size 5 is encoded as 4');
  assert.equal(config.u32(cap + 4), 0x2002);
  assert.equal(config.u32(cap + 8), 0x3002);
  ctrl(0xffff);
  assert.equal(config.u16(cap + 2), 0xc004);
  config.write(cap + 4, Uint8Array.of(0, 0, 0, 0));
  assert.equal(config.u32(cap + 4), 0x2002, 'table offset/BIR is read-only');
});

test('after reset every vector is masked, with address and data zero; reserved control bits read zero', () => {
  const { msix, table32, entry } = rig();
  for (let v = 0; v < 4; v++) {
    assert.deepEqual([table32(v * 16), table32(v * 16 + 4), table32(v * 16 + 8), table32(v * 16 + 12)], [0, 0, 0, 1]);
  }
  entry(1, 12, 0xffff_fffe);
  assert.equal(table32(16 + 12), 0, 'only the mask bit is writable');
  assert.equal(msix.vectorMasked(1), false);
});

test('disabled: notify() says so (the caller uses INTx) and nothing pends', () => {
  const { msix, sent, pba } = rig();
  assert.equal(msix.notify(0), false);
  assert.deepEqual(sent, []);
  assert.equal(pba(), 0);
});

test('a masked vector pends; unmasking delivers it once and clears the PBA bit', () => {
  const { msix, sent, ctrl, entry, pba } = rig();
  ctrl(0x8000);
  entry(2, 0, 0xfee0_1000);
  entry(2, 4, 0);
  entry(2, 8, 0x41);
  assert.equal(msix.notify(2), true);
  assert.equal(msix.notify(2), true);
  assert.deepEqual(sent, []);
  assert.equal(pba(), 0b100);
  assert.equal(msix.isPending(2), true);
  entry(2, 12, 0);
  assert.deepEqual(sent, [[0xfee0_1000, 0, 0x41]], 'one message for both notifications');
  assert.equal(pba(), 0);
  msix.notify(2);
  assert.equal(sent.length, 2, 'unmasked: sent at once');
  assert.equal(msix.notify(4), false, 'no such vector');
});

test('the function mask holds every vector; clearing it delivers what pended, in vector order', () => {
  const { msix, sent, sentVectors, ctrl, entry, pba } = rig();
  ctrl(0x8000 | 0x4000);
  for (const v of [0, 3]) {
    entry(v, 8, 0x30 + v);
    entry(v, 12, 0);
  }
  msix.notify(3);
  msix.notify(0);
  assert.deepEqual(sent, []);
  assert.equal(pba(), 0b1001);
  ctrl(0x8000);
  assert.deepEqual(sent.map((s) => s[2]), [0x30, 0x33]);
  assert.deepEqual(sentVectors, [0, 3]);
  assert.equal(pba(), 0);
});

test('onVectorChanged: address, data and effective mask changes (the irqfd route hook)', () => {
  const { changes, ctrl, entry } = rig(2);
  ctrl(0x8000);
  assert.deepEqual(changes.map(([v, s]) => [v, s.masked]), [[0, true], [1, true]], 'enable tells every vector');
  changes.length = 0;
  entry(1, 0, 0xfee0_0000);
  entry(1, 0, 0xfee0_0000);
  entry(1, 8, 0x25);
  entry(1, 12, 0);
  assert.deepEqual(changes.map(([v, s]) => [v, s.addressLo, s.data, s.masked]), [
    [1, 0xfee0_0000, 0, true],
    [1, 0xfee0_0000, 0x25, true],
    [1, 0xfee0_0000, 0x25, false],
  ], 'a write that changes nothing is not reported');
});

test('table and PBA accesses: aligned dwords and qwords only', () => {
  const { msix, table32, pba } = rig();
  const q = new Uint8Array(8);
  new DataView(q.buffer).setBigUint64(0, 0x1234_5678_fee0_0000n, true);
  msix.tableWrite(16, q);
  assert.equal(table32(16), 0xfee0_0000);
  assert.equal(table32(20), 0x1234_5678);
  msix.tableWrite(32, Uint8Array.of(0xff));
  msix.tableWrite(34, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
  assert.equal(table32(32), 0, 'byte and misaligned writes are dropped');
  msix.tableWrite(4 * 16, new Uint8Array(4).fill(0xff));
  const past = new Uint8Array(4).fill(0xee);
  msix.tableRead(4 * 16, past);
  assert.deepEqual([...past], [0, 0, 0, 0], 'past the table');
  const pbaBytes = new Uint8Array(2);
  msix.pbaRead(0, pbaBytes);
  assert.deepEqual([...pbaBytes], [0, 0], 'PBA: dword and qword reads only');
  assert.equal(pba(), 0);
});
