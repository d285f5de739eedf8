// The one error class of src/boot/: what is wrong with which boot input, and what to do about it.

export type BootErrorKind =
  /** The kernel file is not a bzImage (or is truncated). */
  | 'not-bzimage'
  /** The bzImage speaks a boot protocol or has a payload tsvmm does not handle. */
  | 'unsupported-kernel'
  /** The compressed payload is damaged. */
  | 'corrupt-payload'
  /** Kernel, initrd, tables or command line do not fit where they must go. */
  | 'does-not-fit'
  /** The machine description is impossible (no RAM, 0 vCPUs, IRQ out of range...). */
  | 'bad-config';

export class BootError extends Error {
  override readonly name = 'BootError';

  constructor(
    readonly kind: BootErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
