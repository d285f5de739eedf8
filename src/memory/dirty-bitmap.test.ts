import assert from 'node:assert/strict';
import test from 'node:test';
import { AddressSpace, type GpaRange } from './address-space.js';
import { DirtyBitmapError, DirtyTracker, PageBitmap, slotsLosingDirtyLog, type KvmDirtyLog } from './dirty-bitmap.js';

const PAGE = 0x1000;

/** A KVM-style log (u64 words, bit N = page N) with the given pages set. */
function kvmLog(pages: number, dirty: readonly number[]): BigUint64Array {
  const log = new BigUint64Array(Math.ceil(pages / 64));
  for (const p of dirty) log[p >>> 6]! |= 1n << BigInt(p & 63);
  return log;
}

const asBytes = (log: BigUint64Array): Uint8Array => {
  const out = new Uint8Array(log.length * 8);
  const view = new DataView(out.buffer);
  log.forEach((w, i) => view.setBigUint64(i * 8, w, true)); // KVM's words are little-endian on x86-64
  return out;
};

function setPages(b: PageBitmap): number[] {
  return b.runs().flatMap(([p, n]) => Array.from({ length: n }, (_, i) => p + i));
}

test('set, test and clear across word boundaries', () => {
  const b = new PageBitmap(100);
  for (const p of [0, 31, 32, 63, 64, 99]) b.set(p);
  assert.deepEqual(setPages(b), [0, 31, 32, 63, 64, 99]);
  assert.equal(b.test(31), true);
  assert.equal(b.test(30), false);
  b.clear(31);
  assert.equal(b.test(31), false);
  assert.equal(b.count(), 5);
  b.setRange(10, 60);
  assert.deepEqual(b.runs(), [[0, 1], [10, 60], [99, 1]]);
  b.clearRange(33, 31);
  assert.deepEqual(b.runs(), [[0, 1], [10, 23], [64, 6], [99, 1]]);
  assert.deepEqual(b.runs(20, 50), [[20, 13], [64, 6]], 'runs are cut to the window asked for');
  b.clearAll();
  assert.equal(b.isEmpty(), true);
  assert.throws(() => b.set(100), DirtyBitmapError);
  assert.throws(() => b.setRange(90, 11), DirtyBitmapError);
});

test('a KVM log OR-merges at any page offset, from bytes or u64 words, ignoring bits past the slot', () => {
  const dirty = [0, 1, 31, 32, 33, 63, 64, 95, 127, 128, 129];
  const log = kvmLog(130, [...dirty, 130, 191]); // 130 and 191 lie past the slot's 130 pages
  for (const form of ['u64', 'bytes'] as const) {
    for (const at of [0, 1, 31, 32, 45, 64, 70]) {
      const b = new PageBitmap(300);
      b.set(200); // something already dirty stays dirty: the merge is an OR
      b.orKvmLog(form === 'u64' ? log : asBytes(log), at, 130);
      assert.deepEqual(setPages(b), [...new Set([...dirty.map((p) => p + at), 200])].sort((x, y) => x - y), `${form} at ${at}`);
    }
  }
  assert.throws(() => new PageBitmap(300).orKvmLog(new BigUint64Array(1), 0, 65), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'log-size');
  assert.throws(() => new PageBitmap(100).orKvmLog(log, 0, 130), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'range');
  const round = new PageBitmap(300);
  round.orKvmLog(log, 5, 130);
  assert.deepEqual(round.toKvmLog(5, 130), kvmLog(130, dirty), 'toKvmLog is the inverse');
});

/** A map with RAM "a" at 1 MiB (8 pages, host "h" at page 0) and "b" at 2 MiB (8 pages, host "h" at page 8). */
function setup(): { as: AddressSpace; tracker: DirtyTracker } {
  const as = new AddressSpace({ maxSlots: 16, hosts: [['h', 64 * PAGE]] });
  as.begin()
    .add({ id: 'a', kind: 'ram', gpa: 0x100000, sizeBytes: 8 * PAGE, priority: 0, backing: { hostId: 'h', offsetBytes: 0 }, logDirty: true })
    .add({ id: 'b', kind: 'ram', gpa: 0x200000, sizeBytes: 8 * PAGE, priority: 0, backing: { hostId: 'h', offsetBytes: 8 * PAGE }, logDirty: true })
    .add({ id: 'dev', kind: 'mmio', gpa: 0x300000, sizeBytes: PAGE, priority: 0 })
    .commit();
  return { as, tracker: new DirtyTracker(as.slots()) };
}

const slotOf = (as: AddressSpace, id: string): number => as.slots().find((s) => s.regionId === id)!.slot;
const range = (gpa: number, pages: number): GpaRange => ({ gpa, sizeBytes: pages * PAGE });

test('harvest returns the KVM log OR the VMM writes as guest-physical ranges, once', () => {
  const { as, tracker } = setup();
  tracker.mergeKvmLog(slotOf(as, 'a'), kvmLog(8, [0, 1, 5]));
  assert.equal(tracker.markGpa(0x101800, 0x1000), 2, 'a write straddling two pages dirties both');
  assert.equal(tracker.markGpa(0x207000, 3 * PAGE), 1, 'bytes past the end of RAM are not memory');
  assert.equal(tracker.markGpa(0x300000, PAGE), 0, 'MMIO is not memory');
  assert.deepEqual(tracker.harvest(), [range(0x100000, 3), range(0x105000, 1), range(0x207000, 1)]);
  assert.deepEqual(tracker.harvest(), [], 'harvesting forgets what it returned');
  assert.throws(() => tracker.mergeKvmLog(99, kvmLog(8, [0])), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'unknown-slot');
});

/** Commits `edit`, hands the tracker the logs KVM would lose (taken from `logs`), and harvests. */
function change(as: AddressSpace, tracker: DirtyTracker, logs: Map<number, KvmDirtyLog>, edit: (tx: ReturnType<AddressSpace['begin']>) => void): GpaRange[] {
  const tx = as.begin();
  edit(tx);
  const { ops } = tx.commit();
  const harvested = new Map(slotsLosingDirtyLog(ops).map((s) => [s, logs.get(s) ?? kvmLog(8, [])] as const));
  tracker.applyOps(ops, harvested);
  return tracker.harvest();
}

test('dirty pages follow a split to the region that now holds them', () => {
  const { as, tracker } = setup();
  const logs = new Map([[slotOf(as, 'a'), kvmLog(8, [1, 6])]]);
  assert.deepEqual(change(as, tracker, logs, (tx) => tx.split('a', 4 * PAGE, 'a2')), [range(0x101000, 1), range(0x106000, 1)]);
  assert.equal(as.lookup(0x106000)?.regionId, 'a2');
});

test('dirty pages of both halves survive a merge', () => {
  const { as } = setup();
  as.begin().split('a', 4 * PAGE, 'a2').commit();
  const tracker = new DirtyTracker(as.slots());
  const logs = new Map([[slotOf(as, 'a'), kvmLog(4, [3])], [slotOf(as, 'a2'), kvmLog(4, [0])]]);
  assert.deepEqual(change(as, tracker, logs, (tx) => tx.merge('a', 'a2')), [range(0x103000, 2)]);
});

test('dirty pages of a moved region are reported at its new gpa', () => {
  const { as, tracker } = setup();
  const logs = new Map([[slotOf(as, 'b'), kvmLog(8, [2])]]);
  tracker.markGpa(0x200000, PAGE);
  assert.deepEqual(change(as, tracker, logs, (tx) => tx.move('b', 0x40000000)), [range(0x40000000, 1), range(0x40002000, 1)]);
});

test('pages cut off by shrink stay dirty in the backing and come back with grow', () => {
  const { as, tracker } = setup();
  const logs = new Map([[slotOf(as, 'a'), kvmLog(8, [1, 7])]]);
  assert.deepEqual(change(as, tracker, logs, (tx) => tx.shrink('a', 4 * PAGE)), [range(0x101000, 1)]);
  assert.equal(tracker.pendingPages(), 1, 'page 7 is no longer mapped but its contents are still unsent');
  assert.deepEqual(change(as, tracker, new Map(), (tx) => tx.grow('a', 8 * PAGE)), [range(0x107000, 1)]);
  assert.equal(tracker.pendingPages(), 0);
});

test('a readonly toggle reuses the slot number without mixing up the old log', () => {
  const { as, tracker } = setup();
  const slot = slotOf(as, 'b');
  const slotA = slotOf(as, 'a');
  const { ops } = as.begin().setReadonly('b', true).remove('a').commit();
  assert.deepEqual(slotsLosingDirtyLog(ops).sort(), [slotA, slot].sort());
  tracker.applyOps(ops, new Map([[slot, kvmLog(8, [4])], [slotA, kvmLog(8, [0])]]));
  assert.equal(slotOf(as, 'b'), slot);
  assert.deepEqual(tracker.harvest(), [range(0x204000, 1)], 'the page of removed "a" is held, not reported at a gpa it no longer has');
  assert.equal(tracker.pendingPages(), 1);
});

test('turning dirty logging off hands over the log KVM is about to free', () => {
  const { as, tracker } = setup();
  const { ops } = as.begin().setLogDirty('a', false).commit();
  assert.deepEqual(ops.map((o) => o.op), ['flags']);
  assert.deepEqual(slotsLosingDirtyLog(ops), [slotOf(as, 'a')]);
  tracker.applyOps(ops, new Map([[slotOf(as, 'a'), kvmLog(8, [2])]]));
  assert.equal(tracker.slots().find((s) => s.regionId === 'a')?.flags.logDirty, false);
  assert.deepEqual(tracker.harvest(), [range(0x102000, 1)]);
});

test('a host page mapped at two gpas is reported at both', () => {
  const as = new AddressSpace({ maxSlots: 4, hosts: [['h', 4 * PAGE]] });
  const { ops } = as.begin()
    .add({ id: 'low', kind: 'ram', gpa: 0, sizeBytes: 4 * PAGE, priority: 0, backing: { hostId: 'h', offsetBytes: 0 } })
    .add({ id: 'alias', kind: 'rom', gpa: 0xf0000, sizeBytes: 2 * PAGE, priority: 0, backing: { hostId: 'h', offsetBytes: 2 * PAGE } })
    .commit();
  const tracker = new DirtyTracker();
  tracker.applyOps(ops);
  tracker.markGpa(3 * PAGE, PAGE);
  assert.deepEqual(tracker.harvest(), [range(3 * PAGE, 1), range(0xf1000, 1)]);
});

test('ops that do not follow the tracked table are refused', () => {
  const { as, tracker } = setup();
  const stale = new DirtyTracker();
  const { ops } = as.begin().remove('a').commit();
  assert.throws(() => stale.applyOps(ops), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'unknown-slot');
  tracker.applyOps(ops);
  assert.throws(() => tracker.applyOps(ops), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'unknown-slot');
  const before = tracker.slots();
  const create = { ...ops[0]!, op: 'create' as const, regionId: 'again' };
  const moved = { ...create, op: 'delete' as const, gpa: 0x900000 };
  assert.throws(() => tracker.applyOps([create, moved]), (e: unknown) => e instanceof DirtyBitmapError && e.kind === 'op-mismatch');
  assert.equal(tracker.slots(), before, 'a refused list of ops leaves the table as it was');
});

test('markSlotPages: dirty-ring pages by slot and page number land where the log\'s bits would; strangers are ignored', () => {
  const { as, tracker } = setup();
  const a = slotOf(as, 'a');
  const b = slotOf(as, 'b');
  assert.equal(tracker.markSlotPages(a, [0, 5, 5]), 3, 'a page twice is marked twice and counted: the ring can repeat one');
  assert.equal(tracker.markSlotPages(b, Float64Array.of(7)), 1);
  assert.equal(tracker.markSlotPages(99, [0]), 0, 'a slot not in the table');
  assert.equal(tracker.markSlotPages(a, [8, -1, 1.5, NaN, 2 ** 60]), 0, 'past the slot, negative, not a page number');
  assert.deepEqual(tracker.harvest(), [range(0x100000, 1), range(0x105000, 1), range(0x207000, 1)]);
  // The same pages through the log path, for comparison: the two sources agree.
  tracker.mergeKvmLog(a, kvmLog(8, [0, 5]));
  tracker.mergeKvmLog(b, kvmLog(8, [7]));
  assert.deepEqual(tracker.harvest(), [range(0x100000, 1), range(0x105000, 1), range(0x207000, 1)]);
});

test('markSlotPages follows the slot table: after a move the same slot number means the new place', () => {
  const { as, tracker } = setup();
  const b = slotOf(as, 'b');
  change(as, tracker, new Map(), (tx) => tx.move('b', 0x4000_0000));
  const moved = slotOf(as, 'b');
  assert.equal(tracker.markSlotPages(moved, [1]), 1);
  assert.equal(tracker.markSlotPages(b === moved ? 12345 : b, [1]), 0, 'the old number (if it changed) names nothing now');
  assert.deepEqual(tracker.harvest(), [range(0x4000_1000, 1)]);
});
