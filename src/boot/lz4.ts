// LZ4 decompression for kernel payloads: the block format and the legacy frame the Linux build uses.
// Spec: lz4 doc/lz4_Block_format.md and doc/lz4_Frame_format.md ("Legacy frame");
// the kernel side is lib/decompress_unlz4.c. Every read and write is bounds-checked: the input is a
// file the user handed us.

/** Magic number opening a legacy frame (and re-opening it when two are concatenated). */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** Legacy frames cut the input into independent blocks of at most 8 MiB of output each. */
export const LZ4_LEGACY_BLOCK_MAX_BYTES = 8 << 20;

/** A match copies at least 4 bytes; the token stores the length minus 4. */
const MIN_MATCH = 4;

export class Lz4Error extends Error {
  override readonly name = 'Lz4Error';
}

/**
 * Decodes one LZ4 block from `input` into `output` starting at `outputStart`. Matches may reach back
 * only to `outputStart` (legacy blocks are independent). Returns the number of bytes written.
 */
export function decodeLz4Block(input: Uint8Array, output: Uint8Array, outputStart = 0, outputLimit = output.length): number {
  const inEnd = input.length;
  let ip = 0;
  let op = outputStart;
  if (inEnd === 0) throw new Lz4Error('empty block');
  // Well-formed blocks end with a literals-only sequence (the break below); one that ends right
  // after a match is accepted, as the bytes it describes are all in bounds.
  while (ip < inEnd) {
    const token = input[ip++];
    // Literals: length in the high nibble, extended by bytes of 255 while they last.
    let literalLength = token >>> 4;
    if (literalLength === 15) {
      let b: number;
      do {
        if (ip >= inEnd) throw new Lz4Error(`literal length runs past the end of the block at input ${ip}`);
        b = input[ip++];
        literalLength += b;
      } while (b === 255);
    }
    if (ip + literalLength > inEnd) {
      throw new Lz4Error(`${literalLength} literals at input ${ip} run past the end of the block (${inEnd} bytes)`);
    }
    if (op + literalLength > outputLimit) {
      throw new Lz4Error(`literals at input ${ip} overflow the output (limit ${outputLimit - outputStart} bytes)`);
    }
    output.set(input.subarray(ip, ip + literalLength), op);
    ip += literalLength;
    op += literalLength;
    // The last sequence has literals only: the block ends right after them.
    if (ip === inEnd) break;

    if (ip + 2 > inEnd) throw new Lz4Error(`match offset at input ${ip} runs past the end of the block`);
    const offset = input[ip] | (input[ip + 1] << 8);
    ip += 2;
    if (offset === 0 || offset > op - outputStart) {
      throw new Lz4Error(`match offset ${offset} at input ${ip - 2} points before the start of the block output`);
    }
    let matchLength = token & 15;
    if (matchLength === 15) {
      let b: number;
      do {
        if (ip >= inEnd) throw new Lz4Error(`match length runs past the end of the block at input ${ip}`);
        b = input[ip++];
        matchLength += b;
      } while (b === 255);
    }
    matchLength += MIN_MATCH;
    if (op + matchLength > outputLimit) {
      throw new Lz4Error(`match at input ${ip} overflows the output (limit ${outputLimit - outputStart} bytes)`);
    }
    let from = op - offset;
    if (offset >= matchLength) {
      output.copyWithin(op, from, from + matchLength);
      op += matchLength;
    } else {
      // Overlapping match: it repeats the last `offset` bytes, so copy byte by byte.
      const end = op + matchLength;
      while (op < end) output[op++] = output[from++];
    }
  }
  return op - outputStart;
}

/**
 * Decodes a legacy LZ4 frame as produced by `lz4 -l` and the kernel build: magic, then blocks each
 * prefixed by their compressed size (u32 LE). `expectedSizeBytes` (the kernel appends the output size
 * after the frame) sizes the output; without it the output grows block by block.
 * Trailing bytes that cannot be a block header (fewer than 4) are ignored; `trailerBytes` more are
 * excluded from the end of the input first.
 */
export function decodeLz4Legacy(input: Uint8Array, options: { expectedSizeBytes?: number; trailerBytes?: number } = {}): Uint8Array {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const inEnd = input.length - (options.trailerBytes ?? 0);
  if (inEnd < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Lz4Error('no LZ4 legacy frame magic 0x184c2102 at the start');
  }
  let capacity = options.expectedSizeBytes ?? LZ4_LEGACY_BLOCK_MAX_BYTES;
  let output = new Uint8Array(capacity);
  let op = 0;
  let ip = 4;
  while (ip + 4 <= inEnd) {
    const blockSize = view.getUint32(ip, true);
    ip += 4;
    if (blockSize === LZ4_LEGACY_MAGIC) continue; // concatenated frames
    if (blockSize === 0 || ip + blockSize > inEnd) {
      throw new Lz4Error(`block at input ${ip - 4} claims ${blockSize} bytes but ${inEnd - ip} remain`);
    }
    if (options.expectedSizeBytes === undefined && op + LZ4_LEGACY_BLOCK_MAX_BYTES > capacity) {
      capacity = Math.max(capacity * 2, op + LZ4_LEGACY_BLOCK_MAX_BYTES);
      const grown = new Uint8Array(capacity);
      grown.set(output.subarray(0, op));
      output = grown;
    }
    const limit = Math.min(capacity, op + LZ4_LEGACY_BLOCK_MAX_BYTES);
    try {
      op += decodeLz4Block(input.subarray(ip, ip + blockSize), output, op, limit);
    } catch (error) {
      throw new Lz4Error(`block at input ${ip - 4}: ${(error as Error).message}`, { cause: error });
    }
    ip += blockSize;
  }
  if (options.expectedSizeBytes !== undefined && op !== options.expectedSizeBytes) {
    throw new Lz4Error(`decoded ${op} bytes, expected ${options.expectedSizeBytes}`);
  }
  return op === output.length ? output : output.subarray(0, op);
}
