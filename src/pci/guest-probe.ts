// The guest's side of PCI configuration, in miniature, for tests: access through 0xCF8/0xCFC
// (Linux arch/x86/pci/direct.c, pci_conf1_read/write) or ECAM (arch/x86/pci/mmconfig_64.c), and
// the probe of drivers/pci/probe.c: pci_setup_device's IDs and class, __pci_read_base's BAR
// sizing, and the capability walk of pci_find_capability.
import type { Bus } from '../bus/bus.js';
import {
  PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_64, PCI_BASE_ADDRESS_SPACE_IO,
  PCI_CAPABILITY_LIST, PCI_COMMAND, PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_DEVICE_ID, PCI_HEADER_TYPE,
  PCI_INTERRUPT_PIN, PCI_REVISION_ID, PCI_STATUS, PCI_STATUS_CAP_LIST, PCI_STD_NUM_BARS, PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID, PCI_VENDOR_ID,
} from './config-space.js';
import { PCI_CONFIG_ADDRESS_ENABLE, PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT } from './bus.js';

export function le(len: number, value: number): Uint8Array {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = (value >>> (8 * i)) & 0xff;
  return d;
}

export function fromLe(d: Uint8Array): number {
  let v = 0;
  for (let i = d.length - 1; i >= 0; i--) v = v * 256 + d[i]!;
  return v;
}

/** A bus access of `len` bytes that must be claimed; returns the little-endian value read. */
export function busRead(bus: Bus, addr: number, len: number): number {
  const d = new Uint8Array(len);
  if (!bus.access(addr, false, d)) throw new Error(`${bus.space} 0x${addr.toString(16)}: no device`);
  return fromLe(d);
}

export function busWrite(bus: Bus, addr: number, len: number, value: number): void {
  if (!bus.access(addr, true, le(len, value))) throw new Error(`${bus.space} 0x${addr.toString(16)}: no device`);
}

/** Configuration reads and writes of 1, 2 or 4 bytes at (bus 0, slot, function 0). */
export interface ConfigAccess {
  read(slot: number, offset: number, len: 1 | 2 | 4): number;
  write(slot: number, offset: number, len: 1 | 2 | 4, value: number): void;
}

/** Mechanism #1 as Linux pci_conf1_read/write do it: CONFIG_ADDRESS, then CONFIG_DATA + (reg & 3). */
export class Conf1Access implements ConfigAccess {
  constructor(readonly pio: Bus) {}

  private select(slot: number, offset: number): void {
    busWrite(this.pio, PCI_CONFIG_ADDRESS_PORT, 4, (PCI_CONFIG_ADDRESS_ENABLE | (slot << 11) | (offset & 0xfc)) >>> 0);
  }

  read(slot: number, offset: number, len: 1 | 2 | 4): number {
    this.select(slot, offset);
    return busRead(this.pio, PCI_CONFIG_DATA_PORT + (offset & 3), len);
  }

  write(slot: number, offset: number, len: 1 | 2 | 4, value: number): void {
    this.select(slot, offset);
    busWrite(this.pio, PCI_CONFIG_DATA_PORT + (offset & 3), len, value);
  }
}

/** ECAM as Linux's pci_mmcfg_read/write do it: one MMIO access at base + (bus << 20 | devfn << 12 | reg). */
export class EcamAccess implements ConfigAccess {
  constructor(readonly mmio: Bus, readonly baseGpa: number) {}

  read(slot: number, offset: number, len: 1 | 2 | 4): number {
    return busRead(this.mmio, this.baseGpa + (slot << 15) + offset, len);
  }

  write(slot: number, offset: number, len: 1 | 2 | 4, value: number): void {
    busWrite(this.mmio, this.baseGpa + (slot << 15) + offset, len, value);
  }
}

export interface ProbedBar {
  readonly index: number;
  readonly kind: 'mem32' | 'mem64' | 'io';
  readonly prefetchable: boolean;
  readonly sizeBytes: number;
  /** What the BAR held before probing (firmware's assignment), type bits cleared. */
  readonly address: number;
}

export interface ProbedFunction {
  readonly slot: number;
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revision: number;
  readonly classCode: number;
  readonly headerType: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  readonly interruptPin: number;
  readonly bars: readonly ProbedBar[];
  /** [capability ID, offset] in list order. */
  readonly capabilities: ReadonlyArray<readonly [number, number]>;
}

/** pci_find_capability's bound on a looping list (PCI_FIND_CAP_TTL). */
const PCI_FIND_CAP_TTL = 48;

/**
 * pci_setup_device() for a type 0 function: IDs, class, then each BAR the way __pci_read_base()
 * sizes it (decode off, all ones written, read back, restored), then the capability list.
 * Returns null when nothing answers (vendor ID 0xffff).
 */
export function probeFunction(cfg: ConfigAccess, slot: number): ProbedFunction | null {
  const vendorId = cfg.read(slot, PCI_VENDOR_ID, 2);
  if (vendorId === 0xffff || vendorId === 0) return null;
  const classRev = cfg.read(slot, PCI_REVISION_ID, 4);
  const headerType = cfg.read(slot, PCI_HEADER_TYPE, 1) & 0x7f;
  const bars: ProbedBar[] = [];
  const cmd = cfg.read(slot, PCI_COMMAND, 2);
  if (cmd & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY)) cfg.write(slot, PCI_COMMAND, 2, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
  for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
    const reg = PCI_BASE_ADDRESS_0 + 4 * i;
    const l = cfg.read(slot, reg, 4);
    cfg.write(slot, reg, 4, 0xffff_ffff);
    const sz = cfg.read(slot, reg, 4);
    cfg.write(slot, reg, 4, l);
    if (sz === 0 || sz === 0xffff_ffff) continue;
    if (l & PCI_BASE_ADDRESS_SPACE_IO) {
      const mask = sz & 0xfffc;
      bars.push({ index: i, kind: 'io', prefetchable: false, sizeBytes: mask & -mask, address: l & 0xfffc });
      continue;
    }
    const is64 = (l & 0x6) === PCI_BASE_ADDRESS_MEM_TYPE_64;
    let size = BigInt((sz & ~0xf) >>> 0);
    let address = BigInt((l & ~0xf) >>> 0);
    if (is64) {
      const lh = cfg.read(slot, reg + 4, 4);
      cfg.write(slot, reg + 4, 4, 0xffff_ffff);
      const szh = cfg.read(slot, reg + 4, 4);
      cfg.write(slot, reg + 4, 4, lh);
      size |= BigInt(szh) << 32n;
      address |= BigInt(lh) << 32n;
    } else {
      size |= 0xffff_ffffn << 32n;
    }
    // pci_size(): the lowest set bit of the mask is the size.
    const bits = size & ((1n << 64n) - 1n);
    const sizeBytes = Number(bits & -bits);
    bars.push({ index: i, kind: is64 ? 'mem64' : 'mem32', prefetchable: (l & PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0, sizeBytes, address: Number(address) });
    if (is64) i++;
  }
  if (cmd & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY)) cfg.write(slot, PCI_COMMAND, 2, cmd);
  const capabilities: Array<[number, number]> = [];
  if (cfg.read(slot, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) {
    let pos = cfg.read(slot, PCI_CAPABILITY_LIST, 1);
    for (let ttl = PCI_FIND_CAP_TTL; ttl > 0 && pos >= 0x40; ttl--) {
      pos &= ~3;
      const ent = cfg.read(slot, pos, 2);
      const id = ent & 0xff;
      if (id === 0xff) break;
      capabilities.push([id, pos]);
      pos = ent >>> 8;
    }
  }
  return {
    slot,
    vendorId,
    deviceId: cfg.read(slot, PCI_DEVICE_ID, 2),
    revision: classRev & 0xff,
    classCode: classRev >>> 8,
    headerType,
    subsystemVendorId: cfg.read(slot, PCI_SUBSYSTEM_VENDOR_ID, 2),
    subsystemId: cfg.read(slot, PCI_SUBSYSTEM_ID, 2),
    interruptPin: cfg.read(slot, PCI_INTERRUPT_PIN, 1),
    bars,
    capabilities,
  };
}

