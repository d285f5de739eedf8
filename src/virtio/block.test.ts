import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import {
  VIRTIO_BLK_CONFIG, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_GET_LIFETIME, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VirtioBlock, type BlockBackend,
} from './block.js';
import { FileBlockBackend, IOV_MAX, iovWindows, remainder, type HolePuncher } from './block-file.js';
import { LINUX_RING_FEATURES, MmioHarness, blkRequestHeader, type SplitRingDriver } from './guest-driver.js';
import { VIRTIO_MMIO_INT_VRING } from './mmio.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, featureBit, hasFeature } from './virtio.js';
import { VirtioError } from './virtio-error.js';

/** A disk in memory that logs what it was asked. */
class MemDisk implements BlockBackend {
  readonly bytes: Uint8Array;
  readonly log: string[] = [];
  failNext = false;

  constructor(readonly sizeBytes: number) {
    this.bytes = new Uint8Array(sizeBytes);
  }

  private check(what: string): void {
    this.log.push(what);
    if (this.failNext) {
      this.failNext = false;
      throw new Error('simulated EIO');
    }
  }

  readv(offset: number, bufs: readonly Uint8Array[]): void {
    this.check(`readv ${offset} ${bufs.map((b) => b.length).join('+')}`);
    let at = offset;
    for (const b of bufs) {
      b.set(this.bytes.subarray(at, at + b.length));
      at += b.length;
    }
  }

  writev(offset: number, bufs: readonly Uint8Array[]): void {
    this.check(`writev ${offset} ${bufs.map((b) => b.length).join('+')}`);
    let at = offset;
    for (const b of bufs) {
      this.bytes.set(b, at);
      at += b.length;
    }
  }

  flush(): void { this.check('flush'); }
  discard(offset: number, length: number): void { this.check(`discard ${offset} ${length}`); }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): void {
    this.check(`writeZeroes ${offset} ${length}${mayUnmap ? ' unmap' : ''}`);
    this.bytes.fill(0, offset, offset + length);
  }
}

/** The same disk, answering with promises the test settles when it likes. */
class AsyncDisk implements BlockBackend {
  readonly pending: Array<{ what: string; settle: (ok: boolean) => void }> = [];
  constructor(readonly disk: MemDisk) {}
  get sizeBytes(): number { return this.disk.sizeBytes; }

  private later(what: string, work: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ what, settle: (ok) => { if (ok) { work(); resolve(); } else reject(new Error('EIO')); } });
    });
  }

  readv(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    const copy = [...bufs]; // the device reuses its array; the views stay valid until we finish
    return this.later(`readv ${offset}`, () => this.disk.readv(offset, copy));
  }

  writev(offset: number, bufs: readonly Uint8Array[]): Promise<void> {
    const copy = [...bufs];
    return this.later(`writev ${offset}`, () => this.disk.writev(offset, copy));
  }
}

const SECTOR = 512;
const tick = () => new Promise<void>((r) => setImmediate(r));


function segment(sector: number, sectors: number, flags = 0): Uint8Array {
  const s = new Uint8Array(16);
  const v = new DataView(s.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return s;
}

function blockBench(options: { backend?: BlockBackend; readonly?: boolean; serial?: string; queueSize?: number; sizeBytes?: number; wanted?: bigint } = {}) {
  const disk = new MemDisk(options.sizeBytes ?? 64 * SECTOR);
  const dev = new VirtioBlock({
    backend: options.backend ?? disk,
    ...(options.readonly === undefined ? {} : { readonly: options.readonly }),
    ...(options.serial === undefined ? {} : { serial: options.serial }),
    ...(options.queueSize === undefined ? {} : { queueSize: options.queueSize }),
  });
  const h = new MmioHarness(dev);
  const [ring] = h.bringUp(options.wanted === undefined ? {} : { wanted: options.wanted });
  /**
   * Builds a request the way Linux virtio_blk does (header, data, status in separate
   * descriptors), kicks, and returns where the status and data are.
   */
  const submit = (type: number, sector: number | bigint, data: { out?: Uint8Array[]; inLens?: number[] } = {}) => {
    const status = h.buffer(1, 0xff);
    const ins = (data.inLens ?? []).map((n) => h.buffer(n, 0xee));
    const head = ring!.add([h.bytes(blkRequestHeader(type, sector)), ...(data.out ?? []).map((b) => h.bytes(b))], [...ins, status]);
    h.driver.notify(0);
    return { head, status, ins };
  };
  /** Takes the next used entry: its status byte and used length. */
  const complete = (req: ReturnType<typeof submit>) => {
    const used = ring!.getBuf();
    assert.ok(used, 'a used entry');
    assert.equal(used.id, req.head);
    return { status: h.read(req.status)[0], len: used.len };
  };
  const roundTrip = (type: number, sector: number | bigint, data: { out?: Uint8Array[]; inLens?: number[] } = {}) => {
    const req = submit(type, sector, data);
    return { ...complete(req), ins: req.ins.map((sg) => h.read(sg)) };
  };
  return { disk, dev, h, ring: ring as SplitRingDriver, submit, complete, roundTrip };
}

test('config: capacity in 512-byte sectors, seg_max; features follow the backend', () => {
  const { h, dev } = blockBench({ sizeBytes: 64 * SECTOR + 100 });
  assert.equal(dev.capacitySectors, 64);
  assert.equal(h.driver.readConfig(VIRTIO_BLK_CONFIG.offsetOf('capacity'), 4), 64);
  assert.equal(h.driver.readConfig(VIRTIO_BLK_CONFIG.offsetOf('capacity') + 4, 4), 0);
  assert.equal(h.driver.readConfig(VIRTIO_BLK_CONFIG.offsetOf('seg_max'), 4), 254);
  const f = dev.deviceFeatures;
  for (const bit of [VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]) assert.ok(hasFeature(f, bit), `bit ${bit}`);
  assert.equal(hasFeature(f, VIRTIO_BLK_F_RO), false);
  const ro = new VirtioBlock({ backend: { sizeBytes: 4096, readv() {}, writev() {} }, readonly: true });
  assert.ok(hasFeature(ro.deviceFeatures, VIRTIO_BLK_F_RO));
  assert.equal(hasFeature(ro.deviceFeatures, VIRTIO_BLK_F_FLUSH), false, 'no flush in the backend');
});

test('OUT then IN: data reaches the disk at sector * 512 and comes back; used length counts data + status', () => {
  const b = blockBench();
  const data = Uint8Array.from({ length: 2 * SECTOR }, (_, i) => (i * 7) & 0xff);
  const w = b.roundTrip(VIRTIO_BLK_T_OUT, 5, { out: [data.subarray(0, 700), data.subarray(700)] });
  assert.deepEqual([w.status, w.len], [VIRTIO_BLK_S_OK, 1]);
  assert.deepEqual(b.disk.bytes.subarray(5 * SECTOR, 7 * SECTOR), data);
  const r = b.roundTrip(VIRTIO_BLK_T_IN, 5, { inLens: [100, 924] });
  assert.deepEqual([r.status, r.len], [VIRTIO_BLK_S_OK, 1025]);
  assert.deepEqual(Buffer.concat(r.ins), Buffer.from(data));
  assert.deepEqual(b.disk.log, ['writev 2560 700+324', 'readv 2560 100+924']);
  assert.equal(b.h.driver.handleInterrupt(), VIRTIO_MMIO_INT_VRING);
  assert.deepEqual(b.h.memory.outside, []);
});

test('any descriptor layout: header and data in one buffer, data and status in one buffer', () => {
  const b = blockBench();
  const payload = new Uint8Array(SECTOR).fill(0x5a);
  const one = new Uint8Array(16 + SECTOR);
  one.set(blkRequestHeader(VIRTIO_BLK_T_OUT, 1));
  one.set(payload, 16);
  const status = b.h.buffer(1, 0xff);
  b.ring.add([b.h.bytes(one)], [status]);
  b.h.driver.notify(0);
  assert.equal(b.ring.getBuf()?.len, 1);
  assert.equal(b.h.read(status)[0], VIRTIO_BLK_S_OK);
  assert.deepEqual(b.disk.bytes.subarray(SECTOR, 2 * SECTOR), payload);
  const both = b.h.buffer(SECTOR + 1, 0xff);
  b.ring.add([b.h.bytes(blkRequestHeader(VIRTIO_BLK_T_IN, 1))], [both]);
  b.h.driver.notify(0);
  assert.equal(b.ring.getBuf()?.len, SECTOR + 1);
  const back = b.h.read(both);
  assert.deepEqual(back.subarray(0, SECTOR), payload);
  assert.equal(back[SECTOR], VIRTIO_BLK_S_OK);
});

test('a driver without VIRTIO_BLK_F_FLUSH gets writethrough: each write is flushed before it completes (5.2.5)', () => {
  const withFlush = blockBench();
  withFlush.roundTrip(VIRTIO_BLK_T_OUT, 2, { out: [new Uint8Array(SECTOR).fill(1)] });
  assert.deepEqual(withFlush.disk.log, [`writev ${2 * SECTOR} ${SECTOR}`], 'writeback: the driver flushes when it wants');
  const probe = blockBench();
  const noFlush = blockBench({ wanted: (probe.h.device.deviceFeatures | LINUX_RING_FEATURES) & ~featureBit(VIRTIO_BLK_F_FLUSH) });
  const r = noFlush.roundTrip(VIRTIO_BLK_T_OUT, 2, { out: [new Uint8Array(SECTOR).fill(1)] });
  assert.equal(r.status, VIRTIO_BLK_S_OK);
  assert.deepEqual(noFlush.disk.log, [`writev ${2 * SECTOR} ${SECTOR}`, 'flush']);
  noFlush.roundTrip(VIRTIO_BLK_T_IN, 2, { inLens: [SECTOR] });
  assert.equal(noFlush.disk.log.length, 3, 'reads are not flushed');
});

test('FLUSH reaches the backend; GET_ID answers the serial, NUL-padded, or what fits', () => {
  const b = blockBench({ serial: 'tsvmm-disk-0' });
  assert.deepEqual(b.roundTrip(VIRTIO_BLK_T_FLUSH, 0).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(b.disk.log, ['flush']);
  const id = b.roundTrip(VIRTIO_BLK_T_GET_ID, 0, { inLens: [20] });
  assert.equal(id.status, VIRTIO_BLK_S_OK);
  assert.equal(id.len, 21);
  assert.equal(Buffer.from(id.ins[0]!).toString('latin1'), 'tsvmm-disk-0\0\0\0\0\0\0\0\0');
  const short = b.roundTrip(VIRTIO_BLK_T_GET_ID, 0, { inLens: [5] });
  assert.equal(short.len, 6);
  assert.equal(Buffer.from(short.ins[0]!).toString('latin1'), 'tsvmm');
});

test('DISCARD and WRITE_ZEROES: every segment checked first, then executed in order', () => {
  const b = blockBench();
  b.disk.bytes.fill(0x11);
  const wz = b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(2, 1), segment(10, 2, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)] });
  assert.equal(wz.status, VIRTIO_BLK_S_OK);
  assert.deepEqual(b.disk.log, [`writeZeroes ${2 * SECTOR} ${SECTOR}`, `writeZeroes ${10 * SECTOR} ${2 * SECTOR} unmap`]);
  assert.equal(b.disk.bytes[2 * SECTOR], 0);
  assert.equal(b.disk.bytes[3 * SECTOR], 0x11);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [segment(0, 64)] }).status, VIRTIO_BLK_S_OK);
  b.disk.log.length = 0;
  // Refused before anything runs: a good segment followed by a bad one does nothing.
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [segment(0, 1), segment(63, 2)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [segment(0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)] }).status, VIRTIO_BLK_S_UNSUPP, 'discard takes no flags');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(0, 1, 2)] }).status, VIRTIO_BLK_S_UNSUPP, 'unknown flag');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [new Uint8Array(24)] }).status, VIRTIO_BLK_S_IOERR, 'not whole segments');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0).status, VIRTIO_BLK_S_IOERR, 'no segment');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: Array.from({ length: 33 }, () => segment(0, 1)) }).status, VIRTIO_BLK_S_IOERR, 'too many segments');
  assert.deepEqual(b.disk.log, []);
});

test('sector ranges are checked against the capacity before the backend sees them', () => {
  const b = blockBench();
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 63, { inLens: [SECTOR] }).status, VIRTIO_BLK_S_OK, 'the last sector');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 63, { inLens: [2 * SECTOR] }).status, VIRTIO_BLK_S_IOERR, 'runs past the end');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_OUT, 64, { out: [new Uint8Array(SECTOR)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 0xffff_ffff_ffff_ffffn, { inLens: [SECTOR] }).status, VIRTIO_BLK_S_IOERR, 'sector 2^64-1');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 2 ** 53, { inLens: [SECTOR] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 0, { inLens: [100] }).status, VIRTIO_BLK_S_IOERR, 'not whole sectors');
  const bad = b.roundTrip(VIRTIO_BLK_T_IN, 70, { inLens: [SECTOR] });
  assert.deepEqual([bad.status, bad.len], [VIRTIO_BLK_S_IOERR, 1], 'an error writes only the status');
  assert.deepEqual(b.disk.log, [`readv ${63 * SECTOR} ${SECTOR}`]);
});

test('a read-only disk refuses writes with IOERR and leaves the disk alone; reads and flush work', () => {
  const b = blockBench({ readonly: true });
  b.disk.bytes.fill(0x77);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_OUT, 0, { out: [new Uint8Array(SECTOR)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(0, 1)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [segment(0, 1)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.disk.bytes[0], 0x77);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 0, { inLens: [SECTOR] }).ins[0]![0], 0x77);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_FLUSH, 0).status, VIRTIO_BLK_S_OK);
});

test('unknown request types are UNSUPP; a failing backend is IOERR and the device goes on', () => {
  const b = blockBench();
  assert.equal(b.roundTrip(2 /* legacy SCSI */, 0).status, VIRTIO_BLK_S_UNSUPP);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_GET_LIFETIME, 0, { inLens: [12] }).status, VIRTIO_BLK_S_UNSUPP);
  b.disk.failNext = true;
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 0, { inLens: [SECTOR] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_IN, 0, { inLens: [SECTOR] }).status, VIRTIO_BLK_S_OK);
  assert.equal(b.h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
});

test('a request without room for header or status: DEVICE_NEEDS_RESET', () => {
  const b = blockBench();
  b.ring.add([b.h.bytes(blkRequestHeader(VIRTIO_BLK_T_IN, 0))], []);
  b.h.driver.notify(0);
  assert.ok(b.h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.deepEqual(b.h.errors.map((e) => e.kind), ['bad-request']);
  const c = blockBench();
  c.ring.add([c.h.bytes(new Uint8Array(8))], [c.h.buffer(1)]);
  c.h.driver.notify(0);
  assert.deepEqual(c.h.errors.map((e) => e.kind), ['bad-request']);
});

test('async backend: requests complete in the backend\'s order, each with its interrupt', async () => {
  const disk = new MemDisk(64 * SECTOR);
  disk.bytes.fill(0x42, 3 * SECTOR, 4 * SECTOR);
  const backend = new AsyncDisk(disk);
  const b = blockBench({ backend });
  const r1 = b.submit(VIRTIO_BLK_T_OUT, 1, { out: [new Uint8Array(SECTOR).fill(9)] });
  const r2 = b.submit(VIRTIO_BLK_T_IN, 3, { inLens: [SECTOR] });
  assert.equal(b.dev.inFlight, 2);
  assert.equal(b.ring.getBuf(), null, 'nothing done yet');
  assert.equal(b.h.irq.length, 0);
  backend.pending[1]!.settle(true);
  await tick();
  assert.deepEqual(b.complete(r2), { status: VIRTIO_BLK_S_OK, len: SECTOR + 1 });
  assert.equal(b.h.read(r2.ins[0]!)[0], 0x42);
  assert.equal(b.h.driver.handleInterrupt(), VIRTIO_MMIO_INT_VRING);
  backend.pending[0]!.settle(false);
  await tick();
  assert.deepEqual(b.complete(r1), { status: VIRTIO_BLK_S_IOERR, len: 1 });
  assert.equal(b.h.irqAsserted, true);
  assert.equal(b.dev.inFlight, 0);
});

test('async backend: a reset while a request is in flight drops its completion', async () => {
  const backend = new AsyncDisk(new MemDisk(64 * SECTOR));
  const b = blockBench({ backend });
  const r = b.submit(VIRTIO_BLK_T_IN, 0, { inLens: [SECTOR] });
  b.h.driver.write32(0x070, 0);
  const [ring] = b.h.bringUp();
  backend.pending[0]!.settle(true);
  await tick();
  assert.equal(b.h.read(r.status)[0], 0xff, 'status byte never written');
  assert.equal(ring!.usedIdx, 0, 'nothing in the new used ring');
  assert.equal(b.h.transport.pendingInterrupts, 0);
});

test('async backend: more requests than the pool waits for completions instead of failing', async () => {
  const backend = new AsyncDisk(new MemDisk(64 * SECTOR));
  const b = blockBench({ backend, queueSize: 4 });
  const reqs = Array.from({ length: 4 }, (_, i) => b.submit(VIRTIO_BLK_T_IN, i, { inLens: [SECTOR] }));
  assert.equal(b.dev.inFlight, 4);
  // A hostile driver publishes the same four heads again while they are still in flight.
  for (const r of reqs) b.ring.publish(r.head);
  b.h.driver.notify(0);
  assert.equal(b.dev.inFlight, 4, 'no more in flight than the pool holds');
  let settled = 0;
  while (backend.pending.length > settled) {
    backend.pending[settled++]!.settle(true);
    await tick();
  }
  assert.equal(settled, 8, 'every published entry was served once a slot freed up');
  assert.equal(b.ring.usedIdx, 8);
  assert.equal(b.h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
});

test('FileBlockBackend: a raw image file read, written, flushed, zeroed; read-only refuses writes', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-blk-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(16 * SECTOR, 0x33));
  const backend = FileBlockBackend.open(image);
  t.after(() => backend.close());
  const b = blockBench({ backend });
  assert.equal(b.dev.capacitySectors, 16);
  assert.equal(hasFeature(b.dev.deviceFeatures, VIRTIO_BLK_F_DISCARD), false, 'no discard on a plain file');
  assert.equal(b.roundTrip(VIRTIO_BLK_T_OUT, 2, { out: [Buffer.from('hello disk'.padEnd(SECTOR, '.'))] }).status, VIRTIO_BLK_S_OK);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_FLUSH, 0).status, VIRTIO_BLK_S_OK);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(4, 2)] }).status, VIRTIO_BLK_S_OK);
  const file = fs.readFileSync(image);
  assert.equal(file.subarray(2 * SECTOR, 2 * SECTOR + 10).toString(), 'hello disk');
  assert.equal(file[4 * SECTOR], 0);
  assert.equal(file[6 * SECTOR], 0x33);
  const back = b.roundTrip(VIRTIO_BLK_T_IN, 2, { inLens: [SECTOR] });
  assert.equal(Buffer.from(back.ins[0]!.subarray(0, 10)).toString(), 'hello disk');

  const roBackend = FileBlockBackend.open(image, { readonly: true });
  t.after(() => roBackend.close());
  const ro = blockBench({ backend: roBackend, readonly: true });
  assert.equal(ro.roundTrip(VIRTIO_BLK_T_OUT, 0, { out: [new Uint8Array(SECTOR)] }).status, VIRTIO_BLK_S_IOERR);
  assert.equal(fs.readFileSync(image)[0], 0x33);
});

test('FileBlockBackend.open: a missing image or a directory is a one-line VirtioError', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-blk-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const missing = path.join(dir, 'nope.img');
  assert.throws(() => FileBlockBackend.open(missing), (e) => e instanceof VirtioError && e.kind === 'backend' && /ENOENT/.test(e.message) && !e.message.includes('\n'));
  assert.throws(() => FileBlockBackend.open(dir, { readonly: true }), (e) => e instanceof VirtioError && e.kind === 'backend' && /not a regular file/.test(e.message));
});

test('remainder: what a short preadv/pwritev left, cutting the first unfinished buffer', () => {
  const a = new Uint8Array([1, 2, 3]);
  const b = new Uint8Array([4, 5]);
  const c = new Uint8Array(0);
  assert.equal(remainder([a, b], 5), null);
  assert.equal(remainder([a, c, b], 5), null, 'an empty buffer is never left over');
  assert.equal(remainder([], 0), null);
  assert.deepEqual(remainder([a, b], 0)!.map((x) => [...x]), [[1, 2, 3], [4, 5]]);
  assert.deepEqual(remainder([a, b], 2)!.map((x) => [...x]), [[3], [4, 5]]);
  assert.deepEqual(remainder([a, b], 3)!.map((x) => [...x]), [[4, 5]]);
  assert.deepEqual(remainder([a, b], 4)!.map((x) => [...x]), [[5]]);
});

test('iovWindows: runs of at most IOV_MAX buffers, in order; the array itself when it fits', () => {
  const small = [new Uint8Array(1), new Uint8Array(2)];
  assert.equal(iovWindows(small)[0], small);
  const many = Array.from({ length: 2 * IOV_MAX + 3 }, (_, i) => new Uint8Array([i & 0xff]));
  const w = iovWindows(many);
  assert.deepEqual(w.map((x) => x.length), [IOV_MAX, IOV_MAX, 3]);
  assert.deepEqual(w.flat(), many);
});

test('FileBlockBackend: a request of more buffers than preadv/pwritev take lands in order, and reads back', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-blk-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const image = path.join(dir, 'disk.img');
  const count = IOV_MAX + 5;
  fs.writeFileSync(image, Buffer.alloc(4 * (count + 2)));
  const backend = FileBlockBackend.open(image);
  t.after(() => backend.close());
  // 4-byte buffers, each holding its own index, written from byte 4.
  const out = Array.from({ length: count }, (_, i) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, i, true); return b; });
  backend.writev(4, out);
  const file = fs.readFileSync(image);
  for (let i = 0; i < count; i++) assert.equal(file.readUInt32LE(4 + 4 * i), i, `buffer ${i} at its place`);
  assert.equal(file.readUInt32LE(0), 0);
  const back = Array.from({ length: count }, () => new Uint8Array(4));
  backend.readv(4, back);
  for (let i = 0; i < count; i++) assert.equal(new DataView(back[i]!.buffer).getUint32(0, true), i);
  // Past the end of the file (it shrank under us): zeros, and the buffers after it too.
  fs.truncateSync(image, 4 * 3);
  const tail = [new Uint8Array(4).fill(9), new Uint8Array(4).fill(9), new Uint8Array(4).fill(9)];
  backend.readv(4, tail);
  assert.deepEqual(tail.map((x) => [...x]), [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]);
});

test('FileBlockBackend with a hole puncher: DISCARD offered and punched, WRITE_ZEROES punches only with UNMAP; none when the file system cannot or the disk is read-only', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-blk-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(16 * SECTOR, 0x33));
  const punched: string[] = [];
  // Records the calls; the real fallocate is src/kvm/host-file.ts's, tested there.
  const holes = (supported: boolean): HolePuncher => ({
    canPunchHoles: () => supported,
    punchHole: (_fd, offset, length) => { punched.push(`${offset}+${length}`); },
  });
  const backend = FileBlockBackend.open(image, { holes: holes(true) });
  t.after(() => backend.close());
  assert.equal(backend.punchesHoles, true);
  const b = blockBench({ backend });
  assert.equal(hasFeature(b.dev.deviceFeatures, VIRTIO_BLK_F_DISCARD), true);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_DISCARD, 0, { out: [segment(2, 3)] }).status, VIRTIO_BLK_S_OK);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(8, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)] }).status, VIRTIO_BLK_S_OK);
  assert.deepEqual(punched, [`${2 * SECTOR}+${3 * SECTOR}`, `${8 * SECTOR}+${SECTOR}`]);
  assert.equal(b.roundTrip(VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: [segment(10, 1)] }).status, VIRTIO_BLK_S_OK);
  assert.equal(punched.length, 2, 'no UNMAP: zeros written, no hole');
  assert.ok(fs.readFileSync(image).subarray(10 * SECTOR, 11 * SECTOR).every((x) => x === 0));

  const unsupported = FileBlockBackend.open(image, { holes: holes(false) });
  t.after(() => unsupported.close());
  assert.equal(hasFeature(blockBench({ backend: unsupported }).dev.deviceFeatures, VIRTIO_BLK_F_DISCARD), false);
  const ro = FileBlockBackend.open(image, { readonly: true, holes: holes(true) });
  t.after(() => ro.close());
  assert.equal(ro.punchesHoles, false);
  assert.equal(hasFeature(blockBench({ backend: ro, readonly: true }).dev.deviceFeatures, VIRTIO_BLK_F_DISCARD), false);
});
