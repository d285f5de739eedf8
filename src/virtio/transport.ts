// What every virtio transport does the same way, whatever its registers look like: the device
// status state machine, feature negotiation, queue configuration, activation of the Virtqueues and
// the device, DEVICE_NEEDS_RESET, and interrupts bound to one activation. Spec: VIRTIO 1.2, 2.1
// Device Status Field, 2.2 Feature Bits, 3.1 Device Initialization, 2.4 Device Reset.
//
// virtio-mmio (mmio.ts) and virtio-pci (pci.ts) each keep one of these and map their register
// file onto it; how an interrupt reaches the driver (InterruptStatus and a line, ISR and MSI-X
// vectors) stays in the transport, through `TransportInterrupts`. This does not decode registers,
// hold selectors (feature select, queue select) or know any bus.
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1, featureBit, hasFeature,
  type VirtioDevice, type VirtioInterrupt,
} from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { VIRTQUEUE_FEATURES, Virtqueue } from './virtqueue.js';

/** How the transport tells the driver; the core calls these only for a live activation. */
export interface TransportInterrupts {
  /** Queue `queueIndex` has used buffers the driver asked to hear about. */
  queue(queueIndex: number): void;
  /** The configuration changed, or the device needs reset (2.1.2). */
  config(): void;
}

export interface VirtioTransportCoreOptions {
  readonly memory: GuestMemory;
  /** "virtio-mmio device 4", for messages. */
  readonly label: string;
  readonly interrupts: TransportInterrupts;
  /** Ring features offered on top of the device's (default: all that Virtqueue supports). */
  readonly ringFeatures?: bigint;
  readonly onError?: ((error: VirtioError) => void) | undefined;
}

/** Index of each 32-bit half of a queue's ring addresses, as the driver writes them. */
export const QUEUE_DESC_LOW = 0;
export const QUEUE_DESC_HIGH = 1;
export const QUEUE_DRIVER_LOW = 2;
export const QUEUE_DRIVER_HIGH = 3;
export const QUEUE_DEVICE_LOW = 4;
export const QUEUE_DEVICE_HIGH = 5;
const QUEUE_ADDRESS_WORDS = 6;

export class VirtioTransportCore {
  readonly queues: readonly Virtqueue[];
  /** Everything the driver may accept: the device's bits, the ring bits, VIRTIO_F_VERSION_1. */
  readonly offeredFeatures: bigint;
  private readonly memory: GuestMemory;
  private readonly label: string;
  private readonly interrupts: TransportInterrupts;
  private readonly onError: ((error: VirtioError) => void) | undefined;
  private statusByte = 0;
  private driverFeatureBits = 0n;
  private generation = 0;
  /** Bumped by every reset: interrupts from an older activation are dropped. */
  private epoch = 0;
  private deviceActive = false;
  // The driver writes ring addresses as 32-bit halves; kept apart until a queue is made ready.
  private readonly queueAddr: Uint32Array;

  constructor(readonly device: VirtioDevice, options: VirtioTransportCoreOptions) {
    this.memory = options.memory;
    this.label = options.label;
    this.interrupts = options.interrupts;
    this.onError = options.onError;
    this.offeredFeatures = device.deviceFeatures | (options.ringFeatures ?? VIRTQUEUE_FEATURES) | featureBit(VIRTIO_F_VERSION_1);
    this.queues = device.queueMaxSizes.map((max, i) => new Virtqueue(i, max));
    this.queueAddr = new Uint32Array(this.queues.length * QUEUE_ADDRESS_WORDS);
  }

  /** The device status byte as the driver reads it. */
  get status(): number {
    return this.statusByte;
  }

  get driverFeatures(): bigint {
    return this.driverFeatureBits;
  }

  /** Bumped on every configuration change (the transports show its low 8 or 32 bits). */
  get configGeneration(): number {
    return this.generation;
  }

  get needsReset(): boolean {
    return (this.statusByte & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
  }

  /** DRIVER_OK was accepted and the device is running (it may still need reset). */
  get active(): boolean {
    return this.deviceActive;
  }

  /** 32-bit word `select` of the offered features; zero past bit 63. */
  deviceFeatureWord(select: number): number {
    return select > 1 ? 0 : Number((this.offeredFeatures >> BigInt(32 * select)) & 0xffff_ffffn);
  }

  driverFeatureWord(select: number): number {
    return select > 1 ? 0 : Number((this.driverFeatureBits >> BigInt(32 * select)) & 0xffff_ffffn);
  }

  writeDriverFeatureWord(select: number, v: number): void {
    // Only between DRIVER and FEATURES_OK (3.1.1 steps 3-5); the driver cannot change its mind later.
    if (!(this.statusByte & VIRTIO_CONFIG_S_DRIVER) || this.statusByte & VIRTIO_CONFIG_S_FEATURES_OK) return;
    if (select > 1) return;
    const shift = BigInt(32 * select);
    this.driverFeatureBits = (this.driverFeatureBits & ~(0xffff_ffffn << shift)) | (BigInt(v >>> 0) << shift);
  }

  /** One 32-bit half of a ring address (QUEUE_DESC_LOW...); ignored while the queue is ready. */
  writeQueueAddressWord(queueIndex: number, word: number, v: number): void {
    const q = this.queues[queueIndex];
    if (!q || q.ready || word < 0 || word >= QUEUE_ADDRESS_WORDS) return;
    const base = q.index * QUEUE_ADDRESS_WORDS;
    const a = this.queueAddr;
    a[base + word] = v;
    // A high word above 0x1fffff makes an inexact number, but one far beyond RAM: activate() refuses it.
    q.descTableGpa = a[base + QUEUE_DESC_HIGH]! * 0x1_0000_0000 + a[base + QUEUE_DESC_LOW]!;
    q.availRingGpa = a[base + QUEUE_DRIVER_HIGH]! * 0x1_0000_0000 + a[base + QUEUE_DRIVER_LOW]!;
    q.usedRingGpa = a[base + QUEUE_DEVICE_HIGH]! * 0x1_0000_0000 + a[base + QUEUE_DEVICE_LOW]!;
  }

  /** What the driver wrote for one half of a ring address (virtio-pci reads them back). */
  queueAddressWord(queueIndex: number, word: number): number {
    const q = this.queues[queueIndex];
    if (!q || word < 0 || word >= QUEUE_ADDRESS_WORDS) return 0;
    return this.queueAddr[q.index * QUEUE_ADDRESS_WORDS + word]!;
  }

  /** QueueNum / queue_size: taken while the queue is not ready, checked when it is activated. */
  writeQueueSize(queueIndex: number, v: number): void {
    const q = this.queues[queueIndex];
    if (q && !q.ready) q.size = v;
  }

  writeQueueReady(queueIndex: number, ready: boolean): void {
    const q = this.queues[queueIndex];
    if (!q || ready === q.ready) return;
    q.ready = ready;
    if (!ready) {
      q.deactivate();
      return;
    }
    // A queue made ready after DRIVER_OK starts at once; before, it starts with the device.
    if (this.deviceActive && !this.needsReset) {
      try {
        q.activate(this.memory, this.driverFeatureBits);
      } catch (e) {
        if (!(e instanceof VirtioError)) throw e;
        this.setNeedsReset(e);
      }
    }
  }

  /** The driver notified queue `queueIndex`: passed on only to a running device and an active queue. */
  notify(queueIndex: number): void {
    if (!this.deviceActive || this.needsReset) return;
    const q = this.queues[queueIndex];
    if (q?.isActive) this.device.notify(q.index);
  }

  /**
   * A write of the device status byte other than 0 (the transport resets on 0, since a reset also
   * clears its own registers). Bits only accumulate until reset, and NEEDS_RESET is the device's.
   */
  writeStatus(v: number): void {
    v &= 0xff;
    const old = this.statusByte;
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
        this.onError?.(new VirtioError('status', `${this.label}: DRIVER_OK written before FEATURES_OK was accepted; the driver must reset the device`));
      } else {
        this.statusByte = next;
        this.activateDevice();
        return;
      }
    }
    this.statusByte = next;
  }

  private featureProblem(status: number): string | null {
    const dev = this.label;
    if (!(status & VIRTIO_CONFIG_S_DRIVER)) return `${dev}: FEATURES_OK written before DRIVER; the driver must reset the device`;
    const extra = this.driverFeatureBits & ~this.offeredFeatures;
    if (extra !== 0n) return `${dev}: driver accepted features 0x${extra.toString(16)} the device did not offer (offered 0x${this.offeredFeatures.toString(16)})`;
    if (!hasFeature(this.driverFeatureBits, VIRTIO_F_VERSION_1)) return `${dev}: driver did not accept VIRTIO_F_VERSION_1, which this modern-only transport requires (legacy drivers are not supported)`;
    return null;
  }

  private activateDevice(): void {
    try {
      for (const q of this.queues) if (q.ready) q.activate(this.memory, this.driverFeatureBits);
    } catch (e) {
      if (!(e instanceof VirtioError)) throw e;
      this.setNeedsReset(e);
      return;
    }
    this.deviceActive = true;
    this.device.activate(this.queues, this.memory, this.interruptFor(this.epoch), this.driverFeatureBits);
  }

  /** The device's way out, bound to one activation: after a reset its calls do nothing. */
  private interruptFor(epoch: number): VirtioInterrupt {
    const live = () => epoch === this.epoch;
    return {
      usedBuffer: (queueIndex) => {
        if (live() && !this.needsReset) this.interrupts.queue(queueIndex);
      },
      configChanged: () => {
        if (!live()) return;
        this.generation = (this.generation + 1) >>> 0;
        if (this.statusByte & VIRTIO_CONFIG_S_DRIVER_OK) this.interrupts.config();
      },
      needsReset: (error) => {
        if (live()) this.setNeedsReset(error);
      },
    };
  }

  private setNeedsReset(error: VirtioError): void {
    const already = this.needsReset;
    this.statusByte |= VIRTIO_CONFIG_S_NEEDS_RESET;
    if (already) return;
    this.onError?.(error);
    // 2.1.2: with DRIVER_OK set, the device sends a configuration change notification.
    if (this.statusByte & VIRTIO_CONFIG_S_DRIVER_OK) this.interrupts.config();
  }

  /** Back to power-on (status 0): the device, every queue, the negotiated features. */
  reset(): void {
    this.epoch++;
    this.deviceActive = false;
    this.device.reset();
    for (const q of this.queues) q.reset();
    this.queueAddr.fill(0);
    this.statusByte = 0;
    this.driverFeatureBits = 0n;
  }
}
