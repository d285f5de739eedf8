// Deterministic fuzzing of virtio-rng, virtio-blk, virtio-console and virtio-net behind virtio-mmio: seeded
// random ring contents and register writes, a fixed number of steps per device. Episodes alternate
// between a well-behaved driver (clean) and a hostile one. After every step that reaches the
// device it checks that:
//  - no exception leaves the bus interface or the host-side API; driver faults come out only as
//    VirtioErrors (one line) and DEVICE_NEEDS_RESET;
//  - no access outside guest RAM was even attempted (recording GuestMemory);
//  - the device wrote nothing but its used rings and the writable buffers of chains it took;
//  - every chain the device took or refused agrees with an independent model of the chain rules
//    (a visited-set walk with bigint ranges, checked around each popInto);
//  - in clean episodes the device never needs reset, every request completes with the right
//    status and length, and interrupts and kicks follow the EVENT_IDX / flag rules.
// Each clean episode starts with a reset after a hostile one, so recovery is tested too.
import assert from 'node:assert/strict';
import test from 'node:test';
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VirtioBlock, type BlockBackend,
} from './block.js';
import { VirtioConsole } from './console.js';
import { BumpAllocator, MmioDriver, Prng, RecordingGuestMemory, SplitRingDriver, blkRequestHeader, type Sg } from './guest-driver.js';
import * as mmio from './mmio.js';
import { VirtioNet, type NetBackend } from './net.js';
import { VirtioRng } from './rng.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit, hasFeature,
  type VirtioDevice,
} from './virtio.js';
import { VirtioError, type VirtioErrorKind } from './virtio-error.js';
import {
  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_INDIRECT_DESCRIPTORS, Virtqueue,
  type DescriptorChain, virtqAvailRingBytes, virtqDescTableBytes, virtqUsedRingBytes,
} from './virtqueue.js';

const STEPS_PER_DEVICE = 20_000;
const QUEUE_SIZE = 64;


// Guest RAM: two regions with a hole between them, so addresses in the hole are outside RAM.
const RAM = [{ gpa: 0, sizeBytes: 0x10000 }, { gpa: 0x20000, sizeBytes: 0x2000 }];
const RING_AREA = { start: 0x1000, end: 0x8000 };
const BUFFER_AREA = { start: 0x8000, end: 0xe000 };
const INDIRECT_AREA = { start: 0xe000, end: 0x10000 };
const HOLE = { start: 0x10000, end: 0x20000 };
const COMPARE_CHUNK = 256;

const CHAIN_KINDS = new Set<VirtioErrorKind>([
  'descriptor-index', 'chain-too-long', 'buffer-out-of-ram', 'buffer-overlaps-ring', 'readable-after-writable',
  'indirect-not-negotiated', 'nested-indirect', 'bad-indirect-table',
]);
/** What a device call may report; anything else is a bug. */
const REPORTABLE = new Set<VirtioErrorKind>([
  ...CHAIN_KINDS, 'avail-index', 'queue-size', 'ring-alignment', 'ring-out-of-ram', 'ring-overlap', 'bad-request',
  'features', 'status',
]);

type Range = readonly [gpa: number, len: number];
type Prediction =
  | { kind: 'empty' }
  | { kind: 'avail-index' }
  | { kind: 'invalid'; error: VirtioErrorKind; loop: boolean }
  | { kind: 'valid'; head: number; readable: Range[]; writable: Range[] };

/** A request a clean driver submits, and what its used entry must say. */
interface Request {
  out: Sg[];
  inBufs: Sg[];
  check(len: number): void;
  /** Called once the request is really in the ring. */
  submitted?(): void;
}

interface Profile {
  readonly name: string;
  readonly seed: number;
  readonly queues: number;
  make(rig: Rig): VirtioDevice;
  request(rig: Rig, queue: number): Request;
  /** Something the host does (console input, resize); may reach the device. */
  host?(rig: Rig): void;
  /** A bad-request report is right for this chain (default: virtio-blk's header and status byte rule). */
  badRequest?(pop: PopRecord): boolean;
  /** The device keeps a receive buffer it took in an earlier call (virtio-net), so may write it later. */
  holdsBuffer?(device: VirtioDevice): boolean;
  /** Queues whose buffers wait for host data rather than complete at once. */
  readonly waitQueues?: readonly number[];
  /** Stats the run must reach beyond the common ones. */
  readonly mustReach?: readonly string[];
}

/** Where the device may write during one call. */
interface PopRecord {
  queue: number;
  writable: Range[];
  readableBytes: number;
  writableBytes: number;
}

let currentRig: Rig | null = null;

class Rig {
  readonly memory = new RecordingGuestMemory(RAM);
  /** The driver's own view of RAM, not recorded: only the device's accesses are under test. */
  readonly dmem: GuestMemory = this.memory.unrecorded();
  readonly transport: mmio.VirtioMmio;
  readonly driver: MmioDriver;
  readonly device: VirtioDevice;
  readonly errors: VirtioError[] = [];
  readonly pops: PopRecord[] = [];
  readonly snapshots = this.memory.regionBytes.map((b) => new Uint8Array(b.length));
  readonly stats = new Map<string, number>();
  rings: SplitRingDriver[] = [];
  /** Per queue: head -> the request's check (clean episodes). */
  expect: Array<Map<number, Request>> = [];
  clean = false;
  step = 0;
  private bufferNext = BUFFER_AREA.start;
  // console bookkeeping
  readonly output: number[] = [];
  expectedOutput: number[] = [];
  readonly inputStream: number[] = [];
  expectedInput: number[] = [];
  // net bookkeeping: frames the device accepted, in order
  readonly sentFrames: Uint8Array[] = [];
  expectedSent: Uint8Array[] = [];
  expectedFrames: Uint8Array[] = [];
  /** Writable buffers of a chain the device still holds from an earlier call. */
  private carried: Range[] = [];
  private readonly lastPop = new Map<number, PopRecord>();

  constructor(readonly profile: Profile, readonly rng: Prng) {
    this.device = profile.make(this);
    this.transport = new mmio.VirtioMmio(this.device, {
      memory: this.memory,
      irq: { trigger: 'level', setLevel: () => {} },
      onError: (e) => this.errors.push(e),
    });
    this.driver = new MmioDriver(this.transport);
  }

  count(what: string): void {
    this.stats.set(what, (this.stats.get(what) ?? 0) + 1);
  }

  where(): string {
    return `${this.profile.name} seed ${this.profile.seed} step ${this.step}${this.clean ? ' (clean)' : ' (hostile)'}`;
  }

  /** A buffer in the buffer area (cyclic: old buffers get reused, as a guest's pages do). */
  buffer(len: number, fill?: Uint8Array): Sg {
    const bytes = Math.max(len, 1);
    let gpa = Math.ceil(this.bufferNext / 8) * 8;
    if (gpa + bytes > BUFFER_AREA.end) gpa = BUFFER_AREA.start;
    this.bufferNext = gpa + bytes;
    if (fill) this.dmem.write(gpa, fill.subarray(0, len));
    return { gpa, len };
  }

  // ---- the device call and its checks ----

  private usedRanges(): Range[] {
    return this.transport.queues.filter((q) => q.isActive).map((q) => [q.usedRingGpa, virtqUsedRingBytes(q.size)] as const);
  }

  /** Runs `fn` (which reaches the device) and checks everything the device did meanwhile. */
  invoke(what: string, fn: () => void): void {
    const usedBefore = this.usedRanges();
    this.memory.regionBytes.forEach((b, i) => this.snapshots[i]!.set(b));
    this.pops.length = 0;
    const errorsBefore = this.errors.length;
    const statusBefore = this.transport.deviceStatus;
    currentRig = this;
    try {
      fn();
    } catch (e) {
      assert.fail(`${this.where()}: ${what} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    } finally {
      currentRig = null;
    }
    assert.deepEqual(this.memory.outside, [], `${this.where()}: ${what} tried to access memory outside guest RAM`);

    const allowed: Range[] = [...usedBefore, ...this.usedRanges(), ...this.carried, ...this.pops.flatMap((p) => p.writable)];
    for (const p of this.pops) this.lastPop.set(p.queue, p);
    this.carried = this.profile.holdsBuffer?.(this.device) ? this.lastPop.get(0)?.writable ?? [] : [];
    this.memory.regionBytes.forEach((bytes, r) => {
      const snap = this.snapshots[r]!;
      for (let off = 0; off < bytes.length; off += COMPARE_CHUNK) {
        if (Buffer.compare(bytes.subarray(off, off + COMPARE_CHUNK), snap.subarray(off, off + COMPARE_CHUNK)) === 0) continue;
        for (let j = off; j < Math.min(off + COMPARE_CHUNK, bytes.length); j++) {
          if (bytes[j] === snap[j]) continue;
          const gpa = RAM[r]!.gpa + j;
          if (!allowed.some(([a, n]) => gpa >= a && gpa < a + n)) {
            assert.fail(`${this.where()}: ${what} wrote guest RAM at 0x${gpa.toString(16)}, outside used rings and the writable buffers it took`);
          }
        }
      }
    });

    const fresh = this.errors.slice(errorsBefore);
    for (const e of fresh) {
      assert.ok(e instanceof VirtioError && REPORTABLE.has(e.kind), `${this.where()}: unexpected report ${String(e)}`);
      assert.doesNotMatch(e.message, /\n/, 'one-line messages');
      this.count(`error ${e.kind}`);
      if (e.kind === 'bad-request') {
        const last = this.pops.at(-1);
        const right = this.profile.badRequest ?? ((p: PopRecord) => p.readableBytes < 16 || p.writableBytes < 1);
        assert.ok(last && right(last), `${this.where()}: bad-request for a chain with room for its header${this.profile.badRequest ? '' : ' and status'}`);
      }
    }
    const gainedReset = !(statusBefore & VIRTIO_CONFIG_S_NEEDS_RESET) && (this.transport.deviceStatus & VIRTIO_CONFIG_S_NEEDS_RESET);
    const resetWorthy = fresh.some((e) => e.kind !== 'features' && e.kind !== 'status');
    if (gainedReset) {
      assert.ok(resetWorthy, `${this.where()}: DEVICE_NEEDS_RESET with nothing reported`);
      this.count('needs-reset');
    }
    if (resetWorthy && this.transport.deviceStatus !== 0) {
      assert.ok(this.transport.deviceStatus & VIRTIO_CONFIG_S_NEEDS_RESET, `${this.where()}: ${fresh[0]!.kind} reported without DEVICE_NEEDS_RESET`);
    }
    if (this.clean) assert.deepEqual(fresh.map((e) => e.message), [], `${this.where()}: a clean driver got errors`);
  }

  // ---- the model of the chain rules, consulted around every popInto ----

  predict(q: Virtqueue): Prediction {
    if (!q.isActive) return { kind: 'empty' };
    const m = this.dmem;
    const n = q.size;
    const idx = m.readU16(q.availRingGpa + 2);
    const pending = (idx - q.nextAvailIdx) & 0xffff;
    if (pending > n) return { kind: 'avail-index' };
    if (pending === 0) return { kind: 'empty' };
    const head = m.readU16(q.availRingGpa + 4 + 2 * (q.nextAvailIdx % n));
    return this.walk(q, head);
  }

  private walk(q: Virtqueue, head: number): Prediction {
    const m = this.dmem;
    const n = q.size;
    const indirectOk = hasFeature(this.transport.negotiatedFeatures, VIRTIO_F_INDIRECT_DESC);
    const rings = [
      [BigInt(q.descTableGpa), BigInt(virtqDescTableBytes(n))],
      [BigInt(q.availRingGpa), BigInt(virtqAvailRingBytes(n))],
      [BigInt(q.usedRingGpa), BigInt(virtqUsedRingBytes(n))],
    ] as const;
    const inRam = (a: bigint, len: bigint) => RAM.some((r) => a >= BigInt(r.gpa) && a + len <= BigInt(r.gpa + r.sizeBytes));
    const clear = (a: bigint, len: bigint) => !rings.some(([s, l]) => a < s + l && s < a + len);
    const invalid = (error: VirtioErrorKind, loop = false): Prediction => ({ kind: 'invalid', error, loop });
    if (head >= n) return invalid('descriptor-index');
    let table = BigInt(q.descTableGpa);
    let entries = n;
    let inIndirect = false;
    let seen = new Set<number>();
    let sawWritable = false;
    const readable: Range[] = [];
    const writable: Range[] = [];
    // Same rules as the device, checked in the same order, but found differently: a visited set
    // instead of a hop count, bigint ranges instead of numbers.
    for (let i = head; ;) {
      if (seen.has(i)) return invalid('chain-too-long', true);
      seen.add(i);
      const d = Number(table) + 16 * i;
      const addr = m.readU64(d);
      const len = m.readU32(d + 8);
      const flags = m.readU16(d + 12);
      const next = m.readU16(d + 14);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!indirectOk) return invalid('indirect-not-negotiated');
        if (inIndirect) return invalid('nested-indirect');
        if (flags & VIRTQ_DESC_F_NEXT || len === 0 || len % 16 || len / 16 > VIRTQ_MAX_INDIRECT_DESCRIPTORS) return invalid('bad-indirect-table');
        if (!inRam(addr, BigInt(len))) return invalid('buffer-out-of-ram');
        if (!clear(addr, BigInt(len))) return invalid('buffer-overlaps-ring');
        table = addr;
        entries = len / 16;
        inIndirect = true;
        seen = new Set();
        i = 0;
        continue;
      }
      const w = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!w && sawWritable) return invalid('readable-after-writable');
      sawWritable ||= w;
      // Zero-length buffers are never touched, so their address does not matter.
      if (len > 0 && !inRam(addr, BigInt(len))) return invalid('buffer-out-of-ram');
      if (len > 0 && !clear(addr, BigInt(len))) return invalid('buffer-overlaps-ring');
      (w ? writable : readable).push([len > 0 ? Number(addr) : -1, len]);
      if (!(flags & VIRTQ_DESC_F_NEXT)) return { kind: 'valid', head, readable, writable };
      if (next >= entries) return invalid('descriptor-index');
      i = next;
    }
  }

  checkTaken(p: Prediction, took: boolean, chain: DescriptorChain, queue: number): void {
    const w = this.where();
    if (p.kind === 'empty') {
      assert.equal(took, false, `${w}: popped from an empty ring`);
      return;
    }
    assert.equal(p.kind, 'valid', `${w}: device took a chain the model refuses (${p.kind === 'invalid' ? p.error : p.kind})`);
    if (p.kind !== 'valid') return;
    assert.equal(took, true, `${w}: device saw no chain where the model sees a valid one`);
    assert.equal(chain.head, p.head, `${w}: head`);
    const ranges = (views: Uint8Array[]): Range[] => views.map((v) => [v.length > 0 ? this.memory.gpaOf(v)! : -1, v.length]);
    assert.deepEqual(ranges(chain.readable), p.readable, `${w}: readable buffers`);
    assert.deepEqual(ranges(chain.writable), p.writable, `${w}: writable buffers`);
    this.pops.push({ queue, writable: p.writable.filter(([, n]) => n > 0), readableBytes: chain.readableBytes, writableBytes: chain.writableBytes });
    this.count('chain taken');
  }

  checkRefused(p: Prediction, e: unknown): void {
    const w = this.where();
    assert.ok(e instanceof VirtioError, `${w}: popInto threw ${String(e)}`);
    if (p.kind === 'avail-index') assert.equal(e.kind, 'avail-index', w);
    else if (p.kind === 'invalid') {
      // A loop is found by the model at the first revisit; the device counts hops and may meet the
      // revisited readable descriptor after a writable one first.
      const ok = e.kind === p.error || (p.loop && e.kind === 'readable-after-writable');
      assert.ok(ok, `${w}: the model expects ${p.error}, the device said ${e.kind} (${e.message})`);
    }
    else assert.fail(`${w}: device refused (${e.message}) a chain the model accepts`);
  }

  // ---- driver actions ----

  /** Reset, negotiate, rings, DRIVER_OK. Clean: what Linux does. Hostile: sizes, addresses and features may be wrong. */
  bringUp(): void {
    const r = this.rng;
    this.invoke('reset', () => this.driver.write32(mmio.VIRTIO_MMIO_STATUS, 0));
    const alloc = new BumpAllocator(RING_AREA.start, RING_AREA.end);
    const offered = this.transport.offeredFeatures;
    let features = featureBit(VIRTIO_F_VERSION_1);
    for (let bit = 0; bit < 64; bit++) if (hasFeature(offered, bit) && r.chance(0.6)) features |= featureBit(bit);
    if (!this.clean && r.chance(0.1)) features = BigInt(r.u32()) | (BigInt(r.u32()) << 32n);
    const eventIdx = hasFeature(features, VIRTIO_F_EVENT_IDX);
    const indirect = hasFeature(features, VIRTIO_F_INDIRECT_DESC);
    this.rings = [];
    for (let i = 0; i < this.profile.queues; i++) {
      let size = 1 << r.range(this.profile.name === 'virtio-blk' ? 2 : 0, Math.log2(QUEUE_SIZE));
      if (!this.clean && r.chance(0.1)) size = r.pick([0, 3, 12, QUEUE_SIZE * 2]);
      this.rings.push(new SplitRingDriver(this.dmem, alloc, size, { eventIdx, indirect, usedAlign: r.pick([4, 64, 4096]) }));
    }
    this.expect = this.rings.map(() => new Map());
    this.invoke('bring-up', () => {
      const d = this.driver;
      d.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
      d.addStatus(VIRTIO_CONFIG_S_DRIVER);
      d.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
      d.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES, Number(features >> 32n));
      d.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
      d.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffff_ffffn));
      d.addStatus(VIRTIO_CONFIG_S_FEATURES_OK);
      this.rings.forEach((ring, i) => {
        let [desc, avail, used] = [ring.descGpa, ring.availGpa, ring.usedGpa];
        if (!this.clean && r.chance(0.05)) {
          const wild = () => r.pick([r.int(0x10000), HOLE.start + 8, 0xfff0, 0x20000 + 0x1ff0, r.u32(), ring.descGpa + 2]);
          [desc, avail, used] = [r.chance(0.5) ? wild() : desc, r.chance(0.5) ? wild() : avail, r.chance(0.5) ? wild() : used];
        }
        d.write32(mmio.VIRTIO_MMIO_QUEUE_SEL, i);
        d.write32(mmio.VIRTIO_MMIO_QUEUE_NUM, ring.size);
        d.write32(mmio.VIRTIO_MMIO_QUEUE_DESC_LOW, desc);
        d.write32(mmio.VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail);
        d.write32(mmio.VIRTIO_MMIO_QUEUE_USED_LOW, used);
        d.write32(mmio.VIRTIO_MMIO_QUEUE_READY, 1);
      });
      d.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
    });
    if (this.clean) {
      assert.equal(this.driver.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET), VIRTIO_CONFIG_S_DRIVER_OK, `${this.where()}: clean bring-up`);
      this.expectedOutput = [];
      this.output.length = 0;
      const pending = (this.device as VirtioConsole).pendingInputBytes ?? 0;
      this.expectedInput = this.inputStream.slice(this.inputStream.length - pending);
      // A reset drops the frames virtio-net had queued.
      this.expectedFrames = [];
      this.expectedSent = [];
      this.sentFrames.length = 0;
    }
    this.count(this.clean ? 'clean episode' : 'hostile episode');
  }

  /** Clean: submit a request, kick only if the device asked for it, collect used entries. */
  cleanRequest(): void {
    const qi = this.rng.int(this.rings.length);
    const ring = this.rings[qi]!;
    const req = this.profile.request(this, qi);
    const needed = ring.indirect && req.out.length + req.inBufs.length > 1 ? 1 : req.out.length + req.inBufs.length;
    if (needed > ring.numFree) return;
    const head = ring.add(req.out, req.inBufs);
    this.expect[qi]!.set(head, req);
    req.submitted?.();
    if (ring.kickPrepare()) this.invoke('notify', () => this.driver.notify(qi));
    this.collect();
  }

  /** Clean: every used entry checked against its request; an interrupt must be pending for new ones. */
  collect(): void {
    this.rings.forEach((ring, qi) => {
      let got = 0;
      for (let used = ring.getBuf(); used; used = ring.getBuf()) {
        const req = this.expect[qi]!.get(used.id);
        assert.ok(req, `${this.where()}: used entry for head ${used.id} that was not outstanding`);
        this.expect[qi]!.delete(used.id);
        req.check(used.len);
        got++;
      }
      if (got > 0) {
        assert.ok(this.transport.pendingInterrupts & mmio.VIRTIO_MMIO_INT_VRING, `${this.where()}: used buffers without an interrupt`);
        this.count('request completed');
      }
      // Everything but receive queues is consumed as soon as the device is kicked.
      const isRx = this.profile.waitQueues?.includes(qi) ?? false;
      if (!isRx) assert.equal(ring.usedIdx, ring.availIdx, `${this.where()}: queue ${qi} left requests behind`);
    });
    this.invoke('ack', () => this.driver.handleInterrupt());
    if (this.profile.name === 'virtio-console') assert.deepEqual(this.output, this.expectedOutput, `${this.where()}: console output`);
    if (this.profile.name === 'virtio-net') assert.deepEqual(this.sentFrames, this.expectedSent, `${this.where()}: frames sent`);
  }

  // ---- hostile actions ----

  private pickAddr(ring: SplitRingDriver): number | bigint {
    const r = this.rng;
    switch (r.int(10)) {
      case 0: return r.range(INDIRECT_AREA.start, INDIRECT_AREA.end - 16) & ~15;
      case 1: return r.pick([ring.descGpa, ring.availGpa, ring.usedGpa]) + r.range(-8, 8);
      case 2: return r.range(HOLE.start - 8, HOLE.end);
      case 3: return r.pick([RAM[0]!.sizeBytes, RAM[1]!.gpa + RAM[1]!.sizeBytes]) - r.range(0, 32);
      case 4: return r.u32();
      case 5: return (BigInt(r.u32()) << 32n) | BigInt(r.u32());
      default: return r.range(BUFFER_AREA.start, BUFFER_AREA.end - 64);
    }
  }

  private pickLen(): number {
    const r = this.rng;
    switch (r.int(10)) {
      case 0: return 0;
      case 1: return 16 * r.range(0, 6);
      case 2: return r.pick([512, 513, 1024]);
      case 3: return r.int(0x10000);
      case 4: return r.pick([0xffff_ffff, r.u32(), (VIRTQ_MAX_INDIRECT_DESCRIPTORS + 1) * 16]);
      default: return r.range(1, 64);
    }
  }

  private writeRawDesc(table: number, i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const at = table + 16 * i;
    if (!this.dmem.contains(at, 16)) return;
    this.dmem.writeU64(at, BigInt.asUintN(64, BigInt(addr)));
    this.dmem.writeU32(at + 8, len >>> 0);
    this.dmem.writeU16(at + 12, flags & 0xffff);
    this.dmem.writeU16(at + 14, next & 0xffff);
  }

  private publishRaw(ring: SplitRingDriver, head: number): void {
    if (ring.size === 0) return;
    const idx = this.dmem.readU16(ring.availGpa + 2);
    this.dmem.writeU16(ring.availGpa + 4 + 2 * (idx % ring.size), head & 0xffff);
    this.dmem.writeU16(ring.availGpa + 2, (idx + 1) & 0xffff);
  }

  /** A well-formed request written straight into the ring, ignoring the driver's bookkeeping. */
  rawRequest(): void {
    const r = this.rng;
    const qi = r.int(this.rings.length);
    const ring = this.rings[qi]!;
    if (ring.size === 0) return;
    const req = this.profile.request(this, qi);
    const sgs = [...req.out.map((s) => [s, 0] as const), ...req.inBufs.map((s) => [s, VIRTQ_DESC_F_WRITE] as const)];
    const start = r.int(ring.size);
    if (ring.indirect && (sgs.length > ring.size || r.chance(0.5))) {
      const table = r.range(INDIRECT_AREA.start, INDIRECT_AREA.end - 16 * sgs.length) & ~15;
      sgs.forEach(([s, f], k) => this.writeRawDesc(table, k, s.gpa, s.len, f | (k < sgs.length - 1 ? VIRTQ_DESC_F_NEXT : 0), k + 1));
      this.writeRawDesc(ring.descGpa, start, table, 16 * sgs.length, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      if (sgs.length > ring.size) return;
      sgs.forEach(([s, f], k) => {
        const i = (start + k) % ring.size;
        this.writeRawDesc(ring.descGpa, i, s.gpa, s.len, f | (k < sgs.length - 1 ? VIRTQ_DESC_F_NEXT : 0), (i + 1) % ring.size);
      });
    }
    this.publishRaw(ring, start);
    if (r.chance(0.7)) this.invoke('notify', () => this.driver.notify(qi));
  }

  garbageDescriptors(): void {
    const r = this.rng;
    const qi = r.int(this.rings.length);
    const ring = this.rings[qi]!;
    for (let k = r.range(1, 4); k > 0; k--) {
      const inIndirect = r.chance(0.25);
      const table = inIndirect ? INDIRECT_AREA.start + 16 * r.int(8) : ring.descGpa;
      const i = r.int(Math.max(ring.size, 1) + (r.chance(0.1) ? 4 : 0));
      const flags = r.chance(0.9) ? r.int(8) : r.u32() & 0xffff;
      const next = r.chance(0.85) ? r.int(Math.max(ring.size, 1)) : r.u32() & 0xffff;
      this.writeRawDesc(table, i, this.pickAddr(ring), this.pickLen(), flags, next);
    }
    if (r.chance(0.8)) this.publishRaw(ring, r.chance(0.9) ? r.int(Math.max(ring.size, 1)) : r.u32());
    if (r.chance(0.7)) this.invoke('notify', () => this.driver.notify(qi));
  }

  garbageAvail(): void {
    const r = this.rng;
    const ring = this.rings[r.int(this.rings.length)]!;
    const m = this.dmem;
    switch (r.int(4)) {
      case 0: m.writeU16(ring.availGpa + 2, r.chance(0.5) ? r.u32() & 0xffff : (m.readU16(ring.availGpa + 2) + r.range(-2, ring.size + 2)) & 0xffff); break;
      case 1: if (ring.size) m.writeU16(ring.availGpa + 4 + 2 * r.int(ring.size), r.u32() & 0xffff); break;
      case 2: m.writeU16(ring.availGpa, r.u32() & 0xffff); break; // flags
      default: m.writeU16(ring.availGpa + 4 + 2 * ring.size, r.u32() & 0xffff); break; // used_event
    }
  }

  scribble(): void {
    const r = this.rng;
    const ring = this.rings[r.int(this.rings.length)]!;
    const at = r.pick([ring.descGpa, ring.availGpa, ring.usedGpa, INDIRECT_AREA.start]) + r.int(256);
    const bytes = r.bytes(r.range(1, 64));
    if (this.dmem.contains(at, bytes.length)) this.dmem.write(at, bytes);
  }

  registerWrite(): void {
    const r = this.rng;
    const ring = this.rings[r.int(this.rings.length)];
    const offset = r.chance(0.85)
      ? r.pick([
        mmio.VIRTIO_MMIO_STATUS, mmio.VIRTIO_MMIO_QUEUE_SEL, mmio.VIRTIO_MMIO_QUEUE_NUM, mmio.VIRTIO_MMIO_QUEUE_READY,
        mmio.VIRTIO_MMIO_QUEUE_NOTIFY, mmio.VIRTIO_MMIO_INTERRUPT_ACK, mmio.VIRTIO_MMIO_DRIVER_FEATURES,
        mmio.VIRTIO_MMIO_DRIVER_FEATURES_SEL, mmio.VIRTIO_MMIO_DEVICE_FEATURES_SEL, mmio.VIRTIO_MMIO_QUEUE_DESC_LOW,
        mmio.VIRTIO_MMIO_QUEUE_DESC_HIGH, mmio.VIRTIO_MMIO_QUEUE_AVAIL_LOW, mmio.VIRTIO_MMIO_QUEUE_USED_LOW,
        mmio.VIRTIO_MMIO_QUEUE_USED_HIGH, mmio.VIRTIO_MMIO_CONFIG + r.int(24), mmio.VIRTIO_MMIO_SHM_SEL,
      ])
      : r.int(0x200);
    const value = r.pick([r.int(4), r.int(16), r.u32(), 0, 1, 0x4f, 0x0f, 0xff, 1 << r.int(16), ring?.descGpa ?? 0, ring?.usedGpa ?? 0]);
    const size = r.chance(0.85) ? 4 : r.pick([1, 2, 8]);
    const data = new Uint8Array(size);
    for (let i = 0; i < Math.min(size, 4); i++) data[i] = (value >>> (8 * i)) & 0xff;
    this.invoke(`write 0x${offset.toString(16)}=${value}`, () => this.transport.write(offset, data));
  }

  registerRead(): void {
    const r = this.rng;
    const data = new Uint8Array(r.chance(0.85) ? 4 : r.pick([1, 2, 8]));
    const offset = r.int(0x1a0);
    this.invoke(`read 0x${offset.toString(16)}`, () => this.transport.read(offset, data));
  }

  hostileStep(): void {
    const r = this.rng;
    // A device that needs reset ignores the rings: a hostile driver resets it and tries again.
    if (this.transport.deviceStatus & VIRTIO_CONFIG_S_NEEDS_RESET && r.chance(0.7)) {
      this.bringUp();
      return;
    }
    const roll = r.int(100);
    if (roll < 20) this.rawRequest();
    else if (roll < 42) this.garbageDescriptors();
    else if (roll < 50) this.garbageAvail();
    else if (roll < 55) this.scribble();
    else if (roll < 70) this.registerWrite();
    else if (roll < 75) this.registerRead();
    else if (roll < 88) this.invoke('notify', () => this.driver.notify(r.chance(0.9) ? r.int(this.rings.length) : r.u32()));
    else if (roll < 95 && this.profile.host) this.invoke('host', () => this.profile.host!(this));
    else this.invoke('ack', () => this.driver.handleInterrupt());
  }

  cleanStep(): void {
    const r = this.rng;
    const roll = r.int(100);
    if (roll < 55) this.cleanRequest();
    else if (roll < 70 && this.profile.host) {
      this.invoke('host', () => this.profile.host!(this));
      this.collect();
    } else if (roll < 80) {
      this.invoke('reads', () => {
        for (const off of [mmio.VIRTIO_MMIO_STATUS, mmio.VIRTIO_MMIO_INTERRUPT_STATUS, mmio.VIRTIO_MMIO_CONFIG_GENERATION]) this.driver.read32(off);
        this.driver.readConfig(r.int(8), 1);
      });
    } else if (roll < 90) {
      this.invoke('spurious notify', () => this.driver.notify(r.int(this.rings.length)));
      this.collect();
    } else this.collect();
  }
}

// ---- the devices under test ----

function counting() {
  let n = 0;
  return (b: Uint8Array) => {
    for (let i = 0; i < b.length; i++) b[i] = n++ & 0xff;
  };
}

const RNG_MAX_PER_REQUEST = 48;

const rngProfile: Profile = {
  name: 'virtio-rng',
  seed: 0x5eed_0001,
  queues: 1,
  make: () => new VirtioRng({ source: counting(), queueSize: QUEUE_SIZE, maxBytesPerRequest: RNG_MAX_PER_REQUEST }),
  request(rig) {
    const inBufs = Array.from({ length: rig.rng.range(1, 3) }, () => rig.buffer(rig.rng.range(1, 40)));
    const total = inBufs.reduce((n, b) => n + b.len, 0);
    return { out: [], inBufs, check: (len) => assert.equal(len, Math.min(total, RNG_MAX_PER_REQUEST), `${rig.where()}: entropy bytes`) };
  },
};

const consoleProfile: Profile = {
  name: 'virtio-console',
  seed: 0x5eed_0002,
  queues: 2,
  waitQueues: [0],
  make: (rig) => new VirtioConsole({ output: (b) => { for (const x of b) rig.output.push(x); }, queueSize: QUEUE_SIZE, size: { cols: 80, rows: 24 } }),
  request(rig, queue) {
    const r = rig.rng;
    if (queue === 0) {
      const inBufs = Array.from({ length: r.range(1, 2) }, () => rig.buffer(r.range(1, 24)));
      return {
        out: [],
        inBufs,
        check: (len) => {
          const got: number[] = [];
          for (const b of inBufs) got.push(...rig.dmem.read(b.gpa, b.len));
          assert.deepEqual(got.slice(0, len), rig.expectedInput.splice(0, len), `${rig.where()}: console input`);
        },
      };
    }
    const out = Array.from({ length: r.range(1, 2) }, () => {
      const bytes = r.bytes(r.range(1, 24));
      return rig.buffer(bytes.length, bytes);
    });
    return {
      out,
      inBufs: [],
      check: (len) => assert.equal(len, 0),
      submitted: () => { for (const b of out) rig.expectedOutput.push(...rig.dmem.read(b.gpa, b.len)); },
    };
  },
  host(rig) {
    const dev = rig.device as VirtioConsole;
    if (rig.rng.chance(0.8)) {
      const bytes = rig.rng.bytes(rig.rng.range(1, 30));
      rig.inputStream.push(...bytes);
      if (rig.clean) rig.expectedInput.push(...bytes);
      dev.enqueueInput(bytes);
    } else dev.resize(rig.rng.range(1, 300), rig.rng.range(1, 100));
  },
};

const DISK_SECTORS = 64;

class FuzzDisk implements BlockBackend {
  readonly bytes = new Uint8Array(DISK_SECTORS * 512);
  readonly sizeBytes = this.bytes.length;
  readv(offset: number, bufs: readonly Uint8Array[]): void {
    for (const b of bufs) { b.set(this.bytes.subarray(offset, offset + b.length)); offset += b.length; }
  }
  writev(offset: number, bufs: readonly Uint8Array[]): void {
    for (const b of bufs) { this.bytes.set(b, offset); offset += b.length; }
  }
  flush(): void {}
  discard(): void {}
  writeZeroes(offset: number, length: number): void { this.bytes.fill(0, offset, offset + length); }
}


const blockProfile: Profile = {
  name: 'virtio-blk',
  seed: 0x5eed_0003,
  queues: 1,
  make: () => new VirtioBlock({ backend: new FuzzDisk(), queueSize: QUEUE_SIZE, serial: 'fuzz-disk' }),
  request(rig) {
    const r = rig.rng;
    const kind = r.int(8);
    const status = rig.buffer(1, Uint8Array.of(0xff));
    const done = (expected: number, usedLen: number): Request['check'] => (len) => {
      assert.equal(rig.dmem.readU8(status.gpa), expected, `${rig.where()}: block status`);
      assert.equal(len, expected === VIRTIO_BLK_S_OK ? usedLen : 1, `${rig.where()}: block used length`);
    };
    const sectors = r.range(1, 2);
    const sector = r.int(DISK_SECTORS - sectors + 1);
    switch (kind) {
      case 0: {
        const data = [rig.buffer(256), rig.buffer(sectors * 512 - 256)];
        return { out: [rig.buffer(16, blkRequestHeader(VIRTIO_BLK_T_IN, sector))], inBufs: [...data, status], check: done(VIRTIO_BLK_S_OK, sectors * 512 + 1) };
      }
      case 1: {
        const data = rig.buffer(sectors * 512, r.bytes(sectors * 512));
        return { out: [rig.buffer(16, blkRequestHeader(VIRTIO_BLK_T_OUT, sector)), data], inBufs: [status], check: done(VIRTIO_BLK_S_OK, 1) };
      }
      case 2: return { out: [rig.buffer(16, blkRequestHeader(VIRTIO_BLK_T_FLUSH, 0))], inBufs: [status], check: done(VIRTIO_BLK_S_OK, 1) };
      case 3: return { out: [rig.buffer(16, blkRequestHeader(VIRTIO_BLK_T_GET_ID, 0))], inBufs: [rig.buffer(20), status], check: done(VIRTIO_BLK_S_OK, 21) };
      case 4:
      case 5: {
        const seg = new Uint8Array(16);
        const v = new DataView(seg.buffer);
        v.setBigUint64(0, BigInt(sector), true);
        v.setUint32(8, sectors, true);
        const type = kind === 4 ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES;
        return { out: [rig.buffer(16, blkRequestHeader(type, 0)), rig.buffer(16, seg)], inBufs: [status], check: done(VIRTIO_BLK_S_OK, 1) };
      }
      case 6: return { out: [rig.buffer(16, blkRequestHeader(VIRTIO_BLK_T_IN, DISK_SECTORS))], inBufs: [rig.buffer(512), status], check: done(VIRTIO_BLK_S_IOERR, 0) };
      default: return { out: [rig.buffer(16, blkRequestHeader(0x77, 0))], inBufs: [status], check: done(VIRTIO_BLK_S_UNSUPP, 0) };
    }
  },
};

const NET_HDR = 12;
const NET_MAX_FRAME = 100;

class FuzzNetBackend implements NetBackend {
  receiver: ((frame: Uint8Array) => void) | null = null;
  constructor(private readonly rig: Rig) {}
  send(frame: Uint8Array): boolean {
    this.rig.sentFrames.push(frame.slice());
    return true;
  }
  setReceiver(r: ((frame: Uint8Array) => void) | null): void {
    this.receiver = r;
  }
}

const netProfile: Profile = {
  name: 'virtio-net',
  seed: 0x5eed_0004,
  queues: 2,
  waitQueues: [0],
  make: (rig) => new VirtioNet({ backend: new FuzzNetBackend(rig), mac: Uint8Array.of(2, 0, 0, 0, 0, 1), queueSize: QUEUE_SIZE, maxPendingRxFrames: 8 }),
  request(rig, queue) {
    const r = rig.rng;
    // A hostile driver sometimes leaves no room for the 12-byte header: bad-request.
    if (!rig.clean && r.chance(0.05)) {
      const tiny = rig.buffer(r.range(1, NET_HDR - 1));
      return queue === 0 ? { out: [], inBufs: [tiny], check: () => {} } : { out: [tiny], inBufs: [], check: () => {} };
    }
    if (queue === 0) {
      // Header and frame in one buffer (Linux's small buffers) or in two.
      const inBufs = r.chance(0.5) ? [rig.buffer(NET_HDR + NET_MAX_FRAME)] : [rig.buffer(NET_HDR), rig.buffer(NET_MAX_FRAME)];
      return {
        out: [],
        inBufs,
        check: (len) => {
          const expected = rig.expectedFrames.shift();
          assert.ok(expected, `${rig.where()}: a receive buffer came back with no frame sent`);
          assert.equal(len, NET_HDR + expected.length, `${rig.where()}: receive length`);
          const got: number[] = [];
          for (const b of inBufs) got.push(...rig.dmem.read(b.gpa, b.len));
          assert.deepEqual(got.slice(0, NET_HDR), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], `${rig.where()}: receive header`);
          assert.deepEqual(got.slice(NET_HDR, len), [...expected], `${rig.where()}: received frame`);
        },
      };
    }
    const frame = r.bytes(r.range(14, NET_MAX_FRAME));
    const header = rig.buffer(NET_HDR, r.bytes(NET_HDR)); // flags the device must ignore
    const cut = r.range(0, frame.length);
    const out = r.chance(0.5)
      ? [header, rig.buffer(frame.length, frame)]
      : [header, rig.buffer(cut, frame.subarray(0, cut)), rig.buffer(frame.length - cut, frame.subarray(cut))].filter((b) => b.len > 0);
    return { out, inBufs: [], check: (len) => assert.equal(len, 0), submitted: () => rig.expectedSent.push(frame) };
  },
  host(rig) {
    const dev = rig.device as VirtioNet;
    const frame = rig.rng.bytes(rig.rng.range(14, rig.clean ? NET_MAX_FRAME : NET_MAX_FRAME * 2));
    const s = dev.stats;
    const dropsBefore = s.rxDroppedNoBuffer + s.rxDroppedInactive + s.rxDroppedTooBig;
    dev.receive(frame);
    if (rig.clean && s.rxDroppedNoBuffer + s.rxDroppedInactive + s.rxDroppedTooBig === dropsBefore) rig.expectedFrames.push(frame);
  },
  mustReach: ['error bad-request'],
  badRequest: (p) => (p.queue === 0 ? p.writableBytes < NET_HDR : p.readableBytes < NET_HDR),
  holdsBuffer: (d) => (d as VirtioNet).holdsRxBuffer,
};

// ---- the runs ----

const originalPopInto = Virtqueue.prototype.popInto;

function fuzz(profile: Profile): Map<string, number> {
  const rig = new Rig(profile, new Prng(profile.seed));
  Virtqueue.prototype.popInto = function popIntoChecked(this: Virtqueue, memory: GuestMemory, chain: DescriptorChain): boolean {
    const r = currentRig;
    if (!r) return originalPopInto.call(this, memory, chain);
    const p = r.predict(this);
    let took: boolean;
    try {
      took = originalPopInto.call(this, memory, chain);
    } catch (e) {
      r.checkRefused(p, e);
      throw e;
    }
    r.checkTaken(p, took, chain, this.index);
    return took;
  };
  try {
    while (rig.step < STEPS_PER_DEVICE) {
      rig.clean = rig.rng.chance(0.5);
      rig.bringUp();
      for (let n = rig.rng.range(5, 40); n > 0 && rig.step < STEPS_PER_DEVICE; n--, rig.step++) {
        if (rig.clean) rig.cleanStep();
        else rig.hostileStep();
      }
    }
  } finally {
    Virtqueue.prototype.popInto = originalPopInto;
  }
  return rig.stats;
}

for (const profile of [rngProfile, blockProfile, consoleProfile, netProfile]) {
  test(`fuzz ${profile.name}: ${STEPS_PER_DEVICE} seeded steps of random rings and registers`, (t) => {
    const stats = fuzz(profile);
    t.diagnostic([...stats].sort().map(([k, v]) => `${k}: ${v}`).join(', '));
    // The run must have reached the interesting places, or it proves little.
    for (const what of ['clean episode', 'hostile episode', 'chain taken', 'request completed', 'needs-reset', 'error chain-too-long',
      'error descriptor-index', 'error buffer-out-of-ram', 'error buffer-overlaps-ring', 'error avail-index', ...(profile.mustReach ?? [])]) {
      assert.ok((stats.get(what) ?? 0) > 0, `${profile.name}: the fuzzer never reached "${what}"`);
    }
  });
}
