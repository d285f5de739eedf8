// What the `virtio` and `virtio-pci` guests expect of a disk and write to it (tests/guests/
// virtio-checks.c host_pattern / guest_pattern), and the #defines of their headers, shared by the
// virtio integration tests of both transports.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestSourceDir } from './guests/index.js';

export const SECTOR = 512;
/** The guest checks the host pattern at sector 16 and writes its own at sectors 8-9. */
export const HOST_PATTERN_SECTOR = 16;
export const GUEST_PATTERN_SECTOR = 8;
export const GUEST_PATTERN_BYTES = 1024;
export const hostPattern = (i: number) => (i * 31 + 7) & 0xff;
export const guestPattern = (i: number) => ((i * 7) ^ 0xa5) & 0xff;

/** The guest DISCARDs sectors 32-39 and WRITE_ZEROES (with UNMAP) sectors 40-47 of a writable disk. */
export const DISCARD_SECTOR = 32;
export const WRITE_ZEROES_SECTOR = 40;
export const UNMAP_SECTORS = 8;
/** What makeDisk puts in sectors 32-47, so their zeros afterwards are the guest's doing. */
export const UNMAP_FILL = 0xee;

/** A 64 KiB raw image in `dir` (every block allocated) with the host pattern at sector 16, UNMAP_FILL in sectors 32-47 and zeros elsewhere. */
export function makeDisk(dir: string, name: string): string {
  const p = path.join(dir, name);
  const b = Buffer.alloc(64 * 1024);
  for (let i = 0; i < SECTOR; i++) b[HOST_PATTERN_SECTOR * SECTOR + i] = hostPattern(i);
  b.fill(UNMAP_FILL, DISCARD_SECTOR * SECTOR, (WRITE_ZEROES_SECTOR + UNMAP_SECTORS) * SECTOR);
  fs.writeFileSync(p, b);
  return p;
}

/** A reader of `#define NAME value` in tests/guests/common/HEADER (decimal or hex). */
export function guestHeaderDefines(header: string): (name: string) => number {
  const text = fs.readFileSync(path.join(guestSourceDir(), 'common', header), 'utf8');
  return (name) => {
    const m = new RegExp(`#define ${name} (0x[0-9a-f]+|\\d+)u?l?\\b`).exec(text);
    assert.ok(m, `${name} in ${header}`);
    return Number(m[1]);
  };
}
