// PciError: a PCI topology or resource plan tsvmm cannot build, said in one line with the fix.
// The one error class of src/pci/. Guest register writes never throw: whatever the guest writes
// to configuration space or a BAR is absorbed by the register semantics.

export type PciErrorKind =
  /** A device slot outside 1-31 (0 is the host bridge), or one already taken. */
  | 'bad-slot'
  /** A BAR declared twice, with a size that is not a power of two, or a 64-bit BAR in slot 5. */
  | 'bad-bar'
  /** Capabilities that do not fit in the 256-byte configuration space. */
  | 'capability-space'
  /** The BARs do not fit in the MMIO (or I/O) window the VMM gave for them. */
  | 'window-full';

export class PciError extends Error {
  override readonly name = 'PciError';
  constructor(
    readonly kind: PciErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
