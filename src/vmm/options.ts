// Validation of user-supplied machine options, each failure one line naming the input and the fix.
import * as fs from 'node:fs';

export class CliError extends Error {
  override readonly name = 'CliError';
  readonly kind = 'usage';
}

/** The smallest guest tsvmm builds: boot structures live below 1 MiB and kernels load at 1 MiB. */
export const MIN_MEMORY_BYTES = 16 << 20;
/** Largest RAM tsvmm maps: 1 TiB. */
export const MAX_MEMORY_BYTES = 2 ** 40;

export function parseMemorySize(text: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new CliError(`--memory ${JSON.stringify(text)}: not a size; give a number with an optional K, M, G or T suffix, e.g. 512M or 2G`);
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const bytes = Number(m[1]) * unit;
  if (bytes < MIN_MEMORY_BYTES) throw new CliError(`--memory ${text}: too small; tsvmm needs at least 16M`);
  if (bytes > MAX_MEMORY_BYTES) throw new CliError(`--memory ${text}: more than tsvmm supports (1T)`);
  if (bytes % 4096 !== 0) throw new CliError(`--memory ${text}: not a whole number of 4 KiB pages; round it to a multiple of 4K`);
  return bytes;
}

export function parseCpus(text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new CliError(`--cpus ${JSON.stringify(text)}: not a whole number; give a vCPU count such as 1, 2 or 4`);
  const n = Number(text);
  if (n < 1) throw new CliError(`--cpus ${text}: a VM needs at least 1 vCPU`);
  if (n > 255) throw new CliError(`--cpus ${text}: tsvmm supports up to 255 vCPUs (xAPIC ids)`);
  return n;
}

export function readInputFile(option: string, path: string): Uint8Array {
  try {
    const st = fs.statSync(path);
    if (st.isDirectory()) throw new CliError(`${option} ${path}: is a directory; give a file`);
    return fs.readFileSync(path);
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new CliError(`${option} ${path}: cannot read it (${why}); check the path`);
  }
}
