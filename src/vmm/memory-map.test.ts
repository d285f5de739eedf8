// MemoryMap's own logic, with a recording hypervisor that keeps memslots as plain data: the order
// of its calls (logs read before their slot goes, every delete before the creates), guest RAM
// following each commit with its contents, dirty pages surviving changes, MMIO exits in a changed
// range completed against RAM. What KVM itself does with these calls is tested on real KVM in
// tests/memory-map.test.ts.
import assert from 'node:assert/strict';
import test from 'node:test';
import type { HvMemslot, HvVcpu, HvVm } from '../hypervisor/types.js';
import { AddressSpaceError, PAGE_SIZE_BYTES } from '../memory/address-space.js';
import { MemoryMap, MemoryMapError, memslotFor } from './memory-map.js';

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

interface Call { op: string; slot: number; m?: HvMemslot }

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
