// What every virtio device and transport share: status bits, reserved feature bits, device IDs,
// and the VirtioDevice interface that lets one device model sit behind any transport (virtio-mmio
// now, virtio-pci later). Spec: Virtual I/O Device (VIRTIO) Version 1.2 (2.1 Device Status Field,
// 2.2 Feature Bits, 5 Device Types, 6 Reserved Feature Bits); names as in Linux
// include/uapi/linux/virtio_config.h and virtio_ids.h.
import type { GuestMemory } from '../memory/guest-memory.js';
import type { VirtioError } from './virtio-error.js';
import type { Virtqueue } from './virtqueue.js';

// ---- 2.1 Device Status Field ----
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// ---- 6 Reserved Feature Bits (bit numbers) ----
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

// ---- 5 Device Types ----
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;

/** The feature mask of bit number `bit` (features are 64-bit: bigint keeps them exact). */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/**
 * How a device reaches its driver. The transport builds one per activation and turns each call
 * into its own mechanism (virtio-mmio: InterruptStatus bits and one line; virtio-pci: MSI-X
 * vectors). Calls after a reset are ignored, so a late completion cannot disturb a new driver.
 */
export interface VirtioInterrupt {
  /** Used buffers wait in queue `queueIndex` and the queue said the driver wants to hear of them. */
  usedBuffer(queueIndex: number): void;
  /** The device configuration space changed (bumps the config generation). */
  configChanged(): void;
  /** The driver broke the rules: set DEVICE_NEEDS_RESET and tell it. The device stops until reset(). */
  needsReset(error: VirtioError): void;
}

/**
 * A virtio device model, independent of its transport. It never sees a register offset of the
 * transport, an IRQ number or a bus address; the transport calls it in this order:
 * (readConfig/writeConfig at any time) -> activate -> notify* -> reset -> activate ...
 */
export interface VirtioDevice {
  /** VIRTIO_ID_* */
  readonly deviceType: number;
  /** Device-type feature bits offered; the transport adds the ring and transport bits it supports. */
  readonly deviceFeatures: bigint;
  /** One entry per virtqueue: its maximum size (a power of two, at most 32768). */
  readonly queueMaxSizes: readonly number[];
  /** Bytes of device configuration space; the transport answers accesses beyond it with zeros. */
  readonly configSizeBytes: number;
  /** Reads `data.length` bytes of configuration space at `offset` (the transport bounds-checks). */
  readConfig(offset: number, data: Uint8Array): void;
  writeConfig(offset: number, data: Uint8Array): void;
  /**
   * The driver set DRIVER_OK. `queues[i]` is active when the driver made it ready; `memory` is
   * guest RAM for every ring and buffer access; `driverFeatures` is what was negotiated.
   */
  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt, driverFeatures: bigint): void;
  /** Back to the state before activate(); in-flight work must not complete into the old rings. */
  reset(): void;
  /** The driver notified queue `queueIndex` (only called while active and not needing reset). */
  notify(queueIndex: number): void;
}

/** Reads `data.length` bytes of a device's config bytes at `offset`, zeros past the end. */
export function readConfigBytes(config: Uint8Array, offset: number, data: Uint8Array): void {
  data.fill(0);
  if (offset >= 0 && offset < config.length) data.set(config.subarray(offset, offset + data.length));
}
