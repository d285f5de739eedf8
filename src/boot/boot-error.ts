// BootError: a kernel, initrd or command line tsvmm cannot boot, said in one line with the fix.

export type BootErrorKind =
  | 'not-a-kernel' | 'unsupported-kernel' | 'too-large' | 'bad-elf' | 'no-entry' | 'does-not-fit' | 'cmdline-too-long'
  | 'unsupported-compression' | 'corrupt-payload';

export class BootError extends Error {
  override readonly name = 'BootError';
  constructor(readonly kind: BootErrorKind, message: string) {
    super(message);
  }
}
