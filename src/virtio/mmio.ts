// The virtio-mmio transport, version 2 (modern): the register file a driver probes and programs,
// as a BusDevice wrapping any VirtioDevice. Spec: VIRTIO 1.2, 4.2 Virtio Over MMIO; register names
// as in Linux include/uapi/linux/virtio_mmio.h.
//
// It owns the status state machine, feature negotiation and queue configuration, and turns device
// interrupts into InterruptStatus bits and an injected line. It does not know how the line
// reaches the guest (irqfd, an in-kernel IOAPIC pin) nor where it sits on the bus. It does not do
// the legacy (version 1) layout, shared memory regions, or VIRTIO_F_RING_RESET.
import type { BusDevice } from '../bus/bus.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1, featureBit, hasFeature,
  type VirtioDevice, type VirtioInterrupt,
} from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { VIRTQUEUE_FEATURES, Virtqueue } from './virtqueue.js';

// ---- 4.2.2 MMIO Device Register Layout (byte offsets) ----
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090; // the spec's QueueDriverLow
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0; // the spec's QueueDeviceLow
export const VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
export const VIRTIO_MMIO_CONFIG = 0x100;

/** "virt" in little-endian ASCII. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
export const VIRTIO_MMIO_VERSION_MODERN = 2;
// InterruptStatus bits
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

/** What a board reserves per device (Linux's virtio_mmio.device=0x200@...; 0x100 registers + config). */
export const VIRTIO_MMIO_SIZE_BYTES = 0x200;
/** Our vendor ID: "TSVM" as little-endian ASCII (QEMU reports "QEMU" the same way). */
export const VIRTIO_MMIO_VENDOR_TSVMM = 0x4d565354;

/**
 * Where the transport's interrupt goes. `level`: the line follows InterruptStatus != 0 (an
 * in-kernel IOAPIC pin, or irqfd with a resample fd). `edge`: one pulse per new interrupt (irqfd
 * without resampling); the driver reads InterruptStatus, so extra pulses are harmless.
 */
export type VirtioIrq =
  | { readonly trigger: 'level'; setLevel(level: 0 | 1): void }
  | { readonly trigger: 'edge'; pulse(): void };

export interface VirtioMmioOptions {
  /** Guest RAM the rings and buffers live in. */
  readonly memory: GuestMemory;
  readonly irq: VirtioIrq;
  readonly vendorId?: number;
  /** Ring features offered on top of the device's (default: all that Virtqueue supports). */
  readonly ringFeatures?: bigint;
  /** Called when the driver breaks the rules (the device then shows DEVICE_NEEDS_RESET), for logs. */
  readonly onError?: (error: VirtioError) => void;
}

const REGISTER_ACCESS_BYTES = 4;

export class VirtioMmio implements BusDevice {
  readonly queues: readonly Virtqueue[];
  /** Everything the driver may accept: the device's bits, the ring bits, VIRTIO_F_VERSION_1. */
  readonly offeredFeatures: bigint;
  private readonly memory: GuestMemory;
  private readonly irq: VirtioIrq;
  private readonly vendorId: number;
  private readonly onError: ((error: VirtioError) => void) | undefined;
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private interruptStatus = 0;
  private irqLevel: 0 | 1 = 0;
  private configGeneration = 0;
  /** Bumped by every reset: interrupts from an older activation are dropped. */
  private epoch = 0;
  private deviceActive = false;
  // The driver writes ring addresses as 32-bit halves; kept apart until a queue is made ready.
  private readonly queueAddr: Uint32Array;

  constructor(readonly device: VirtioDevice, options: VirtioMmioOptions) {
    this.memory = options.memory;
    this.irq = options.irq;
    this.vendorId = options.vendorId ?? VIRTIO_MMIO_VENDOR_TSVMM;
    this.onError = options.onError;
    this.offeredFeatures = device.deviceFeatures | (options.ringFeatures ?? VIRTQUEUE_FEATURES) | featureBit(VIRTIO_F_VERSION_1);
    this.queues = device.queueMaxSizes.map((max, i) => new Virtqueue(i, max));
    this.queueAddr = new Uint32Array(this.queues.length * 6);
  }

  /** The device status byte as the driver reads it. */
  get deviceStatus(): number {
    return this.status;
  }

  get pendingInterrupts(): number {
    return this.interruptStatus;
  }

  get negotiatedFeatures(): bigint {
    return this.driverFeatures;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.configAccess(offset - VIRTIO_MMIO_CONFIG, data, false);
      return;
    }
    data.fill(0);
    if (data.length !== REGISTER_ACCESS_BYTES || offset % REGISTER_ACCESS_BYTES !== 0) return; // 4.2.2: 32-bit accesses only
    const v = this.readRegister(offset) >>> 0;
    data[0] = v;
    data[1] = v >>> 8;
    data[2] = v >>> 16;
    data[3] = v >>> 24;
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.configAccess(offset - VIRTIO_MMIO_CONFIG, data, true);
      return;
    }
    if (data.length !== REGISTER_ACCESS_BYTES || offset % REGISTER_ACCESS_BYTES !== 0) return;
    const v = (data[0]! | data[1]! << 8 | data[2]! << 16 | data[3]! << 24) >>> 0;
    this.writeRegister(offset, v);
  }

  private configAccess(offset: number, data: Uint8Array, isWrite: boolean): void {
    if (offset + data.length > this.device.configSizeBytes) {
      if (!isWrite) data.fill(0);
      return;
    }
    if (isWrite) this.device.writeConfig(offset, data);
    else this.device.readConfig(offset, data);
  }

  private selectedQueue(): Virtqueue | undefined {
    return this.queues[this.queueSel];
  }

  private readRegister(offset: number): number {
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION: return VIRTIO_MMIO_VERSION_MODERN;
      case VIRTIO_MMIO_DEVICE_ID: return this.device.deviceType;
      case VIRTIO_MMIO_VENDOR_ID: return this.vendorId;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn);
      case VIRTIO_MMIO_QUEUE_NUM_MAX: return this.selectedQueue()?.maxSize ?? 0;
      case VIRTIO_MMIO_QUEUE_READY: return this.selectedQueue()?.ready ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS: return this.interruptStatus;
      case VIRTIO_MMIO_STATUS: return this.status;
      // No shared memory regions: a length of all ones says "no such region" (4.2.2).
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffff_ffff;
      case VIRTIO_MMIO_CONFIG_GENERATION: return this.configGeneration;
      default: return 0; // write-only and reserved registers read as zero
    }
  }

  private writeRegister(offset: number, v: number): void {
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL: this.deviceFeaturesSel = v; return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL: this.driverFeaturesSel = v; return;
      case VIRTIO_MMIO_DRIVER_FEATURES: this.writeDriverFeatures(v); return;
      case VIRTIO_MMIO_QUEUE_SEL: this.queueSel = v; return;
      case VIRTIO_MMIO_QUEUE_NUM: {
        const q = this.selectedQueue();
        if (q && !q.ready) q.size = v; // checked when the queue is activated
        return;
      }
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      case VIRTIO_MMIO_QUEUE_USED_LOW:
      case VIRTIO_MMIO_QUEUE_USED_HIGH:
        this.writeQueueAddress(offset, v);
        return;
      case VIRTIO_MMIO_QUEUE_READY: this.writeQueueReady(v); return;
      case VIRTIO_MMIO_QUEUE_NOTIFY: this.queueNotify(v); return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        this.interruptStatus &= ~v;
        this.updateIrqLevel();
        return;
      case VIRTIO_MMIO_STATUS: this.writeStatus(v); return;
      default: return; // read-only and reserved registers ignore writes
    }
  }

  private writeDriverFeatures(v: number): void {
    // Only between DRIVER and FEATURES_OK (3.1.1 steps 3-5); the driver cannot change its mind later.
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER) || this.status & VIRTIO_CONFIG_S_FEATURES_OK) return;
    if (this.driverFeaturesSel > 1) return;
    const shift = BigInt(32 * this.driverFeaturesSel);
    this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(v) << shift);
  }

  private writeQueueAddress(offset: number, v: number): void {
    const q = this.selectedQueue();
    if (!q || q.ready) return; // 4.2.2.2: not while the queue is ready
    // [desc low, desc high, avail low, avail high, used low, used high] per queue
    const base = q.index * 6;
    this.queueAddr[base + ((offset - VIRTIO_MMIO_QUEUE_DESC_LOW) >> 4) * 2 + ((offset >> 2) & 1)] = v;
    // A high word above 0x1fffff makes an inexact number, but one far beyond RAM: activate() refuses it.
    const a = this.queueAddr;
    q.descTableGpa = a[base + 1]! * 0x1_0000_0000 + a[base]!;
    q.availRingGpa = a[base + 3]! * 0x1_0000_0000 + a[base + 2]!;
    q.usedRingGpa = a[base + 5]! * 0x1_0000_0000 + a[base + 4]!;
  }

  private writeQueueReady(v: number): void {
    const q = this.selectedQueue();
    if (!q) return;
    const ready = (v & 1) === 1;
    if (ready === q.ready) return;
    q.ready = ready;
    if (!ready) {
      q.deactivate();
      return;
    }
    // A queue made ready after DRIVER_OK starts at once; before, it starts with the device.
    if (this.deviceActive && !(this.status & VIRTIO_CONFIG_S_NEEDS_RESET)) {
      try {
        q.activate(this.memory, this.driverFeatures);
      } catch (e) {
        if (!(e instanceof VirtioError)) throw e;
        this.setNeedsReset(e);
      }
    }
  }

  /**
   * A QueueNotify for `queueIndex` that did not come through write(): the VMM's ioeventfd on the
   * QueueNotify register took the guest's write in the hypervisor (no exit) and reports it here.
   * Same checks as the register write.
   */
  notifyQueue(queueIndex: number): void {
    this.queueNotify(queueIndex);
  }

  private queueNotify(v: number): void {
    if (!this.deviceActive || this.status & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    const q = this.queues[v & 0xffff];
    if (q?.isActive) this.device.notify(q.index);
  }

  private writeStatus(v: number): void {
    v &= 0xff;
    if (v === 0) {
      this.reset();
      return;
    }
    // Bits only accumulate until reset (the driver MUST NOT clear one), and NEEDS_RESET is ours.
    const old = this.status;
    let next = old | (v & ~VIRTIO_CONFIG_S_NEEDS_RESET);
    if (next & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      const problem = this.featureProblem(next);
      if (problem) {
        // 3.1.1 step 6: the driver re-reads status, sees FEATURES_OK clear, and gives up.
        next &= ~VIRTIO_CONFIG_S_FEATURES_OK;
        this.onError?.(new VirtioError('features', problem));
      }
    }
    if (next & VIRTIO_CONFIG_S_DRIVER_OK && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) {
      if (!(next & VIRTIO_CONFIG_S_FEATURES_OK)) {
        next &= ~VIRTIO_CONFIG_S_DRIVER_OK;
        this.onError?.(new VirtioError('status', `virtio-mmio device ${this.device.deviceType}: DRIVER_OK written before FEATURES_OK was accepted; the driver must reset the device`));
      } else {
        this.status = next;
        this.activateDevice();
        return;
      }
    }
    this.status = next;
  }

  private featureProblem(status: number): string | null {
    const dev = `virtio-mmio device ${this.device.deviceType}`;
    if (!(status & VIRTIO_CONFIG_S_DRIVER)) return `${dev}: FEATURES_OK written before DRIVER; the driver must reset the device`;
    const extra = this.driverFeatures & ~this.offeredFeatures;
    if (extra !== 0n) return `${dev}: driver accepted features 0x${extra.toString(16)} the device did not offer (offered 0x${this.offeredFeatures.toString(16)})`;
    if (!hasFeature(this.driverFeatures, VIRTIO_F_VERSION_1)) return `${dev}: driver did not accept VIRTIO_F_VERSION_1, which a version 2 virtio-mmio device requires (legacy drivers are not supported)`;
    return null;
  }

  private activateDevice(): void {
    try {
      for (const q of this.queues) if (q.ready) q.activate(this.memory, this.driverFeatures);
    } catch (e) {
      if (!(e instanceof VirtioError)) throw e;
      this.setNeedsReset(e);
      return;
    }
    this.deviceActive = true;
    this.device.activate(this.queues, this.memory, this.interruptFor(this.epoch), this.driverFeatures);
  }

  /** The device's way out, bound to one activation: after a reset its calls do nothing. */
  private interruptFor(epoch: number): VirtioInterrupt {
    const live = () => epoch === this.epoch;
    return {
      usedBuffer: () => {
        if (live() && !(this.status & VIRTIO_CONFIG_S_NEEDS_RESET)) this.raise(VIRTIO_MMIO_INT_VRING);
      },
      configChanged: () => {
        if (!live()) return;
        this.configGeneration = (this.configGeneration + 1) >>> 0;
        if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
      },
      needsReset: (error) => {
        if (live()) this.setNeedsReset(error);
      },
    };
  }

  private setNeedsReset(error: VirtioError): void {
    const already = (this.status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    if (already) return;
    this.onError?.(error);
    // 2.1.2: with DRIVER_OK set, the device sends a configuration change notification.
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private raise(bits: number): void {
    this.interruptStatus |= bits;
    if (this.irq.trigger === 'edge') this.irq.pulse();
    else this.updateIrqLevel();
  }

  private updateIrqLevel(): void {
    if (this.irq.trigger !== 'level') return;
    const level: 0 | 1 = this.interruptStatus !== 0 ? 1 : 0;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.setLevel(level);
    }
  }

  /** Writing 0 to Status (4.2.3.1): everything back to power-on, the device included. */
  reset(): void {
    this.epoch++;
    this.deviceActive = false;
    this.device.reset();
    for (const q of this.queues) q.reset();
    this.queueAddr.fill(0);
    this.status = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.interruptStatus = 0;
    this.updateIrqLevel();
  }
}
