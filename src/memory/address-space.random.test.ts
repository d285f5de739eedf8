// Seeded random transactions against a page-by-page model of the map, a model of KVM's memslot
// table (which refuses what the real one refuses) and a model of which host pages are dirty.
import assert from 'node:assert/strict';
import test from 'node:test';
import { AddressSpace, AddressSpaceError, type FlatRange, type MapTransaction, type MemSlot, type MemslotOp, type RegionKind } from './address-space.js';
import { DirtyTracker, slotsLosingDirtyLog, type KvmDirtyLog } from './dirty-bitmap.js';

const PAGE = 0x1000;
const HOST_PAGES: Record<string, number> = { h0: 48, h1: 48, h2: 24 };
const SPACE_PAGES = 160;
const MAX_SLOTS = 10;
const ITERATIONS = 1500;

/** mulberry32: small, fast, and the same sequence on every machine */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A region in pages. */
interface M {
  id: string; kind: RegionKind; gpa: number; pages: number; prio: number;
  host: string | undefined; off: number; ro: boolean; ld: boolean;
}

const memoryKind = (k: RegionKind): boolean => k === 'ram' || k === 'rom';
const memory = (m: M): boolean => memoryKind(m.kind);

/** The model's answer for one page: the covering region of highest priority. */
function winner(model: readonly M[], page: number): M | undefined {
  let w: M | undefined;
  for (const m of model) if (page >= m.gpa && page < m.gpa + m.pages && (w === undefined || m.prio > w.prio)) w = m;
  return w;
}

function extent(model: readonly M[]): number {
  return Math.max(SPACE_PAGES, ...model.map((m) => m.gpa + m.pages));
}

/** Would the address space accept this map? Decided page by page, independently of the implementation. */
function modelValid(model: readonly M[]): boolean {
  for (const m of model) if (memory(m) && m.off + m.pages > HOST_PAGES[m.host!]!) return false;
  const end = extent(model);
  let slots = 0;
  let prev: M | undefined;
  for (let p = 0; p < end; p++) {
    const covering = model.filter((m) => p >= m.gpa && p < m.gpa + m.pages);
    const prios = covering.map((m) => m.prio);
    if (new Set(prios).size !== prios.length) return false;
    const w = winner(model, p);
    if (w !== undefined && w !== prev && memory(w)) slots++;
    prev = w;
  }
  return slots <= MAX_SLOTS;
}

/** What a vCPU sees at a page; the same encoding for the old and the new map. */
function pageKey(f: FlatRange | undefined, page: number): string {
  if (f === undefined) return 'hole';
  if (f.backing !== undefined) return `mem ${f.backing.hostId}:${f.backing.offsetBytes / PAGE + page - f.gpa / PAGE} ${f.readonly}`;
  return `${f.kind} ${f.regionId}`;
}

function hostPageOf(f: FlatRange, page: number): string {
  return `${f.backing!.hostId}:${f.backing!.offsetBytes / PAGE + page - f.gpa / PAGE}`;
}

const sameSlot = (a: MemSlot, b: MemSlot): boolean =>
  a.gpa === b.gpa && a.sizeBytes === b.sizeBytes && a.hostId === b.hostId && a.offsetBytes === b.offsetBytes && a.flags.readonly === b.flags.readonly;

/** KVM's side: the slot table and, for logging slots, the pages the guest wrote (slot-relative). */
class FakeKvm {
  readonly slots = new Map<number, MemSlot>();
  readonly logs = new Map<number, Set<number>>();

  /** Applies ops with the checks KVM_SET_USER_MEMORY_REGION makes. */
  apply(ops: readonly MemslotOp[]): void {
    for (const o of ops) {
      const { op, ...s } = o;
      const cur = this.slots.get(o.slot);
      if (op === 'delete') {
        assert.ok(cur !== undefined && sameSlot(cur, s) && cur.flags.logDirty === s.flags.logDirty, `delete of slot ${o.slot} matches it`);
        this.slots.delete(o.slot);
        this.logs.delete(o.slot); // KVM frees the log with the slot
      } else if (op === 'flags') {
        assert.ok(cur !== undefined && sameSlot(cur, s), `flags op on slot ${o.slot} keeps range, backing and readonly (KVM refuses otherwise)`);
        assert.notEqual(cur.flags.logDirty, s.flags.logDirty, 'a flags op changes something');
        this.slots.set(o.slot, s);
        if (s.flags.logDirty) this.logs.set(o.slot, new Set());
        else this.logs.delete(o.slot);
      } else {
        assert.equal(cur, undefined, `create of slot ${o.slot} while it is in use`);
        assert.ok(o.slot >= 0 && o.slot < MAX_SLOTS, `slot ${o.slot} within the limit`);
        for (const other of this.slots.values()) {
          assert.ok(o.gpa + o.sizeBytes <= other.gpa || other.gpa + other.sizeBytes <= o.gpa, `slot ${o.slot} would overlap slot ${other.slot} (EEXIST)`);
        }
        this.slots.set(o.slot, s);
        if (s.flags.logDirty) this.logs.set(o.slot, new Set());
      }
    }
  }

  /** KVM_GET_DIRTY_LOG: returns and clears; alternates the two accepted forms. */
  takeLog(slot: number, asBytes: boolean): KvmDirtyLog {
    const s = this.slots.get(slot)!;
    const words = new BigUint64Array(Math.ceil(s.sizeBytes / PAGE / 64));
    for (const p of this.logs.get(slot) ?? []) words[p >>> 6]! |= 1n << BigInt(p & 63);
    this.logs.get(slot)?.clear();
    return asBytes ? new Uint8Array(words.buffer) : words;
  }
}

test('random transactions: flat view, memslot ops, affected ranges and dirty pages agree with brute-force models', () => {
  const random = rng(0x5eed);
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

  const as = new AddressSpace({ maxSlots: MAX_SLOTS, hosts: Object.entries(HOST_PAGES).map(([h, n]) => [h, n * PAGE] as const) });
  const kvm = new FakeKvm();
  const tracker = new DirtyTracker();
  const dirty = new Set<string>(); // host pages written since their last harvest: "h0:12"
  let model: M[] = [];
  let nextId = 0;
  const committed = new Map<string, number>();
  const refused = new Map<string, number>(); // by error kind

  const dirtySome = (): void => {
    for (let k = int(4); k > 0; k--) {
      const page = int(extent(model));
      const f = as.lookup(page * PAGE);
      if (random() < 0.5 && f?.backing !== undefined && f.logDirty && !f.readonly) {
        kvm.logs.get(f.slot!)!.add(page - f.gpa / PAGE); // a guest write, seen only by KVM
        dirty.add(hostPageOf(f, page));
      } else {
        const startByte = page * PAGE + int(PAGE); // a VMM write, possibly running into MMIO or a hole
        const sizeBytes = 1 + int(3 * PAGE);
        tracker.markGpa(startByte, sizeBytes);
        for (let p = page; p <= Math.floor((startByte + sizeBytes - 1) / PAGE); p++) {
          const g = as.lookup(p * PAGE);
          if (g?.backing !== undefined) dirty.add(hostPageOf(g, p));
        }
      }
    }
  };

  const harvestAndCheck = (): void => {
    for (const slot of kvm.logs.keys()) tracker.mergeKvmLog(slot, kvm.takeLog(slot, random() < 0.5));
    const got = new Set<number>();
    for (const r of tracker.harvest()) for (let p = r.gpa / PAGE; p < (r.gpa + r.sizeBytes) / PAGE; p++) got.add(p);
    const want = new Set<number>();
    const mapped = new Set<string>();
    for (let p = 0; p < extent(model); p++) {
      const f = as.lookup(p * PAGE);
      if (f?.backing === undefined) continue;
      mapped.add(hostPageOf(f, p));
      if (dirty.has(hostPageOf(f, p))) want.add(p);
    }
    assert.deepEqual([...got].sort((a, b) => a - b), [...want].sort((a, b) => a - b), 'harvest = every mapped dirty page');
    for (const h of mapped) dirty.delete(h);
    assert.equal(tracker.pendingPages(), dirty.size, 'unmapped dirty pages are kept, not lost');
  };

  for (let iter = 0; iter < ITERATIONS; iter++) {
    dirtySome();
    const work = model.map((m) => ({ ...m }));
    const tx = as.begin();
    const names: string[] = [];
    for (let n = 1 + int(3); n > 0; n--) {
      const name = applyRandomOp(tx, work);
      if (name !== undefined) names.push(name);
    }

    const beforeView = as.view();
    const beforeSlots = as.slots();
    const beforeGen = as.generation;
    const valid = modelValid(work);
    let result;
    try {
      result = tx.commit();
    } catch (e) {
      assert.ok(e instanceof AddressSpaceError, String(e));
      assert.ok(!valid, `iteration ${iter}: refused a valid map: ${e.message}`);
      assert.equal(as.view(), beforeView, 'a refused transaction leaves the view');
      assert.equal(as.generation, beforeGen);
      refused.set(e.kind, (refused.get(e.kind) ?? 0) + 1);
      continue;
    }
    assert.ok(valid, `iteration ${iter}: accepted an invalid map after ${names.join(', ')}`);
    model = work;
    for (const name of names) committed.set(name, (committed.get(name) ?? 0) + 1);

    // 1. Regions are what the operations say, and the flat view is the page-by-page winner.
    const toM = (r: ReturnType<AddressSpace['regions']>[number]): M => ({
      id: r.id, kind: r.kind, gpa: r.gpa / PAGE, pages: r.sizeBytes / PAGE, prio: r.priority,
      host: r.backing?.hostId, off: (r.backing?.offsetBytes ?? 0) / PAGE, ro: r.readonly, ld: r.logDirty,
    });
    const byId = (a: M, b: M): number => (a.id < b.id ? -1 : 1);
    assert.deepEqual(as.regions().map(toM).sort(byId), [...model].sort(byId));
    const end = extent(model);
    for (let p = 0; p < end; p++) {
      const w = winner(model, p);
      const f = as.lookup(p * PAGE);
      if (w === undefined) { assert.equal(f, undefined, `page ${p} is a hole`); continue; }
      assert.ok(f !== undefined && f.regionId === w.id && f.kind === w.kind && f.readonly === w.ro && f.logDirty === w.ld, `page ${p} shows ${w.id}`);
      if (memory(w)) assert.equal(hostPageOf(f, p), `${w.host}:${w.off + p - w.gpa}`, `page ${p} keeps its backing`);
      else assert.equal(f.backing, undefined);
    }
    const view = as.view();
    for (let i = 1; i < view.length; i++) {
      const [a, b] = [view[i - 1]!, view[i]!];
      assert.ok(a.gpa + a.sizeBytes <= b.gpa, 'sorted, no overlap');
      assert.ok(!(a.regionId === b.regionId && a.gpa + a.sizeBytes === b.gpa), 'ranges of one region are joined');
    }

    // 2. The ops take KVM's table from the old slots to the new ones, touching only what changed.
    const ops = result.ops;
    const losing = new Map(slotsLosingDirtyLog(ops).map((s) => [s, kvm.takeLog(s, random() < 0.5)] as const));
    kvm.apply(ops);
    const slots = as.slots();
    // regionId is only a label: a renamed region keeps its identical slot, and KVM never hears of the name.
    const unlabelled = (xs: Iterable<MemSlot>): unknown[] => [...xs].map(({ regionId: _, ...s }) => s).sort((a, b) => a.gpa - b.gpa);
    assert.deepEqual(unlabelled(kvm.slots.values()), unlabelled(slots), 'KVM ends with the new slots');
    assert.deepEqual(slots, view.filter((f) => f.slot !== undefined).map((f) => slots.find((s) => s.slot === f.slot)));
    for (const o of ops) {
      if (o.op === 'delete') assert.ok(!slots.some((s) => sameSlot(s, o)), `slot ${o.slot} deleted though it stays the same`);
      if (o.op === 'create') assert.ok(!beforeSlots.some((s) => sameSlot(s, o)), `slot ${o.slot} created though it existed`);
    }
    assert.equal(new Set(ops.map((o) => `${o.op} ${o.slot}`)).size, ops.length, 'no slot is touched twice the same way');

    // 3. Affected ranges are exactly the pages whose mapping changes or whose slot is recreated.
    const affected = result.affected;
    for (let i = 1; i < affected.length; i++) assert.ok(affected[i - 1]!.gpa + affected[i - 1]!.sizeBytes < affected[i]!.gpa, 'affected ranges coalesced');
    const oldLookup = (gpa: number): FlatRange | undefined => beforeView.find((f) => gpa >= f.gpa && gpa < f.gpa + f.sizeBytes);
    const oldEnd = Math.max(end, ...beforeView.map((f) => (f.gpa + f.sizeBytes) / PAGE));
    for (let p = 0; p < oldEnd; p++) {
      const gpa = p * PAGE;
      const inOp = ops.some((o) => o.op !== 'flags' && gpa >= o.gpa && gpa < o.gpa + o.sizeBytes);
      const changed = inOp || pageKey(oldLookup(gpa), p) !== pageKey(as.lookup(gpa), p);
      const listed = affected.some((r) => gpa >= r.gpa && gpa < r.gpa + r.sizeBytes);
      assert.equal(listed, changed, `page ${p} affected`);
    }

    // 4. Dirty pages survive the change.
    tracker.applyOps(ops, losing);
    if (iter % 4 === 3) harvestAndCheck();
  }
  harvestAndCheck();

  // The test means something only if most kinds of change really happened.
  for (const op of ['add', 'remove', 'move', 'grow', 'shrink', 'split', 'merge', 'setReadonly', 'setLogDirty']) {
    assert.ok((committed.get(op) ?? 0) >= 20, `${op} committed ${committed.get(op) ?? 0} times`);
  }
  for (const rule of ['overlap', 'backing', 'slot-limit']) {
    assert.ok((refused.get(rule) ?? 0) >= 10, `${rule} refused ${refused.get(rule) ?? 0} times`);
  }

  /** One random operation on `tx`, mirrored on `work`; returns its name, or undefined if it was (rightly) refused on the spot. */
  function applyRandomOp(t: MapTransaction, work: M[]): string | undefined {
    const find = (pred: (m: M) => boolean): M | undefined => {
      const xs = work.filter(pred);
      return xs.length === 0 ? undefined : pick(xs);
    };
    const roll = random();
    // Adds give way to removes past a dozen regions, so the map stays small enough to change visibly.
    if (work.length === 0 || (roll < 0.22 && work.length < 12)) {
      const kind = pick<RegionKind>(['ram', 'ram', 'ram', 'rom', 'mmio', 'mmio', 'reserved']);
      const pages = 1 + int(12);
      const host = pick(Object.keys(HOST_PAGES));
      const m: M = {
        id: `r${nextId++}`, kind, gpa: int(SPACE_PAGES), pages, prio: int(4),
        host: memoryKind(kind) ? host : undefined, off: memoryKind(kind) ? int(HOST_PAGES[host]! - pages + 3) : 0,
        ro: kind === 'rom' || (kind === 'ram' && random() < 0.2), ld: memoryKind(kind) && random() < 0.4,
      };
      t.add({
        id: m.id, kind, gpa: m.gpa * PAGE, sizeBytes: pages * PAGE, priority: m.prio,
        ...(m.host === undefined ? {} : { backing: { hostId: m.host, offsetBytes: m.off * PAGE } }),
        readonly: m.ro, logDirty: m.ld,
      });
      work.push(m);
      return 'add';
    }
    if (roll < 0.32) {
      const m = pick(work); // also when a full map rolled an add
      t.remove(m.id);
      work.splice(work.indexOf(m), 1);
      return 'remove';
    }
    if (roll < 0.44) {
      const m = pick(work);
      m.gpa = int(SPACE_PAGES);
      t.move(m.id, m.gpa * PAGE);
      return 'move';
    }
    if (roll < 0.52) {
      const m = pick(work);
      m.pages += 1 + int(4);
      t.grow(m.id, m.pages * PAGE);
      return 'grow';
    }
    if (roll < 0.60) {
      const m = find((x) => x.pages > 1);
      if (m === undefined) return undefined;
      m.pages = 1 + int(m.pages - 1);
      t.shrink(m.id, m.pages * PAGE);
      return 'shrink';
    }
    if (roll < 0.72) {
      const m = find((x) => x.pages > 1);
      if (m === undefined) return undefined;
      const at = 1 + int(m.pages - 1);
      const upper: M = { ...m, id: `r${nextId++}`, gpa: m.gpa + at, pages: m.pages - at, off: memory(m) ? m.off + at : 0 };
      m.pages = at;
      t.split(m.id, at * PAGE, upper.id);
      work.push(upper);
      return 'split';
    }
    if (roll < 0.84) {
      // Mostly pairs that touch (often halves of an earlier split), sometimes any pair.
      const touching = work.flatMap((a) => work.filter((b) => b !== a && a.gpa + a.pages === b.gpa).map((b) => [a, b] as const));
      const [low, high] = touching.length > 0 && random() < 0.8 ? pick(touching) : [pick(work), pick(work)];
      const ok = low !== high && low.gpa + low.pages === high.gpa && low.kind === high.kind && low.prio === high.prio &&
        low.ro === high.ro && low.ld === high.ld && low.host === high.host && (!memory(low) || high.off === low.off + low.pages);
      const [keep, other] = random() < 0.5 ? [low, high] : [high, low];
      if (!ok) {
        assert.throws(() => t.merge(keep.id, other.id), (e: unknown) => e instanceof AddressSpaceError && e.kind === 'merge');
        return undefined;
      }
      t.merge(keep.id, other.id);
      work.splice(work.indexOf(other), 1);
      Object.assign(keep, { gpa: low.gpa, pages: low.pages + high.pages, off: low.off });
      return 'merge';
    }
    if (roll < 0.92) {
      const m = find((x) => x.kind === 'ram');
      if (m === undefined) return undefined;
      m.ro = !m.ro;
      t.setReadonly(m.id, m.ro);
      return 'setReadonly';
    }
    const m = find(memory);
    if (m === undefined) return undefined;
    m.ld = !m.ld;
    t.setLogDirty(m.id, m.ld);
    return 'setLogDirty';
  }
});
