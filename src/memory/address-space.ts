// The guest memory map: prioritized regions flattened into one non-overlapping view, changed only by
// validated transactions whose commit yields the fewest KVM memslot operations (KVM API:
// KVM_SET_USER_MEMORY_REGION in Documentation/virt/kvm/api.rst; QEMU's FlatView in system/memory.c).
//
// What this module will not do: issue ioctls (the KVM backend applies the ops it returns), read or
// write guest memory (a backing is a host allocation named by id), or track dirty pages
// (dirty-bitmap.ts). It is pure data, so it can be tested without /dev/kvm.

export const PAGE_SIZE_BYTES = 0x1000;
/** MAXPHYADDR is at most 52 on x86-64 (Intel SDM vol. 3A, 4.1.4), so no guest-physical byte lies at or above 2^52. */
export const GPA_LIMIT_BYTES = 2 ** 52;

export type RegionKind = 'ram' | 'rom' | 'mmio' | 'reserved';
const REGION_KINDS: ReadonlySet<string> = new Set<RegionKind>(['ram', 'rom', 'mmio', 'reserved']);

/** Where a region's bytes live: `offsetBytes` into the host allocation `hostId` (see AddressSpace.defineHost). */
export interface Backing {
  readonly hostId: string;
  readonly offsetBytes: number;
}

/** A region as the caller describes it to `MapTransaction.add`. */
export interface RegionSpec {
  readonly id: string;
  /** ram and rom are host memory (rom is mapped read-only); mmio and reserved have no memslot and exit to the VMM */
  readonly kind: RegionKind;
  readonly gpa: number;
  readonly sizeBytes: number;
  /** where regions overlap, the higher priority is what the guest sees; equal priorities must not overlap */
  readonly priority: number;
  /** required for ram and rom, refused for mmio and reserved */
  readonly backing?: Backing;
  /** guest writes exit as MMIO instead of landing in memory (KVM_MEM_READONLY); always true for rom */
  readonly readonly?: boolean;
  /** KVM logs guest writes to this region's pages (KVM_MEM_LOG_DIRTY_PAGES) */
  readonly logDirty?: boolean;
}

/** A committed region, with every optional field resolved. */
export interface Region {
  readonly id: string;
  readonly kind: RegionKind;
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly priority: number;
  readonly backing: Backing | undefined;
  readonly readonly: boolean;
  readonly logDirty: boolean;
}

/** One piece of the flat view: the part of one region that no higher-priority region hides. */
export interface FlatRange {
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly regionId: string;
  readonly kind: RegionKind;
  /** the backing of this range's first byte (the region's backing moved by gpa - region.gpa) */
  readonly backing: Backing | undefined;
  readonly readonly: boolean;
  readonly logDirty: boolean;
  /** the memslot that maps this range; undefined for mmio and reserved */
  readonly slot: number | undefined;
}

export interface GpaRange {
  readonly gpa: number;
  readonly sizeBytes: number;
}

export interface MemslotFlags {
  readonly readonly: boolean;
  readonly logDirty: boolean;
}

/** A KVM memslot as this map wants it; the KVM backend turns flags into KVM_MEM_* bits. */
export interface MemSlot {
  readonly slot: number;
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly hostId: string;
  readonly offsetBytes: number;
  readonly flags: MemslotFlags;
  /**
   * the region the slot was made for; a label only (for messages and debugging): renaming a region
   * whose slot stays identical emits no op, so a table kept up to date from ops keeps the old label
   */
  readonly regionId: string;
}

/**
 * One KVM_SET_USER_MEMORY_REGION call. `delete` carries the slot's old values (KVM only needs the slot
 * number and size 0); `flags` changes only logDirty, which KVM applies in place (KVM_MR_FLAGS_ONLY).
 */
export interface MemslotOp extends MemSlot {
  readonly op: 'delete' | 'create' | 'flags';
}

export interface CommitResult {
  /** in the order to apply them: every delete, then flags changes, then creates (KVM refuses overlapping slots) */
  readonly ops: readonly MemslotOp[];
  /**
   * Guest-physical ranges, sorted and coalesced, that change mapping or pass through a deleted-then-
   * created memslot: only vCPUs that may touch them need to wait. A logDirty-only change is not
   * listed, because KVM switches dirty logging on a live slot atomically.
   */
  readonly affected: readonly GpaRange[];
  readonly generation: number;
}

export type AddressSpaceErrorKind =
  // layout rules, checked at commit over the whole new map
  | 'kind' | 'priority' | 'alignment' | 'empty' | 'gpa-limit' | 'backing' | 'flags' | 'overlap' | 'slot-limit'
  // operations refused when called
  | 'unknown-region' | 'duplicate-region' | 'resize' | 'split' | 'merge'
  // host allocations and the transaction itself
  | 'host' | 'transaction';

export class AddressSpaceError extends Error {
  override readonly name = 'AddressSpaceError';
  constructor(
    readonly kind: AddressSpaceErrorKind,
    /** the region the failure is about, if any */
    readonly regionId: string | undefined,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const endOf = (r: { gpa: number; sizeBytes: number }): number => r.gpa + r.sizeBytes;
const isPageAligned = (n: number): boolean => n % PAGE_SIZE_BYTES === 0;

function refuse(kind: AddressSpaceErrorKind, regionId: string | undefined, what: string, fix: string): never {
  const who = regionId === undefined ? 'memory map' : `memory map: region "${regionId}"`;
  throw new AddressSpaceError(kind, regionId, `${who} [${kind}]: ${what}; ${fix}`);
}

/** A transaction: operations edit a private copy of the regions; nothing is visible until commit(). */
export class MapTransaction {
  private readonly work: Map<string, Region>;
  private closed = false;

  /** @internal made by AddressSpace.begin() */
  constructor(committed: ReadonlyMap<string, Region>, private readonly commitFn: (regions: Region[]) => CommitResult) {
    this.work = new Map(committed);
  }

  private open(): void {
    if (this.closed) refuse('transaction', undefined, 'this transaction was already committed or aborted', 'call begin() again');
  }

  private get(id: string): Region {
    this.open();
    const r = this.work.get(id);
    if (r === undefined) refuse('unknown-region', id, 'no such region in the map', 'check the id against regions()');
    return r;
  }

  private put(r: Region): void {
    if (r.backing !== undefined) Object.freeze(r.backing);
    this.work.set(r.id, Object.freeze(r));
  }

  /** The regions as this transaction would commit them. */
  regions(): Region[] {
    return [...this.work.values()];
  }

  add(spec: RegionSpec): this {
    this.open();
    if (this.work.has(spec.id)) refuse('duplicate-region', spec.id, 'a region with this id already exists', 'pick another id or remove the old region first');
    this.put({
      id: spec.id, kind: spec.kind, gpa: spec.gpa, sizeBytes: spec.sizeBytes, priority: spec.priority,
      backing: spec.backing === undefined ? undefined : { hostId: spec.backing.hostId, offsetBytes: spec.backing.offsetBytes },
      readonly: spec.readonly ?? spec.kind === 'rom',
      logDirty: spec.logDirty ?? false,
    });
    return this;
  }

  remove(id: string): this {
    this.get(id);
    this.work.delete(id);
    return this;
  }

  /** The backing moves with the region, so its contents appear at the new gpa. */
  move(id: string, gpa: number): this {
    this.put({ ...this.get(id), gpa });
    return this;
  }

  /** Extends the end of the region; the backing offset stays, so the existing bytes keep their gpas. */
  grow(id: string, newSizeBytes: number): this {
    const r = this.get(id);
    if (!(newSizeBytes > r.sizeBytes)) {
      refuse('resize', id, `grow to ${hex(newSizeBytes)} bytes is not larger than the current ${hex(r.sizeBytes)}`, 'use shrink() to make it smaller');
    }
    this.put({ ...r, sizeBytes: newSizeBytes });
    return this;
  }

  /** Cuts the end of the region; the bytes that stay keep their gpas, the cut bytes stay in the backing. */
  shrink(id: string, newSizeBytes: number): this {
    const r = this.get(id);
    if (!(newSizeBytes < r.sizeBytes)) {
      refuse('resize', id, `shrink to ${hex(newSizeBytes)} bytes is not smaller than the current ${hex(r.sizeBytes)}`, 'use grow() to make it larger');
    }
    this.put({ ...r, sizeBytes: newSizeBytes });
    return this;
  }

  /** `id` keeps [gpa, gpa+atOffsetBytes); `newId` gets the rest, on the same backing further in. */
  split(id: string, atOffsetBytes: number, newId: string): this {
    const r = this.get(id);
    if (this.work.has(newId)) refuse('duplicate-region', newId, `splitting "${id}" would reuse an existing id`, 'pick another id for the upper part');
    if (!(atOffsetBytes > 0 && atOffsetBytes < r.sizeBytes) || !isPageAligned(atOffsetBytes)) {
      refuse('split', id, `split offset ${hex(atOffsetBytes)} is not a 4 KiB multiple strictly inside the region's ${hex(r.sizeBytes)} bytes`,
        'split on a page boundary between the first and the last page');
    }
    this.put({ ...r, sizeBytes: atOffsetBytes });
    this.put({
      ...r, id: newId, gpa: r.gpa + atOffsetBytes, sizeBytes: r.sizeBytes - atOffsetBytes,
      backing: r.backing === undefined ? undefined : { hostId: r.backing.hostId, offsetBytes: r.backing.offsetBytes + atOffsetBytes },
    });
    return this;
  }

  /**
   * Joins two regions that touch in guest-physical space into one that keeps `id`. They must agree on
   * kind, priority and flags, and their backings must be contiguous in the same host allocation
   * (otherwise one region could not describe the bytes, and contents would be lost).
   */
  merge(id: string, otherId: string): this {
    const a = this.get(id);
    const b = this.get(otherId);
    if (a === b) refuse('merge', id, 'cannot merge a region with itself', 'name two different regions');
    const [low, high] = a.gpa <= b.gpa ? [a, b] : [b, a];
    const pair = `"${low.id}" and "${high.id}"`;
    if (endOf(low) !== high.gpa) {
      refuse('merge', id, `${pair} do not touch (${hex(endOf(low))} != ${hex(high.gpa)})`, 'move them together first');
    }
    if (low.kind !== high.kind || low.priority !== high.priority || low.readonly !== high.readonly || low.logDirty !== high.logDirty) {
      refuse('merge', id, `${pair} differ in kind, priority, readonly or logDirty`, 'make them agree first');
    }
    const lb = low.backing;
    const hb = high.backing;
    if ((lb === undefined) !== (hb === undefined) || (lb !== undefined && hb !== undefined &&
        (lb.hostId !== hb.hostId || hb.offsetBytes !== lb.offsetBytes + low.sizeBytes))) {
      refuse('merge', id, `${pair} are not backed by adjacent bytes of one host allocation`,
        'keep them as two regions (merging would lose RAM contents)');
    }
    this.work.delete(otherId);
    this.put({ ...low, id, sizeBytes: low.sizeBytes + high.sizeBytes });
    return this;
  }

  setReadonly(id: string, readonly: boolean): this {
    this.put({ ...this.get(id), readonly });
    return this;
  }

  setLogDirty(id: string, logDirty: boolean): this {
    this.put({ ...this.get(id), logDirty });
    return this;
  }

  /** Validates the whole new map and makes it current; on error the map is unchanged and the transaction closed. */
  commit(): CommitResult {
    this.open();
    this.closed = true;
    return this.commitFn([...this.work.values()]);
  }

  abort(): void {
    this.closed = true;
  }
}

export interface AddressSpaceOptions {
  /** KVM_CAP_NR_MEMSLOTS (or less, to keep slots for others) */
  readonly maxSlots: number;
  /** host allocations backing ram and rom: hostId -> size in bytes */
  readonly hosts?: Iterable<readonly [string, number]>;
}

export class AddressSpace {
  readonly maxSlots: number;
  private readonly hosts = new Map<string, number>();
  private committed = new Map<string, Region>();
  private flat: readonly FlatRange[] = Object.freeze([]);
  private gen = 0;

  constructor(options: AddressSpaceOptions) {
    if (!Number.isInteger(options.maxSlots) || options.maxSlots < 1) {
      refuse('slot-limit', undefined, `maxSlots ${options.maxSlots} is not a positive integer`, 'pass KVM_CAP_NR_MEMSLOTS');
    }
    this.maxSlots = options.maxSlots;
    for (const [hostId, sizeBytes] of options.hosts ?? []) this.defineHost(hostId, sizeBytes);
  }

  /** Makes a host allocation known, so regions can be backed by it. */
  defineHost(hostId: string, sizeBytes: number): void {
    if (this.hosts.has(hostId)) refuse('host', undefined, `host allocation "${hostId}" is already defined`, 'use a new id for a new allocation');
    if (!(sizeBytes > 0) || !isPageAligned(sizeBytes) || !Number.isSafeInteger(sizeBytes)) {
      refuse('host', undefined, `host allocation "${hostId}" size ${sizeBytes} is not a positive 4 KiB multiple`, 'round the allocation up to whole pages');
    }
    this.hosts.set(hostId, sizeBytes);
  }

  /** Forgets a host allocation (before unmapping it); refused while a committed region uses it. */
  forgetHost(hostId: string): void {
    for (const r of this.committed.values()) {
      if (r.backing?.hostId === hostId) refuse('host', r.id, `still backed by host allocation "${hostId}"`, 'remove the region in a transaction first');
    }
    this.hosts.delete(hostId);
  }

  get generation(): number {
    return this.gen;
  }

  begin(): MapTransaction {
    const base = this.gen;
    return new MapTransaction(this.committed, (regions) => {
      if (this.gen !== base) {
        refuse('transaction', undefined, `the map changed (generation ${base} -> ${this.gen}) since this transaction began`, 'begin() again and redo the changes');
      }
      return this.apply(regions);
    });
  }

  region(id: string): Region | undefined {
    return this.committed.get(id);
  }

  regions(): Region[] {
    return [...this.committed.values()].sort((a, b) => a.gpa - b.gpa || (a.id < b.id ? -1 : 1));
  }

  /** The committed flat view, sorted by gpa; holes (no region) are absent. */
  view(): readonly FlatRange[] {
    return this.flat;
  }

  /** The memslots of the committed view, sorted by gpa. */
  slots(): MemSlot[] {
    const out: MemSlot[] = [];
    for (const f of this.flat) if (f.slot !== undefined) out.push(toSlot(f));
    return out;
  }

  /** The flat range holding `gpa`, or undefined in a hole. Binary search; allocates nothing. */
  lookup(gpa: number): FlatRange | undefined {
    return rangeAt(this.flat, gpa);
  }

  /** Where the byte at `gpa` lives in host memory, or undefined for mmio, reserved and holes. */
  translate(gpa: number): Backing | undefined {
    const f = rangeAt(this.flat, gpa);
    if (f?.backing === undefined) return undefined;
    return { hostId: f.backing.hostId, offsetBytes: f.backing.offsetBytes + (gpa - f.gpa) };
  }

  private apply(regions: Region[]): CommitResult {
    regions.sort((a, b) => a.gpa - b.gpa || (a.id < b.id ? -1 : 1));
    validateRegions(regions, this.hosts);
    const pieces = flatten(regions);
    const backed = pieces.filter((p) => p.backing !== undefined);
    if (backed.length > this.maxSlots) {
      const first = backed[this.maxSlots]!;
      refuse('slot-limit', first.regionId, `the new map needs ${backed.length} memslots but only ${this.maxSlots} are available`,
        'merge regions or map fewer of them');
    }
    const { view, ops } = assignSlots(this.flat, pieces);
    const affected = affectedRanges(this.flat, view, ops);
    // Nothing above changed `this`: a refused transaction leaves the map as it was.
    this.committed = new Map(regions.map((r) => [r.id, r]));
    this.flat = Object.freeze(view);
    this.gen++;
    return { ops, affected, generation: this.gen };
  }
}

function validateRegions(regions: readonly Region[], hosts: ReadonlyMap<string, number>): void {
  for (const r of regions) {
    const id = r.id;
    if (!REGION_KINDS.has(r.kind)) refuse('kind', id, `kind "${r.kind}" is not one of ram, rom, mmio, reserved`, 'use one of those kinds');
    if (!Number.isFinite(r.priority)) refuse('priority', id, `priority ${r.priority} is not a finite number`, 'use an integer priority');
    if (!(r.sizeBytes > 0)) refuse('empty', id, `size ${r.sizeBytes} is not positive`, 'remove the region instead of emptying it');
    if (!isPageAligned(r.gpa)) refuse('alignment', id, `gpa ${hex(r.gpa)} is not a multiple of 4 KiB`, 'place regions on 0x1000 boundaries');
    if (!isPageAligned(r.sizeBytes)) refuse('alignment', id, `size ${hex(r.sizeBytes)} is not a multiple of 4 KiB`, 'round the size to whole pages');
    if (r.gpa < 0 || endOf(r) > GPA_LIMIT_BYTES) {
      refuse('gpa-limit', id, `[${hex(r.gpa)}, ${hex(endOf(r))}) leaves the 52-bit guest-physical space`, 'place it below 2^52');
    }
    const memory = r.kind === 'ram' || r.kind === 'rom';
    if (memory) {
      const b = r.backing;
      if (b === undefined) refuse('backing', id, `a ${r.kind} region needs a backing`, 'give it { hostId, offsetBytes }');
      const hostBytes = hosts.get(b.hostId);
      if (hostBytes === undefined) refuse('backing', id, `host allocation "${b.hostId}" is not defined`, 'call defineHost() first');
      if (!isPageAligned(b.offsetBytes)) refuse('alignment', id, `backing offset ${hex(b.offsetBytes)} is not a multiple of 4 KiB`, 'back regions with whole pages');
      if (b.offsetBytes < 0 || b.offsetBytes + r.sizeBytes > hostBytes) {
        refuse('backing', id, `backing [${hex(b.offsetBytes)}, ${hex(b.offsetBytes + r.sizeBytes)}) leaves host allocation "${b.hostId}" of ${hex(hostBytes)} bytes`,
          'shrink the region or use a larger allocation');
      }
    } else {
      if (r.backing !== undefined) refuse('backing', id, `a ${r.kind} region has no memory behind it but was given a backing`, 'drop the backing or make it ram/rom');
      if (r.readonly || r.logDirty) refuse('flags', id, `readonly and logDirty mean nothing for ${r.kind}`, 'set them on ram or rom regions only');
    }
    if (r.kind === 'rom' && !r.readonly) refuse('flags', id, 'a rom region cannot be writable', 'make it ram to let the guest write it');
  }
  // Equal priorities must not overlap: nothing would say which one the guest sees.
  const byPriority = new Map<number, Region[]>();
  for (const r of regions) {
    let list = byPriority.get(r.priority);
    if (list === undefined) byPriority.set(r.priority, list = []);
    list.push(r);
  }
  for (const list of byPriority.values()) {
    let reach: Region | undefined; // the region reaching furthest so far, in gpa order
    for (const r of list) {
      if (reach !== undefined && endOf(reach) > r.gpa) {
        refuse('overlap', r.id, `overlaps "${reach.id}" at [${hex(r.gpa)}, ${hex(Math.min(endOf(reach), endOf(r)))}) with the same priority ${r.priority}`,
          'give one of them a higher priority or move it');
      }
      if (reach === undefined || endOf(r) > endOf(reach)) reach = r;
    }
  }
}

interface Piece {
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly region: Region;
  readonly regionId: string;
  readonly backing: Backing | undefined;
}

/** The visible part of every region: for each stretch between region edges, the highest priority wins. */
function flatten(regions: readonly Region[]): Piece[] {
  const edges = [...new Set(regions.flatMap((r) => [r.gpa, endOf(r)]))].sort((a, b) => a - b);
  const pieces: Piece[] = [];
  let open: { gpa: number; end: number; region: Region } | undefined;
  const close = (): void => {
    if (open === undefined) return;
    const { gpa, end, region } = open;
    const b = region.backing;
    pieces.push({
      gpa, sizeBytes: end - gpa, region, regionId: region.id,
      backing: b === undefined ? undefined : Object.freeze({ hostId: b.hostId, offsetBytes: b.offsetBytes + (gpa - region.gpa) }),
    });
    open = undefined;
  };
  for (let i = 0; i + 1 < edges.length; i++) {
    const start = edges[i]!;
    const end = edges[i + 1]!;
    let winner: Region | undefined;
    for (const r of regions) {
      if (r.gpa > start) break; // sorted by gpa
      if (endOf(r) >= end && (winner === undefined || r.priority > winner.priority)) winner = r;
    }
    if (winner !== undefined && open !== undefined && open.region === winner && open.end === start) {
      open.end = end;
      continue;
    }
    close();
    if (winner !== undefined) open = { gpa: start, end, region: winner };
  }
  close();
  return pieces;
}

function toSlot(f: FlatRange): MemSlot {
  return {
    slot: f.slot!, gpa: f.gpa, sizeBytes: f.sizeBytes, hostId: f.backing!.hostId, offsetBytes: f.backing!.offsetBytes,
    flags: { readonly: f.readonly, logDirty: f.logDirty }, regionId: f.regionId,
  };
}

/**
 * Gives each backed piece a memslot. A piece identical in range, backing and readonly to an old slot
 * keeps it (a logDirty difference is a flags op); every other old slot is deleted, every other piece
 * created. Changing KVM_MEM_READONLY in place is refused by KVM (EINVAL in kvm_set_memory_region),
 * so a readonly toggle is a delete and a create, which reuses the slot number.
 */
function assignSlots(oldView: readonly FlatRange[], pieces: readonly Piece[]): { view: FlatRange[]; ops: MemslotOp[] } {
  const key = (gpa: number, sizeBytes: number, b: Backing, readonly: boolean): string =>
    `${gpa}/${sizeBytes}/${b.hostId}/${b.offsetBytes}/${readonly ? 'ro' : 'rw'}`;
  const oldByKey = new Map<string, FlatRange>();
  for (const f of oldView) if (f.slot !== undefined) oldByKey.set(key(f.gpa, f.sizeBytes, f.backing!, f.readonly), f);

  const view: FlatRange[] = [];
  const flagOps: MemslotOp[] = [];
  const used = new Set<number>();
  const kept = new Set<FlatRange>();
  const toCreate: number[] = []; // indexes into view
  for (const p of pieces) {
    const r = p.region;
    const base = { gpa: p.gpa, sizeBytes: p.sizeBytes, regionId: r.id, kind: r.kind, backing: p.backing, readonly: r.readonly, logDirty: r.logDirty };
    if (p.backing === undefined) {
      view.push(Object.freeze({ ...base, slot: undefined }));
      continue;
    }
    const old = oldByKey.get(key(p.gpa, p.sizeBytes, p.backing, r.readonly));
    if (old !== undefined) {
      kept.add(old);
      used.add(old.slot!);
      const f = Object.freeze({ ...base, slot: old.slot });
      view.push(f);
      if (old.logDirty !== r.logDirty) flagOps.push({ op: 'flags', ...toSlot(f) });
    } else {
      toCreate.push(view.length);
      view.push({ ...base, slot: undefined }); // slot filled below
    }
  }
  const deleteOps: MemslotOp[] = [];
  const freedByRegion = new Map<string, number[]>();
  for (const f of oldView) {
    if (f.slot === undefined || kept.has(f)) continue;
    deleteOps.push({ op: 'delete', ...toSlot(f) });
    const list = freedByRegion.get(f.regionId);
    if (list === undefined) freedByRegion.set(f.regionId, [f.slot]);
    else list.push(f.slot);
  }
  // Two passes: first a number this region just gave up (a readonly toggle or a split keeps its slot), then the lowest free ones.
  const chosen = new Map<number, number>(); // view index -> slot
  for (const i of toCreate) {
    const mine = freedByRegion.get(view[i]!.regionId);
    while (mine !== undefined && mine.length > 0) {
      const s = mine.shift()!;
      if (!used.has(s)) { chosen.set(i, s); used.add(s); break; }
    }
  }
  const createOps: MemslotOp[] = [];
  let lowest = 0;
  for (const i of toCreate) {
    let slot = chosen.get(i);
    if (slot === undefined) {
      while (used.has(lowest)) lowest++;
      slot = lowest;
      used.add(slot);
    }
    const done = Object.freeze({ ...view[i]!, slot });
    view[i] = done;
    createOps.push({ op: 'create', ...toSlot(done) });
  }
  return { view, ops: [...deleteOps, ...flagOps, ...createOps] };
}

/** What a page at `gpa` (inside `f`) resolves to, as far as a running vCPU can tell. */
function mappingAt(f: FlatRange | undefined, gpa: number): string {
  if (f === undefined) return 'hole';
  if (f.backing !== undefined) return `mem/${f.backing.hostId}/${f.backing.offsetBytes + (gpa - f.gpa)}/${f.readonly ? 'ro' : 'rw'}`;
  return `${f.kind}/${f.regionId}`;
}

function rangeAt(view: readonly FlatRange[], gpa: number): FlatRange | undefined {
  let lo = 0;
  let hi = view.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = view[mid]!;
    if (gpa < r.gpa) hi = mid - 1;
    else if (gpa >= endOf(r)) lo = mid + 1;
    else return r;
  }
  return undefined;
}

function affectedRanges(oldView: readonly FlatRange[], newView: readonly FlatRange[], ops: readonly MemslotOp[]): GpaRange[] {
  const changed: GpaRange[] = [];
  // Between consecutive edges of either view, both sides are one range each (or a hole), so one comparison decides.
  const edges = [...new Set([...oldView, ...newView].flatMap((f) => [f.gpa, endOf(f)]))].sort((a, b) => a - b);
  for (let i = 0; i + 1 < edges.length; i++) {
    const gpa = edges[i]!;
    if (mappingAt(rangeAt(oldView, gpa), gpa) !== mappingAt(rangeAt(newView, gpa), gpa)) {
      changed.push({ gpa, sizeBytes: edges[i + 1]! - gpa });
    }
  }
  // A slot that is deleted and created again is unmapped in between, even if it ends up the same.
  for (const o of ops) if (o.op !== 'flags') changed.push({ gpa: o.gpa, sizeBytes: o.sizeBytes });
  return coalesce(changed);
}

/** Sorts ranges and joins those that overlap or touch. */
export function coalesce(ranges: readonly GpaRange[]): GpaRange[] {
  const sorted = [...ranges].sort((a, b) => a.gpa - b.gpa);
  const out: GpaRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.gpa <= endOf(last)) {
      if (endOf(r) > endOf(last)) out[out.length - 1] = { gpa: last.gpa, sizeBytes: endOf(r) - last.gpa };
    } else {
      out.push({ gpa: r.gpa, sizeBytes: r.sizeBytes });
    }
  }
  return out;
}
