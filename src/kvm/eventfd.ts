// eventfd(2) counters and their wait on the Node event loop (koffi.node.poll, never a blocking
// read parked in libuv's threadpool: close() would not wake it and the process could not exit).
import koffi from 'koffi';
import { KvmError } from './errors.js';
import * as libc from './libc.js';

const EAGAIN = 11;

export class EventFd {
  private readonly buf = Buffer.alloc(8);
  private poller: ReturnType<typeof koffi.node.poll> | null = null;

  private constructor(readonly fd: number) {}

  /** A non-blocking eventfd (counter starts at 0). */
  static create(purpose: string): EventFd {
    const fd = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
    if (fd < 0) throw new KvmError('libc', 'eventfd', 'host', libc.errno(), `creating an eventfd for ${purpose}`);
    return new EventFd(fd);
  }

  /** Takes the counter (the number of signals since the last take), 0 when none are pending. */
  take(): bigint {
    const n = libc.read(this.fd, this.buf, 8);
    if (n === 8) return this.buf.readBigUInt64LE(0);
    if (n < 0 && libc.errno() === EAGAIN) return 0n;
    throw new KvmError('libc', 'read(eventfd)', 'host', libc.errno(), 'reading an eventfd counter');
  }

  /** Adds `n` to the counter (what a device does to raise an irqfd). */
  signal(n = 1n): void {
    this.buf.writeBigUInt64LE(n);
    if (libc.write(this.fd, this.buf, 8) !== 8) {
      throw new KvmError('libc', 'write(eventfd)', 'host', libc.errno(), 'signalling an eventfd');
    }
  }

  /** Calls `onSignals(count)` on the event loop whenever the counter becomes non-zero. */
  watch(onSignals: (count: bigint) => void): void {
    if (this.poller) throw new Error(`eventfd ${this.fd} is already watched`);
    this.poller = koffi.node.poll(this.fd, { readable: true }, () => {
      const n = this.take();
      if (n > 0n) onSignals(n);
    });
  }

  close(): void {
    this.poller?.close();
    this.poller = null;
    libc.close(this.fd);
  }
}
