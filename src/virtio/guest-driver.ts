// The guest's side of virtio, in miniature, for tests: split rings laid out and filled the way
// Linux's drivers/virtio/virtio_ring.c does (vring_init layout, free list threaded through `next`,
// avail entries before avail->idx, kick and used_event decisions with vring_need_event), and a
// virtio-mmio probe in the order of drivers/virtio/virtio_mmio.c and virtio.c. Plus guest RAM
// over a plain ArrayBuffer, and a GuestMemory that records every access.
import type { BusDevice } from '../bus/bus.js';
import { GuestMemory, type RamRegionSpec } from '../memory/guest-memory.js';
import * as mmio from './mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit, hasFeature, type VirtioDevice,
} from './virtio.js';
import { VIRTIO_BLK_OUTHDR } from './block.js';
import type { VirtioError } from './virtio-error.js';
import {
  VIRTQ_AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_USED, VIRTQ_USED_ELEM, VIRTQ_USED_F_NO_NOTIFY, virtqAvailRingBytes, virtqDescTableBytes, virtqUsedRingBytes,
  vringNeedEvent,
} from './virtqueue.js';

/** Guest RAM of `sizeBytes` at `gpa`, backed by a plain ArrayBuffer. */
export function plainGuestMemory(sizeBytes: number, gpa = 0): GuestMemory {
  const buf = new ArrayBuffer(sizeBytes);
  return new GuestMemory([{ gpa, sizeBytes, hva: 1n }], () => buf);
}

/**
 * GuestMemory that records each access: how many there were, and every one that asked for bytes
 * outside guest RAM (GuestMemory refuses those; the virtio code should never even ask).
 */
export class RecordingGuestMemory extends GuestMemory {
  accesses = 0;
  readonly outside: Array<{ gpa: number; len: number; op: string }> = [];
  private readonly ram: RamRegionSpec[];
  /** The backing bytes of each region, in the order given. */
  readonly regionBytes: Uint8Array[];

  constructor(regions: ReadonlyArray<{ gpa: number; sizeBytes: number }>) {
    const bufs = regions.map((r) => new ArrayBuffer(r.sizeBytes));
    const specs = regions.map((r, i) => ({ gpa: r.gpa, sizeBytes: r.sizeBytes, hva: BigInt(i + 1) }));
    super(specs, (hva) => bufs[Number(hva) - 1]!);
    this.ram = specs;
    this.regionBytes = bufs.map((b) => new Uint8Array(b));
  }

  /** The same RAM without recording: for the test's own driver, whose accesses are not under test. */
  unrecorded(): GuestMemory {
    return new GuestMemory(this.ram, (hva) => this.regionBytes[Number(hva) - 1]!.buffer as ArrayBuffer);
  }

  /** The guest-physical address of a view this memory handed out (undefined for foreign views). */
  gpaOf(view: Uint8Array): number | undefined {
    const i = this.regionBytes.findIndex((b) => b.buffer === view.buffer);
    return i < 0 ? undefined : this.ram[i]!.gpa + view.byteOffset;
  }

  private note(op: string, gpa: number, len: number): void {
    this.accesses++;
    const inside = len >= 0 && this.ram.some((r) => gpa >= r.gpa && gpa + len <= r.gpa + r.sizeBytes);
    if (!inside) this.outside.push({ gpa, len, op });
  }

  override slice(gpa: number, len: number): Uint8Array { this.note('slice', gpa, len); return super.slice(gpa, len); }
  override readU8(gpa: number): number { this.note('readU8', gpa, 1); return super.readU8(gpa); }
  override readU16(gpa: number): number { this.note('readU16', gpa, 2); return super.readU16(gpa); }
  override readU32(gpa: number): number { this.note('readU32', gpa, 4); return super.readU32(gpa); }
  override readU64(gpa: number): bigint { this.note('readU64', gpa, 8); return super.readU64(gpa); }
  override writeU8(gpa: number, v: number): void { this.note('writeU8', gpa, 1); super.writeU8(gpa, v); }
  override writeU16(gpa: number, v: number): void { this.note('writeU16', gpa, 2); super.writeU16(gpa, v); }
  override writeU32(gpa: number, v: number): void { this.note('writeU32', gpa, 4); super.writeU32(gpa, v); }
  override writeU64(gpa: number, v: bigint): void { this.note('writeU64', gpa, 8); super.writeU64(gpa, v); }
}

/** Hands out guest-physical ranges, like a guest kernel's allocator would. */
export class BumpAllocator {
  constructor(private next: number, private readonly end: number) {}

  alloc(bytes: number, align = 16): number {
    const gpa = Math.ceil(this.next / align) * align;
    if (gpa + bytes > this.end) throw new RangeError(`test guest RAM exhausted: ${bytes} bytes at 0x${gpa.toString(16)}`);
    this.next = gpa + bytes;
    return gpa;
  }
}

/** One scatter-gather entry: guest-physical address and length. */
export interface Sg {
  readonly gpa: number;
  readonly len: number;
}

export interface SplitRingDriverOptions {
  /** VIRTIO_F_EVENT_IDX was negotiated. */
  readonly eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC was negotiated: chains of more than one buffer go in an indirect table. */
  readonly indirect?: boolean;
  /** Where the used ring starts: Linux aligns it to the page (VIRTIO_MMIO_VRING_ALIGN). */
  readonly usedAlign?: number;
}

const DESC_BYTES = VIRTQ_DESC.sizeBytes;
const INDIRECT_TABLE_ENTRIES = 16;

/** A split virtqueue, driver side (drivers/virtio/virtio_ring.c, the split half). */
export class SplitRingDriver {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  private freeHead = 0;
  numFree: number;
  private availIdxShadow = 0;
  private lastUsedIdx = 0;
  private numAdded = 0;
  /** Per head: an indirect table (allocated on first use and reused). */
  private readonly indirectTables = new Map<number, number>();

  constructor(readonly memory: GuestMemory, private readonly alloc: BumpAllocator, readonly size: number, options: SplitRingDriverOptions = {}) {
    this.eventIdx = options.eventIdx ?? false;
    this.indirect = options.indirect ?? false;
    const usedAlign = options.usedAlign ?? 4096;
    // vring_init(): desc table, avail ring right after it, used ring at the next `usedAlign`.
    const availOffset = virtqDescTableBytes(size);
    const usedOffset = Math.ceil((availOffset + virtqAvailRingBytes(size)) / usedAlign) * usedAlign;
    const total = usedOffset + virtqUsedRingBytes(size);
    const base = alloc.alloc(total, 4096);
    memory.fill(base, total, 0);
    this.descGpa = base;
    this.availGpa = base + availOffset;
    this.usedGpa = base + usedOffset;
    for (let i = 0; i < size - 1; i++) this.writeDesc(i, { next: i + 1 });
    this.numFree = size;
  }

  /** Writes some fields of descriptor `i` of the ring (or of the table at `tableGpa`). */
  writeDesc(i: number, d: { addr?: number; len?: number; flags?: number; next?: number }, tableGpa = this.descGpa): void {
    const at = tableGpa + DESC_BYTES * i;
    if (d.addr !== undefined) this.memory.writeU64(at + VIRTQ_DESC.offsetOf('addr'), BigInt(d.addr));
    if (d.len !== undefined) this.memory.writeU32(at + VIRTQ_DESC.offsetOf('len'), d.len);
    if (d.flags !== undefined) this.memory.writeU16(at + VIRTQ_DESC.offsetOf('flags'), d.flags);
    if (d.next !== undefined) this.memory.writeU16(at + VIRTQ_DESC.offsetOf('next'), d.next);
  }

  readDescNext(i: number): number {
    return this.memory.readU16(this.descGpa + DESC_BYTES * i + VIRTQ_DESC.offsetOf('next'));
  }

  readDescFlags(i: number): number {
    return this.memory.readU16(this.descGpa + DESC_BYTES * i + VIRTQ_DESC.offsetOf('flags'));
  }

  /**
   * virtqueue_add_split(): device-readable `out` buffers, then device-writable `inBufs`. Returns the
   * head descriptor index. With indirect negotiated, a chain of several buffers takes one ring slot.
   */
  add(out: readonly Sg[], inBufs: readonly Sg[], options: { indirect?: boolean } = {}): number {
    const total = out.length + inBufs.length;
    if (total === 0) throw new RangeError('a request needs at least one buffer');
    const useIndirect = (options.indirect ?? this.indirect) && total > 1;
    const needed = useIndirect ? 1 : total;
    if (needed > this.numFree) throw new RangeError(`ring full: ${needed} descriptors needed, ${this.numFree} free`);
    const head = this.freeHead;
    const sgs = [...out.map((s) => ({ ...s, flags: 0 })), ...inBufs.map((s) => ({ ...s, flags: VIRTQ_DESC_F_WRITE }))];
    if (useIndirect) {
      let table = this.indirectTables.get(head);
      if (table === undefined || total > INDIRECT_TABLE_ENTRIES) {
        table = this.alloc.alloc(DESC_BYTES * Math.max(total, INDIRECT_TABLE_ENTRIES), 16);
        if (total <= INDIRECT_TABLE_ENTRIES) this.indirectTables.set(head, table);
      }
      sgs.forEach((s, k) => this.writeDesc(k, {
        addr: s.gpa, len: s.len, flags: s.flags | (k < total - 1 ? VIRTQ_DESC_F_NEXT : 0), next: k + 1,
      }, table));
      this.writeDesc(head, { addr: table, len: DESC_BYTES * total, flags: VIRTQ_DESC_F_INDIRECT });
      this.freeHead = this.readDescNext(head);
    } else {
      let i = head;
      let last = head;
      for (const s of sgs) {
        this.writeDesc(i, { addr: s.gpa, len: s.len, flags: s.flags | VIRTQ_DESC_F_NEXT });
        last = i;
        i = this.readDescNext(i);
      }
      this.writeDesc(last, { flags: sgs[sgs.length - 1]!.flags }); // clear NEXT on the last one
      this.freeHead = i;
    }
    this.numFree -= needed;
    this.publish(head);
    return head;
  }

  /** Puts `head` in the avail ring and bumps avail->idx (entry first, as virtio_wmb orders it). */
  publish(head: number): void {
    this.memory.writeU16(this.availGpa + VIRTQ_AVAIL.sizeBytes + 2 * (this.availIdxShadow & (this.size - 1)), head);
    this.availIdxShadow = (this.availIdxShadow + 1) & 0xffff;
    this.memory.writeU16(this.availGpa + VIRTQ_AVAIL.offsetOf('idx'), this.availIdxShadow);
    this.numAdded++;
  }

  /** Writes avail->idx directly (hostile tests). */
  setAvailIdx(idx: number): void {
    this.availIdxShadow = idx & 0xffff;
    this.memory.writeU16(this.availGpa + VIRTQ_AVAIL.offsetOf('idx'), this.availIdxShadow);
  }

  get availIdx(): number {
    return this.availIdxShadow;
  }

  /** virtqueue_kick_prepare_split(): should the driver notify the device? */
  kickPrepare(): boolean {
    const newIdx = this.availIdxShadow;
    const oldIdx = (newIdx - this.numAdded) & 0xffff;
    this.numAdded = 0;
    if (this.eventIdx) {
      const availEvent = this.memory.readU16(this.usedGpa + VIRTQ_USED.sizeBytes + VIRTQ_USED_ELEM.sizeBytes * this.size);
      return vringNeedEvent(availEvent, newIdx, oldIdx);
    }
    return (this.memory.readU16(this.usedGpa + VIRTQ_USED.offsetOf('flags')) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  get usedIdx(): number {
    return this.memory.readU16(this.usedGpa + VIRTQ_USED.offsetOf('idx'));
  }

  /** virtqueue_get_buf(): the next used entry, its descriptors back on the free list. */
  getBuf(): { id: number; len: number } | null {
    if (this.usedIdx === this.lastUsedIdx) return null;
    const elem = this.usedGpa + VIRTQ_USED.sizeBytes + VIRTQ_USED_ELEM.sizeBytes * (this.lastUsedIdx & (this.size - 1));
    const id = this.memory.readU32(elem + VIRTQ_USED_ELEM.offsetOf('id'));
    const len = this.memory.readU32(elem + VIRTQ_USED_ELEM.offsetOf('len'));
    if (id >= this.size) throw new RangeError(`device returned id ${id} beyond ring size ${this.size}`);
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    // detach_buf_split(): walk the chain, splice it onto the free list.
    let i = id;
    let count = 1;
    while (this.readDescFlags(i) & VIRTQ_DESC_F_NEXT) {
      i = this.readDescNext(i);
      if (++count > this.size || i >= this.size) throw new RangeError(`descriptor chain ${id} is broken`);
    }
    this.writeDesc(i, { next: this.freeHead });
    this.freeHead = id;
    this.numFree += count;
    if (this.eventIdx) this.setUsedEvent(this.lastUsedIdx); // "interrupt me on the next one"
    return { id, len };
  }

  /** Tells the device which used entry should interrupt (used_event), with VIRTIO_F_EVENT_IDX. */
  setUsedEvent(idx: number): void {
    this.memory.writeU16(this.availGpa + VIRTQ_AVAIL.sizeBytes + 2 * this.size, idx & 0xffff);
  }

  /** Sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT (the interrupt switch without EVENT_IDX). */
  setNoInterrupt(on: boolean): void {
    this.memory.writeU16(this.availGpa + VIRTQ_AVAIL.offsetOf('flags'), on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }
}

/** A virtio-mmio driver: probe, feature negotiation, queue setup, notify, interrupt handling. */
export class MmioDriver {
  constructor(readonly dev: BusDevice) {}

  read32(offset: number): number {
    const d = new Uint8Array(4);
    this.dev.read(offset, d);
    return new DataView(d.buffer).getUint32(0, true);
  }

  write32(offset: number, value: number): void {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, value >>> 0, true);
    this.dev.write(offset, d);
  }

  readConfig(offset: number, len: 1 | 2 | 4): number {
    const d = new Uint8Array(len);
    this.dev.read(mmio.VIRTIO_MMIO_CONFIG + offset, d);
    const v = new DataView(d.buffer);
    return len === 1 ? v.getUint8(0) : len === 2 ? v.getUint16(0, true) : v.getUint32(0, true);
  }

  get status(): number {
    return this.read32(mmio.VIRTIO_MMIO_STATUS);
  }

  addStatus(bits: number): void {
    this.write32(mmio.VIRTIO_MMIO_STATUS, this.status | bits);
  }

  deviceFeatures(): bigint {
    this.write32(mmio.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const high = BigInt(this.read32(mmio.VIRTIO_MMIO_DEVICE_FEATURES));
    this.write32(mmio.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    return (high << 32n) | BigInt(this.read32(mmio.VIRTIO_MMIO_DEVICE_FEATURES));
  }

  /**
   * virtio_mmio_probe() then virtio_dev_probe() up to FEATURES_OK: checks magic and version,
   * resets, ACKNOWLEDGE, DRIVER, accepts `wanted & offered`, FEATURES_OK, and re-reads it.
   * Returns the negotiated features, or null when the device refused them.
   */
  negotiate(wanted: bigint, options: { acceptExactly?: bigint } = {}): bigint | null {
    if (this.read32(mmio.VIRTIO_MMIO_MAGIC_VALUE) !== mmio.VIRTIO_MMIO_MAGIC) throw new Error('bad magic');
    if (this.read32(mmio.VIRTIO_MMIO_VERSION) !== 2) throw new Error('not a modern virtio-mmio device');
    if (this.read32(mmio.VIRTIO_MMIO_DEVICE_ID) === 0) throw new Error('no device behind this virtio-mmio window');
    this.write32(mmio.VIRTIO_MMIO_STATUS, 0);
    this.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.addStatus(VIRTIO_CONFIG_S_DRIVER);
    const features = options.acceptExactly ?? (this.deviceFeatures() & wanted);
    this.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES, Number(features >> 32n));
    this.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.write32(mmio.VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffff_ffffn));
    this.addStatus(VIRTIO_CONFIG_S_FEATURES_OK);
    return this.status & VIRTIO_CONFIG_S_FEATURES_OK ? features : null;
  }

  /** vm_setup_vq(): program queue `index` with `ring` and make it ready. */
  setupQueue(index: number, ring: SplitRingDriver): void {
    this.write32(mmio.VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.read32(mmio.VIRTIO_MMIO_QUEUE_READY)) throw new Error(`queue ${index} already in use`);
    const max = this.read32(mmio.VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    if (ring.size > max) throw new Error(`queue ${index}: ring of ${ring.size} exceeds QueueNumMax ${max}`);
    this.write32(mmio.VIRTIO_MMIO_QUEUE_NUM, ring.size);
    const pairs: Array<[number, number]> = [
      [mmio.VIRTIO_MMIO_QUEUE_DESC_LOW, ring.descGpa],
      [mmio.VIRTIO_MMIO_QUEUE_AVAIL_LOW, ring.availGpa],
      [mmio.VIRTIO_MMIO_QUEUE_USED_LOW, ring.usedGpa],
    ];
    for (const [low, gpa] of pairs) {
      this.write32(low, gpa % 0x1_0000_0000);
      this.write32(low + 4, Math.floor(gpa / 0x1_0000_0000));
    }
    this.write32(mmio.VIRTIO_MMIO_QUEUE_READY, 1);
  }

  driverOk(): void {
    this.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
  }

  notify(queueIndex: number): void {
    this.write32(mmio.VIRTIO_MMIO_QUEUE_NOTIFY, queueIndex);
  }

  /** vm_interrupt(): read InterruptStatus, acknowledge it, return it. */
  handleInterrupt(): number {
    const status = this.read32(mmio.VIRTIO_MMIO_INTERRUPT_STATUS);
    if (status) this.write32(mmio.VIRTIO_MMIO_INTERRUPT_ACK, status);
    return status;
  }
}

export interface MmioHarnessOptions {
  readonly ramBytes?: number;
  readonly irq?: 'level' | 'edge';
  readonly ringFeatures?: bigint;
}

/** The ring features a Linux driver takes when offered. */
export const LINUX_RING_FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC);

/** A device behind virtio-mmio in recording guest RAM, with a driver, for end-to-end tests. */
/** Guest RAM and a bump allocator for a harness's rings and buffers, whatever the transport. */
export class HarnessRam {
  readonly memory: RecordingGuestMemory;
  readonly alloc: BumpAllocator;

  /** Rings and buffers are allocated in the first region, past its first page. */
  constructor(ram: ReadonlyArray<{ gpa: number; sizeBytes: number }>) {
    this.memory = new RecordingGuestMemory(ram);
    this.alloc = new BumpAllocator(ram[0]!.gpa + 0x1000, ram[0]!.gpa + ram[0]!.sizeBytes);
  }

  /** A guest buffer of `len` bytes, optionally filled. */
  buffer(len: number, fill = 0): Sg {
    const gpa = this.alloc.alloc(Math.max(len, 1), 16);
    this.memory.fill(gpa, Math.max(len, 1), fill);
    return { gpa, len };
  }

  /** A guest buffer holding `bytes`. */
  bytes(bytes: Uint8Array): Sg {
    const gpa = this.alloc.alloc(Math.max(bytes.length, 1), 16);
    this.memory.write(gpa, bytes);
    return { gpa, len: bytes.length };
  }

  read(sg: Sg): Uint8Array {
    return this.memory.read(sg.gpa, sg.len);
  }
}

export class MmioHarness extends HarnessRam {
  readonly transport: mmio.VirtioMmio;
  readonly driver: MmioDriver;
  /** Level changes of the interrupt line (or 1 per pulse in edge mode). */
  readonly irq: number[] = [];
  readonly errors: VirtioError[] = [];
  private irqLevel = 0;

  constructor(readonly device: VirtioDevice, options: MmioHarnessOptions = {}) {
    super([{ gpa: 0, sizeBytes: options.ramBytes ?? 1 << 20 }]);
    const irq: mmio.VirtioIrq = options.irq === 'edge'
      ? { trigger: 'edge', pulse: () => this.irq.push(1) }
      : { trigger: 'level', setLevel: (l) => { this.irqLevel = l; this.irq.push(l); } };
    this.transport = new mmio.VirtioMmio(device, {
      memory: this.memory, irq, onError: (e) => this.errors.push(e),
      ...(options.ringFeatures === undefined ? {} : { ringFeatures: options.ringFeatures }),
    });
    this.driver = new MmioDriver(this.transport);
  }

  /** The interrupt line is high (level mode). */
  get irqAsserted(): boolean {
    return this.irqLevel === 1;
  }

  /**
   * The Linux bring-up: negotiate `wanted` (default: every device bit plus the Linux ring bits),
   * one ring per queue (sizes default to QueueNumMax), DRIVER_OK. Rings use what was negotiated.
   */
  bringUp(options: { wanted?: bigint; queueSizes?: readonly number[] } = {}): SplitRingDriver[] {
    const features = this.driver.negotiate(options.wanted ?? (this.device.deviceFeatures | LINUX_RING_FEATURES));
    if (features === null) throw new Error('device refused the features');
    const rings = this.device.queueMaxSizes.map((max, i) => {
      const ring = new SplitRingDriver(this.memory, this.alloc, options.queueSizes?.[i] ?? max, {
        eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
        indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
      });
      this.driver.setupQueue(i, ring);
      return ring;
    });
    this.driver.driverOk();
    return rings;
  }

}

/** The request header a virtio-blk driver puts first (struct virtio_blk_outhdr), as Linux fills it. */
export function blkRequestHeader(type: number, sector: number | bigint): Uint8Array {
  const h = new Uint8Array(VIRTIO_BLK_OUTHDR.sizeBytes);
  const v = new DataView(h.buffer);
  v.setUint32(VIRTIO_BLK_OUTHDR.offsetOf('type'), type, true);
  v.setBigUint64(VIRTIO_BLK_OUTHDR.offsetOf('sector'), BigInt(sector), true);
  return h;
}

/** xorshift32 for the fuzz tests: small, fast, and the same sequence on every machine. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  u32(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s >>> 0;
    return this.s;
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.u32() % n;
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.u32() & 0xff);
  }
  /** A register value of `len` bytes, biased to the interesting ones: all-ones, 0, small. */
  value(len: number): number {
    const all = len === 4 ? 0xffff_ffff : (1 << (8 * len)) - 1;
    switch (this.int(5)) {
      case 0: return all;
      case 1: return 0;
      case 2: return this.int(8);
      default: return this.u32() & all;
    }
  }
}
