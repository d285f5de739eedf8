// Where the guest's serial output goes: stdout or a file, written synchronously in order, batched
// per event-loop turn so a byte-at-a-time guest does not cost a write(2) per byte.
import * as fs from 'node:fs';

export class ConsoleSink {
  private chunks: number[] = [];
  private scheduled = false;
  private broken = false;
  private readonly fd: number;
  private readonly ownsFd: boolean;

  constructor(target: { kind: 'stdout' } | { kind: 'file'; path: string } | { kind: 'fd'; fd: number } | { kind: 'none' }) {
    if (target.kind === 'file') {
      this.fd = fs.openSync(target.path, 'w');
      this.ownsFd = true;
    } else {
      this.fd = target.kind === 'stdout' ? 1 : target.kind === 'fd' ? target.fd : -1;
      this.ownsFd = false;
    }
  }

  /** Everything written so far, when a test wants it (kept only if `capture` was set). */
  captured: number[] | null = null;

  write(byte: number): void {
    this.chunks.push(byte);
    if (this.captured) this.captured.push(byte);
    if (this.chunks.length >= 4096) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.chunks.length === 0 || this.fd < 0 || this.broken) {
      this.chunks = [];
      return;
    }
    const buf = Buffer.from(this.chunks);
    this.chunks = [];
    let off = 0;
    while (off < buf.length) {
      try {
        off += fs.writeSync(this.fd, buf, off);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') continue; // non-blocking pipe: retry
        if (code === 'EPIPE') {
          // Nobody reads the console any more (e.g. `tsvmm run | head`): the guest keeps running
          // and its output is dropped, as a serial line with nothing attached would.
          this.broken = true;
          return;
        }
        throw e;
      }
    }
  }

  close(): void {
    this.flush();
    if (this.ownsFd) fs.closeSync(this.fd);
  }
}
