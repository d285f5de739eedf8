// A virtio-blk backend over a host file (a raw disk image), synchronous: each request is one
// preadv/pwritev on the main thread. Handing requests to other threads (libuv's pool, or a worker
// of our own with guest RAM views) measured slower on every rate: see the README's virtio
// section. DISCARD, and WRITE_ZEROES with UNMAP, punch holes when the VMM supplies a hole puncher
// (Node's fs has no fallocate; the KVM layer's host-file.ts does it) and the file system takes
// them; otherwise there is no DISCARD and WRITE_ZEROES writes zeros.
import * as fs from 'node:fs';
import type { BlockBackend } from './block.js';
import { VirtioError } from './virtio-error.js';

const ZERO_CHUNK_BYTES = 64 * 1024;
/** Linux's UIO_MAXIOV: preadv/pwritev refuse more buffers (EINVAL); an indirect chain can have more. */
export const IOV_MAX = 1024;

/** Frees file ranges (fallocate PUNCH_HOLE | KEEP_SIZE): they read as zeros after, the size stays. */
export interface HolePuncher {
  /** Whether the file system under `fd` can punch holes at all. */
  canPunchHoles(fd: number, sizeBytes: number): boolean;
  /** Throws when the hole could not be punched. */
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): void;
}

export interface FileBlockOptions {
  readonly readonly?: boolean;
  /** DISCARD and WRITE_ZEROES with UNMAP free the image's blocks through it. */
  readonly holes?: HolePuncher;
}

export class FileBlockBackend implements BlockBackend {
  private readonly zeros = new Uint8Array(ZERO_CHUNK_BYTES);
  /** Present only when holes can be punched in this file, so VirtioBlock offers DISCARD only then. */
  readonly discard?: (offsetBytes: number, lengthBytes: number) => void;

  private constructor(
    private readonly fd: number,
    readonly sizeBytes: number,
    readonly readonly: boolean,
    readonly path: string,
    private readonly holes: HolePuncher | null,
  ) {
    if (holes) this.discard = (offsetBytes, lengthBytes) => holes.punchHole(fd, offsetBytes, lengthBytes);
  }

  /** Whether DISCARD and WRITE_ZEROES with UNMAP free blocks of this image. */
  get punchesHoles(): boolean {
    return this.holes !== null;
  }

  /**
   * Opens a raw image; `readonly` opens it for reading only (pair with VirtioBlock's readonly).
   * Regular files only: fstat gives a block device no size, and Node cannot ask for it.
   */
  static open(path: string, options: FileBlockOptions = {}): FileBlockBackend {
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
    const holes = !readonly && options.holes && options.holes.canPunchHoles(fd, st.size) ? options.holes : null;
    return new FileBlockBackend(fd, st.size, readonly, path, holes);
  }

  readv(offsetBytes: number, buffers: readonly Uint8Array[]): void {
    // One preadv per request, not one read per segment (Linux sends up to seg_max segments).
    let position = offsetBytes;
    for (let rest of iovWindows(buffers)) {
      for (;;) {
        const n = fs.readvSync(this.fd, rest, position);
        const after = remainder(rest, n);
        position += n;
        if (after === null) break;
        if (n === 0) {
          // past the end of a file that shrank: read zeros
          for (const b of after) {
            b.fill(0);
            position += b.length;
          }
          break;
        }
        rest = after;
      }
    }
  }

  writev(offsetBytes: number, buffers: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (let rest of iovWindows(buffers)) {
      for (;;) {
        const n = fs.writevSync(this.fd, rest, position);
        const after = remainder(rest, n);
        position += n;
        if (after === null) break;
        // pwritev to a regular file writes something or fails; 0 would loop here for ever.
        if (n === 0) throw new VirtioError('backend', `disk image ${this.path}: pwritev at byte ${position} wrote nothing`);
        rest = after;
      }
    }
  }

  flush(): void {
    fs.fdatasyncSync(this.fd);
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, mayUnmap = false): void {
    // A punched hole reads as zeros (the spec's requirement), and frees the blocks UNMAP allows.
    if (mayUnmap && this.holes) {
      this.holes.punchHole(this.fd, offsetBytes, lengthBytes);
      return;
    }
    for (let done = 0; done < lengthBytes;) {
      const n = Math.min(ZERO_CHUNK_BYTES, lengthBytes - done);
      done += fs.writeSync(this.fd, this.zeros, 0, n, offsetBytes + done);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** `buffers` in runs of at most IOV_MAX; the whole array itself when it fits (no copy). */
export function iovWindows(buffers: readonly Uint8Array[]): (readonly Uint8Array[])[] {
  if (buffers.length <= IOV_MAX) return [buffers];
  const out: Uint8Array[][] = [];
  for (let i = 0; i < buffers.length; i += IOV_MAX) out.push(buffers.slice(i, i + IOV_MAX));
  return out;
}

/**
 * What is left of `buffers` after the first `doneBytes` bytes: null when nothing is (the common
 * case allocates nothing), else the unfinished tail with its first buffer cut.
 */
export function remainder(buffers: readonly Uint8Array[], doneBytes: number): Uint8Array[] | null {
  let skip = doneBytes;
  for (let i = 0; i < buffers.length; i++) {
    const b = buffers[i]!;
    if (skip < b.length) return [b.subarray(skip), ...buffers.slice(i + 1)];
    skip -= b.length;
  }
  return null;
}
