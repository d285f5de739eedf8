// libc entry points tsvmm needs, bound once through koffi. The only file that loads libc.
// Spec: man 2 ioctl/mmap/eventfd, man 3 pthread_kill/pthread_sigmask/sigtimedwait.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const O_RDWR = 0x2;
export const O_CLOEXEC = 0x80000;
export const O_NONBLOCK = 0x800;
export const F_GETFL = 3;
export const F_GETFD = 1;
export const FD_CLOEXEC = 1;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const EFD_CLOEXEC = 0x80000;
export const EFD_NONBLOCK = 0x800;
export const SIG_BLOCK = 0;
export const SIG_UNBLOCK = 1;
export const SIG_SETMASK = 2;
/** glibc's sigset_t is 1024 bits; the kernel's (what KVM_SET_SIGNAL_MASK takes) is 64. */
export const GLIBC_SIGSET_BYTES = 128;
export const KERNEL_SIGSET_BYTES = 8;
/** SIGRTMIN is 34 in glibc (32 and 33 belong to NPTL); the kick signal sits above it, clear of libuv/Node. */
export const SIGRTMIN = 34;

export const open = libc.func('int open(const char *path, int flags)');
export const close = libc.func('int close(int fd)');
/** fcntl is variadic in C; only the int-argument form is used (F_GETFL, F_GETFD). */
export const fcntl = libc.func('int fcntl(int fd, int cmd, int arg)');
/** ioctl is variadic in C; it is declared twice with fixed prototypes (a koffi variadic call costs more). */
export const ioctlValue = libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)');
export const ioctlPointer = libc.func('int ioctl(int fd, unsigned long request, void *arg)');
export const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
export const munmap = libc.func('int munmap(uint64_t addr, size_t length)');
export const eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
export const read = libc.func('intptr_t read(int fd, void *buf, size_t count)');
export const write = libc.func('intptr_t write(int fd, const void *buf, size_t count)');
/** fallocate(2); modes from linux/falloc.h. Node's fs has no fallocate. */
export const fallocate = libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const strerror = libc.func('const char *strerror(int errnum)');
export const pthreadSelf = libc.func('uint64_t pthread_self()');
export const pthreadKill = libc.func('int pthread_kill(uint64_t thread, int sig)');
export const pthreadSigmask = libc.func('int pthread_sigmask(int how, const void *set, void *oldset)');
export const sigtimedwait = libc.func('int sigtimedwait(const void *set, void *info, const void *timeout)');
/** POSIX per-thread timers: the vCPU's deadline timer signals its own thread (SIGEV_THREAD_ID). */
export const timerCreate = libc.func('int timer_create(int clockid, void *sevp, void *timerid)');
export const timerSettime = libc.func('int timer_settime(uint64_t timerid, int flags, const void *new_value, void *old_value)');
export const timerDelete = libc.func('int timer_delete(uint64_t timerid)');
export const gettid = libc.func('int gettid()');
export const CLOCK_MONOTONIC = 1;
export const TIMER_ABSTIME = 1;
export const SIGEV_THREAD_ID = 4;
/** struct sigevent (64 bytes on x86-64): sigev_value 0, sigev_signo 8, sigev_notify 12, _sigev_un._tid 16 */
export const SIGEVENT_BYTES = 64;
export const SIGEVENT_SIGNO = 8;
export const SIGEVENT_NOTIFY = 12;
export const SIGEVENT_TID = 16;
/** struct itimerspec: it_interval {tv_sec, tv_nsec}, it_value {tv_sec, tv_nsec} */
export const ITIMERSPEC_BYTES = 32;

/** signal(2) with SIG_IGN (1) or SIG_DFL (0); handlers are never installed from JS. */
export const signal = libc.func('intptr_t signal(int signum, intptr_t handler)');
export const SIG_IGN = 1;

export function errno(): number {
  return koffi.errno();
}

/** A Uint8Array over host memory at `hva`, without copying (an external ArrayBuffer, not shareable). */
export function viewOf(hva: bigint, sizeBytes: number): ArrayBuffer {
  return koffi.view(hva, sizeBytes);
}

export function addressOf(pointer: unknown): bigint {
  return koffi.address(pointer);
}
