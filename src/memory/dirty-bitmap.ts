// Dirty page tracking: word-based page bitmaps, KVM's per-slot dirty log (or its dirty ring's pages)
// OR-merged with the VMM's own writes, and dirty bits that survive memory map changes (KVM API:
// KVM_GET_DIRTY_LOG, KVM_CAP_DIRTY_LOG_RING and KVM_MEM_LOG_DIRTY_PAGES in
// Documentation/virt/kvm/api.rst; Firecracker's "KVM log OR VMM bitmap").
//
// Dirty bits are kept per page of each *host allocation*, not per memslot: a page's contents live
// in its backing, which moves with its region through split, merge, grow, shrink and move. Re-keying
// a change is then only "merge the logs of the slots about to vanish, then switch the slot table";
// harvest() translates host pages back to guest-physical pages through the current slots.
//
// What this module will not do: call KVM (the backend fetches logs and passes them in) or
// write-protect pages (KVM does that while KVM_MEM_LOG_DIRTY_PAGES is set).
import { coalesce, PAGE_SIZE_BYTES, type GpaRange, type MemSlot, type MemslotOp } from './address-space.js';

/**
 * A KVM dirty log for one slot: bit N set means page N of the slot was written. KVM fills an array
 * of native `unsigned long`s (little-endian u64 on x86-64); pass it as its bytes or as u64 values.
 */
export type KvmDirtyLog = Uint8Array | BigUint64Array;

export type DirtyBitmapErrorKind = 'range' | 'log-size' | 'unknown-slot' | 'slot-exists' | 'op-mismatch';

export class DirtyBitmapError extends Error {
  override readonly name = 'DirtyBitmapError';
  constructor(readonly kind: DirtyBitmapErrorKind, message: string) {
    super(message);
  }
}

const ctz32 = (x: number): number => 31 - Math.clz32(x & -x);

/** Bit i of a KVM log as 32-bit words: word k holds pages 32k..32k+31, bit b = page 32k+b. */
function logWord(log: KvmDirtyLog, k: number): number {
  if (log instanceof BigUint64Array) {
    const v = log[k >>> 1]!;
    return Number((k & 1) === 0 ? v & 0xffffffffn : v >> 32n);
  }
  const i = k * 4;
  return ((log[i] ?? 0) | ((log[i + 1] ?? 0) << 8) | ((log[i + 2] ?? 0) << 16) | ((log[i + 3] ?? 0) << 24)) >>> 0;
}

function logBits(log: KvmDirtyLog): number {
  return log instanceof BigUint64Array ? log.length * 64 : log.length * 8;
}

/** One bit per 4 KiB page, 32 pages per Uint32Array word, bit b of word w = page 32w + b. */
export class PageBitmap {
  readonly words: Uint32Array;

  constructor(readonly pages: number) {
    if (!Number.isSafeInteger(pages) || pages < 0) throw new DirtyBitmapError('range', `page bitmap of ${pages} pages: need a whole number of pages`);
    this.words = new Uint32Array(Math.ceil(pages / 32));
  }

  private check(first: number, count: number): void {
    if (!(first >= 0 && count >= 0 && first + count <= this.pages) || !Number.isInteger(first) || !Number.isInteger(count)) {
      throw new DirtyBitmapError('range', `pages [${first}, ${first + count}) are outside this bitmap of ${this.pages} pages`);
    }
  }

  test(page: number): boolean {
    this.check(page, 1);
    return ((this.words[Math.floor(page / 32)]! >>> (page % 32)) & 1) === 1;
  }

  set(page: number): void {
    this.check(page, 1);
    this.words[Math.floor(page / 32)]! |= 1 << (page % 32);
  }

  clear(page: number): void {
    this.check(page, 1);
    this.words[Math.floor(page / 32)]! &= ~(1 << (page % 32));
  }

  setRange(first: number, count: number): void {
    this.check(first, count);
    this.fillRange(first, count, true);
  }

  clearRange(first: number, count: number): void {
    this.check(first, count);
    this.fillRange(first, count, false);
  }

  private fillRange(first: number, count: number, on: boolean): void {
    let p = first;
    const end = first + count;
    while (p < end) {
      const w = Math.floor(p / 32);
      const lo = p % 32;
      const hi = Math.min(32, lo + (end - p)); // exclusive bit index within this word
      const mask = hi - lo === 32 ? 0xffffffff : (((1 << (hi - lo)) - 1) << lo);
      if (on) this.words[w]! |= mask;
      else this.words[w]! &= ~mask;
      p += hi - lo;
    }
  }

  clearAll(): void {
    this.words.fill(0);
  }

  count(): number {
    let n = 0;
    for (let w of this.words) {
      while (w !== 0) { w &= w - 1; n++; }
    }
    return n;
  }

  isEmpty(): boolean {
    return this.words.every((w) => w === 0);
  }

  /** OR-merges a KVM log whose bit N is page `firstPage + N` here; bits past `pages` in the log are ignored. */
  orKvmLog(log: KvmDirtyLog, firstPage: number, pages: number): void {
    this.check(firstPage, pages);
    if (logBits(log) < pages) {
      throw new DirtyBitmapError('log-size', `dirty log of ${logBits(log)} bits is too short for ${pages} pages`);
    }
    const shift = firstPage % 32;
    const base = Math.floor(firstPage / 32);
    const srcWords = Math.ceil(pages / 32);
    for (let k = 0; k < srcWords; k++) {
      let v = logWord(log, k);
      if (v === 0) continue;
      const left = pages - k * 32;
      if (left < 32) v &= (1 << left) - 1;
      // Unaligned destinations straddle two words; the high part only exists when bits were shifted out.
      this.words[base + k]! |= v << shift;
      if (shift !== 0 && (v >>> (32 - shift)) !== 0) this.words[base + k + 1]! |= v >>> (32 - shift);
    }
  }

  /** Pages [first, first+count) in KVM's layout (bit N = page first+N, u64 words). */
  toKvmLog(first = 0, count = this.pages - first): BigUint64Array {
    this.check(first, count);
    const out = new BigUint64Array(Math.ceil(count / 64));
    for (const [p, n] of this.runs(first, count)) {
      for (let i = p - first; i < p - first + n; i++) out[i >>> 6]! |= 1n << BigInt(i & 63);
    }
    return out;
  }

  /** The set pages in [first, first+count) as maximal runs [firstPage, pageCount], skipping clear words. */
  runs(first = 0, count = this.pages - first): Array<[number, number]> {
    this.check(first, count);
    const out: Array<[number, number]> = [];
    const end = first + count;
    let p = this.next(first, end, true);
    while (p < end) {
      const q = this.next(p, end, false);
      out.push([p, q - p]);
      p = this.next(q, end, true);
    }
    return out;
  }

  /** The first page >= p and < end whose bit equals `set`, or `end`. */
  private next(p: number, end: number, set: boolean): number {
    while (p < end) {
      const w = Math.floor(p / 32);
      const bits = ((set ? this.words[w]! : ~this.words[w]!) & (0xffffffff << (p % 32))) >>> 0;
      if (bits !== 0) return Math.min(end, w * 32 + ctz32(bits));
      p = (w + 1) * 32;
    }
    return end;
  }

  /** A copy with room for `pages` pages (at least as many as now). */
  grown(pages: number): PageBitmap {
    const b = new PageBitmap(Math.max(pages, this.pages));
    b.words.set(this.words);
    return b;
  }
}

/**
 * The slots whose KVM dirty log `ops` would throw away: deleted slots that were logging, and slots
 * whose logging a flags op turns off (KVM frees the bitmap). Fetch their logs with KVM_GET_DIRTY_LOG
 * before applying the ops, and pass them to DirtyTracker.applyOps.
 */
export function slotsLosingDirtyLog(ops: readonly MemslotOp[]): number[] {
  const out: number[] = [];
  for (const o of ops) {
    if ((o.op === 'delete' && o.flags.logDirty) || (o.op === 'flags' && !o.flags.logDirty)) out.push(o.slot);
  }
  return out;
}

/** The VMM's dirty page record: what KVM logged plus what the VMM itself wrote, in host-page terms. */
export class DirtyTracker {
  private bySlot = new Map<number, MemSlot>();
  /** current slots sorted by gpa, for markGpa and harvest */
  private sorted: MemSlot[] = [];
  private readonly hosts = new Map<string, PageBitmap>();

  /** `slots` is the map's current slot table (AddressSpace.slots()). */
  constructor(slots: Iterable<MemSlot> = []) {
    for (const s of slots) this.insert(s);
    this.resort();
  }

  private insert(s: MemSlot): void {
    if (this.bySlot.has(s.slot)) throw new DirtyBitmapError('slot-exists', `memslot ${s.slot} is already in the dirty tracker's table`);
    this.bySlot.set(s.slot, s);
    this.hostBitmap(s.hostId, (s.offsetBytes + s.sizeBytes) / PAGE_SIZE_BYTES);
  }

  private resort(): void {
    this.sorted = [...this.bySlot.values()].sort((a, b) => a.gpa - b.gpa);
  }

  private hostBitmap(hostId: string, pages: number): PageBitmap {
    let b = this.hosts.get(hostId);
    if (b === undefined || b.pages < pages) {
      b = b === undefined ? new PageBitmap(pages) : b.grown(pages);
      this.hosts.set(hostId, b);
    }
    return b;
  }

  private slot(slot: number, doing: string): MemSlot {
    const s = this.bySlot.get(slot);
    if (s === undefined) throw new DirtyBitmapError('unknown-slot', `memslot ${slot} is not in the dirty tracker's table while ${doing}; keep the tracker in step with every commit`);
    return s;
  }

  /** OR-merges KVM's dirty log of `slot` (from KVM_GET_DIRTY_LOG) into the record. */
  mergeKvmLog(slot: number, log: KvmDirtyLog): void {
    const s = this.slot(slot, 'merging its KVM dirty log');
    this.hosts.get(s.hostId)!.orKvmLog(log, s.offsetBytes / PAGE_SIZE_BYTES, s.sizeBytes / PAGE_SIZE_BYTES);
  }

  /**
   * Records pages of memslot `slot` as dirty, by page number within the slot: what KVM's dirty
   * ring reports (src/memory/dirty-ring.ts). The ring is written by another party and can name a
   * slot a map change has since removed, so a slot not in the table and offsets past the slot's
   * end (or not whole page numbers) are ignored, never thrown at and never marked elsewhere.
   * Returns the pages marked.
   */
  markSlotPages(slot: number, pageOffsets: ArrayLike<number>): number {
    const s = this.bySlot.get(slot);
    if (s === undefined) return 0;
    const bitmap = this.hosts.get(s.hostId)!;
    const firstHostPage = s.offsetBytes / PAGE_SIZE_BYTES;
    const pages = s.sizeBytes / PAGE_SIZE_BYTES;
    let marked = 0;
    for (let i = 0; i < pageOffsets.length; i++) {
      const p = pageOffsets[i]!;
      if (!(Number.isInteger(p) && p >= 0 && p < pages)) continue;
      bitmap.set(firstHostPage + p);
      marked++;
    }
    return marked;
  }

  /**
   * Records a VMM-side write (device emulation, virtio used rings, loaders): KVM never sees those.
   * Bytes outside every memslot (MMIO, holes) are not memory and are ignored. Returns the pages marked.
   */
  markGpa(gpa: number, sizeBytes: number): number {
    if (sizeBytes <= 0) return 0;
    const end = gpa + sizeBytes;
    let marked = 0;
    for (const s of this.sorted) {
      if (s.gpa >= end) break;
      const from = Math.max(gpa, s.gpa);
      const to = Math.min(end, s.gpa + s.sizeBytes);
      if (from >= to) continue;
      const first = Math.floor((from - s.gpa) / PAGE_SIZE_BYTES);
      const last = Math.ceil((to - s.gpa) / PAGE_SIZE_BYTES);
      this.hosts.get(s.hostId)!.setRange(s.offsetBytes / PAGE_SIZE_BYTES + first, last - first);
      marked += last - first;
    }
    return marked;
  }

  /**
   * Follows a commit of the memory map. `harvested` holds the KVM logs (by old slot number) of the
   * slots the ops destroy (see slotsLosingDirtyLog), fetched before the ops were applied to KVM;
   * they are merged through the old slot table, so a slot number reused by a create is no trap.
   */
  applyOps(ops: readonly MemslotOp[], harvested: ReadonlyMap<number, KvmDirtyLog> = new Map()): void {
    // Merging first is safe even if an op is refused below: it only adds dirty bits.
    for (const [slot, log] of harvested) this.mergeKvmLog(slot, log);
    const next = new Map(this.bySlot); // the table changes only if every op fits it
    for (const o of ops) {
      const cur = next.get(o.slot);
      if (o.op === 'create') {
        if (cur !== undefined) throw new DirtyBitmapError('slot-exists', `create of memslot ${o.slot}, which the dirty tracker's table already holds; ops must come from the commit that follows the tracked map`);
      } else if (cur === undefined) {
        throw new DirtyBitmapError('unknown-slot', `${o.op} of memslot ${o.slot}, which is not in the dirty tracker's table; ops must come from the commit that follows the tracked map`);
      } else if (cur.gpa !== o.gpa || cur.sizeBytes !== o.sizeBytes || cur.hostId !== o.hostId || cur.offsetBytes !== o.offsetBytes) {
        throw new DirtyBitmapError('op-mismatch', `${o.op} of memslot ${o.slot} does not match the tracked slot (gpa 0x${cur.gpa.toString(16)}, ${cur.sizeBytes} bytes); ops must come from the commit that follows the tracked map`);
      }
      const { op: _op, ...slot } = o;
      if (o.op === 'delete') next.delete(o.slot);
      else next.set(o.slot, slot);
    }
    this.bySlot = next;
    for (const s of next.values()) this.hostBitmap(s.hostId, (s.offsetBytes + s.sizeBytes) / PAGE_SIZE_BYTES);
    this.resort();
  }

  /**
   * The dirty guest-physical pages since the last harvest, as sorted coalesced ranges, and forgets
   * them. Merge every logging slot's KVM log first. A host page mapped at two gpas is reported at
   * both; a dirty host page that no slot maps now is kept until a slot maps it again.
   */
  harvest(): GpaRange[] {
    const found: GpaRange[] = [];
    const reported: Array<[PageBitmap, number, number]> = [];
    for (const s of this.sorted) {
      const bitmap = this.hosts.get(s.hostId)!;
      const firstHostPage = s.offsetBytes / PAGE_SIZE_BYTES;
      for (const [p, n] of bitmap.runs(firstHostPage, s.sizeBytes / PAGE_SIZE_BYTES)) {
        found.push({ gpa: s.gpa + (p - firstHostPage) * PAGE_SIZE_BYTES, sizeBytes: n * PAGE_SIZE_BYTES });
        reported.push([bitmap, p, n]);
      }
    }
    // Cleared only after every slot was read, so aliases of one host page all see it.
    for (const [bitmap, p, n] of reported) bitmap.clearRange(p, n);
    return coalesce(found);
  }

  /** Dirty host pages not yet harvested, mapped or not. */
  pendingPages(): number {
    let n = 0;
    for (const b of this.hosts.values()) n += b.count();
    return n;
  }

  /** The tracked slot table, sorted by gpa. */
  slots(): readonly MemSlot[] {
    return this.sorted;
  }
}
