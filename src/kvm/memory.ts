// Anonymous host memory for guest RAM: mmap'd once, never moved, freed with the VM.
import { KvmError } from './errors.js';
import * as libc from './libc.js';

export interface HostMapping {
  readonly hva: bigint;
  readonly sizeBytes: number;
}

export function mapAnonymous(sizeBytes: number, purpose: string): HostMapping {
  const ptr = libc.mmap(null, sizeBytes, libc.PROT_READ | libc.PROT_WRITE,
    libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0);
  const hva = libc.addressOf(ptr);
  if (hva === 0xffffffffffffffffn || hva === 0n) {
    throw new KvmError('mmap', 'mmap(anonymous)', 'host', libc.errno(), `allocating ${sizeBytes} bytes for ${purpose}`, 'lower --memory or free host memory');
  }
  return { hva, sizeBytes };
}

export function unmap(mapping: HostMapping): void {
  libc.munmap(mapping.hva, mapping.sizeBytes);
}

/** A zero-copy ArrayBuffer over host memory; usable in any thread of the process. */
export function hostView(hva: bigint, sizeBytes: number): ArrayBuffer {
  return libc.viewOf(hva, sizeBytes);
}
