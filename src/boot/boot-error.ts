// BootError: a kernel, initrd, command line or machine description tsvmm cannot boot, said in one
// line with the fix. The one error class of src/boot/.

export type BootErrorKind =
  /** The kernel file is neither a bzImage nor an ELF image (or is truncated). */
  | 'not-a-kernel'
  /** A kernel of a kind or boot protocol tsvmm does not handle. */
  | 'unsupported-kernel'
  /** The bzImage payload uses a compression tsvmm does not decompress. */
  | 'unsupported-compression'
  /** The compressed payload is damaged. */
  | 'corrupt-payload'
  | 'too-large'
  | 'bad-elf'
  | 'no-entry'
  /** Kernel, initrd or tables do not fit where they must go. */
  | 'does-not-fit'
  | 'cmdline-too-long'
  /** The machine description is impossible (too little RAM, 0 vCPUs, an IRQ out of range...). */
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
