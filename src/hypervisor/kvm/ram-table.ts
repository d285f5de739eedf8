// The VM's current RAM map (gpa, size, host address of each memslot) in shared memory, so the
// vCPU threads read guest RAM through the map as it is now, not as it was at boot. The main
// thread rewrites it inside a map change (the VM's map sequence is odd meanwhile); a reader takes
// it only when the sequence is even and the same before and after (a seqlock).
import type { RamSlot } from '../types.js';

/** Float64 slot 0: the entry count; entry i at slots 1 + 3i: gpa, sizeBytes, hva (all < 2^53). */
const ENTRY_SLOTS = 3;

export class SharedRamTable {
  private readonly f64: Float64Array;

  static bytesFor(capacity: number): number {
    return (1 + capacity * ENTRY_SLOTS) * 8;
  }

  constructor(readonly buffer: SharedArrayBuffer) {
    this.f64 = new Float64Array(buffer);
  }

  get capacity(): number {
    return Math.floor((this.f64.length - 1) / ENTRY_SLOTS);
  }

  /** Only inside a map change (sequence odd), so no reader takes a half-written table. */
  write(slots: readonly RamSlot[]): void {
    if (slots.length > this.capacity) {
      throw new RangeError(`RAM table: ${slots.length} RAM regions, but room for ${this.capacity} (one per memslot KVM allows)`);
    }
    slots.forEach((s, i) => {
      const at = 1 + i * ENTRY_SLOTS;
      this.f64[at] = s.gpa;
      this.f64[at + 1] = s.sizeBytes;
      this.f64[at + 2] = Number(s.hva);
    });
    this.f64[0] = slots.length;
  }

  /** The table as written last; torn when a write ran meanwhile (the caller checks the sequence). */
  read(): RamSlot[] {
    const n = Math.min(this.f64[0]!, this.capacity);
    const out: RamSlot[] = [];
    for (let i = 0; i < n; i++) {
      const at = 1 + i * ENTRY_SLOTS;
      out.push({ gpa: this.f64[at]!, sizeBytes: this.f64[at + 1]!, hva: BigInt(this.f64[at + 2]!) });
    }
    return out;
  }
}

/**
 * Reads `table` under the map sequence `seq` (Int32 slot 0): the table, or null while a change is
 * under way or one ran during the read.
 */
export function readRamTable(table: SharedRamTable, seq: Int32Array): { slots: RamSlot[]; seq: number } | null {
  const before = Atomics.load(seq, 0);
  if ((before & 1) === 1) return null;
  const slots = table.read();
  return Atomics.load(seq, 0) === before ? { slots, seq: before } : null;
}
