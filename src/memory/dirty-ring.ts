// One vCPU's KVM dirty ring read from userspace: the harvest half of the protocol, over the ring's
// bytes (the mmap of the vCPU fd at page KVM_DIRTY_LOG_PAGE_OFFSET, or any ArrayBuffer in tests).
// Spec: Documentation/virt/kvm/api.rst, KVM_CAP_DIRTY_LOG_RING / KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
// include/uapi/linux/kvm.h, struct kvm_dirty_gfn and KVM_DIRTY_GFN_F_*.
//
// The ring is an array of kvm_dirty_gfn. KVM writes an entry's slot and offset, then sets its flags
// to DIRTY (01) with release ordering. Userspace walks the ring in order from its own fetch index:
// while the entry at the index is DIRTY (and not yet RESET) it reads slot and offset after an
// acquire load of the flags, records the page, sets the flags to RESET (1X) with a release store,
// and moves on. It must not skip a dirty entry. Afterwards the VMM issues KVM_RESET_DIRTY_RINGS on
// the VM fd, and KVM write-protects the harvested pages again and frees their entries (00). That
// ioctl must come before the VMM reads the pages' contents.
//
// What this module will not do: issue the ioctl, map the ring, or decide what a (slot, offset)
// means; src/kvm/ and the KVM backend do the first two, DirtyTracker.markSlotPages the last.
// The numbers are declared here because src/memory must not import src/kvm/; src/kvm/abi.test.ts
// checks that they equal the kernel ABI table's.

/** kvm_dirty_gfn.flags: KVM has written this entry (01). */
export const KVM_DIRTY_GFN_F_DIRTY = 1 << 0;
/** kvm_dirty_gfn.flags: userspace has harvested this entry and it waits for KVM_RESET_DIRTY_RINGS (1X). */
export const KVM_DIRTY_GFN_F_RESET = 1 << 1;
export const KVM_DIRTY_GFN_F_MASK = 0x3;

/**
 * struct kvm_dirty_gfn { __u32 flags; __u32 slot; __u64 offset; } (include/uapi/linux/kvm.h).
 * `slot` is (address space id << 16) | memslot id; `offset` is the page number within the memslot.
 */
export const kvm_dirty_gfn = { name: 'kvm_dirty_gfn', sizeBytes: 16, at: { flags: 0, slot: 4, offset: 8 } } as const;

// The reader indexes a Uint32Array: every field must start on a u32 boundary inside the entry.
for (const [field, off] of Object.entries(kvm_dirty_gfn.at)) {
  if (off % 4 !== 0 || off + (field === 'offset' ? 8 : 4) > kvm_dirty_gfn.sizeBytes) {
    throw new Error(`kvm_dirty_gfn.${field} at ${off}: not a u32-aligned field inside ${kvm_dirty_gfn.sizeBytes} bytes`);
  }
}

const ENTRY_WORDS = kvm_dirty_gfn.sizeBytes / 4;
const FLAGS_WORD = kvm_dirty_gfn.at.flags / 4;
const SLOT_WORD = kvm_dirty_gfn.at.slot / 4;
const OFFSET_LO_WORD = kvm_dirty_gfn.at.offset / 4;
const OFFSET_HI_WORD = OFFSET_LO_WORD + 1;

/** The smallest ring tsvmm asks for: one 4 KiB page (KVM refuses less; on hosts with PML, less than 16 KiB). */
export const DIRTY_RING_MIN_BYTES = 4096;

export type DirtyRingErrorKind = 'size';

export class DirtyRingError extends Error {
  override readonly name = 'DirtyRingError';
  constructor(readonly kind: DirtyRingErrorKind, message: string) {
    super(message);
  }
}

const isPowerOfTwo = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;

/** Throws unless `sizeBytes` is a ring size tsvmm may ask for: a power of two, at least DIRTY_RING_MIN_BYTES. */
export function checkDirtyRingSize(sizeBytes: number): void {
  if (!isPowerOfTwo(sizeBytes) || sizeBytes < DIRTY_RING_MIN_BYTES) {
    throw new DirtyRingError('size', `dirty ring of ${sizeBytes} bytes: the size must be a power of two of at least ${DIRTY_RING_MIN_BYTES} bytes (e.g. 65536, 4096 entries)`);
  }
}

/**
 * The ring size to enable: `requestedBytes` (a power of two, at least DIRTY_RING_MIN_BYTES), cut
 * to the largest power of two within `hostMaxBytes` (what KVM_CHECK_EXTENSION returned for the
 * ring capability). 0 when the host has no dirty ring (hostMaxBytes 0) or its maximum is too small.
 */
export function dirtyRingSizeBytes(requestedBytes: number, hostMaxBytes: number): number {
  checkDirtyRingSize(requestedBytes);
  if (!(hostMaxBytes >= DIRTY_RING_MIN_BYTES)) return 0;
  const hostMax = 2 ** Math.floor(Math.log2(hostMaxBytes));
  return Math.min(requestedBytes, hostMax);
}

/** Receives one harvested entry: memslot `slot` (as KVM wrote it), page `pageOffset` within it. */
export type DirtyPageSink = (slot: number, pageOffset: number) => void;

/**
 * Reads one vCPU's dirty ring. Keeps the fetch index (the next entry to look at); nothing else of
 * the ring's state lives here, so KVM and this reader meet only in the ring's flags words.
 */
export class DirtyRingReader {
  /** entries in the ring (a power of two) */
  readonly entries: number;
  private readonly words: Uint32Array;
  private readonly mask: number;
  /** ring position of the next entry to look at */
  private position = 0;
  /** entries harvested over the reader's life */
  private total = 0;

  /** `ring` holds the entries from `byteOffset`, `sizeBytes` of them (the size given to KVM). */
  constructor(ring: ArrayBuffer, byteOffset = 0, sizeBytes = ring.byteLength - byteOffset) {
    const entries = sizeBytes / kvm_dirty_gfn.sizeBytes;
    if (!isPowerOfTwo(entries) || byteOffset % 4 !== 0 || byteOffset < 0 || byteOffset + sizeBytes > ring.byteLength) {
      throw new DirtyRingError('size', `dirty ring of ${sizeBytes} bytes at byte ${byteOffset} of a ${ring.byteLength}-byte buffer: need a power-of-two number of ${kvm_dirty_gfn.sizeBytes}-byte entries inside the buffer`);
    }
    this.entries = entries;
    this.mask = entries - 1;
    this.words = new Uint32Array(ring, byteOffset, entries * ENTRY_WORDS);
  }

  /** The ring position of the next entry the reader looks at (0 .. entries-1). */
  get fetchPosition(): number {
    return this.position;
  }

  /** How many entries this reader has harvested since it was made. */
  get harvested(): number {
    return this.total;
  }

  /**
   * Walks the ring from the fetch index while entries are DIRTY and not RESET, at most `max` of
   * them (and never more than one lap): `sink(slot, pageOffset)` for each, then its flags become
   * RESET. Returns how many were harvested; after a non-zero total over all rings, issue
   * KVM_RESET_DIRTY_RINGS before reading the pages. An entry whose flags are anything else ends
   * the walk: a 00 entry is not written yet, and a 1X entry at the fetch index was never handed to
   * this reader (stopping is the safe choice: dirty entries must not be skipped).
   *
   * The flags word is read with Atomics.load and written with Atomics.store (sequentially
   * consistent, so at least acquire and release): what KVM_CAP_DIRTY_LOG_RING_ACQ_REL requires,
   * and harmless on x86, where plain accesses would already be ordered.
   */
  harvest(sink: DirtyPageSink, max = this.entries): number {
    const words = this.words;
    const limit = Math.min(max, this.entries);
    let n = 0;
    while (n < limit) {
      const base = this.position * ENTRY_WORDS;
      const flags = Atomics.load(words, base + FLAGS_WORD);
      if ((flags & KVM_DIRTY_GFN_F_MASK) !== KVM_DIRTY_GFN_F_DIRTY) break;
      // After the acquire load: KVM wrote these before it released the flags.
      const slot = words[base + SLOT_WORD]!;
      // u64 as two halves: no BigInt per entry. Offsets past 2^53 pages are garbage anyway and
      // stay larger than any memslot, so DirtyTracker.markSlotPages ignores them.
      const pageOffset = words[base + OFFSET_HI_WORD]! * 0x1_0000_0000 + words[base + OFFSET_LO_WORD]!;
      sink(slot, pageOffset);
      Atomics.store(words, base + FLAGS_WORD, KVM_DIRTY_GFN_F_RESET);
      this.position = (this.position + 1) & this.mask;
      n++;
    }
    this.total += n;
    return n;
  }
}
