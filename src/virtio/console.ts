// virtio-console with one port (no VIRTIO_CONSOLE_F_MULTIPORT): the guest's output goes to a
// callback, host input waits until the guest posts receive buffers. Spec: VIRTIO 1.2, 5.3 Console
// Device; names as in Linux include/uapi/linux/virtio_console.h.
import { struct } from '../boot/struct.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_ID_CONSOLE, featureBit, readConfigBytes, type VirtioDevice, type VirtioInterrupt } from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { DescriptorChain, type Virtqueue } from './virtqueue.js';

// 5.3.3 Feature bits
export const VIRTIO_CONSOLE_F_SIZE = 0;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2;

// 5.3.2 Virtqueues (port 0; queues 2 and up exist only with MULTIPORT)
export const VIRTIO_CONSOLE_RECEIVEQ = 0;
export const VIRTIO_CONSOLE_TRANSMITQ = 1;

export const VIRTIO_CONSOLE_CONFIG = struct('struct virtio_console_config', 12, {
  cols: [0, 'u16'],
  rows: [2, 'u16'],
  max_nr_ports: [4, 'u32'],
  emerg_wr: [8, 'u32'],
});

export const VIRTIO_CONSOLE_QUEUE_SIZE = 256;
/** Host input kept while the guest posts no buffers; more is dropped (and counted). */
export const VIRTIO_CONSOLE_MAX_PENDING_INPUT_BYTES = 1 << 20;

export interface VirtioConsoleOptions {
  /** Guest output. `bytes` is a view of guest RAM, valid only during the call: copy to keep. */
  readonly output: (bytes: Uint8Array) => void;
  /** Offer VIRTIO_CONSOLE_F_SIZE with this terminal size. */
  readonly size?: { readonly cols: number; readonly rows: number };
  readonly queueSize?: number;
}

export class VirtioConsole implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_CONSOLE;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSizeBytes = VIRTIO_CONSOLE_CONFIG.sizeBytes;
  /** Host input bytes dropped because the guest did not take them in time. */
  droppedInputBytes = 0;
  private readonly config = new Uint8Array(VIRTIO_CONSOLE_CONFIG.sizeBytes);
  private readonly output: (bytes: Uint8Array) => void;
  private readonly rxChain = new DescriptorChain();
  private readonly txChain = new DescriptorChain();
  private readonly pending: Uint8Array[] = [];
  /** Bytes of pending[0] already delivered. */
  private pendingOffset = 0;
  private pendingBytes = 0;
  private queues: readonly Virtqueue[] | null = null;
  private memory: GuestMemory | null = null;
  private interrupt: VirtioInterrupt | null = null;
  private broken = false;

  constructor(options: VirtioConsoleOptions) {
    this.output = options.output;
    const queueSize = options.queueSize ?? VIRTIO_CONSOLE_QUEUE_SIZE;
    this.queueMaxSizes = [queueSize, queueSize];
    let features = featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE);
    if (options.size) {
      features |= featureBit(VIRTIO_CONSOLE_F_SIZE);
      this.setSize(options.size.cols, options.size.rows);
    }
    this.deviceFeatures = features;
    VIRTIO_CONSOLE_CONFIG.set(this.config, 0, 'max_nr_ports', 1);
  }

  /** Bytes of host input the guest has not taken yet. */
  get pendingInputBytes(): number {
    return this.pendingBytes;
  }

  /** Host input (a terminal, a socket). Copied; delivered as soon as the guest has buffers. */
  enqueueInput(bytes: Uint8Array): void {
    const room = VIRTIO_CONSOLE_MAX_PENDING_INPUT_BYTES - this.pendingBytes;
    const take = Math.min(room, bytes.length);
    this.droppedInputBytes += bytes.length - take;
    if (take > 0) {
      this.pending.push(bytes.slice(0, take));
      this.pendingBytes += take;
    }
    this.deliverInput();
  }

  /** The host terminal changed size (seen by the guest only with VIRTIO_CONSOLE_F_SIZE). */
  resize(cols: number, rows: number): void {
    this.setSize(cols, rows);
    this.interrupt?.configChanged();
  }

  private setSize(cols: number, rows: number): void {
    VIRTIO_CONSOLE_CONFIG.set(this.config, 0, 'cols', cols);
    VIRTIO_CONSOLE_CONFIG.set(this.config, 0, 'rows', rows);
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config, offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // 5.3.4: a write to emerg_wr outputs its low byte, usable before the queues are set up.
    if (offset === VIRTIO_CONSOLE_CONFIG.offsetOf('emerg_wr') && data.length > 0) this.output(data.subarray(0, 1));
  }

  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt): void {
    this.queues = queues;
    this.memory = memory;
    this.interrupt = interrupt;
    this.broken = false;
    this.deliverInput();
  }

  /** Pending host input survives a reset: it was typed for whichever driver comes next. */
  reset(): void {
    this.queues = null;
    this.memory = null;
    this.interrupt = null;
    this.broken = false;
  }

  notify(queueIndex: number): void {
    if (queueIndex === VIRTIO_CONSOLE_RECEIVEQ) this.deliverInput();
    else if (queueIndex === VIRTIO_CONSOLE_TRANSMITQ) this.transmit();
  }

  private fail(e: unknown, interrupt: VirtioInterrupt): void {
    if (!(e instanceof VirtioError)) throw e;
    this.broken = true;
    interrupt.needsReset(e);
  }

  private deliverInput(): void {
    const rx = this.queues?.[VIRTIO_CONSOLE_RECEIVEQ];
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!rx || !memory || !interrupt || this.broken || this.pendingBytes === 0) return;
    const chain = this.rxChain;
    let delivered = false;
    try {
      while (this.pendingBytes > 0) {
        if (!rx.popInto(memory, chain)) {
          // No buffer: ask to be notified when one comes, unless one came meanwhile.
          if (rx.enableNotification(memory)) continue;
          break;
        }
        let written = 0;
        while (this.pendingBytes > 0 && written < chain.writableBytes) {
          const chunk = this.pending[0]!;
          const n = chain.writeFrom(written, chunk.subarray(this.pendingOffset));
          written += n;
          this.pendingOffset += n;
          this.pendingBytes -= n;
          if (this.pendingOffset === chunk.length) {
            this.pending.shift();
            this.pendingOffset = 0;
          }
        }
        rx.pushUsed(memory, chain.head, written);
        delivered = true;
      }
      if (delivered && rx.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_CONSOLE_RECEIVEQ);
    } catch (e) {
      this.fail(e, interrupt);
    }
  }

  private transmit(): void {
    const tx = this.queues?.[VIRTIO_CONSOLE_TRANSMITQ];
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!tx || !memory || !interrupt || this.broken) return;
    const chain = this.txChain;
    try {
      do {
        tx.disableNotification(memory);
        while (tx.popInto(memory, chain)) {
          for (let i = 0; i < chain.readable.length; i++) {
            const buf = chain.readable[i]!;
            if (buf.length > 0) this.output(buf);
          }
          tx.pushUsed(memory, chain.head, 0);
        }
      } while (tx.enableNotification(memory));
      if (tx.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_CONSOLE_TRANSMITQ);
    } catch (e) {
      this.fail(e, interrupt);
    }
  }
}
