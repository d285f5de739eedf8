// Host file calls Node's fs lacks, for the VMM's disk backends: punching holes (fallocate with
// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), which frees a raw image's blocks for virtio-blk
// DISCARD and WRITE_ZEROES with UNMAP; the range then reads as zeros and the size stays.
import { KvmError } from './errors.js';
import * as libc from './libc.js';

/** Deallocates [offsetBytes, offsetBytes + lengthBytes) of `fd`; reads there return zeros after. */
export function punchHole(fd: number, offsetBytes: number, lengthBytes: number): void {
  if (lengthBytes === 0) return;
  const r = libc.fallocate(fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, offsetBytes, lengthBytes);
  if (r !== 0) {
    throw new KvmError('libc', 'fallocate(FALLOC_FL_PUNCH_HOLE)', `fd ${fd}`, libc.errno(), `freeing ${lengthBytes} bytes at byte ${offsetBytes} of a disk image`,
      'the file system may not support hole punching (ext4, xfs, btrfs and tmpfs do)');
  }
}

/**
 * Whether `fd`'s file system punches holes: a hole past the end of the file changes nothing
 * where it is supported, and fails with EOPNOTSUPP where it is not.
 */
export function canPunchHoles(fd: number, sizeBytes: number): boolean {
  return libc.fallocate(fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, sizeBytes, 4096) === 0;
}
