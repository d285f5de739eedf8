// virtio-blk: a disk of 512-byte sectors over an injected backend (a file, memory, anything that
// can read and write at an offset), synchronously or asynchronously. Spec: VIRTIO 1.2, 5.2 Block
// Device; names as in Linux include/uapi/linux/virtio_blk.h.
//
// Requests: IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES; every sector range is checked against
// the capacity before the backend sees it. A request that cannot even carry a status byte is a
// driver bug and sets DEVICE_NEEDS_RESET; everything else is answered with a status. What this
// will not do: multiqueue, CONFIG_WCE, zoned devices, secure erase, lifetime.
import { struct } from '../boot/struct.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_ID_BLOCK, featureBit, hasFeature, readConfigBytes, type VirtioDevice, type VirtioInterrupt } from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { DescriptorChain, type Virtqueue } from './virtqueue.js';

// 5.2.3 Feature bits
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// 5.2.6 Request types and status
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_ID_BYTES = 20;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** Sector unit of every virtio-blk offset and of capacity, whatever the block size. */
export const VIRTIO_BLK_SECTOR_BYTES = 512;

/** The request header the driver puts first (the spec's struct virtio_blk_req up to `data`). */
export const VIRTIO_BLK_OUTHDR = struct('struct virtio_blk_outhdr', 16, {
  type: [0, 'u32'],
  reserved: [4, 'u32'], // Linux: ioprio
  sector: [8, 'u64'],
});
export const VIRTIO_BLK_DISCARD_WRITE_ZEROES = struct('struct virtio_blk_discard_write_zeroes', 16, {
  sector: [0, 'u64'],
  num_sectors: [8, 'u32'],
  flags: [12, 'u32'],
});
export const VIRTIO_BLK_CONFIG = struct('struct virtio_blk_config', 96, {
  capacity: [0, 'u64'],
  size_max: [8, 'u32'],
  seg_max: [12, 'u32'],
  geometry_cylinders: [16, 'u16'],
  geometry_heads: [18, 'u8'],
  geometry_sectors: [19, 'u8'],
  blk_size: [20, 'u32'],
  physical_block_exp: [24, 'u8'],
  alignment_offset: [25, 'u8'],
  min_io_size: [26, 'u16'],
  opt_io_size: [28, 'u32'],
  writeback: [32, 'u8'],
  num_queues: [34, 'u16'],
  max_discard_sectors: [36, 'u32'],
  max_discard_seg: [40, 'u32'],
  discard_sector_alignment: [44, 'u32'],
  max_write_zeroes_sectors: [48, 'u32'],
  max_write_zeroes_seg: [52, 'u32'],
  write_zeroes_may_unmap: [56, 'u8'],
  max_secure_erase_sectors: [60, 'u32'],
  max_secure_erase_seg: [64, 'u32'],
  secure_erase_sector_alignment: [68, 'u32'],
  zoned: [72, { bytes: 24 }],
});

export const VIRTIO_BLK_QUEUE_SIZE = 256;
/** Segments per DISCARD / WRITE_ZEROES request we accept (config max_discard_seg, max_write_zeroes_seg). */
export const VIRTIO_BLK_MAX_DISCARD_SEGMENTS = 32;
/** Sectors per DISCARD / WRITE_ZEROES segment (config max_*_sectors): 2 GiB - 512. */
export const VIRTIO_BLK_MAX_DISCARD_SECTORS = 0x3f_ffff;

/**
 * What a backend call returns: nothing when it finished synchronously, a promise when it will
 * finish later. Throwing or rejecting fails the request with VIRTIO_BLK_S_IOERR.
 */
export type BlockIoResult = void | Promise<void>;

/**
 * The storage under a virtio-blk device. Offsets and lengths are in bytes and already checked
 * against `sizeBytes`. Buffers are views of guest RAM: use them until the call finishes, never
 * after (nor the array holding them, which the device reuses).
 */
export interface BlockBackend {
  /** The disk size; the guest sees floor(sizeBytes / 512) sectors. */
  readonly sizeBytes: number;
  /** Fills `buffers`, in order, from the disk at `offsetBytes`. */
  readv(offsetBytes: number, buffers: readonly Uint8Array[]): BlockIoResult;
  /** Writes `buffers`, in order, to the disk at `offsetBytes`. */
  writev(offsetBytes: number, buffers: readonly Uint8Array[]): BlockIoResult;
  /** Makes completed writes durable. Without it VIRTIO_BLK_F_FLUSH is not offered. */
  flush?(): BlockIoResult;
  /** The range's contents become undefined. Without it VIRTIO_BLK_F_DISCARD is not offered. */
  discard?(offsetBytes: number, lengthBytes: number): BlockIoResult;
  /** The range reads as zeros. Without it VIRTIO_BLK_F_WRITE_ZEROES is not offered. */
  writeZeroes?(offsetBytes: number, lengthBytes: number, mayUnmap: boolean): BlockIoResult;
}

export interface VirtioBlockOptions {
  readonly backend: BlockBackend;
  /** Refuse writes with VIRTIO_BLK_S_IOERR and offer VIRTIO_BLK_F_RO. */
  readonly readonly?: boolean;
  /** GET_ID answer: up to 20 ASCII bytes. */
  readonly serial?: string;
  readonly queueSize?: number;
}

const OUTHDR_BYTES = VIRTIO_BLK_OUTHDR.sizeBytes;
const OUTHDR_TYPE = VIRTIO_BLK_OUTHDR.offsetOf('type');
const OUTHDR_SECTOR = VIRTIO_BLK_OUTHDR.offsetOf('sector');
const SEGMENT_BYTES = VIRTIO_BLK_DISCARD_WRITE_ZEROES.sizeBytes;
const SEGMENT_SECTOR = VIRTIO_BLK_DISCARD_WRITE_ZEROES.offsetOf('sector');
const SEGMENT_NUM_SECTORS = VIRTIO_BLK_DISCARD_WRITE_ZEROES.offsetOf('num_sectors');
const SEGMENT_FLAGS = VIRTIO_BLK_DISCARD_WRITE_ZEROES.offsetOf('flags');

function isPromise(r: BlockIoResult): r is Promise<void> {
  return r !== undefined && typeof (r as Promise<void>).then === 'function';
}

/** One request from pop to completion; pooled so the sync path allocates nothing of its own. */
class BlockRequest {
  readonly chain = new DescriptorChain();
  /** IN / OUT data buffers handed to the backend (views of guest RAM). */
  readonly data: Uint8Array[] = [];
  offsetBytes = 0;
  /** DISCARD / WRITE_ZEROES segments, copied out of guest RAM before they are checked. */
  readonly segmentOffsetBytes = new Float64Array(VIRTIO_BLK_MAX_DISCARD_SEGMENTS);
  readonly segmentLengthBytes = new Float64Array(VIRTIO_BLK_MAX_DISCARD_SEGMENTS);
  readonly segmentUnmap = new Uint8Array(VIRTIO_BLK_MAX_DISCARD_SEGMENTS);
  type = 0;
  /** Backend calls this request makes (one, or one per segment) and how many were started. */
  stepCount = 0;
  nextStep = 0;
  /** Bytes written into writable buffers on success, the status byte included. */
  usedBytes = 1;
  /** The device generation it was popped in: a completion after reset() is dropped. */
  generation = 0;
  /** Promise callbacks, made once per pooled request so an async completion allocates no closure of ours. */
  readonly onDone: () => void;
  readonly onFail: () => void;

  constructor(readonly id: number, onDone: (r: BlockRequest) => void, onFail: (r: BlockRequest) => void) {
    this.onDone = () => onDone(this);
    this.onFail = () => onFail(this);
  }
}

/** prepare() result: the request goes to the backend. */
const RUN_BACKEND = -1;

export class VirtioBlock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSizeBytes = VIRTIO_BLK_CONFIG.sizeBytes;
  readonly capacitySectors: number;
  readonly readonly: boolean;
  private readonly backend: BlockBackend;
  private readonly config = new Uint8Array(VIRTIO_BLK_CONFIG.sizeBytes);
  private readonly id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  private readonly header = new Uint8Array(OUTHDR_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly segment = new Uint8Array(SEGMENT_BYTES);
  private readonly segmentView = new DataView(this.segment.buffer);
  private readonly statusByte = new Uint8Array(1);
  private queue: Virtqueue | null = null;
  private memory: GuestMemory | null = null;
  private interrupt: VirtioInterrupt | null = null;
  private broken = false;
  /** every write is flushed before it completes: the driver did not negotiate VIRTIO_BLK_F_FLUSH */
  private writethrough = false;
  private generation = 0;
  private pool: BlockRequest[] = [];
  private free: number[] = [];
  /** Inside drain(): completions defer the interrupt decision to the end of the batch. */
  private draining = false;
  /** Used entries pushed since the last interrupt decision. */
  private unsignalled = false;
  /** drain() stopped because every pooled request was in flight. */
  private starved = false;

  constructor(options: VirtioBlockOptions) {
    const b = options.backend;
    this.backend = b;
    this.readonly = options.readonly ?? false;
    this.capacitySectors = Math.floor(b.sizeBytes / VIRTIO_BLK_SECTOR_BYTES);
    const queueSize = options.queueSize ?? VIRTIO_BLK_QUEUE_SIZE;
    this.queueMaxSizes = [queueSize];

    let features = featureBit(VIRTIO_BLK_F_SEG_MAX);
    if (this.readonly) features |= featureBit(VIRTIO_BLK_F_RO);
    if (b.flush) features |= featureBit(VIRTIO_BLK_F_FLUSH);
    if (b.discard && !this.readonly) features |= featureBit(VIRTIO_BLK_F_DISCARD);
    if (b.writeZeroes && !this.readonly) features |= featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.deviceFeatures = features;

    const c = this.config;
    VIRTIO_BLK_CONFIG.set(c, 0, 'capacity', this.capacitySectors);
    // Header and status take a descriptor each when the driver does not use indirect tables.
    VIRTIO_BLK_CONFIG.set(c, 0, 'seg_max', Math.max(1, queueSize - 2));
    VIRTIO_BLK_CONFIG.set(c, 0, 'num_queues', 1);
    VIRTIO_BLK_CONFIG.set(c, 0, 'max_discard_sectors', VIRTIO_BLK_MAX_DISCARD_SECTORS);
    VIRTIO_BLK_CONFIG.set(c, 0, 'max_discard_seg', VIRTIO_BLK_MAX_DISCARD_SEGMENTS);
    VIRTIO_BLK_CONFIG.set(c, 0, 'discard_sector_alignment', 1);
    VIRTIO_BLK_CONFIG.set(c, 0, 'max_write_zeroes_sectors', VIRTIO_BLK_MAX_DISCARD_SECTORS);
    VIRTIO_BLK_CONFIG.set(c, 0, 'max_write_zeroes_seg', VIRTIO_BLK_MAX_DISCARD_SEGMENTS);
    VIRTIO_BLK_CONFIG.set(c, 0, 'write_zeroes_may_unmap', 1);

    const serial = options.serial ?? '';
    if (serial.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(serial)) {
      throw new RangeError(`virtio-blk serial "${serial}" must be printable ASCII of at most ${VIRTIO_BLK_ID_BYTES} characters`);
    }
    for (let i = 0; i < serial.length; i++) this.id[i] = serial.charCodeAt(i);
  }

  /** Requests handed to the backend and not finished yet. */
  get inFlight(): number {
    return this.pool.length - this.free.length;
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config, offset, data);
  }

  writeConfig(): void {
    // Nothing is writable without VIRTIO_BLK_F_CONFIG_WCE.
  }

  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt, driverFeatures: bigint): void {
    this.generation++;
    // 5.2.5: a driver that did not negotiate VIRTIO_BLK_F_FLUSH cannot ask for durability, so the
    // device must give it on every write (writethrough), as QEMU does.
    this.writethrough = this.backend.flush !== undefined && !hasFeature(driverFeatures, VIRTIO_BLK_F_FLUSH);
    this.queue = queues[0]!;
    this.memory = memory;
    this.interrupt = interrupt;
    this.broken = false;
    this.starved = false;
    this.unsignalled = false;
    // In flight at once: one request per descriptor head of the largest queue the driver may pick
    // (the driver's size is not checked yet if the queue is not ready). A fresh pool per
    // activation, so a request still in an old backend call is never reused.
    const n = this.queueMaxSizes[0]!;
    this.pool = Array.from({ length: n }, (_, i) => new BlockRequest(i, this.runSteps, this.failStep));
    this.free = this.pool.map((r) => r.id).reverse();
  }

  /**
   * Forgets the queue. Requests still in a backend complete into nothing: their status is never
   * written and no used entry appears (the backend may still fill their data buffers).
   */
  reset(): void {
    this.generation++;
    this.queue = null;
    this.memory = null;
    this.interrupt = null;
    this.broken = false;
    this.pool = [];
    this.free = [];
  }

  notify(queueIndex: number): void {
    if (queueIndex === 0) this.drain();
  }

  private fail(e: unknown): void {
    if (!(e instanceof VirtioError)) throw e;
    this.broken = true;
    this.interrupt?.needsReset(e);
  }

  private drain(): void {
    const q = this.queue;
    const memory = this.memory;
    if (!q || !memory || this.broken || this.draining) return;
    this.draining = true;
    try {
      outer: do {
        q.disableNotification(memory);
        for (;;) {
          const id = this.free.pop();
          if (id === undefined) {
            // Every request is in a backend: a completion calls drain() again.
            this.starved = true;
            break outer;
          }
          const req = this.pool[id]!;
          if (!q.popInto(memory, req.chain)) {
            this.free.push(id);
            break;
          }
          req.generation = this.generation;
          this.start(req);
          if (this.broken) break outer;
        }
      } while (q.enableNotification(memory));
    } catch (e) {
      this.fail(e);
    } finally {
      this.draining = false;
    }
    this.signal();
  }

  /** Parses a popped request and hands it to the backend, or answers it at once. */
  private start(req: BlockRequest): void {
    const status = this.prepare(req);
    if (status === RUN_BACKEND) this.runSteps(req);
    else this.finishRequest(req, status);
  }

  /** Checks a request and sets up its backend steps; a status when it is answered without the backend. */
  private prepare(req: BlockRequest): number {
    const c = req.chain;
    if (c.readableBytes < OUTHDR_BYTES || c.writableBytes < 1) {
      throw new VirtioError('bad-request', `virtio-blk: request ${c.head} has ${c.readableBytes} readable and ${c.writableBytes} writable bytes; it needs a ${OUTHDR_BYTES}-byte header and a status byte; the driver must reset the device`);
    }
    c.readInto(0, this.header);
    const type = this.headerView.getUint32(OUTHDR_TYPE, true);
    const sector = this.headerView.getUint32(OUTHDR_SECTOR, true) + this.headerView.getUint32(OUTHDR_SECTOR + 4, true) * 0x1_0000_0000;
    req.type = type;
    req.usedBytes = 1;
    req.stepCount = 1;
    req.nextStep = 0;
    req.data.length = 0;
    const b = this.backend;
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const bytes = c.writableBytes - 1;
        if (!this.rangeOk(sector, bytes)) return VIRTIO_BLK_S_IOERR;
        c.writableViews(0, bytes, req.data);
        req.offsetBytes = sector * VIRTIO_BLK_SECTOR_BYTES;
        req.usedBytes = bytes + 1;
        return RUN_BACKEND;
      }
      case VIRTIO_BLK_T_OUT: {
        const bytes = c.readableBytes - OUTHDR_BYTES;
        if (this.readonly || !this.rangeOk(sector, bytes)) return VIRTIO_BLK_S_IOERR;
        c.readableViews(OUTHDR_BYTES, bytes, req.data);
        req.offsetBytes = sector * VIRTIO_BLK_SECTOR_BYTES;
        if (this.writethrough) req.stepCount = 2; // the write, then a flush before completion
        return RUN_BACKEND;
      }
      case VIRTIO_BLK_T_FLUSH:
        return b.flush ? RUN_BACKEND : VIRTIO_BLK_S_UNSUPP;
      case VIRTIO_BLK_T_GET_ID: {
        // 5.2.6: 20 bytes, NUL-padded; a shorter buffer gets what fits.
        const n = c.writeFrom(0, this.id.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, c.writableBytes - 1)));
        req.usedBytes = n + 1;
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        if (!(type === VIRTIO_BLK_T_DISCARD ? b.discard : b.writeZeroes)) return VIRTIO_BLK_S_UNSUPP;
        if (this.readonly) return VIRTIO_BLK_S_IOERR;
        return this.parseSegments(req);
      default:
        return VIRTIO_BLK_S_UNSUPP;
    }
  }

  /** `bytes` at `sector` is whole sectors inside the disk. */
  private rangeOk(sector: number, bytes: number): boolean {
    return bytes % VIRTIO_BLK_SECTOR_BYTES === 0 && sector <= this.capacitySectors - bytes / VIRTIO_BLK_SECTOR_BYTES;
  }

  /** Copies every segment out of guest RAM and checks it before any is executed. */
  private parseSegments(req: BlockRequest): number {
    const c = req.chain;
    const payload = c.readableBytes - OUTHDR_BYTES;
    const count = payload / SEGMENT_BYTES;
    if (payload === 0 || !Number.isInteger(count) || count > VIRTIO_BLK_MAX_DISCARD_SEGMENTS) return VIRTIO_BLK_S_IOERR;
    const v = this.segmentView;
    // 5.2.6.2: DISCARD takes no flags, WRITE_ZEROES only UNMAP; anything else is unsupported.
    const allowedFlags = req.type === VIRTIO_BLK_T_WRITE_ZEROES ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
    for (let i = 0; i < count; i++) {
      c.readInto(OUTHDR_BYTES + i * SEGMENT_BYTES, this.segment);
      const sector = v.getUint32(SEGMENT_SECTOR, true) + v.getUint32(SEGMENT_SECTOR + 4, true) * 0x1_0000_0000;
      const sectors = v.getUint32(SEGMENT_NUM_SECTORS, true);
      const flags = v.getUint32(SEGMENT_FLAGS, true);
      if (flags & ~allowedFlags) return VIRTIO_BLK_S_UNSUPP;
      if (sectors > VIRTIO_BLK_MAX_DISCARD_SECTORS || sector > this.capacitySectors - sectors) return VIRTIO_BLK_S_IOERR;
      req.segmentOffsetBytes[i] = sector * VIRTIO_BLK_SECTOR_BYTES;
      req.segmentLengthBytes[i] = sectors * VIRTIO_BLK_SECTOR_BYTES;
      req.segmentUnmap[i] = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    }
    req.stepCount = count;
    return RUN_BACKEND;
  }

  /**
   * Runs the request's remaining backend calls one after another, waiting for async ones (a
   * promise's resolution comes back here); finishes the request when none is left.
   */
  private readonly runSteps = (req: BlockRequest): void => {
    if (req.generation !== this.generation) return; // popped before a reset
    while (req.nextStep < req.stepCount) {
      const i = req.nextStep++;
      let result: BlockIoResult;
      try {
        result = this.invoke(req, i);
      } catch {
        // A backend that throws fails the request, not the device.
        this.finishRequest(req, VIRTIO_BLK_S_IOERR);
        return;
      }
      if (isPromise(result)) {
        result.then(req.onDone, req.onFail);
        return;
      }
    }
    this.finishRequest(req, VIRTIO_BLK_S_OK);
  };

  private readonly failStep = (req: BlockRequest): void => {
    this.finishRequest(req, VIRTIO_BLK_S_IOERR);
  };

  private invoke(req: BlockRequest, step: number): BlockIoResult {
    const b = this.backend;
    switch (req.type) {
      case VIRTIO_BLK_T_IN: return b.readv(req.offsetBytes, req.data);
      case VIRTIO_BLK_T_OUT: return step === 0 ? b.writev(req.offsetBytes, req.data) : b.flush!();
      case VIRTIO_BLK_T_FLUSH: return b.flush!();
      case VIRTIO_BLK_T_DISCARD: return b.discard!(req.segmentOffsetBytes[step]!, req.segmentLengthBytes[step]!);
      default: return b.writeZeroes!(req.segmentOffsetBytes[step]!, req.segmentLengthBytes[step]!, req.segmentUnmap[step] === 1);
    }
  }

  /** Writes the status byte, returns the chain to the driver, and frees the request. */
  private finishRequest(req: BlockRequest, status: number): void {
    if (req.generation !== this.generation) return; // popped before a reset: its rings are gone
    const q = this.queue;
    const memory = this.memory;
    req.data.length = 0;
    if (!q || !memory || this.broken) return;
    const c = req.chain;
    this.statusByte[0] = status;
    c.writeFrom(c.writableBytes - 1, this.statusByte);
    try {
      q.pushUsed(memory, c.head, status === VIRTIO_BLK_S_OK ? req.usedBytes : 1);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.free.push(req.id);
    this.unsignalled = true;
    if (this.draining) return;
    this.signal();
    if (this.starved) {
      this.starved = false;
      this.drain();
    }
  }

  private signal(): void {
    const q = this.queue;
    const memory = this.memory;
    if (!this.unsignalled || !q || !memory || !this.interrupt || this.broken) return;
    this.unsignalled = false;
    try {
      if (q.needsNotification(memory)) this.interrupt.usedBuffer(0);
    } catch (e) {
      this.fail(e);
    }
  }
}
