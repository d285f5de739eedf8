// VirtioError: a driver, ring or request that breaks the virtio rules, said in one line. The one
// error class of src/virtio/. A device that meets one sets DEVICE_NEEDS_RESET and stops; the
// transport never lets it escape to the vCPU loop.

export type VirtioErrorKind =
  /** QueueNum is 0, not a power of two, or above QueueNumMax (2.7 Split Virtqueues). */
  | 'queue-size'
  /** Descriptor table not 16-byte aligned, avail ring not 2, used ring not 4 (2.7 table). */
  | 'ring-alignment'
  /** A descriptor table, avail ring or used ring that is not inside guest RAM. */
  | 'ring-out-of-ram'
  /** Two of a queue's rings overlap. */
  | 'ring-overlap'
  /** avail->idx ran more than the queue size ahead of what the device has consumed. */
  | 'avail-index'
  /** A head or `next` index beyond the descriptor table (or indirect table). */
  | 'descriptor-index'
  /** A chain visits more descriptors than its table holds: it loops. */
  | 'chain-too-long'
  /** A buffer (or indirect table) that is not inside guest RAM. */
  | 'buffer-out-of-ram'
  /** A buffer (or indirect table) that overlaps the descriptor table, avail ring or used ring. */
  | 'buffer-overlaps-ring'
  /** A device-readable descriptor after a device-writable one (2.7.4.2). */
  | 'readable-after-writable'
  /** VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated. */
  | 'indirect-not-negotiated'
  /** VIRTQ_DESC_F_INDIRECT inside an indirect table (2.7.5.3.1). */
  | 'nested-indirect'
  /** An indirect descriptor with NEXT set, or a table length that is 0, not a multiple of 16, or too large. */
  | 'bad-indirect-table'
  /** A request the device type cannot even answer (a block request without header or status byte). */
  | 'bad-request'
  /** The driver accepted features the device did not offer, or left out VIRTIO_F_VERSION_1. */
  | 'features'
  /** A status transition out of order (DRIVER_OK before FEATURES_OK). */
  | 'status'
  /** Host side: a backend that cannot be used (a disk image that cannot be opened). Not the guest's doing. */
  | 'backend';

export class VirtioError extends Error {
  override readonly name = 'VirtioError';
  constructor(
    readonly kind: VirtioErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
