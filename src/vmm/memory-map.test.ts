// MemoryMap's own logic, with a recording hypervisor that keeps memslots as plain data: the order
// of its calls (logs read before their slot goes, every delete before the creates), guest RAM
// following each commit with its contents, dirty pages surviving changes, MMIO exits in a changed
// range completed against RAM. What KVM itself does with these calls is tested on real KVM in
// tests/memory-map.test.ts.
import assert from 'node:assert/strict';
import test from 'node:test';
import type { HvMemslot, HvVcpu, HvVm } from '../hypervisor/types.js';
import { AddressSpaceError, PAGE_SIZE_BYTES } from '../memory/address-space.js';
import { DirtyRingError } from '../memory/dirty-ring.js';
import { DEFAULT_DIRTY_RING_BYTES, MemoryMap, MemoryMapError, memslotFor } from './memory-map.js';

const MiB = 1 << 20;

/** Host memory as ArrayBuffers named by fake host addresses. */
class FakeHost {
  private next = 0x1000_0000n;
  readonly buffers = new Map<bigint, ArrayBuffer>();
  allocate(sizeBytes: number) {
    const hva = this.next;
    this.next += BigInt(sizeBytes) + 0x1000_0000n;
    this.buffers.set(hva, new ArrayBuffer(sizeBytes));
    return { hva, sizeBytes, free: () => { this.buffers.delete(hva); } };
  }
  /** Like koffi.view, for whole allocations: slots in these tests map their host from offset 0. */
  view = (hva: bigint, sizeBytes: number): ArrayBuffer => {
    const buf = this.buffers.get(hva);
    if (buf === undefined || buf.byteLength !== sizeBytes) throw new Error(`test host: no allocation of ${sizeBytes} bytes at 0x${hva.toString(16)}`);
    return buf;
  };
}

interface Call { op: string; slot: number; m?: HvMemslot; sizeBytes?: number }

class RecordingVm implements Partial<HvVm> {
  readonly calls: Call[] = [];
  readonly slots = new Map<number, HvMemslot>();
  /** pages the "guest" dirtied per slot since the last log read */
  readonly dirty = new Map<number, Set<number>>();
  readonlyOk = true;
  changing = 0;
  maxMemslots() { return 32; }
  supportsReadonlyMemory() { return this.readonlyOk; }
  setMemslot(slot: number, m: HvMemslot) {
    assert.equal(this.changing, 1, 'memslot changes are bracketed by beginMapChange/endMapChange');
    const cur = this.slots.get(slot);
    if (cur) assert.ok(cur.gpa === m.gpa && cur.sizeBytes === m.sizeBytes && cur.hva === m.hva, `slot ${slot} changes only flags in place`);
    for (const [n, o] of this.slots) {
      if (n !== slot) assert.ok(m.gpa + m.sizeBytes <= o.gpa || o.gpa + o.sizeBytes <= m.gpa, `slot ${slot} overlaps slot ${n}: deletes must come first`);
    }
    this.calls.push({ op: cur ? 'flags' : 'create', slot, m: { ...m } });
    this.slots.set(slot, { ...m });
    if (!m.logDirty) this.dirty.delete(slot);
  }
  deleteMemslot(slot: number) {
    assert.equal(this.changing, 1);
    assert.ok(this.slots.has(slot), `delete of a slot that exists (${slot})`);
    this.calls.push({ op: 'delete', slot });
    this.slots.delete(slot);
    this.dirty.delete(slot);
  }
  getDirtyLog(slot: number, pages: number) {
    const s = this.slots.get(slot);
    assert.ok(s?.logDirty, `dirty log read of slot ${slot}, which logs`);
    assert.equal(pages, s.sizeBytes / PAGE_SIZE_BYTES);
    this.calls.push({ op: 'log', slot });
    const words = new BigUint64Array(Math.ceil(pages / 64));
    for (const p of this.dirty.get(slot) ?? []) words[p >> 6]! |= 1n << BigInt(p & 63);
    this.dirty.delete(slot);
    return words;
  }
  beginMapChange() { this.changing++; }
  endMapChange() { this.changing--; }
  /** a guest write to `gpa` as KVM would log it */
  guestWrite(gpa: number) {
    for (const [n, s] of this.slots) {
      if (gpa >= s.gpa && gpa < s.gpa + s.sizeBytes && s.logDirty) {
        const set = this.dirty.get(n) ?? new Set<number>();
        set.add(Math.floor((gpa - s.gpa) / PAGE_SIZE_BYTES));
        this.dirty.set(n, set);
      }
    }
  }
}

function rig(vcpus: HvVcpu[] = []) {
  const host = new FakeHost();
  const vm = new RecordingVm();
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: host.view, vcpus: () => vcpus });
  return { host, vm, map };
}

test('memslotFor: host address of the slot\'s offset, flags carried, and a slot past its allocation refused', () => {
  const slot = { slot: 3, gpa: 0x10_0000, sizeBytes: 0x2000, hostId: 'h', offsetBytes: 0x1000, regionId: 'r', flags: { readonly: true, logDirty: false } };
  assert.deepEqual(memslotFor(slot, { hva: 0x7f00_0000_0000n, sizeBytes: 0x3000 }),
    { gpa: 0x10_0000, sizeBytes: 0x2000, hva: 0x7f00_0000_1000n, readonly: true, logDirty: false });
  assert.throws(() => memslotFor(slot, { hva: 0n, sizeBytes: 0x2fff }), (e: MemoryMapError) => e.kind === 'host');
});

test('move and remove while logging: the log is read before the slot goes, deletes precede creates, contents and dirty pages survive', async () => {
  const { vm, map, host } = rig();
  const a = host.allocate(4 * MiB);
  const b = host.allocate(4 * MiB);
  map.defineHost('a', a);
  map.defineHost('b', b);
  map.commitNow(map.begin()
    .add({ id: 'lo', kind: 'ram', gpa: 0, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 }, logDirty: true })
    .add({ id: 'hi', kind: 'ram', gpa: 8 * MiB, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'b', offsetBytes: 0 } }));
  assert.deepEqual(vm.calls.map((c) => c.op), ['create', 'create']);
  map.memory.writeU32(8 * MiB + 16, 0xfeedf00d);
  vm.guestWrite(0x3000);

  // Moving "hi" deletes and re-creates its slot (new gpa), and a logging-only change is in place.
  vm.calls.length = 0;
  await map.commit(map.begin().move('hi', 16 * MiB).setLogDirty('hi', true));
  assert.deepEqual(vm.calls.map((c) => c.op), ['delete', 'create']);
  assert.equal(map.memory.readU32(16 * MiB + 16), 0xfeedf00d, 'the bytes moved with the region');
  assert.equal(map.memory.contains(8 * MiB, 4), false, 'the old gpa is no longer RAM');

  // Deleting the logging slot "lo": its KVM log is read first and its pages are not lost.
  vm.calls.length = 0;
  await map.commit(map.begin().remove('lo'));
  assert.deepEqual(vm.calls.map((c) => c.op), ['log', 'delete']);
  vm.guestWrite(16 * MiB + 5 * PAGE_SIZE_BYTES);
  map.noteVmmWrite(16 * MiB + 9 * PAGE_SIZE_BYTES, 1);
  const dirty = map.harvestDirty();
  assert.deepEqual(dirty, [
    { gpa: 16 * MiB + 5 * PAGE_SIZE_BYTES, sizeBytes: PAGE_SIZE_BYTES },
    { gpa: 16 * MiB + 9 * PAGE_SIZE_BYTES, sizeBytes: PAGE_SIZE_BYTES },
  ], 'lo is unmapped now, so its dirty pages wait in the tracker; hi reports KVM\'s page and the VMM\'s');
  assert.deepEqual(map.harvestDirty(), [], 'a harvest forgets what it reported');
});

test('a refused transaction leaves KVM and guest RAM untouched', async () => {
  const { vm, map, host } = rig();
  map.defineHost('a', host.allocate(2 * MiB));
  map.commitNow(map.begin().add({ id: 'r', kind: 'ram', gpa: 0, sizeBytes: 2 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 } }));
  vm.calls.length = 0;
  await assert.rejects(map.commit(map.begin().grow('r', 4 * MiB)), AddressSpaceError, 'past the host allocation');
  await assert.rejects(map.commit(map.begin().move('r', 0x123)), AddressSpaceError, 'unaligned');
  assert.deepEqual(vm.calls, []);
  assert.equal(map.memory.contains(0, 2 * MiB), true);
  vm.readonlyOk = false;
  await assert.rejects(map.commit(map.begin().setReadonly('r', true)), (e: MemoryMapError) => e.kind === 'readonly-unsupported' && /"r"/.test(e.message));
  assert.deepEqual(vm.calls, []);
  assert.equal(map.space.region('r')!.readonly, false);
});

test('an MMIO exit that lands in memory of the current map is completed on RAM; ROM drops writes', () => {
  const { map, host } = rig();
  map.defineHost('a', host.allocate(2 * MiB));
  map.defineHost('rom', host.allocate(64 * 1024));
  map.commitNow(map.begin()
    .add({ id: 'r', kind: 'ram', gpa: 0, sizeBytes: 2 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 } })
    .add({ id: 'bios', kind: 'rom', gpa: 0xffff_0000, sizeBytes: 64 * 1024, priority: 0, backing: { hostId: 'rom', offsetBytes: 0 } })
    .add({ id: 'dev', kind: 'mmio', gpa: 0xd000_0000, sizeBytes: 0x1000, priority: 0 }));
  map.memory.writeU32(0x1000, 0x11223344);
  const d = new Uint8Array(4);
  assert.equal(map.completeAgainstRam(0x1000, false, d), true);
  assert.deepEqual([...d], [0x44, 0x33, 0x22, 0x11]);
  assert.equal(map.completeAgainstRam(0x2000, true, Uint8Array.of(1, 2)), true);
  assert.equal(map.memory.readU16(0x2000), 0x0201);
  map.memory.writeU8(0xffff_0000, 0xea);
  assert.equal(map.completeAgainstRam(0xffff_0000, true, Uint8Array.of(0)), true, 'a ROM write is taken...');
  assert.equal(map.memory.readU8(0xffff_0000), 0xea, '...and dropped');
  assert.equal(map.completeAgainstRam(0xd000_0000, false, d), false, 'mmio is the device\'s');
  assert.equal(map.completeAgainstRam(0xe000_0000, false, d), false, 'a hole is nobody\'s');
});

test('pause-all pauses every running vCPU around the memslot ops and resumes them; atomic touches none', async () => {
  const events: string[] = [];
  const vcpu = (i: number) => ({
    state: () => 'running', pause: async () => { events.push(`pause ${i}`); }, resume: async () => { events.push(`resume ${i}`); },
  }) as unknown as HvVcpu;
  const { vm, map, host } = rig([vcpu(0), vcpu(1)]);
  map.defineHost('a', host.allocate(2 * MiB));
  map.commitNow(map.begin().add({ id: 'r', kind: 'ram', gpa: 0, sizeBytes: 2 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 } }));
  const origDelete = vm.deleteMemslot.bind(vm);
  vm.deleteMemslot = (slot: number) => { events.push('delete'); origDelete(slot); };
  await map.commit(map.begin().move('r', 4 * MiB), 'pause-all');
  assert.deepEqual(events, ['pause 0', 'pause 1', 'delete', 'resume 0', 'resume 1']);
  events.length = 0;
  await map.commit(map.begin().move('r', 8 * MiB));
  assert.deepEqual(events, ['delete']);
});

test('boot RAM as the machine maps it: slot 0 low RAM from 0, slot 1 the rest from 4 GiB, no flags (the layout before the memory map existed)', () => {
  const vm = new RecordingVm();
  // The VMM's views of RAM play no part here: only the memslots are looked at.
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: () => new ArrayBuffer(0), vcpus: () => [] });
  const regions = [{ gpa: 0, sizeBytes: 0xc000_0000 }, { gpa: 0x1_0000_0000, sizeBytes: 0x4000_0000 }];
  const tx = map.begin();
  regions.forEach((r, i) => {
    const h = { hva: BigInt(0x7f00_0000_0000 + i * 0x1_0000_0000_0), sizeBytes: r.sizeBytes, free: () => {} };
    map.defineHost(`ram${i}`, h);
    tx.add({ id: `ram${i}`, kind: 'ram', gpa: r.gpa, sizeBytes: r.sizeBytes, priority: 0, backing: { hostId: `ram${i}`, offsetBytes: 0 } });
  });
  map.commitNow(tx);
  assert.deepEqual(vm.calls.map((c) => [c.op, c.slot, c.m!.gpa, c.m!.sizeBytes, c.m!.readonly, c.m!.logDirty]), [
    ['create', 0, 0, 0xc000_0000, false, false],
    ['create', 1, 0x1_0000_0000, 0x4000_0000, false, false],
  ]);
  assert.equal(vm.calls[1]!.m!.hva, BigInt(0x7f00_0000_0000 + 0x1_0000_0000_0));
});

/**
 * The recording hypervisor with dirty rings: the next harvest hands over the entries a test queued
 * in `ring` (as [slot, pageOffset], exactly as given), and every ring call is recorded. It keeps
 * no ring of its own and imitates nothing of KVM's: what KVM writes is tested in dirty-ring.test.ts.
 */
class RingRecordingVm extends RecordingVm {
  ringOk = true;
  onFull: (() => void) | null = null;
  readonly ring: Array<[number, number]> = [];
  enableDirtyRing(sizeBytes: number, onFull: () => void) {
    this.calls.push({ op: 'enable-ring', slot: -1, sizeBytes });
    if (!this.ringOk) return false;
    this.onFull = onFull;
    return true;
  }
  harvestDirtyRings(sink: (slot: number, pageOffset: number) => void) {
    this.calls.push({ op: 'ring', slot: -1 });
    const entries = this.ring.splice(0);
    for (const [slot, off] of entries) sink(slot, off);
    return entries.length;
  }
  resetDirtyRings() {
    this.calls.push({ op: 'reset', slot: -1 });
    return 0;
  }
}

function ringRig(dirtyRing: boolean | { sizeBytes: number } = true) {
  const host = new FakeHost();
  const vm = new RingRecordingVm();
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: host.view, vcpus: () => [], dirtyRing });
  map.defineHost('a', host.allocate(4 * MiB));
  map.defineHost('b', host.allocate(4 * MiB));
  map.defineHost('c', host.allocate(4 * MiB));
  map.commitNow(map.begin()
    .add({ id: 'lo', kind: 'ram', gpa: 0, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 }, logDirty: true })
    .add({ id: 'hi', kind: 'ram', gpa: 8 * MiB, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'b', offsetBytes: 0 }, logDirty: true }));
  const slot = (id: string) => map.space.slots().find((s) => s.regionId === id)!.slot;
  return { vm, map, slot };
}
const page = (gpa: number, pages = 1) => ({ gpa, sizeBytes: pages * PAGE_SIZE_BYTES });

test('dirty ring mode: enabled at construction, harvestDirty drains the rings and resets instead of reading logs', () => {
  const { vm, map, slot } = ringRig();
  assert.deepEqual(vm.calls[0], { op: 'enable-ring', slot: -1, sizeBytes: DEFAULT_DIRTY_RING_BYTES });
  assert.equal(map.usesDirtyRing, true);
  vm.calls.length = 0;
  vm.ring.push([slot('lo'), 3], [slot('hi'), 0], [slot('lo'), 4], [slot('hi'), 1]);
  map.noteVmmWrite(8 * MiB + 9 * PAGE_SIZE_BYTES, 1);
  assert.deepEqual(map.harvestDirty(), [page(3 * PAGE_SIZE_BYTES, 2), page(8 * MiB, 2), page(8 * MiB + 9 * PAGE_SIZE_BYTES)],
    'ring pages by slot, merged with the VMM\'s own writes as the log path merges them');
  assert.deepEqual(vm.calls.map((c) => c.op), ['ring', 'reset'], 'no KVM_GET_DIRTY_LOG, and the reset before anyone reads the pages');
  vm.calls.length = 0;
  assert.deepEqual(map.harvestDirty(), []);
  assert.deepEqual(vm.calls.map((c) => c.op), ['ring'], 'an empty harvest has nothing to reset');
});

test('dirty ring mode: entries naming no slot, or pages past their slot, are counted and ignored', () => {
  const { vm, map, slot } = ringRig();
  vm.ring.push([slot('lo'), 1], [31, 0], [(1 << 16) | slot('lo'), 2], [slot('lo'), 1024], [slot('hi'), 2 ** 52]);
  assert.deepEqual(map.harvestDirty(), [page(PAGE_SIZE_BYTES)]);
  assert.equal(map.dirtyRingEntriesIgnored, 4);
});

test('dirty ring mode: a commit that destroys a logging slot drains the rings first, under the old slot numbers', async () => {
  const { vm, map, slot } = ringRig();
  const lo = slot('lo');
  vm.ring.push([lo, 2]);
  vm.calls.length = 0;
  // "lo" goes and "new" (another backing) takes the lowest free number: lo's.
  await map.commit(map.begin().remove('lo')
    .add({ id: 'new', kind: 'ram', gpa: 32 * MiB, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'c', offsetBytes: 0 }, logDirty: true }));
  assert.equal(slot('new'), lo, 'the slot number is reused');
  assert.deepEqual(vm.calls.map((c) => c.op), ['ring', 'reset', 'delete', 'create']);
  assert.deepEqual(map.harvestDirty(), [], 'the entry was lo\'s (held with its whole slot, unmapped now), not page 2 of "new"');
  // Turning logging off loses the ring's pages for that slot too: drained first.
  vm.ring.push([slot('hi'), 5]);
  vm.calls.length = 0;
  await map.setLogging('hi', false);
  assert.deepEqual(vm.calls.map((c) => c.op), ['ring', 'reset', 'flags']);
  const dirty = map.harvestDirty();
  assert.deepEqual(dirty, [page(8 * MiB, 1024)], 'as with the log: the slot that stopped logging counts dirty whole');
  // A commit that destroys no logging slot leaves the rings alone.
  vm.calls.length = 0;
  await map.commit(map.begin().move('hi', 64 * MiB));
  assert.deepEqual(vm.calls.map((c) => c.op), ['delete', 'create']);
});

test('dirty ring mode: a full ring (onFull, on KVM_EXIT_DIRTY_RING_FULL) drains and resets; the pages wait for the next harvest', () => {
  const { vm, map, slot } = ringRig({ sizeBytes: 16384 });
  assert.equal(vm.calls[0]!.sizeBytes, 16384);
  vm.ring.push([slot('hi'), 7]);
  vm.calls.length = 0;
  vm.onFull!();
  assert.deepEqual(vm.calls.map((c) => c.op), ['ring', 'reset']);
  assert.deepEqual(map.harvestDirty(), [page(8 * MiB + 7 * PAGE_SIZE_BYTES)]);
});

test('dirty ring asked for on a host without it: KVM_GET_DIRTY_LOG, and usesDirtyRing says so', () => {
  const host = new FakeHost();
  const vm = new RingRecordingVm();
  vm.ringOk = false;
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: host.view, vcpus: () => [], dirtyRing: true });
  assert.equal(map.usesDirtyRing, false);
  assert.equal(map.dirtyRingRequested, true);
  map.defineHost('a', host.allocate(2 * MiB));
  map.commitNow(map.begin().add({ id: 'r', kind: 'ram', gpa: 0, sizeBytes: 2 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 }, logDirty: true }));
  vm.guestWrite(0x5000);
  vm.calls.length = 0;
  assert.deepEqual(map.harvestDirty(), [page(0x5000)]);
  assert.deepEqual(vm.calls.map((c) => c.op), ['log']);
});

test('without dirtyRing nothing asks for rings (the default path is unchanged); a bad ring size is refused before any call', () => {
  const vm = new RingRecordingVm();
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: () => new ArrayBuffer(0), vcpus: () => [] });
  assert.equal(map.usesDirtyRing, false);
  assert.equal(map.dirtyRingRequested, false);
  new MemoryMap({ vm: vm as unknown as HvVm, makeView: () => new ArrayBuffer(0), vcpus: () => [], dirtyRing: false });
  assert.deepEqual(vm.calls, []);
  for (const sizeBytes of [2048, 65536 + 16]) {
    assert.throws(() => new MemoryMap({ vm: vm as unknown as HvVm, makeView: () => new ArrayBuffer(0), vcpus: () => [], dirtyRing: { sizeBytes } }),
      (e: unknown) => e instanceof DirtyRingError && e.kind === 'size');
  }
  assert.deepEqual(vm.calls, []);
});

test('harvestDirtyComplete in ring mode kicks every running vCPU and waits for each to see its kick before draining', async () => {
  const events: string[] = [];
  const vcpu = (i: number, state: string) => {
    let seq = 0;
    let ack = 0;
    return {
      state: () => state,
      kick: () => { seq++; events.push(`kick ${i}`); setTimeout(() => { ack = seq; events.push(`ack ${i}`); }, 5); },
      stats: () => ({ kickSeq: seq, kickAck: ack }),
    } as unknown as HvVcpu;
  };
  const host = new FakeHost();
  const vm = new RingRecordingVm();
  const vcpus = [vcpu(0, 'running'), vcpu(1, 'paused'), vcpu(2, 'running')];
  const map = new MemoryMap({ vm: vm as unknown as HvVm, makeView: host.view, vcpus: () => vcpus, dirtyRing: true });
  map.defineHost('a', host.allocate(4 * MiB));
  map.commitNow(map.begin().add({ id: 'r', kind: 'ram', gpa: 0, sizeBytes: 4 * MiB, priority: 0, backing: { hostId: 'a', offsetBytes: 0 }, logDirty: true }));
  const origHarvest = vm.harvestDirtyRings.bind(vm);
  vm.harvestDirtyRings = (sink) => { events.push('drain'); return origHarvest(sink); };
  vm.ring.push([0, 7]);
  assert.deepEqual(await map.harvestDirtyComplete(), [page(7 * PAGE_SIZE_BYTES)]);
  assert.deepEqual(events.slice(0, 2), ['kick 0', 'kick 2'], 'the paused vCPU is not kicked');
  assert.equal(events.at(-1), 'drain', 'the drain comes after both acknowledgements');
  assert.ok(events.indexOf('ack 0') < events.indexOf('drain') && events.indexOf('ack 2') < events.indexOf('drain'));
});
