// Guest RAM as seen by the VMM: regions of guest-physical space backed by host memory, with
// bounds-checked typed access. Every access is checked against the regions, so a guest-supplied
// address can never reach host memory outside guest RAM.

export interface RamRegionSpec {
  readonly gpa: number;
  readonly sizeBytes: number;
  /** host virtual address of the backing memory (shared by every thread of the process) */
  readonly hva: bigint;
}

export type ViewFactory = (hva: bigint, sizeBytes: number) => ArrayBuffer;

interface Region extends RamRegionSpec {
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  constructor(readonly kind: 'out-of-range' | 'layout', message: string) {
    super(message);
  }
}

export class GuestMemory {
  private regions: Region[];

  /** `makeView` turns an hva into an ArrayBuffer (the KVM layer supplies it; tests may pass plain buffers). */
  constructor(specs: readonly RamRegionSpec[], private readonly makeView: ViewFactory) {
    this.regions = this.build(specs);
  }

  /**
   * Replaces the regions (the memory map changed); holders of this object see the new map at once.
   * Windows taken with slice() before stay on the old backing, which is still valid host memory.
   */
  remap(specs: readonly RamRegionSpec[]): void {
    this.regions = this.build(specs);
  }

  private build(specs: readonly RamRegionSpec[]): Region[] {
    const regions = specs.map((s) => {
      const buf = this.makeView(s.hva, s.sizeBytes);
      return { gpa: s.gpa, sizeBytes: s.sizeBytes, hva: s.hva, bytes: new Uint8Array(buf), view: new DataView(buf) };
    }).sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < regions.length; i++) {
      const prev = regions[i - 1]!;
      if (prev.gpa + prev.sizeBytes > regions[i]!.gpa) {
        throw new GuestMemoryError('layout', `RAM regions overlap at gpa 0x${regions[i]!.gpa.toString(16)}`);
      }
    }
    return regions;
  }

  /** Forgets the backing memory (it is about to be unmapped): later accesses throw instead of faulting. */
  detach(): void {
    this.regions = [];
  }

  get specs(): RamRegionSpec[] {
    return this.regions.map(({ gpa, sizeBytes, hva }) => ({ gpa, sizeBytes, hva }));
  }

  get totalBytes(): number {
    return this.regions.reduce((n, r) => n + r.sizeBytes, 0);
  }

  private find(gpa: number, len: number): Region {
    return findRegion(this.regions, gpa, len);
  }

  /** True when [gpa, gpa+len) lies inside one RAM region. */
  contains(gpa: number, len: number): boolean {
    return containsRange(this.regions, gpa, len);
  }

  /** A zero-copy window onto guest RAM; throws if the range leaves RAM. */
  slice(gpa: number, len: number): Uint8Array {
    const r = this.find(gpa, len);
    const off = gpa - r.gpa;
    return r.bytes.subarray(off, off + len);
  }

  read(gpa: number, len: number): Uint8Array {
    return Uint8Array.from(this.slice(gpa, len));
  }

  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.length).set(data);
  }

  fill(gpa: number, len: number, value: number): void {
    this.slice(gpa, len).fill(value);
  }

  readU8(gpa: number): number { const r = this.find(gpa, 1); return r.bytes[gpa - r.gpa]!; }
  readU16(gpa: number): number { const r = this.find(gpa, 2); return r.view.getUint16(gpa - r.gpa, true); }
  readU32(gpa: number): number { const r = this.find(gpa, 4); return r.view.getUint32(gpa - r.gpa, true); }
  readU64(gpa: number): bigint { const r = this.find(gpa, 8); return r.view.getBigUint64(gpa - r.gpa, true); }
  writeU8(gpa: number, v: number): void { const r = this.find(gpa, 1); r.bytes[gpa - r.gpa] = v; }
  writeU16(gpa: number, v: number): void { const r = this.find(gpa, 2); r.view.setUint16(gpa - r.gpa, v, true); }
  writeU32(gpa: number, v: number): void { const r = this.find(gpa, 4); r.view.setUint32(gpa - r.gpa, v >>> 0, true); }
  writeU64(gpa: number, v: bigint): void { const r = this.find(gpa, 8); r.view.setBigUint64(gpa - r.gpa, v, true); }
}

/** What boot code writes guest RAM through: the part of GuestMemory that RamLayout also serves. */
export type BootMemory = Pick<GuestMemory, 'contains' | 'write' | 'fill' | 'writeU64'>;

/**
 * Guest RAM's layout without its contents: the same bounds checks as GuestMemory, every write
 * dropped. The CLI loads the guest into one first, so a kernel or initrd that does not fit is
 * reported before any RAM is mapped or /dev/kvm is opened.
 */
export class RamLayout implements BootMemory {
  constructor(private readonly regions: ReadonlyArray<{ readonly gpa: number; readonly sizeBytes: number }>) {}
  contains(gpa: number, len: number): boolean { return containsRange(this.regions, gpa, len); }
  write(gpa: number, data: Uint8Array): void { findRegion(this.regions, gpa, data.length); }
  fill(gpa: number, len: number, _value: number): void { findRegion(this.regions, gpa, len); }
  writeU64(gpa: number, _v: bigint): void { findRegion(this.regions, gpa, 8); }
}

function containsRange(regions: ReadonlyArray<{ gpa: number; sizeBytes: number }>, gpa: number, len: number): boolean {
  return regions.some((r) => gpa >= r.gpa && gpa + len <= r.gpa + r.sizeBytes);
}

function findRegion<R extends { gpa: number; sizeBytes: number }>(regions: readonly R[], gpa: number, len: number): R {
  for (const r of regions) {
    if (gpa >= r.gpa && gpa + len <= r.gpa + r.sizeBytes && len >= 0) return r;
  }
  throw new GuestMemoryError('out-of-range',
    `guest-physical range 0x${gpa.toString(16)}+${len} is not inside guest RAM`);
}
