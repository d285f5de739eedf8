// The virtio-mmio transport, version 2 (modern): the register file a driver probes and programs,
// as a BusDevice wrapping any VirtioDevice. Spec: VIRTIO 1.2, 4.2 Virtio Over MMIO; register names
// as in Linux include/uapi/linux/virtio_mmio.h.
//
// It maps the register file onto the shared transport core (transport.ts: status state machine,
// feature negotiation, queue configuration) and turns device interrupts into InterruptStatus bits
// and an injected line. It does not know how the line
// reaches the guest (irqfd, an in-kernel IOAPIC pin) nor where it sits on the bus. It does not do
// the legacy (version 1) layout, shared memory regions, or VIRTIO_F_RING_RESET.
import type { BusDevice } from '../bus/bus.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  QUEUE_DESC_HIGH, QUEUE_DESC_LOW, QUEUE_DEVICE_HIGH, QUEUE_DEVICE_LOW, QUEUE_DRIVER_HIGH, QUEUE_DRIVER_LOW,
  VirtioTransportCore,
} from './transport.js';
import type { VirtioDevice } from './virtio.js';
import type { VirtioError } from './virtio-error.js';
import type { Virtqueue } from './virtqueue.js';

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
  private readonly core: VirtioTransportCore;
  private readonly irq: VirtioIrq;
  private readonly vendorId: number;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private interruptStatus = 0;
  private irqLevel: 0 | 1 = 0;

  constructor(readonly device: VirtioDevice, options: VirtioMmioOptions) {
    this.irq = options.irq;
    this.vendorId = options.vendorId ?? VIRTIO_MMIO_VENDOR_TSVMM;
    this.core = new VirtioTransportCore(device, {
      memory: options.memory,
      label: `virtio-mmio device ${device.deviceType}`,
      interrupts: {
        queue: () => this.raise(VIRTIO_MMIO_INT_VRING),
        config: () => this.raise(VIRTIO_MMIO_INT_CONFIG),
      },
      onError: options.onError,
      ...(options.ringFeatures === undefined ? {} : { ringFeatures: options.ringFeatures }),
    });
    this.queues = this.core.queues;
    this.offeredFeatures = this.core.offeredFeatures;
  }

  /** The device status byte as the driver reads it. */
  get deviceStatus(): number {
    return this.core.status;
  }

  get pendingInterrupts(): number {
    return this.interruptStatus;
  }

  get negotiatedFeatures(): bigint {
    return this.core.driverFeatures;
  }

  /**
   * A QueueNotify for `queueIndex` that did not come through write(): the VMM's ioeventfd on the
   * QueueNotify register took the guest's write in the hypervisor (no exit) and reports it here.
   * Same checks as the register write.
   */
  notifyQueue(queueIndex: number): void {
    this.core.notify(queueIndex & 0xffff);
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
      case VIRTIO_MMIO_DEVICE_FEATURES: return this.core.deviceFeatureWord(this.deviceFeaturesSel);
      case VIRTIO_MMIO_QUEUE_NUM_MAX: return this.selectedQueue()?.maxSize ?? 0;
      case VIRTIO_MMIO_QUEUE_READY: return this.selectedQueue()?.ready ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS: return this.interruptStatus;
      case VIRTIO_MMIO_STATUS: return this.core.status;
      // No shared memory regions: a length of all ones says "no such region" (4.2.2).
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffff_ffff;
      case VIRTIO_MMIO_CONFIG_GENERATION: return this.core.configGeneration;
      default: return 0; // write-only and reserved registers read as zero
    }
  }

  private writeRegister(offset: number, v: number): void {
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL: this.deviceFeaturesSel = v; return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL: this.driverFeaturesSel = v; return;
      case VIRTIO_MMIO_DRIVER_FEATURES: this.core.writeDriverFeatureWord(this.driverFeaturesSel, v); return;
      case VIRTIO_MMIO_QUEUE_SEL: this.queueSel = v; return;
      case VIRTIO_MMIO_QUEUE_NUM: this.core.writeQueueSize(this.queueSel, v); return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DESC_LOW, v); return;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DESC_HIGH, v); return;
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DRIVER_LOW, v); return;
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DRIVER_HIGH, v); return;
      case VIRTIO_MMIO_QUEUE_USED_LOW: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DEVICE_LOW, v); return;
      case VIRTIO_MMIO_QUEUE_USED_HIGH: this.core.writeQueueAddressWord(this.queueSel, QUEUE_DEVICE_HIGH, v); return;
      case VIRTIO_MMIO_QUEUE_READY: this.core.writeQueueReady(this.queueSel, (v & 1) === 1); return;
      case VIRTIO_MMIO_QUEUE_NOTIFY: this.core.notify(v & 0xffff); return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        this.interruptStatus &= ~v;
        this.updateIrqLevel();
        return;
      case VIRTIO_MMIO_STATUS:
        if ((v & 0xff) === 0) this.reset();
        else this.core.writeStatus(v);
        return;
      default: return; // read-only and reserved registers ignore writes
    }
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
    this.core.reset();
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.interruptStatus = 0;
    this.updateIrqLevel();
  }
}
