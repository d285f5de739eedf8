// virtio-rng, the entropy device: one request queue; every device-writable buffer the driver
// posts comes back filled from an injected entropy source. Spec: VIRTIO 1.2, 5.4 Entropy Device.
import { randomFillSync } from 'node:crypto';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_ID_RNG, type VirtioDevice, type VirtioInterrupt } from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { DescriptorChain, type Virtqueue } from './virtqueue.js';

export const VIRTIO_RNG_REQUESTQ = 0;
export const VIRTIO_RNG_QUEUE_SIZE = 256;
/**
 * Entropy handed out per request at most (the used length says how much; 5.4.6: the device MAY
 * fill less). Bounds the time one request of a hostile guest can take on the main thread.
 */
export const VIRTIO_RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;

/** Fills `buffer` with random bytes (it is a view of guest RAM). */
export type EntropySource = (buffer: Uint8Array) => void;

export interface VirtioRngOptions {
  /** Default: node:crypto randomFillSync. */
  readonly source?: EntropySource;
  readonly queueSize?: number;
  readonly maxBytesPerRequest?: number;
}

export class VirtioRng implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_RNG;
  readonly deviceFeatures = 0n;
  readonly queueMaxSizes: readonly number[];
  readonly configSizeBytes = 0; // 5.4.4: no configuration
  /** Bytes of entropy given to the guest, for stats. */
  bytesServed = 0;
  private readonly source: EntropySource;
  private readonly maxBytesPerRequest: number;
  private readonly chain = new DescriptorChain();
  private queue: Virtqueue | null = null;
  private memory: GuestMemory | null = null;
  private interrupt: VirtioInterrupt | null = null;
  private broken = false;

  constructor(options: VirtioRngOptions = {}) {
    this.source = options.source ?? ((b) => { randomFillSync(b); });
    this.maxBytesPerRequest = options.maxBytesPerRequest ?? VIRTIO_RNG_MAX_BYTES_PER_REQUEST;
    this.queueMaxSizes = [options.queueSize ?? VIRTIO_RNG_QUEUE_SIZE];
  }

  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  writeConfig(): void {}

  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt): void {
    this.queue = queues[VIRTIO_RNG_REQUESTQ]!;
    this.memory = memory;
    this.interrupt = interrupt;
    this.broken = false;
  }

  reset(): void {
    this.queue = null;
    this.memory = null;
    this.interrupt = null;
    this.broken = false;
  }

  notify(queueIndex: number): void {
    if (queueIndex === VIRTIO_RNG_REQUESTQ) this.serve();
  }

  private serve(): void {
    const q = this.queue;
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!q || !memory || !interrupt || this.broken) return;
    const chain = this.chain;
    try {
      do {
        q.disableNotification(memory);
        while (q.popInto(memory, chain)) {
          let written = 0;
          // Readable descriptors carry nothing for this device and are ignored.
          for (let i = 0; i < chain.writable.length && written < this.maxBytesPerRequest; i++) {
            const buf = chain.writable[i]!;
            const room = this.maxBytesPerRequest - written;
            const part = buf.length <= room ? buf : buf.subarray(0, room);
            if (part.length > 0) this.source(part);
            written += part.length;
          }
          this.bytesServed += written;
          q.pushUsed(memory, chain.head, written);
        }
      } while (q.enableNotification(memory));
      if (q.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_RNG_REQUESTQ);
    } catch (e) {
      if (!(e instanceof VirtioError)) throw e;
      this.broken = true;
      interrupt.needsReset(e);
    }
  }
}
