// A virtio-blk backend over a host file (a raw disk image), synchronous: each request is served
// with pread/pwrite-style calls on the main thread. Node has no fallocate(), so there is no
// DISCARD; WRITE_ZEROES writes zeros.
import * as fs from 'node:fs';
import type { BlockBackend } from './block.js';
import { VirtioError } from './virtio-error.js';

const ZERO_CHUNK_BYTES = 64 * 1024;

export class FileBlockBackend implements BlockBackend {
  private readonly zeros = new Uint8Array(ZERO_CHUNK_BYTES);

  private constructor(
    private readonly fd: number,
    readonly sizeBytes: number,
    readonly readonly: boolean,
    readonly path: string,
  ) {}

  /**
   * Opens a raw image; `readonly` opens it for reading only (pair with VirtioBlock's readonly).
   * Regular files only: fstat gives a block device no size, and Node cannot ask for it.
   */
  static open(path: string, options: { readonly?: boolean } = {}): FileBlockBackend {
    const readonly = options.readonly ?? false;
    let fd: number;
    try {
      fd = fs.openSync(path, readonly ? 'r' : 'r+');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      throw new VirtioError('backend', `cannot open disk image ${path} for ${readonly ? 'reading' : 'reading and writing'} (${code}); check the path and its permissions${readonly ? '' : ', or attach it read-only'}`, { cause: e });
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new VirtioError('backend', `disk image ${path} is not a regular file; use a raw image file`);
    }
    return new FileBlockBackend(fd, st.size, readonly, path);
  }

  readv(offsetBytes: number, buffers: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (const buf of buffers) {
      let done = 0;
      while (done < buf.length) {
        const n = fs.readSync(this.fd, buf, done, buf.length - done, position + done);
        if (n === 0) {
          buf.fill(0, done); // past the end of a file that shrank: read zeros
          break;
        }
        done += n;
      }
      position += buf.length;
    }
  }

  writev(offsetBytes: number, buffers: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (const buf of buffers) {
      let done = 0;
      while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, position + done);
      position += buf.length;
    }
  }

  flush(): void {
    fs.fdatasyncSync(this.fd);
  }

  writeZeroes(offsetBytes: number, lengthBytes: number): void {
    for (let done = 0; done < lengthBytes;) {
      const n = Math.min(ZERO_CHUNK_BYTES, lengthBytes - done);
      done += fs.writeSync(this.fd, this.zeros, 0, n, offsetBytes + done);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
