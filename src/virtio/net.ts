// virtio-net with one queue pair and no offloads: Ethernet frames between the guest and an
// injected backend (a TAP device, a test double). Spec: VIRTIO 1.2, 5.1 Network Device; names as
// in Linux include/uapi/linux/virtio_net.h.
//
// Without VIRTIO_NET_F_CSUM / GUEST_CSUM / GSO features the header carries nothing the device must
// act on (5.1.6.2, 5.1.6.4): on transmit it is skipped, on receive it is all zeros except
// num_buffers = 1 (5.1.6.4.2, required with VIRTIO_F_VERSION_1 when MRG_RXBUF is not negotiated).
// Frames the guest has no receive buffer for wait in a bounded queue, then are dropped and counted.
// What this will not do: the control queue, multiqueue, MRG_RXBUF, checksum or segmentation
// offload, RSS, VLAN filtering, announce.
import { struct } from '../boot/struct.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_ID_NET, featureBit, readConfigBytes, type VirtioDevice, type VirtioInterrupt } from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { DescriptorChain, type Virtqueue } from './virtqueue.js';

// 5.1.3 Feature bits (only those this device offers or refuses by name)
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_MQ = 22;

// 5.1.4 config `status`
export const VIRTIO_NET_S_LINK_UP = 1;

// 5.1.2 Virtqueues (one pair; the control queue would be 2, with VIRTIO_NET_F_CTRL_VQ)
export const VIRTIO_NET_RECEIVEQ = 0;
export const VIRTIO_NET_TRANSMITQ = 1;

export const VIRTIO_NET_CONFIG = struct('struct virtio_net_config', 24, {
  mac: [0, { bytes: 6 }],
  status: [6, 'u16'],
  max_virtqueue_pairs: [8, 'u16'],
  mtu: [10, 'u16'],
  speed: [12, 'u32'],
  duplex: [16, 'u8'],
  rss_max_key_size: [17, 'u8'],
  rss_max_indirection_table_length: [18, 'u16'],
  supported_hash_types: [20, 'u32'],
});

/** struct virtio_net_hdr_v1: the header before every frame in both directions (12 bytes with VERSION_1). */
export const VIRTIO_NET_HDR_V1 = struct('struct virtio_net_hdr_v1', 12, {
  flags: [0, 'u8'],
  gso_type: [1, 'u8'],
  hdr_len: [2, 'u16'],
  gso_size: [4, 'u16'],
  csum_start: [6, 'u16'],
  csum_offset: [8, 'u16'],
  num_buffers: [10, 'u16'],
});

export const ETH_ALEN = 6;
export const ETH_HLEN = 14;
/** Ethernet header plus one 802.1Q tag. */
const ETH_VLAN_HLEN = 18;
/** Largest frame accepted from the guest without VIRTIO_NET_F_MTU: Linux's MAX_MTU (65535) plus a tagged header. */
export const VIRTIO_NET_MAX_FRAME_BYTES = 65535 + ETH_VLAN_HLEN;
export const VIRTIO_NET_QUEUE_SIZE = 256;
/** Frames kept while the guest posts no receive buffers; more are dropped (and counted). */
export const VIRTIO_NET_MAX_PENDING_RX_FRAMES = 256;
export const VIRTIO_NET_MAX_PENDING_RX_BYTES = 1 << 20;

const HDR_BYTES = VIRTIO_NET_HDR_V1.sizeBytes;

/**
 * The host side of a virtio-net device. Frames are whole Ethernet frames without any virtio
 * header, destination MAC first.
 */
export interface NetBackend {
  /**
   * One frame from the guest. `frame` may be a view of guest RAM, valid only during the call.
   * Returns false when the host dropped it (its queue is full); the device counts it.
   */
  send(frame: Uint8Array): boolean;
  /**
   * From now on frames from the host go to `receiver` (null: nowhere). A frame passed to it is
   * valid only during the call: the device copies it.
   */
  setReceiver(receiver: ((frame: Uint8Array) => void) | null): void;
}

export interface VirtioNetOptions {
  readonly backend: NetBackend;
  /** The MAC address the guest is given (VIRTIO_NET_F_MAC), 6 bytes. */
  readonly mac: Uint8Array;
  /** Offer VIRTIO_NET_F_MTU with this MTU (68 to 65535); frames longer than it plus a tagged header are dropped. */
  readonly mtu?: number;
  readonly queueSize?: number;
  readonly maxPendingRxFrames?: number;
}

/** Counters, for --stats and tests. */
export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  /** The backend could not take them (a full TAP queue). */
  txDroppedByHost: number;
  /** Shorter than an Ethernet header, or longer than the largest frame. */
  txDroppedMalformed: number;
  rxFrames: number;
  rxBytes: number;
  /** Arrived while the bounded queue was full (the guest posted no receive buffers in time). */
  rxDroppedNoBuffer: number;
  /** Arrived while the driver had not started the device (or it needs reset). */
  rxDroppedInactive: number;
  /** Longer than the receive buffer the guest posted (without MRG_RXBUF one buffer holds one frame). */
  rxDroppedTooBig: number;
}

export class VirtioNet implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_NET;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSizeBytes = VIRTIO_NET_CONFIG.sizeBytes;
  readonly stats: VirtioNetStats = {
    txFrames: 0, txBytes: 0, txDroppedByHost: 0, txDroppedMalformed: 0,
    rxFrames: 0, rxBytes: 0, rxDroppedNoBuffer: 0, rxDroppedInactive: 0, rxDroppedTooBig: 0,
  };
  readonly mac: Uint8Array;
  private readonly backend: NetBackend;
  private readonly config = new Uint8Array(VIRTIO_NET_CONFIG.sizeBytes);
  private readonly maxTxFrameBytes: number;
  private readonly maxPendingFrames: number;
  private readonly rxChain = new DescriptorChain();
  /** rxChain holds a receive buffer popped but not yet used (a frame too big for it was dropped). */
  private rxHeld = false;
  private readonly rxHeader = new Uint8Array(HDR_BYTES);
  private readonly txChain = new DescriptorChain();
  private readonly txViews: Uint8Array[] = [];
  private readonly txScratch: Uint8Array;
  /** Frames waiting for receive buffers (copies), oldest first. */
  private readonly pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private queues: readonly Virtqueue[] | null = null;
  private memory: GuestMemory | null = null;
  private interrupt: VirtioInterrupt | null = null;
  private broken = false;
  private linkUp = true;

  constructor(options: VirtioNetOptions) {
    if (options.mac.length !== ETH_ALEN || (options.mac[0]! & 1) !== 0) {
      throw new RangeError(`virtio-net: MAC ${formatMac(options.mac)} is not a 6-byte unicast address`);
    }
    this.backend = options.backend;
    this.mac = Uint8Array.from(options.mac);
    const queueSize = options.queueSize ?? VIRTIO_NET_QUEUE_SIZE;
    this.queueMaxSizes = [queueSize, queueSize];
    this.maxPendingFrames = options.maxPendingRxFrames ?? VIRTIO_NET_MAX_PENDING_RX_FRAMES;
    let features = featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS);
    VIRTIO_NET_CONFIG.bytesOf(this.config, 0, 'mac').set(this.mac);
    VIRTIO_NET_CONFIG.set(this.config, 0, 'status', VIRTIO_NET_S_LINK_UP);
    this.maxTxFrameBytes = VIRTIO_NET_MAX_FRAME_BYTES;
    if (options.mtu !== undefined) {
      if (!Number.isInteger(options.mtu) || options.mtu < 68 || options.mtu > 65535) {
        throw new RangeError(`virtio-net: MTU ${options.mtu} is not in 68..65535`);
      }
      features |= featureBit(VIRTIO_NET_F_MTU);
      VIRTIO_NET_CONFIG.set(this.config, 0, 'mtu', options.mtu);
      this.maxTxFrameBytes = options.mtu + ETH_VLAN_HLEN;
    }
    this.deviceFeatures = features;
    this.txScratch = new Uint8Array(this.maxTxFrameBytes);
    // 5.1.6.4.2: without MRG_RXBUF every frame is in one buffer.
    VIRTIO_NET_HDR_V1.set(this.rxHeader, 0, 'num_buffers', 1);
    this.backend.setReceiver((frame) => this.receive(frame));
  }

  /** A receive buffer is popped and not yet returned (the last frame did not fit it; the next may). */
  get holdsRxBuffer(): boolean {
    return this.rxHeld;
  }

  /** Frames waiting for the guest's receive buffers. */
  get pendingRxFrames(): number {
    return this.pending.length;
  }

  /** Sets the link state the guest sees in config `status` (VIRTIO_NET_F_STATUS), with a config interrupt. */
  setLinkUp(up: boolean): void {
    if (up === this.linkUp) return;
    this.linkUp = up;
    VIRTIO_NET_CONFIG.set(this.config, 0, 'status', up ? VIRTIO_NET_S_LINK_UP : 0);
    this.interrupt?.configChanged();
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config, offset, data);
  }

  /** 5.1.4: the config space is read-only to a driver that did not negotiate VIRTIO_NET_F_CTRL_MAC_ADDR (legacy MAC writes are ignored). */
  writeConfig(): void {}

  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt): void {
    this.queues = queues;
    this.memory = memory;
    this.interrupt = interrupt;
    this.broken = false;
    this.rxHeld = false;
  }

  /** Forgets the rings; frames still queued were meant for the old driver and are dropped. */
  reset(): void {
    this.queues = null;
    this.memory = null;
    this.interrupt = null;
    this.broken = false;
    this.rxHeld = false;
    this.stats.rxDroppedInactive += this.pending.length;
    this.pending.length = 0;
    this.pendingBytes = 0;
  }

  notify(queueIndex: number): void {
    if (queueIndex === VIRTIO_NET_RECEIVEQ) this.deliverPending();
    else if (queueIndex === VIRTIO_NET_TRANSMITQ) this.transmit();
  }

  /**
   * A frame from the host. Goes straight into a posted receive buffer when one is free and nothing
   * is queued ahead of it; otherwise it is copied into the bounded queue, or dropped when that is full.
   */
  receive(frame: Uint8Array): void {
    const rx = this.queues?.[VIRTIO_NET_RECEIVEQ];
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!rx?.isActive || !memory || !interrupt || this.broken || !this.linkUp) {
      this.stats.rxDroppedInactive++;
      return;
    }
    if (this.pending.length === 0) {
      try {
        if (this.rxBufferReady(rx, memory)) {
          this.deliver(rx, memory, frame);
          if (rx.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_NET_RECEIVEQ);
          return;
        }
      } catch (e) {
        this.fail(e, interrupt);
        return;
      }
    }
    if (this.pending.length >= this.maxPendingFrames || this.pendingBytes + frame.length > VIRTIO_NET_MAX_PENDING_RX_BYTES) {
      this.stats.rxDroppedNoBuffer++;
      return;
    }
    this.pending.push(frame.slice());
    this.pendingBytes += frame.length;
  }

  private fail(e: unknown, interrupt: VirtioInterrupt): void {
    if (!(e instanceof VirtioError)) throw e;
    this.broken = true;
    interrupt.needsReset(e);
  }

  /** True when rxChain holds a receive buffer; pops one if needed, asking for a notification when there is none. */
  private rxBufferReady(rx: Virtqueue, memory: GuestMemory): boolean {
    if (this.rxHeld) return true;
    for (;;) {
      if (rx.popInto(memory, this.rxChain)) {
        const c = this.rxChain;
        if (c.writableBytes < HDR_BYTES) {
          throw new VirtioError('bad-request', `virtio-net: receive buffer ${c.head} has ${c.writableBytes} writable bytes, less than the ${HDR_BYTES}-byte virtio_net_hdr_v1; the driver must reset the device`);
        }
        this.rxHeld = true;
        return true;
      }
      // No buffer: ask to be notified when one comes, unless one came meanwhile.
      if (!rx.enableNotification(memory)) return false;
    }
  }

  /** Puts `frame` in the held receive buffer, or drops it if it does not fit (the buffer stays held). */
  private deliver(rx: Virtqueue, memory: GuestMemory, frame: Uint8Array): void {
    const c = this.rxChain;
    if (HDR_BYTES + frame.length > c.writableBytes) {
      this.stats.rxDroppedTooBig++;
      return;
    }
    c.writeFrom(0, this.rxHeader);
    c.writeFrom(HDR_BYTES, frame);
    this.rxHeld = false;
    rx.pushUsed(memory, c.head, HDR_BYTES + frame.length);
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
  }

  private deliverPending(): void {
    const rx = this.queues?.[VIRTIO_NET_RECEIVEQ];
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!rx || !memory || !interrupt || this.broken || this.pending.length === 0) return;
    try {
      let delivered = false;
      while (this.pending.length > 0 && this.rxBufferReady(rx, memory)) {
        const frame = this.pending.shift()!;
        this.pendingBytes -= frame.length;
        const before = this.stats.rxFrames;
        this.deliver(rx, memory, frame);
        if (this.stats.rxFrames !== before) delivered = true;
      }
      if (delivered && rx.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_NET_RECEIVEQ);
    } catch (e) {
      this.fail(e, interrupt);
    }
  }

  private transmit(): void {
    const tx = this.queues?.[VIRTIO_NET_TRANSMITQ];
    const memory = this.memory;
    const interrupt = this.interrupt;
    if (!tx || !memory || !interrupt || this.broken) return;
    const chain = this.txChain;
    try {
      do {
        tx.disableNotification(memory);
        while (tx.popInto(memory, chain)) {
          if (chain.readableBytes < HDR_BYTES) {
            throw new VirtioError('bad-request', `virtio-net: transmit request ${chain.head} has ${chain.readableBytes} readable bytes, less than the ${HDR_BYTES}-byte virtio_net_hdr_v1; the driver must reset the device`);
          }
          this.sendFrame(chain);
          tx.pushUsed(memory, chain.head, 0);
        }
      } while (tx.enableNotification(memory));
      if (tx.needsNotification(memory)) interrupt.usedBuffer(VIRTIO_NET_TRANSMITQ);
    } catch (e) {
      this.fail(e, interrupt);
    }
  }

  /** The frame after the header, zero-copy when it lies in one buffer. Header flags are ignored: no offloads were offered. */
  private sendFrame(chain: DescriptorChain): void {
    const length = chain.readableBytes - HDR_BYTES;
    if (length < ETH_HLEN || length > this.maxTxFrameBytes) {
      this.stats.txDroppedMalformed++;
      return;
    }
    let frame: Uint8Array;
    if (chain.readableViews(HDR_BYTES, length, this.txViews) === length && this.txViews.length === 1) {
      frame = this.txViews[0]!;
    } else {
      frame = this.txScratch.subarray(0, length);
      chain.readInto(HDR_BYTES, frame);
    }
    this.txViews.length = 0;
    if (this.backend.send(frame)) {
      this.stats.txFrames++;
      this.stats.txBytes += length;
    } else {
      this.stats.txDroppedByHost++;
    }
  }
}

/** One line of counters, for `tsvmm run --stats`. */
export function formatNetStats(s: VirtioNetStats): string {
  return `net: tx ${s.txFrames} frames ${s.txBytes} bytes (dropped: ${s.txDroppedByHost} host queue full, ${s.txDroppedMalformed} malformed); `
    + `rx ${s.rxFrames} frames ${s.rxBytes} bytes (dropped: ${s.rxDroppedNoBuffer} no guest buffer, ${s.rxDroppedTooBig} too big, ${s.rxDroppedInactive} device not running)`;
}

export function formatMac(mac: Uint8Array): string {
  return [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** `xx:xx:xx:xx:xx:xx` (hex, either case) to 6 bytes; null when it is not that. */
export function parseMac(text: string): Uint8Array | null {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) return null;
  return Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)));
}
