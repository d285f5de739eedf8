// KvmError: a failed KVM or libc call, named with its input, errno, target and what tsvmm was doing.
import { strerror } from './libc.js';

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 4: 'EINTR', 5: 'EIO', 6: 'ENXIO', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM', 13: 'EACCES',
  14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL', 24: 'EMFILE', 25: 'ENOTTY', 28: 'ENOSPC',
  34: 'ERANGE', 38: 'ENOSYS', 95: 'EOPNOTSUPP', 7: 'E2BIG',
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

export type KvmErrorKind = 'ioctl' | 'open' | 'mmap' | 'capability' | 'libc';

export class KvmError extends Error {
  override readonly name = 'KvmError';
  constructor(
    readonly kind: KvmErrorKind,
    /** the call that failed (ioctl or libc function name) */
    readonly call: string,
    /** the VM or vCPU it was issued on, e.g. "vm" or "vcpu 1" */
    readonly target: string,
    readonly errno: number,
    /** what the VMM was doing */
    readonly doing: string,
    readonly hint = '',
  ) {
    const errText = errno ? `: ${errnoName(errno)} (${strerror(errno)})` : '';
    super(`${call} on ${target} failed${errText} while ${doing}${hint ? `; ${hint}` : ''}`);
  }
}
