// The device side of a split virtqueue (descriptor table, available ring, used ring) walked over
// guest RAM. Spec: VIRTIO 1.2, 2.7 Split Virtqueues; names as in Linux
// include/uapi/linux/virtio_ring.h.
//
// The driver is not trusted. Every index, length and address it wrote is checked before use; a
// ring or chain that breaks the rules comes out as a VirtioError (and nothing else), after which
// the device sets DEVICE_NEEDS_RESET. Guest RAM is only touched through GuestMemory, so nothing
// outside guest RAM is ever read or written. What this will not do: packed rings, VIRTIO_F_IN_ORDER,
// VIRTIO_F_NOTIFICATION_DATA, queue reset.
import { struct } from '../boot/struct.js';
import { GuestMemoryError, type GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, featureBit, hasFeature } from './virtio.js';
import { VirtioError } from './virtio-error.js';

/** Largest split queue (2.7: "Queue Size ... maximum Queue Size value is 32768"). */
export const VIRTQ_MAX_SIZE = 32768;
/**
 * Largest indirect table we walk. The spec bounds a chain by the queue size; Linux may exceed it
 * with indirect tables, so this is a DoS bound (one pop walks at most size + this many
 * descriptors), not a spec number.
 */
export const VIRTQ_MAX_INDIRECT_DESCRIPTORS = 32768;

// struct virtq_desc flags
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
// struct virtq_avail flags / struct virtq_used flags
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** The ring features this implementation supports; transports offer them on top of the device's. */
export const VIRTQUEUE_FEATURES = featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX);

// 2.7 table: alignment of each part.
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;

export const VIRTQ_DESC = struct('struct virtq_desc', 16, {
  addr: [0, 'u64'],
  len: [8, 'u32'],
  flags: [12, 'u16'],
  next: [14, 'u16'],
});
/** The fixed head of struct virtq_avail; `le16 ring[size]` and `le16 used_event` follow. */
export const VIRTQ_AVAIL = struct('struct virtq_avail', 4, {
  flags: [0, 'u16'],
  idx: [2, 'u16'],
});
export const VIRTQ_USED_ELEM = struct('struct virtq_used_elem', 8, {
  id: [0, 'u32'],
  len: [4, 'u32'],
});
/** The fixed head of struct virtq_used; `struct virtq_used_elem ring[size]` and `le16 avail_event` follow. */
export const VIRTQ_USED = struct('struct virtq_used', 4, {
  flags: [0, 'u16'],
  idx: [2, 'u16'],
});
const AVAIL_ENTRY_BYTES = 2;

export function virtqDescTableBytes(size: number): number {
  return VIRTQ_DESC.sizeBytes * size;
}
export function virtqAvailRingBytes(size: number): number {
  return VIRTQ_AVAIL.sizeBytes + AVAIL_ENTRY_BYTES * size + 2; // + used_event
}
export function virtqUsedRingBytes(size: number): number {
  return VIRTQ_USED.sizeBytes + VIRTQ_USED_ELEM.sizeBytes * size + 2; // + avail_event
}

// Offsets for the hot path, taken from the tables once.
const DESC_BYTES = VIRTQ_DESC.sizeBytes;
const DESC_ADDR = VIRTQ_DESC.offsetOf('addr');
const DESC_LEN = VIRTQ_DESC.offsetOf('len');
const DESC_FLAGS = VIRTQ_DESC.offsetOf('flags');
const DESC_NEXT = VIRTQ_DESC.offsetOf('next');
const AVAIL_FLAGS = VIRTQ_AVAIL.offsetOf('flags');
const AVAIL_IDX = VIRTQ_AVAIL.offsetOf('idx');
const AVAIL_RING = VIRTQ_AVAIL.sizeBytes;
const USED_FLAGS = VIRTQ_USED.offsetOf('flags');
const USED_IDX = VIRTQ_USED.offsetOf('idx');
const USED_RING = VIRTQ_USED.sizeBytes;
const USED_ELEM_BYTES = VIRTQ_USED_ELEM.sizeBytes;
const USED_ELEM_ID = VIRTQ_USED_ELEM.offsetOf('id');
const USED_ELEM_LEN = VIRTQ_USED_ELEM.offsetOf('len');
/** A u64 whose high word is above this does not fit a JS number exactly, and lies beyond any RAM. */
const MAX_EXACT_HIGH_WORD = 0x1f_ffff;

/**
 * vring_need_event() of virtio_ring.h: true when `newIdx` has just passed `eventIdx`, i.e. the
 * other side asked to hear about entry `eventIdx` and it is among (oldIdx, newIdx].
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

// A full barrier between our stores to the rings and our next loads (virtio_mb()): the vCPUs run
// on other threads. A seq-cst read-modify-write is a locked instruction on x86 and orders every
// earlier store, atomic or not; JS has no Atomics.fence, so we use one on a private cell.
const fenceCell = new Int32Array(new SharedArrayBuffer(4));
export function memoryFence(): void {
  Atomics.add(fenceCell, 0, 0);
}

const EMPTY = new Uint8Array(0);
const SMALL_COPY_BYTES = 32;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * One request popped from the avail ring: its head index and the buffers it names, as views of
 * guest RAM (zero-copy). Device-readable buffers come first in the chain, device-writable after.
 * Reused from pop to pop, so a device that keeps requests in flight keeps one chain per request.
 */
export class DescriptorChain {
  /** The head descriptor index: what goes back in the used ring. */
  head = 0;
  readonly readable: Uint8Array[] = [];
  readonly writable: Uint8Array[] = [];
  readableBytes = 0;
  writableBytes = 0;
  /** Descriptors walked, indirect descriptors included. */
  descriptorCount = 0;

  clear(head: number): void {
    this.head = head;
    this.readable.length = 0;
    this.writable.length = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.descriptorCount = 0;
  }

  /** Copies the readable bytes at [offset, offset + dst.length) into `dst`; returns how many there were. */
  readInto(offset: number, dst: Uint8Array): number {
    return copySegments(this.readable, offset, dst, true);
  }

  /** Copies `src` into the writable bytes starting at `offset`; returns how many fit. */
  writeFrom(offset: number, src: Uint8Array): number {
    return copySegments(this.writable, offset, src, false);
  }

  /** Fills `out` with views covering readable bytes [offset, offset + length); returns the bytes covered. */
  readableViews(offset: number, length: number, out: Uint8Array[]): number {
    return viewSegments(this.readable, offset, length, out);
  }

  /** Fills `out` with views covering writable bytes [offset, offset + length); returns the bytes covered. */
  writableViews(offset: number, length: number, out: Uint8Array[]): number {
    return viewSegments(this.writable, offset, length, out);
  }
}

/** Copies between a scatter list (seen as one byte stream) and `flat`, from stream offset `offset`. */
function copySegments(segments: readonly Uint8Array[], offset: number, flat: Uint8Array, toFlat: boolean): number {
  let done = 0;
  let skip = offset;
  for (let i = 0; i < segments.length && done < flat.length; i++) {
    const seg = segments[i]!;
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - skip, flat.length - done);
    if (n <= SMALL_COPY_BYTES) {
      // Headers and status bytes: a loop beats making a subarray view, and allocates nothing.
      if (toFlat) for (let k = 0; k < n; k++) flat[done + k] = seg[skip + k]!;
      else for (let k = 0; k < n; k++) seg[skip + k] = flat[done + k]!;
    } else if (toFlat) flat.set(seg.subarray(skip, skip + n), done);
    else seg.set(flat.subarray(done, done + n), skip);
    done += n;
    skip = 0;
  }
  return done;
}

function viewSegments(segments: readonly Uint8Array[], offset: number, length: number, out: Uint8Array[]): number {
  out.length = 0;
  let done = 0;
  let skip = offset;
  for (let i = 0; i < segments.length && done < length; i++) {
    const seg = segments[i]!;
    if (skip >= seg.length) {
      skip -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - skip, length - done);
    out.push(skip === 0 && n === seg.length ? seg : seg.subarray(skip, skip + n));
    done += n;
    skip = 0;
  }
  return done;
}

/**
 * A split virtqueue, device side. The transport writes the driver's configuration (size and the
 * three ring addresses) into the public fields, then activate() checks it; the device pops
 * chains, pushes used entries and asks whether to interrupt. Guest memory comes in with every
 * call, never kept, so the memory map can change between calls.
 */
export class Virtqueue {
  // ---- driver-programmed configuration (transport registers) ----
  /** QueueNum: the size the driver chose. */
  size: number;
  descTableGpa = 0;
  availRingGpa = 0;
  usedRingGpa = 0;
  /** QueueReady as the driver wrote it. */
  ready = false;

  // ---- device state ----
  private active = false;
  private eventIdx = false;
  private indirectDesc = false;
  /** Next avail ring entry the device will consume (free-running u16). */
  private lastAvailIdx = 0;
  /** Next used ring entry the device will fill (free-running u16), also what used->idx holds. */
  private nextUsed = 0;
  /** used->idx when the driver was last considered for an interrupt. */
  private signalledUsedIdx = 0;
  // Ring extents, for the overlap checks.
  private descEnd = 0;
  private availEnd = 0;
  private usedEnd = 0;

  /** "virtqueue N", for messages (built once: the walk must not allocate). */
  private readonly label: string;

  constructor(readonly index: number, readonly maxSize: number) {
    this.label = `virtqueue ${index}`;
    if (!Number.isInteger(maxSize) || maxSize < 1 || maxSize > VIRTQ_MAX_SIZE || (maxSize & (maxSize - 1)) !== 0) {
      throw new RangeError(`virtqueue ${index}: maximum size ${maxSize} is not a power of two in 1..${VIRTQ_MAX_SIZE}`);
    }
    this.size = maxSize;
  }

  /** True between a successful activate() and reset()/deactivate(). */
  get isActive(): boolean {
    return this.active;
  }

  get negotiatedEventIdx(): boolean {
    return this.eventIdx;
  }

  /** The next avail ring entry the device will consume (free-running u16): state to save and restore. */
  get nextAvailIdx(): number {
    return this.lastAvailIdx;
  }

  /** The next used ring entry the device will fill, and what used->idx holds. */
  get nextUsedIdx(): number {
    return this.nextUsed;
  }

  /** Back to the power-on state: the driver programs everything again. */
  reset(): void {
    this.size = this.maxSize;
    this.descTableGpa = 0;
    this.availRingGpa = 0;
    this.usedRingGpa = 0;
    this.ready = false;
    this.deactivate();
  }

  /** Stops using the rings (QueueReady written 0) without forgetting the configuration. */
  deactivate(): void {
    this.active = false;
    this.lastAvailIdx = 0;
    this.nextUsed = 0;
    this.signalledUsedIdx = 0;
  }

  /**
   * Checks the driver's configuration against guest RAM and starts the queue with fresh indices.
   * Throws VirtioError (queue-size, ring-alignment, ring-out-of-ram, ring-overlap).
   */
  activate(memory: GuestMemory, driverFeatures: bigint): void {
    this.deactivate();
    const n = this.size;
    const q = this.label;
    if (!Number.isInteger(n) || n < 1 || n > this.maxSize || (n & (n - 1)) !== 0) {
      throw new VirtioError('queue-size', `${q}: size ${n} is not a power of two in 1..${this.maxSize}; the driver must reset the device`);
    }
    const rings: Array<[string, number, number, number]> = [
      ['descriptor table', this.descTableGpa, virtqDescTableBytes(n), VIRTQ_DESC_ALIGN],
      ['avail ring', this.availRingGpa, virtqAvailRingBytes(n), VIRTQ_AVAIL_ALIGN],
      ['used ring', this.usedRingGpa, virtqUsedRingBytes(n), VIRTQ_USED_ALIGN],
    ];
    for (const [name, gpa, bytes, align] of rings) {
      if (gpa % align !== 0) {
        throw new VirtioError('ring-alignment', `${q}: ${name} at gpa ${hex(gpa)} is not ${align}-byte aligned; the driver must reset the device`);
      }
      if (!memory.contains(gpa, bytes)) {
        throw new VirtioError('ring-out-of-ram', `${q}: ${name} at gpa ${hex(gpa)}+${bytes} is not inside guest RAM; the driver must reset the device`);
      }
    }
    for (let i = 0; i < rings.length; i++) {
      for (let j = i + 1; j < rings.length; j++) {
        const [a, aGpa, aBytes] = rings[i]!;
        const [b, bGpa, bBytes] = rings[j]!;
        if (aGpa < bGpa + bBytes && bGpa < aGpa + aBytes) {
          throw new VirtioError('ring-overlap', `${q}: ${a} at gpa ${hex(aGpa)}+${aBytes} overlaps ${b} at ${hex(bGpa)}+${bBytes}; the driver must reset the device`);
        }
      }
    }
    this.descEnd = this.descTableGpa + virtqDescTableBytes(n);
    this.availEnd = this.availRingGpa + virtqAvailRingBytes(n);
    this.usedEnd = this.usedRingGpa + virtqUsedRingBytes(n);
    this.eventIdx = hasFeature(driverFeatures, VIRTIO_F_EVENT_IDX);
    this.indirectDesc = hasFeature(driverFeatures, VIRTIO_F_INDIRECT_DESC);
    this.active = true;
  }

  /**
   * Takes the next available chain into `chain`. False when the ring is empty (or the queue is
   * not active). Throws VirtioError for a broken ring or chain; the entry is consumed either way.
   */
  popInto(memory: GuestMemory, chain: DescriptorChain): boolean {
    if (!this.active) return false;
    try {
      const idx = memory.readU16(this.availRingGpa + AVAIL_IDX);
      const pending = (idx - this.lastAvailIdx) & 0xffff;
      if (pending > this.size) {
        throw new VirtioError('avail-index', `${this.label}: avail idx ${idx} is ${pending} entries past the ${this.lastAvailIdx} consumed, more than the queue size ${this.size}; the driver must reset the device`);
      }
      if (pending === 0) return false;
      // The ring entries and descriptors were written before avail->idx: read them after it.
      memoryFence();
      const head = memory.readU16(this.availRingGpa + AVAIL_RING + AVAIL_ENTRY_BYTES * (this.lastAvailIdx & (this.size - 1)));
      this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
      this.walk(memory, head, chain);
      return true;
    } catch (e) {
      throw this.asVirtioError(e);
    }
  }

  private walk(memory: GuestMemory, head: number, chain: DescriptorChain): void {
    chain.clear(head);
    const q = this.label;
    if (head >= this.size) {
      throw new VirtioError('descriptor-index', `${q}: avail ring names head descriptor ${head}, beyond the queue size ${this.size}; the driver must reset the device`);
    }
    let tableGpa = this.descTableGpa;
    let tableLength = this.size;
    let inIndirect = false;
    let i = head;
    let hops = 0;
    for (;;) {
      // Each index in a table can be visited once; one more visit means the chain loops.
      if (++hops > tableLength) {
        throw new VirtioError('chain-too-long', `${q}: chain from head ${head} visits more than the ${tableLength} descriptors of its ${inIndirect ? 'indirect table' : 'table'} (a loop); the driver must reset the device`);
      }
      const d = tableGpa + DESC_BYTES * i;
      // Each field is read once: the driver may change the table under us, so nothing is re-read.
      const addrLow = memory.readU32(d + DESC_ADDR);
      const addrHigh = memory.readU32(d + DESC_ADDR + 4);
      const len = memory.readU32(d + DESC_LEN);
      const flags = memory.readU16(d + DESC_FLAGS);
      const next = memory.readU16(d + DESC_NEXT);
      chain.descriptorCount++;

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirectDesc) {
          throw new VirtioError('indirect-not-negotiated', `${q}: descriptor ${i} of chain ${head} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated; the driver must reset the device`);
        }
        if (inIndirect) {
          throw new VirtioError('nested-indirect', `${q}: indirect table of chain ${head} holds another indirect descriptor (${i}); the driver must reset the device`);
        }
        if (flags & VIRTQ_DESC_F_NEXT || len === 0 || len % DESC_BYTES !== 0 || len / DESC_BYTES > VIRTQ_MAX_INDIRECT_DESCRIPTORS) {
          throw new VirtioError('bad-indirect-table', `${q}: indirect descriptor ${i} of chain ${head} has flags ${hex(flags)} and length ${len} (NEXT must be clear, length a non-zero multiple of ${DESC_BYTES} up to ${VIRTQ_MAX_INDIRECT_DESCRIPTORS} entries); the driver must reset the device`);
        }
        tableGpa = this.checkRange(memory, addrHigh, addrLow, len, head, 'indirect table');
        tableLength = len / DESC_BYTES;
        inIndirect = true;
        i = 0;
        hops = 0;
        continue;
      }

      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && chain.writable.length > 0) {
        throw new VirtioError('readable-after-writable', `${q}: descriptor ${i} of chain ${head} is device-readable after a device-writable one; the driver must reset the device`);
      }
      let view: Uint8Array = EMPTY;
      // A zero-length buffer is never touched, so its address does not matter.
      if (len > 0) view = memory.slice(this.checkRange(memory, addrHigh, addrLow, len, head, 'buffer'), len);
      if (writable) {
        chain.writable.push(view);
        chain.writableBytes += len;
      } else {
        chain.readable.push(view);
        chain.readableBytes += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return;
      if (next >= tableLength) {
        throw new VirtioError('descriptor-index', `${q}: descriptor ${i} of chain ${head} links to ${next}, beyond its ${inIndirect ? 'indirect table' : 'table'} of ${tableLength}; the driver must reset the device`);
      }
      i = next;
    }
  }

  /**
   * A buffer or indirect table must lie in guest RAM and stay clear of this queue's rings.
   * Returns its guest-physical address.
   */
  private checkRange(memory: GuestMemory, addrHigh: number, addrLow: number, len: number, head: number, what: string): number {
    const gpa = addrHigh * 0x1_0000_0000 + addrLow;
    // Above 2^53 the number is inexact, but such an address is beyond any RAM anyway.
    if (addrHigh > MAX_EXACT_HIGH_WORD || !memory.contains(gpa, len)) {
      const addr = `0x${addrHigh.toString(16)}${addrLow.toString(16).padStart(8, '0')}`.replace(/^0x0+(?=.)/, '0x');
      throw new VirtioError('buffer-out-of-ram', `${this.label}: ${what} at gpa ${addr}+${len} in chain ${head} is not inside guest RAM; the driver must reset the device`);
    }
    const end = gpa + len;
    if ((gpa < this.descEnd && this.descTableGpa < end)
      || (gpa < this.availEnd && this.availRingGpa < end)
      || (gpa < this.usedEnd && this.usedRingGpa < end)) {
      throw new VirtioError('buffer-overlaps-ring', `${this.label}: ${what} at gpa ${hex(gpa)}+${len} in chain ${head} overlaps the queue's rings; the driver must reset the device`);
    }
    return gpa;
  }

  /** Returns chain `head` to the driver with `writtenBytes` written into its writable buffers. */
  pushUsed(memory: GuestMemory, head: number, writtenBytes: number): void {
    if (!this.active) return;
    try {
      const elem = this.usedRingGpa + USED_RING + USED_ELEM_BYTES * (this.nextUsed & (this.size - 1));
      memory.writeU32(elem + USED_ELEM_ID, head);
      memory.writeU32(elem + USED_ELEM_LEN, writtenBytes);
      this.nextUsed = (this.nextUsed + 1) & 0xffff;
      // After the element: x86 keeps stores in order, so the driver never sees idx before the entry.
      memory.writeU16(this.usedRingGpa + USED_IDX, this.nextUsed);
    } catch (e) {
      throw this.asVirtioError(e);
    }
  }

  /**
   * Whether the driver wants an interrupt for the entries pushed since the last call (2.7.7.2):
   * with VIRTIO_F_EVENT_IDX when used->idx passed used_event, otherwise unless
   * VIRTQ_AVAIL_F_NO_INTERRUPT is set. False when nothing was pushed.
   */
  needsNotification(memory: GuestMemory): boolean {
    if (!this.active) return false;
    try {
      const old = this.signalledUsedIdx;
      const now = this.nextUsed;
      this.signalledUsedIdx = now;
      if (old === now) return false;
      // used->idx must be visible before we read what the driver last asked for.
      memoryFence();
      if (this.eventIdx) {
        const usedEvent = memory.readU16(this.availRingGpa + AVAIL_RING + AVAIL_ENTRY_BYTES * this.size);
        return vringNeedEvent(usedEvent, now, old);
      }
      return (memory.readU16(this.availRingGpa + AVAIL_FLAGS) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    } catch (e) {
      throw this.asVirtioError(e);
    }
  }

  /** Asks the driver not to notify while the device is busy draining (no-op with VIRTIO_F_EVENT_IDX). */
  disableNotification(memory: GuestMemory): void {
    if (!this.active || this.eventIdx) return;
    try {
      memory.writeU16(this.usedRingGpa + USED_FLAGS, VIRTQ_USED_F_NO_NOTIFY);
    } catch (e) {
      throw this.asVirtioError(e);
    }
  }

  /**
   * Asks the driver to notify on its next buffer (avail_event = next entry, or clears
   * VIRTQ_USED_F_NO_NOTIFY), then looks again: true when buffers arrived meanwhile and the device
   * must keep draining rather than wait for a notification that will not come.
   */
  enableNotification(memory: GuestMemory): boolean {
    if (!this.active) return false;
    try {
      if (this.eventIdx) {
        memory.writeU16(this.usedRingGpa + USED_RING + USED_ELEM_BYTES * this.size, this.lastAvailIdx);
      } else {
        memory.writeU16(this.usedRingGpa + USED_FLAGS, 0);
      }
      memoryFence();
      return memory.readU16(this.availRingGpa + AVAIL_IDX) !== this.lastAvailIdx;
    } catch (e) {
      throw this.asVirtioError(e);
    }
  }

  /** GuestMemory errors here mean RAM went away under an active queue; report them as ring errors. */
  private asVirtioError(e: unknown): unknown {
    if (e instanceof GuestMemoryError) {
      return new VirtioError('ring-out-of-ram', `${this.label}: ${e.message}; the driver must reset the device`, { cause: e });
    }
    return e;
  }
}
