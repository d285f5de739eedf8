// The dirty ring reader against rings written the way KVM writes them (virt/kvm/dirty_ring.c as
// api.rst describes it): slot and offset first, then the flags set to DIRTY; KVM_RESET_DIRTY_RINGS
// frees harvested (RESET) entries from KVM's reset index on, in order, and stops at the first
// entry that is not harvested; KVM never pushes into a ring whose used entries fill it.
import assert from 'node:assert/strict';
import test from 'node:test';
import { AddressSpace } from './address-space.js';
import { DirtyTracker } from './dirty-bitmap.js';
import {
  DirtyRingError, DirtyRingReader, dirtyRingSizeBytes, KVM_DIRTY_GFN_F_DIRTY, KVM_DIRTY_GFN_F_RESET, kvm_dirty_gfn,
} from './dirty-ring.js';

/** KVM's side of one vCPU's ring: dirty_index and reset_index, free-running as in the kernel. */
class KvmSideRing {
  readonly buffer: ArrayBuffer;
  private readonly view: DataView;
  private readonly flags: Uint32Array;
  dirtyIndex = 0;
  resetIndex = 0;
  constructor(readonly entries: number) {
    this.buffer = new ArrayBuffer(entries * kvm_dirty_gfn.sizeBytes);
    this.view = new DataView(this.buffer);
    this.flags = new Uint32Array(this.buffer);
  }
  private at(i: number): number { return (i % this.entries) * kvm_dirty_gfn.sizeBytes; }
  get used(): number { return this.dirtyIndex - this.resetIndex; }
  /** kvm_dirty_ring_push: refuses (returns false) when full, as KVM exits with DIRTY_RING_FULL first. */
  push(slot: number, offset: bigint | number): boolean {
    if (this.used >= this.entries) return false;
    const e = this.at(this.dirtyIndex);
    this.view.setUint32(e + kvm_dirty_gfn.at.slot, slot, true);
    this.view.setBigUint64(e + kvm_dirty_gfn.at.offset, BigInt(offset), true);
    Atomics.store(this.flags, (e + kvm_dirty_gfn.at.flags) / 4, KVM_DIRTY_GFN_F_DIRTY); // smp_store_release
    this.dirtyIndex++;
    return true;
  }
  /** kvm_dirty_ring_reset: frees harvested entries in order; returns how many. */
  reset(): number {
    let n = 0;
    while (this.resetIndex < this.dirtyIndex) {
      const w = (this.at(this.resetIndex) + kvm_dirty_gfn.at.flags) / 4;
      if ((Atomics.load(this.flags, w) & KVM_DIRTY_GFN_F_RESET) === 0) break;
      Atomics.store(this.flags, w, 0);
      this.resetIndex++;
      n++;
    }
    return n;
  }
  flagsAt(i: number): number { return this.flags[(this.at(i) + kvm_dirty_gfn.at.flags) / 4]!; }
  /** A raw write, for garbled rings. */
  write(i: number, flags: number, slot: number, offset: bigint): void {
    const e = this.at(i);
    this.view.setUint32(e + kvm_dirty_gfn.at.slot, slot, true);
    this.view.setBigUint64(e + kvm_dirty_gfn.at.offset, offset, true);
    this.view.setUint32(e + kvm_dirty_gfn.at.flags, flags, true);
  }
}

function collect(reader: DirtyRingReader, max?: number): { n: number; got: Array<[number, number]> } {
  const got: Array<[number, number]> = [];
  const n = reader.harvest((slot, off) => got.push([slot, off]), max);
  return { n, got };
}

test('kvm_dirty_gfn: 16 bytes, flags 0, slot 4, offset 8; DIRTY 1, RESET 2 (gcc on <linux/kvm.h>)', () => {
  assert.equal(kvm_dirty_gfn.sizeBytes, 16);
  assert.deepEqual(kvm_dirty_gfn.at, { flags: 0, slot: 4, offset: 8 });
  assert.equal(KVM_DIRTY_GFN_F_DIRTY, 1);
  assert.equal(KVM_DIRTY_GFN_F_RESET, 2);
});

test('harvest takes the dirty entries in order, marks each RESET, and stops at the first unwritten one', () => {
  const kvm = new KvmSideRing(8);
  kvm.push(1, 5); kvm.push(1, 6); kvm.push(3, 0);
  const reader = new DirtyRingReader(kvm.buffer);
  assert.equal(reader.entries, 8);
  assert.deepEqual(collect(reader), { n: 3, got: [[1, 5], [1, 6], [3, 0]] });
  for (let i = 0; i < 3; i++) assert.equal(kvm.flagsAt(i), KVM_DIRTY_GFN_F_RESET, `entry ${i} handed back`);
  assert.equal(kvm.flagsAt(3), 0);
  assert.deepEqual(collect(reader), { n: 0, got: [] }, 'nothing new: nothing again');
  assert.equal(kvm.reset(), 3, 'KVM frees all three');
  assert.equal(reader.harvested, 3);
});

test('a ring that wraps: entries past the end continue at entry 0, KVM\'s reset frees room, the reader follows', () => {
  const kvm = new KvmSideRing(4);
  const reader = new DirtyRingReader(kvm.buffer);
  const seen: Array<[number, number]> = [];
  let page = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 3; i++) assert.ok(kvm.push(0, page++));
    const { n, got } = collect(reader);
    assert.equal(n, 3, `round ${round}`);
    seen.push(...got);
    assert.equal(kvm.reset(), 3);
  }
  assert.deepEqual(seen.map(([, p]) => p), Array.from({ length: 15 }, (_, i) => i), 'every page once, in order');
  assert.equal(reader.fetchPosition, 15 % 4);
});

test('a full ring: every entry harvested in one lap (never more), and KVM pushes only after the reset', () => {
  const kvm = new KvmSideRing(8);
  for (let i = 0; i < 8; i++) assert.ok(kvm.push(2, 100 + i));
  assert.equal(kvm.push(2, 200), false, 'full: KVM exits with KVM_EXIT_DIRTY_RING_FULL instead');
  const reader = new DirtyRingReader(kvm.buffer);
  const { n, got } = collect(reader);
  assert.equal(n, 8);
  assert.deepEqual(got.map(([, p]) => p), [100, 101, 102, 103, 104, 105, 106, 107]);
  assert.equal(reader.fetchPosition, 0, 'one lap: back at the start, where the entry is RESET now');
  assert.equal(collect(reader).n, 0, 'harvested entries are not taken twice before the reset');
  assert.equal(kvm.reset(), 8);
  assert.ok(kvm.push(2, 200));
  assert.deepEqual(collect(reader).got, [[2, 200]]);
});

test('partial harvests: at most `max` entries, the rest in order next time, with KVM pushing in between', () => {
  const kvm = new KvmSideRing(16);
  for (let i = 0; i < 5; i++) kvm.push(0, i);
  const reader = new DirtyRingReader(kvm.buffer);
  assert.deepEqual(collect(reader, 2).got.map(([, p]) => p), [0, 1]);
  assert.equal(kvm.reset(), 2, 'KVM frees what was handed back, and only that');
  kvm.push(0, 5);
  assert.deepEqual(collect(reader, 3).got.map(([, p]) => p), [2, 3, 4]);
  kvm.push(0, 6);
  assert.deepEqual(collect(reader).got.map(([, p]) => p), [5, 6]);
  assert.equal(kvm.reset(), 5);
  assert.equal(kvm.used, 0);
});

test('RESET entries are not collected: a 1X entry at the fetch index ends the walk, DIRTY|RESET included', () => {
  const kvm = new KvmSideRing(8);
  kvm.write(0, KVM_DIRTY_GFN_F_RESET, 0, 9n);
  kvm.write(1, KVM_DIRTY_GFN_F_DIRTY, 0, 10n);
  const reader = new DirtyRingReader(kvm.buffer);
  assert.deepEqual(collect(reader), { n: 0, got: [] });
  kvm.write(0, KVM_DIRTY_GFN_F_DIRTY | KVM_DIRTY_GFN_F_RESET, 0, 9n);
  assert.deepEqual(collect(reader), { n: 0, got: [] }, 'DIRTY with RESET is harvested already (api.rst: 1X)');
  assert.equal(kvm.flagsAt(1), KVM_DIRTY_GFN_F_DIRTY, 'the entry behind it is untouched');
});

test('a garbled ring is handed over as written, never throws, and the tracker marks nothing outside a slot', () => {
  const as = new AddressSpace({ maxSlots: 8, hosts: [['h', 32 * 4096]] });
  as.begin()
    .add({ id: 'a', kind: 'ram', gpa: 0x10_0000, sizeBytes: 8 * 4096, priority: 0, backing: { hostId: 'h', offsetBytes: 0 }, logDirty: true })
    .add({ id: 'b', kind: 'ram', gpa: 0x20_0000, sizeBytes: 8 * 4096, priority: 0, backing: { hostId: 'h', offsetBytes: 8 * 4096 }, logDirty: true })
    .commit();
  const tracker = new DirtyTracker(as.slots());
  const slotA = as.slots().find((s) => s.regionId === 'a')!.slot;
  const kvm = new KvmSideRing(16);
  kvm.push(slotA, 3); // the one real page
  kvm.push(99, 0); // no such memslot
  kvm.push((1 << 16) | slotA, 1); // address space 1 (SMM): not a slot of ours
  kvm.push(slotA, 8); // one past the end of "a": would be page 0 of "b" in the shared host bitmap
  kvm.push(slotA, 0xffff_ffff_ffffn); // far past any slot
  kvm.push(slotA, 2n ** 63n);
  kvm.write(6, 0xffff_fff7, slotA, 4n); // unknown flag bits, and RESET set: ends the walk
  kvm.write(7, KVM_DIRTY_GFN_F_DIRTY, slotA, 5n); // behind it: not reached
  const reader = new DirtyRingReader(kvm.buffer);
  const bySlot = new Map<number, number[]>();
  const n = reader.harvest((slot, off) => { bySlot.set(slot, [...(bySlot.get(slot) ?? []), off]); });
  assert.equal(n, 6);
  let marked = 0;
  for (const [slot, offs] of bySlot) marked += tracker.markSlotPages(slot, offs);
  assert.equal(marked, 1);
  assert.deepEqual(tracker.harvest(), [{ gpa: 0x10_3000, sizeBytes: 4096 }], 'only page 3 of "a"; "b" untouched');
  assert.equal(tracker.pendingPages(), 0);
});

test('ring sizes: a power of two of at least 4 KiB, cut to the host\'s maximum; 0 without a ring', () => {
  assert.equal(dirtyRingSizeBytes(65536, 1 << 20), 65536);
  assert.equal(dirtyRingSizeBytes(1 << 21, 1 << 20), 1 << 20);
  assert.equal(dirtyRingSizeBytes(65536, 0), 0, 'KVM_CHECK_EXTENSION 0: no dirty ring');
  assert.equal(dirtyRingSizeBytes(65536, 3 * 16384), 32768, 'a maximum that is no power of two rounds down');
  assert.equal(dirtyRingSizeBytes(65536, 2048), 0);
  for (const bad of [0, 1000, 2048, 4096 + 16, -4096, 1.5 * 65536]) {
    assert.throws(() => dirtyRingSizeBytes(bad, 1 << 20), (e: unknown) => e instanceof DirtyRingError && e.kind === 'size', String(bad));
  }
  assert.throws(() => new DirtyRingReader(new ArrayBuffer(48)), DirtyRingError, 'three entries: not a power of two');
  assert.throws(() => new DirtyRingReader(new ArrayBuffer(64), 32, 64), DirtyRingError, 'past the buffer');
  assert.equal(new DirtyRingReader(new ArrayBuffer(4096 + 64), 64, 4096).entries, 256);
});
