// Address-range buses for port I/O and MMIO. Devices are registered at a base and see only the
// offset from it (rust-vmm vm-device style), so a device never knows where it lives.

/** A device on a bus. `data` is the access (its length is the access size), little-endian. */
export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

/**
 * `device` seen through a window that starts `deltaBytes` into its register block, for devices
 * whose registers are not contiguous on the bus (the i8042 has 0x60 and 0x64; 0x61 belongs to the
 * NMI status and control port between them).
 */
export function offsetDevice(device: BusDevice, deltaBytes: number): BusDevice {
  return {
    read: (offset, data) => device.read(offset + deltaBytes, data),
    write: (offset, data) => device.write(offset + deltaBytes, data),
  };
}

export interface BusEntry {
  readonly base: number;
  readonly sizeBytes: number;
  readonly name: string;
  readonly device: BusDevice;
}

export class BusError extends Error {
  override readonly name = 'BusError';
  constructor(readonly kind: 'overlap' | 'empty', message: string) {
    super(message);
  }
}

export class Bus {
  private entries: BusEntry[] = [];

  constructor(readonly space: 'pio' | 'mmio') {}

  insert(base: number, sizeBytes: number, name: string, device: BusDevice): void {
    if (sizeBytes <= 0) throw new BusError('empty', `${this.space} device ${name}: size must be positive`);
    for (const e of this.entries) {
      if (base < e.base + e.sizeBytes && e.base < base + sizeBytes) {
        throw new BusError('overlap', `${this.space} device ${name} at 0x${base.toString(16)}+${sizeBytes} overlaps ${e.name} at 0x${e.base.toString(16)}+${e.sizeBytes}`);
      }
    }
    this.entries.push({ base, sizeBytes, name, device });
    this.entries.sort((a, b) => a.base - b.base);
  }

  /** The entry covering `addr`, or undefined. Binary search: buses are small but MMIO ones grow. */
  find(addr: number): BusEntry | undefined {
    let lo = 0;
    let hi = this.entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = this.entries[mid]!;
      if (addr < e.base) hi = mid - 1;
      else if (addr >= e.base + e.sizeBytes) lo = mid + 1;
      else return e;
    }
    return undefined;
  }

  /**
   * Hands an access to the device covering `addr`, at its offset from the device's base.
   * Returns false when no device claims the address (the caller decides what unclaimed means).
   */
  access(addr: number, isWrite: boolean, data: Uint8Array): boolean {
    const e = this.find(addr);
    if (!e) return false;
    if (isWrite) e.device.write(addr - e.base, data);
    else e.device.read(addr - e.base, data);
    return true;
  }

  list(): readonly BusEntry[] {
    return this.entries;
  }
}
