// The one error type of src/guest/: building guest code (x86asm.ts) and guest images (elf-image.ts).

export type GuestBuildErrorKind =
  /** An instruction was given operands it has no encoding for here. */
  | 'operand'
  /** A label was used but never defined, or defined twice. */
  | 'label'
  /** A value does not fit its field (immediate, displacement, branch, address). */
  | 'range'
  /** An image cannot be laid out as asked (alignment, entry outside the segment, above 4 GiB). */
  | 'layout';

/** Building a guest program or image failed; `kind` says which rule was broken. Always a bug in the guest's source. */
export class GuestBuildError extends Error {
  constructor(
    readonly kind: GuestBuildErrorKind,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'GuestBuildError';
  }
}
