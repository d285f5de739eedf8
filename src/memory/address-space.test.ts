import assert from 'node:assert/strict';
import test from 'node:test';
import { AddressSpace, AddressSpaceError, GPA_LIMIT_BYTES, type AddressSpaceErrorKind, type MapTransaction, type MemslotOp, type RegionSpec } from './address-space.js';

const PAGE = 0x1000;
const MiB = 0x100000;

/** 1 MiB of RAM at 0 (host "ram0"), with room in "ram0" for more, and a 64 KiB "bios" allocation. */
function space(maxSlots = 8): AddressSpace {
  const as = new AddressSpace({ maxSlots, hosts: [['ram0', 4 * MiB], ['bios', 0x10000], ['ram1', MiB]] });
  as.begin().add(ram('ram', 0, MiB, 0)).commit();
  return as;
}

function ram(id: string, gpa: number, sizeBytes: number, offsetBytes: number, hostId = 'ram0', priority = 0): RegionSpec {
  return { id, kind: 'ram', gpa, sizeBytes, priority, backing: { hostId, offsetBytes } };
}

const brief = (ops: readonly MemslotOp[]): string[] =>
  ops.map((o) => `${o.op} ${o.slot} ${o.regionId} 0x${o.gpa.toString(16)}+0x${o.sizeBytes.toString(16)} ${o.hostId}@0x${o.offsetBytes.toString(16)}${o.flags.readonly ? ' ro' : ''}${o.flags.logDirty ? ' log' : ''}`);

function snapshot(as: AddressSpace): unknown {
  return { view: as.view(), regions: as.regions(), generation: as.generation };
}

test('a ROM over RAM shadows it: three slots, and removing the ROM gives the RAM back as one slot', () => {
  const as = new AddressSpace({ maxSlots: 8, hosts: [['ram0', MiB], ['vga', 0x8000]] });
  const r = as.begin()
    .add(ram('ram', 0, MiB, 0))
    .add({ id: 'vga-rom', kind: 'rom', gpa: 0xc0000, sizeBytes: 0x8000, priority: 1, backing: { hostId: 'vga', offsetBytes: 0 } })
    .commit();
  assert.deepEqual(brief(r.ops), [
    'create 0 ram 0x0+0xc0000 ram0@0x0',
    'create 1 vga-rom 0xc0000+0x8000 vga@0x0 ro',
    'create 2 ram 0xc8000+0x38000 ram0@0xc8000',
  ]);
  assert.equal(as.lookup(0xbffff)?.regionId, 'ram');
  assert.equal(as.lookup(0xc0000)?.regionId, 'vga-rom');
  assert.equal(as.lookup(0xc0000)?.readonly, true);
  assert.equal(as.lookup(0xc7fff)?.regionId, 'vga-rom');
  assert.deepEqual(as.translate(0xc8000), { hostId: 'ram0', offsetBytes: 0xc8000 }, 'the RAM above keeps its own bytes');
  assert.equal(as.lookup(MiB), undefined);

  const back = as.begin().remove('vga-rom').commit();
  assert.deepEqual(brief(back.ops), [
    'delete 0 ram 0x0+0xc0000 ram0@0x0',
    'delete 1 vga-rom 0xc0000+0x8000 vga@0x0 ro',
    'delete 2 ram 0xc8000+0x38000 ram0@0xc8000',
    'create 0 ram 0x0+0x100000 ram0@0x0',
  ]);
  assert.deepEqual(back.affected, [{ gpa: 0, sizeBytes: MiB }]);
  assert.deepEqual(as.translate(0xc0000), { hostId: 'ram0', offsetBytes: 0xc0000 }, 'the RAM under the ROM was never lost');
});

test('lookup finds the range holding every byte by binary search, and nothing in holes', () => {
  const as = new AddressSpace({ maxSlots: 64, hosts: [['h', 64 * PAGE]] });
  const tx = as.begin();
  for (let i = 0; i < 40; i++) {
    if (i % 3 === 0) tx.add({ id: `m${i}`, kind: 'mmio', gpa: i * 2 * PAGE, sizeBytes: PAGE, priority: 0 });
    else tx.add(ram(`r${i}`, i * 2 * PAGE, PAGE, i * PAGE, 'h'));
  }
  tx.commit();
  for (let gpa = 0; gpa < 82 * PAGE; gpa += 0x800) {
    const linear = as.view().find((f) => gpa >= f.gpa && gpa < f.gpa + f.sizeBytes);
    assert.equal(as.lookup(gpa), linear, `gpa 0x${gpa.toString(16)}`);
    assert.equal(linear === undefined, Math.floor(gpa / PAGE) % 2 === 1 || gpa >= 80 * PAGE);
  }
});

test('split is a delete and two creates on the same backing; other slots are left alone', () => {
  const as = space();
  as.begin().add(ram('high', 2 * MiB, MiB, MiB)).add(ram('other', 4 * MiB, MiB, 0, 'ram1')).commit();
  const before = as.slots();
  const r = as.begin().split('high', 0x40000, 'high2').commit();
  assert.deepEqual(brief(r.ops), [
    'delete 1 high 0x200000+0x100000 ram0@0x100000',
    'create 1 high 0x200000+0x40000 ram0@0x100000',
    'create 3 high2 0x240000+0xc0000 ram0@0x140000',
  ]);
  assert.deepEqual(r.affected, [{ gpa: 2 * MiB, sizeBytes: MiB }]);
  assert.deepEqual(as.slots().filter((s) => s.regionId === 'ram' || s.regionId === 'other'),
    before.filter((s) => s.regionId === 'ram' || s.regionId === 'other'));
  assert.deepEqual(as.region('high2')?.backing, { hostId: 'ram0', offsetBytes: 0x140000 });
});

test('merge joins regions with adjacent backings, and refuses others without touching the map', () => {
  const as = space();
  as.begin().split('ram', 0x80000, 'upper').commit();
  const r = as.begin().merge('ram', 'upper').commit();
  assert.deepEqual(brief(r.ops), [
    'delete 0 ram 0x0+0x80000 ram0@0x0',
    'delete 1 upper 0x80000+0x80000 ram0@0x80000',
    'create 0 ram 0x0+0x100000 ram0@0x0',
  ]);
  // Touching in guest-physical space but not in the backing: one region could not describe the bytes.
  as.begin().add(ram('next', MiB, MiB, 2 * MiB)).add(ram('elsewhere', 2 * MiB, MiB, 0, 'ram1')).commit();
  const before = snapshot(as);
  const refused = (a: string, b: string, why: RegExp): void => {
    const tx = as.begin();
    assert.throws(() => tx.merge(a, b), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'merge' && why.test(e.message));
    tx.abort();
    assert.deepEqual(snapshot(as), before);
  };
  refused('ram', 'next', /not backed by adjacent bytes/);
  refused('next', 'elsewhere', /not backed by adjacent bytes/);
  refused('ram', 'elsewhere', /do not touch/);
  refused('ram', 'ram', /itself/);
});

test('move keeps the backing, so the contents appear at the new gpa', () => {
  const as = space();
  as.begin().add(ram('bar', 0x10000000, 0x10000, 2 * MiB)).commit();
  const r = as.begin().move('bar', 0x20000000).commit();
  assert.deepEqual(brief(r.ops), [
    'delete 1 bar 0x10000000+0x10000 ram0@0x200000',
    'create 1 bar 0x20000000+0x10000 ram0@0x200000',
  ]);
  assert.deepEqual(r.affected, [{ gpa: 0x10000000, sizeBytes: 0x10000 }, { gpa: 0x20000000, sizeBytes: 0x10000 }]);
  assert.deepEqual(as.translate(0x20001000), { hostId: 'ram0', offsetBytes: 0x201000 });
  assert.equal(as.lookup(0x10000000), undefined);
});

test('grow and shrink change the end only: the bytes that stay keep their gpa and backing', () => {
  const as = space();
  const g = as.begin().grow('ram', 2 * MiB).commit();
  assert.deepEqual(brief(g.ops), ['delete 0 ram 0x0+0x100000 ram0@0x0', 'create 0 ram 0x0+0x200000 ram0@0x0']);
  assert.deepEqual(as.translate(0x1ff000), { hostId: 'ram0', offsetBytes: 0x1ff000 });
  const s = as.begin().shrink('ram', 0x80000).commit();
  assert.deepEqual(brief(s.ops), ['delete 0 ram 0x0+0x200000 ram0@0x0', 'create 0 ram 0x0+0x80000 ram0@0x0']);
  assert.equal(as.lookup(0x80000), undefined);
  assert.deepEqual(as.translate(0x7f000), { hostId: 'ram0', offsetBytes: 0x7f000 });
  const tx = as.begin();
  assert.throws(() => tx.grow('ram', 0x80000), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'resize');
  assert.throws(() => tx.shrink('ram', MiB), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'resize');
});

test('toggling readonly touches only its slot: a delete and a create under the same number', () => {
  const as = space();
  as.begin().add(ram('a', MiB, MiB, MiB)).add(ram('b', 2 * MiB, MiB, 2 * MiB)).commit();
  const r = as.begin().setReadonly('a', true).commit();
  // KVM refuses to flip KVM_MEM_READONLY on a live slot, so this cannot be a flags op.
  assert.deepEqual(brief(r.ops), ['delete 1 a 0x100000+0x100000 ram0@0x100000', 'create 1 a 0x100000+0x100000 ram0@0x100000 ro']);
  assert.deepEqual(r.affected, [{ gpa: MiB, sizeBytes: MiB }]);
  assert.equal(as.lookup(MiB)?.readonly, true);
});

test('toggling dirty logging is one flags op and makes no vCPU wait', () => {
  const as = space();
  as.begin().add(ram('a', MiB, MiB, MiB)).commit();
  const r = as.begin().setLogDirty('a', true).commit();
  assert.deepEqual(brief(r.ops), ['flags 1 a 0x100000+0x100000 ram0@0x100000 log']);
  assert.deepEqual(r.affected, []);
  assert.deepEqual(brief(as.begin().setLogDirty('a', false).commit().ops), ['flags 1 a 0x100000+0x100000 ram0@0x100000']);
});

test('slots whose range, backing and flags do not change are never touched, whatever the regions are called', () => {
  const as = space();
  as.begin().add(ram('a', MiB, MiB, MiB)).commit();
  const renamed = as.begin().remove('a').add(ram('a-renamed', MiB, MiB, MiB)).commit();
  assert.deepEqual(renamed.ops, []);
  assert.deepEqual(renamed.affected, []);
  const added = as.begin().add(ram('b', 3 * MiB, MiB, 3 * MiB)).commit();
  assert.deepEqual(brief(added.ops), ['create 2 b 0x300000+0x100000 ram0@0x300000']);
  const removed = as.begin().remove('ram').commit();
  assert.deepEqual(brief(removed.ops), ['delete 0 ram 0x0+0x100000 ram0@0x0']);
  assert.deepEqual(brief(as.begin().add(ram('c', 8 * MiB, MiB, 0, 'ram1')).commit().ops), ['create 0 c 0x800000+0x100000 ram1@0x0'],
    'the lowest free slot number is reused');
});

test('mmio over RAM punches a hole with no slot; moving a BAR affects only its old and new ranges', () => {
  const as = space();
  const r = as.begin().add({ id: 'bar0', kind: 'mmio', gpa: 0x40000, sizeBytes: 0x4000, priority: 1 }).commit();
  assert.deepEqual(brief(r.ops), [
    'delete 0 ram 0x0+0x100000 ram0@0x0',
    'create 0 ram 0x0+0x40000 ram0@0x0',
    'create 1 ram 0x44000+0xbc000 ram0@0x44000',
  ]);
  assert.equal(as.lookup(0x40000)?.kind, 'mmio');
  assert.equal(as.lookup(0x40000)?.slot, undefined);
  as.begin().remove('bar0').add({ id: 'bar0', kind: 'mmio', gpa: 0x80000000, sizeBytes: 0x4000, priority: 1 }).commit();
  const moved = as.begin().move('bar0', 0x90000000).commit();
  assert.deepEqual(moved.ops, []);
  assert.deepEqual(moved.affected, [{ gpa: 0x80000000, sizeBytes: 0x4000 }, { gpa: 0x90000000, sizeBytes: 0x4000 }]);
});

test('equal priorities may touch but not overlap', () => {
  const as = space();
  as.begin().add(ram('touching', MiB, MiB, MiB)).commit();
  const tx = as.begin().add(ram('overlapping', 0x180000, MiB, 2 * MiB));
  assert.throws(() => tx.commit(), /region "overlapping" \[overlap\]: overlaps "touching" at \[0x180000, 0x200000\) with the same priority 0/);
});

interface Bad { name: string; kind: AddressSpaceErrorKind; region: string; build: (tx: MapTransaction) => void; maxSlots?: number }

const BAD: Bad[] = [
  { name: 'unaligned gpa', kind: 'alignment', region: 'x', build: (tx) => tx.add(ram('x', MiB + 0x800, PAGE, MiB)) },
  { name: 'unaligned size', kind: 'alignment', region: 'x', build: (tx) => tx.add(ram('x', MiB, 0x1800, MiB)) },
  { name: 'unaligned backing offset', kind: 'alignment', region: 'x', build: (tx) => tx.add(ram('x', MiB, PAGE, MiB + 8)) },
  { name: 'empty region', kind: 'empty', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'mmio', gpa: MiB, sizeBytes: 0, priority: 0 }) },
  { name: 'shrunk to nothing', kind: 'empty', region: 'ram', build: (tx) => tx.shrink('ram', 0) },
  { name: 'beyond 52 bits', kind: 'gpa-limit', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'mmio', gpa: GPA_LIMIT_BYTES - PAGE, sizeBytes: 2 * PAGE, priority: 0 }) },
  { name: 'negative gpa', kind: 'gpa-limit', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'mmio', gpa: -PAGE, sizeBytes: PAGE, priority: 0 }) },
  { name: 'overlap at equal priority', kind: 'overlap', region: 'x', build: (tx) => tx.add(ram('x', 0xff000, 2 * PAGE, MiB)) },
  { name: 'backing past its host allocation', kind: 'backing', region: 'x', build: (tx) => tx.add(ram('x', MiB, 2 * PAGE, 0xf000, 'bios')) },
  { name: 'grown past its host allocation', kind: 'backing', region: 'ram', build: (tx) => tx.grow('ram', 5 * MiB) },
  { name: 'unknown host allocation', kind: 'backing', region: 'x', build: (tx) => tx.add(ram('x', MiB, PAGE, 0, 'nowhere')) },
  { name: 'ram without backing', kind: 'backing', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'ram', gpa: MiB, sizeBytes: PAGE, priority: 0 }) },
  { name: 'mmio with backing', kind: 'backing', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'mmio', gpa: MiB, sizeBytes: PAGE, priority: 0, backing: { hostId: 'ram0', offsetBytes: 0 } }) },
  { name: 'readonly mmio', kind: 'flags', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'mmio', gpa: MiB, sizeBytes: PAGE, priority: 0 }).setReadonly('x', true) },
  { name: 'writable rom', kind: 'flags', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'rom', gpa: MiB, sizeBytes: PAGE, priority: 0, backing: { hostId: 'bios', offsetBytes: 0 } }).setReadonly('x', false) },
  { name: 'unknown kind', kind: 'kind', region: 'x', build: (tx) => tx.add({ id: 'x', kind: 'flash' as 'ram', gpa: MiB, sizeBytes: PAGE, priority: 0 }) },
  { name: 'too many memslots', kind: 'slot-limit', region: 'c', maxSlots: 3, build: (tx) => tx.add(ram('a', MiB, PAGE, MiB)).add(ram('b', 2 * MiB, PAGE, 2 * MiB)).add(ram('c', 3 * MiB, PAGE, 3 * MiB)) },
  { name: 'a split that shadowing makes exceed the slot limit', kind: 'slot-limit', region: 'ram', maxSlots: 2,
    build: (tx) => tx.add({ id: 'hole', kind: 'reserved', gpa: 0x10000, sizeBytes: PAGE, priority: 1 }).add({ id: 'hole2', kind: 'reserved', gpa: 0x20000, sizeBytes: PAGE, priority: 1 }) },
  { name: 'good operations followed by a bad one', kind: 'alignment', region: 'z',
    build: (tx) => tx.add(ram('a', MiB, MiB, MiB)).move('ram', 8 * MiB).setLogDirty('a', true).add({ id: 'z', kind: 'mmio', gpa: 0x123, sizeBytes: PAGE, priority: 3 }) },
];

for (const bad of BAD) {
  test(`a bad transaction is refused at commit and leaves the map unchanged: ${bad.name}`, () => {
    const as = space(bad.maxSlots);
    const before = snapshot(as);
    const slots = as.slots();
    const tx = as.begin();
    bad.build(tx);
    assert.throws(() => tx.commit(), (e: unknown) => {
      assert.ok(e instanceof AddressSpaceError, `threw ${String(e)}`);
      assert.equal(e.kind, bad.kind, e.message);
      assert.equal(e.regionId, bad.region, e.message);
      assert.ok(e.message.includes(`region "${bad.region}" [${bad.kind}]`), e.message);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    });
    assert.deepEqual(snapshot(as), before);
    assert.deepEqual(as.slots(), slots);
    assert.throws(() => tx.commit(), /already committed/, 'a refused transaction is closed');
    assert.equal(as.begin().add(ram('after', 8 * MiB, PAGE, 8 * PAGE, 'ram1')).commit().generation, as.generation, 'the map still works');
  });
}

test('operations on unknown or duplicate regions, or bad split points, are refused when called', () => {
  const as = space();
  const tx = as.begin();
  const kindOf = (f: () => unknown): string => {
    try { f(); } catch (e) { return e instanceof AddressSpaceError ? e.kind : 'other'; }
    return 'none';
  };
  assert.equal(kindOf(() => tx.remove('nope')), 'unknown-region');
  assert.equal(kindOf(() => tx.move('nope', 0)), 'unknown-region');
  assert.equal(kindOf(() => tx.add(ram('ram', MiB, PAGE, MiB))), 'duplicate-region');
  assert.equal(kindOf(() => tx.split('ram', 0x800, 'x')), 'split');
  assert.equal(kindOf(() => tx.split('ram', MiB, 'x')), 'split');
  assert.equal(kindOf(() => tx.split('ram', 0, 'x')), 'split');
  assert.equal(kindOf(() => tx.split('ram', PAGE, 'ram')), 'duplicate-region');
  assert.deepEqual(tx.commit().ops, [], 'the refused operations left nothing behind');
});

test('a transaction begun before another commit is stale; hosts in use cannot be forgotten', () => {
  const as = space();
  const first = as.begin().add(ram('a', MiB, PAGE, MiB));
  as.begin().add(ram('b', 2 * MiB, PAGE, 2 * MiB)).commit();
  assert.throws(() => first.commit(), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'transaction' && /changed/.test(e.message));
  assert.equal(as.region('a'), undefined);
  const aborted = as.begin();
  aborted.abort();
  assert.throws(() => aborted.add(ram('c', 3 * MiB, PAGE, 3 * MiB)), /already committed or aborted/);
  assert.throws(() => as.forgetHost('ram0'), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'host' && e.regionId === 'ram');
  assert.throws(() => as.defineHost('ram0', MiB), /already defined/);
  as.forgetHost('bios');
  assert.throws(() => as.begin().add({ id: 'r', kind: 'rom', gpa: 8 * MiB, sizeBytes: PAGE, priority: 0, backing: { hostId: 'bios', offsetBytes: 0 } }).commit(), /"bios" is not defined/);
});
