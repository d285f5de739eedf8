// One PCI function's configuration space: the type 0 header, BARs with size probing, the
// capability list, INTx status, and BAR placement reported to the owner when the guest moves a BAR
// or toggles decoding. Spec: PCI Local Bus Specification 3.0, 6.1 Configuration Space Organization,
// 6.2.5 Base Addresses, 6.7 Capabilities List; names as in Linux include/uapi/linux/pci_regs.h.
//
// Bytes are stored as the guest reads them; a per-byte write mask says which bits the guest may
// change (QEMU's wmask idea), so BAR sizing falls out of it: writing all ones to a BAR leaves
// ~(size - 1) plus the read-only type bits. This does not do PCI Express extended capabilities
// (offsets 0x100-0xfff read as zero), expansion ROMs, bridges (type 1 headers), BIST or
// multi-function devices.
import type { BusDevice } from '../bus/bus.js';
import { struct } from '../boot/struct.js';
import { PciError } from './pci-error.js';

/** The type 0 (normal) configuration header, 64 bytes; capabilities and device registers follow. */
export const PCI_TYPE0_HEADER = struct('PCI type 0 configuration header', 64, {
  vendor_id: [0x00, 'u16'],
  device_id: [0x02, 'u16'],
  command: [0x04, 'u16'],
  status: [0x06, 'u16'],
  revision_id: [0x08, 'u8'],
  class_prog: [0x09, 'u8'],
  class_device: [0x0a, 'u16'],
  cache_line_size: [0x0c, 'u8'],
  latency_timer: [0x0d, 'u8'],
  header_type: [0x0e, 'u8'],
  bist: [0x0f, 'u8'],
  base_address: [0x10, { bytes: 24 }],
  cardbus_cis: [0x28, 'u32'],
  subsystem_vendor_id: [0x2c, 'u16'],
  subsystem_id: [0x2e, 'u16'],
  rom_address: [0x30, 'u32'],
  capability_list: [0x34, 'u8'],
  interrupt_line: [0x3c, 'u8'],
  interrupt_pin: [0x3d, 'u8'],
  min_gnt: [0x3e, 'u8'],
  max_lat: [0x3f, 'u8'],
});

// pci_regs.h register offsets, from the table above so there is one source.
export const PCI_VENDOR_ID = PCI_TYPE0_HEADER.offsetOf('vendor_id');
export const PCI_DEVICE_ID = PCI_TYPE0_HEADER.offsetOf('device_id');
export const PCI_COMMAND = PCI_TYPE0_HEADER.offsetOf('command');
export const PCI_STATUS = PCI_TYPE0_HEADER.offsetOf('status');
export const PCI_REVISION_ID = PCI_TYPE0_HEADER.offsetOf('revision_id');
export const PCI_CLASS_PROG = PCI_TYPE0_HEADER.offsetOf('class_prog');
export const PCI_CLASS_DEVICE = PCI_TYPE0_HEADER.offsetOf('class_device');
export const PCI_CACHE_LINE_SIZE = PCI_TYPE0_HEADER.offsetOf('cache_line_size');
export const PCI_LATENCY_TIMER = PCI_TYPE0_HEADER.offsetOf('latency_timer');
export const PCI_HEADER_TYPE = PCI_TYPE0_HEADER.offsetOf('header_type');
export const PCI_BASE_ADDRESS_0 = PCI_TYPE0_HEADER.offsetOf('base_address');
export const PCI_SUBSYSTEM_VENDOR_ID = PCI_TYPE0_HEADER.offsetOf('subsystem_vendor_id');
export const PCI_SUBSYSTEM_ID = PCI_TYPE0_HEADER.offsetOf('subsystem_id');
export const PCI_ROM_ADDRESS = PCI_TYPE0_HEADER.offsetOf('rom_address');
export const PCI_CAPABILITY_LIST = PCI_TYPE0_HEADER.offsetOf('capability_list');
export const PCI_INTERRUPT_LINE = PCI_TYPE0_HEADER.offsetOf('interrupt_line');
export const PCI_INTERRUPT_PIN = PCI_TYPE0_HEADER.offsetOf('interrupt_pin');
export const PCI_STD_HEADER_SIZEOF = PCI_TYPE0_HEADER.sizeBytes;
export const PCI_STD_NUM_BARS = 6;
export const PCI_CFG_SPACE_SIZE = 256;
/** What ECAM gives each function; the part past PCI_CFG_SPACE_SIZE reads as zero here. */
export const PCI_CFG_SPACE_EXP_SIZE = 4096;

// PCI_COMMAND bits
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_PARITY = 0x40;
export const PCI_COMMAND_SERR = 0x100;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
// PCI_STATUS bits
export const PCI_STATUS_INTERRUPT = 0x08;
export const PCI_STATUS_CAP_LIST = 0x10;
// PCI_HEADER_TYPE values
export const PCI_HEADER_TYPE_NORMAL = 0;
// BAR type bits
export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;
// Capability list
export const PCI_CAP_LIST_ID = 0;
export const PCI_CAP_LIST_NEXT = 1;
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_MSIX = 0x11;
/** Capabilities start after the header, dword aligned (6.7). */
const PCI_CAP_FIRST_OFFSET = PCI_STD_HEADER_SIZEOF;

/** INTx pins as PCI_INTERRUPT_PIN holds them. */
export const PCI_INTERRUPT_PIN_INTA = 1;

/** Command bits the guest may change; the rest read as zero (no VGA snooping, no MWI, no fast back-to-back). */
const COMMAND_WRITABLE = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

export type PciBarKind = 'mem32' | 'mem64' | 'io';

export interface PciBarSpec {
  readonly index: number;
  readonly kind: PciBarKind;
  /** A power of two: at least 16 for memory BARs (4 KiB recommended), 4 for I/O BARs. */
  readonly sizeBytes: number;
  readonly prefetchable?: boolean;
  /** Accesses inside the BAR, at their offset from its base. */
  readonly handler: BusDevice;
}

/** One implemented BAR and where it currently decodes. */
export class PciBar {
  readonly index: number;
  readonly kind: PciBarKind;
  readonly sizeBytes: number;
  readonly prefetchable: boolean;
  readonly handler: BusDevice;
  /** "00:02.0 BAR 0" once on a bus; for messages and logs. */
  label: string;
  /** Where the function answers, or null while decoding is off or the address is unusable. */
  gpa: number | null = null;

  constructor(spec: PciBarSpec, owner: string) {
    this.index = spec.index;
    this.kind = spec.kind;
    this.sizeBytes = spec.sizeBytes;
    this.prefetchable = spec.prefetchable ?? false;
    this.handler = spec.handler;
    this.label = `${owner} BAR ${spec.index}`;
  }

  get isMemory(): boolean {
    return this.kind !== 'io';
  }
}

/** Told of every change in where a BAR decodes (null: not decoded). Addresses are guest-physical (or I/O ports). */
export type BarMovedListener = (bar: PciBar, oldGpa: number | null, newGpa: number | null) => void;

/** What the bus needs of a function: its configuration registers, by offset. */
export interface PciFunction {
  readonly config: PciConfigSpace;
  /** `data.length` is 1, 2 or 4 and the access does not cross a dword (the bus guarantees it). */
  configRead(offset: number, data: Uint8Array): void;
  configWrite(offset: number, data: Uint8Array): void;
}

export interface PciIdentity {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly revisionId?: number;
  /** The 24-bit class code: base class << 16 | subclass << 8 | programming interface. */
  readonly classCode: number;
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
  /** PCI_INTERRUPT_PIN: 0 (none) or PCI_INTERRUPT_PIN_INTA... */
  readonly interruptPin?: number;
  /** What firmware would have written to PCI_INTERRUPT_LINE (Linux with ACPI reads _PRT instead). */
  readonly interruptLine?: number;
  /** For messages: "virtio-pci rng". */
  readonly name: string;
}

export interface PciConfigSpaceOptions {
  readonly bars?: readonly PciBarSpec[];
  /** The INTx line (level): asserted while PCI_STATUS_INTERRUPT is set and INTx is not disabled. */
  readonly intx?: (level: 0 | 1) => void;
}

const U32_RANGE = 0x1_0000_0000;
/** 64-bit BAR addresses above this are not exact JS numbers; treat them as unusable. */
const MAX_BAR_END = 2 ** 52;
const IO_SPACE_END = 0x1_0000;

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

export class PciConfigSpace {
  /** The registers as the guest reads them. */
  readonly bytes = new Uint8Array(PCI_CFG_SPACE_SIZE);
  /** Bits the guest may write. */
  private readonly wmask = new Uint8Array(PCI_CFG_SPACE_SIZE);
  readonly bars: readonly PciBar[];
  private readonly barByIndex: Array<PciBar | undefined> = new Array(PCI_STD_NUM_BARS);
  private readonly view: DataView;
  private readonly intx: ((level: 0 | 1) => void) | undefined;
  private intxLevel: 0 | 1 = 0;
  private capEnd = PCI_CAP_FIRST_OFFSET;
  private lastCap = -1;
  /** Set by the bus when the function is attached. */
  barMoved: BarMovedListener | null = null;

  constructor(readonly identity: PciIdentity, options: PciConfigSpaceOptions = {}) {
    this.view = new DataView(this.bytes.buffer);
    this.intx = options.intx;
    const h = PCI_TYPE0_HEADER;
    h.encode({
      vendor_id: identity.vendorId,
      device_id: identity.deviceId,
      revision_id: identity.revisionId ?? 0,
      class_prog: identity.classCode & 0xff,
      class_device: identity.classCode >>> 8,
      header_type: PCI_HEADER_TYPE_NORMAL,
      subsystem_vendor_id: identity.subsystemVendorId ?? 0,
      subsystem_id: identity.subsystemId ?? 0,
      interrupt_pin: identity.interruptPin ?? 0,
      interrupt_line: identity.interruptLine ?? 0xff, // 0xff: "unknown / not connected"
    }, this.bytes);
    this.setMask(PCI_COMMAND, 2, COMMAND_WRITABLE);
    this.setMask(PCI_CACHE_LINE_SIZE, 1, 0xff);
    this.setMask(PCI_LATENCY_TIMER, 1, 0xff);
    this.setMask(PCI_INTERRUPT_LINE, 1, 0xff);
    const bars: PciBar[] = [];
    for (const spec of options.bars ?? []) bars.push(this.declareBar(spec));
    this.bars = bars;
  }

  private declareBar(spec: PciBarSpec): PciBar {
    const what = `${this.identity.name} BAR ${spec.index}`;
    const slots = spec.kind === 'mem64' ? 2 : 1;
    if (!Number.isInteger(spec.index) || spec.index < 0 || spec.index + slots > PCI_STD_NUM_BARS) {
      throw new PciError('bad-bar', `${what}: a ${spec.kind} BAR needs ${slots} of the BAR slots 0-5; pick another index`);
    }
    for (let i = spec.index; i < spec.index + slots; i++) {
      if (this.barByIndex[i]) throw new PciError('bad-bar', `${what}: BAR slot ${i} is already used by BAR ${this.barByIndex[i]!.index}; pick another index`);
    }
    const minSize = spec.kind === 'io' ? 4 : 16;
    const maxSize = spec.kind === 'mem32' ? 2 ** 31 : spec.kind === 'io' ? 256 : 2 ** 40;
    if (!isPowerOfTwo(spec.sizeBytes) || spec.sizeBytes < minSize || spec.sizeBytes > maxSize) {
      throw new PciError('bad-bar', `${what}: size ${spec.sizeBytes} is not a power of two in ${minSize}..${maxSize}`);
    }
    if (spec.kind === 'io' && spec.prefetchable) throw new PciError('bad-bar', `${what}: I/O BARs cannot be prefetchable`);
    const bar = new PciBar(spec, this.identity.name);
    for (let i = spec.index; i < spec.index + slots; i++) this.barByIndex[i] = bar; // a 64-bit BAR takes two slots
    const at = PCI_BASE_ADDRESS_0 + 4 * spec.index;
    const size = spec.sizeBytes;
    if (spec.kind === 'io') {
      this.view.setUint32(at, PCI_BASE_ADDRESS_SPACE_IO, true);
      this.setMask(at, 4, (~(size - 1) & 0xffff_fffc) >>> 0);
    } else {
      const type = (spec.kind === 'mem64' ? PCI_BASE_ADDRESS_MEM_TYPE_64 : PCI_BASE_ADDRESS_MEM_TYPE_32) | (spec.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
      this.view.setUint32(at, type, true);
      // The low dword's address bits below the size are hard-wired to 0; so are the high dword's
      // for a BAR of 4 GiB or more.
      const lowMask = size >= U32_RANGE ? 0 : (~(size - 1) & 0xffff_fff0) >>> 0;
      this.setMask(at, 4, lowMask);
      if (spec.kind === 'mem64') {
        const highMask = size > U32_RANGE ? (~(size / U32_RANGE - 1)) >>> 0 : 0xffff_ffff;
        this.setMask(at + 4, 4, highMask);
      }
    }
    return bar;
  }

  private setMask(offset: number, sizeBytes: number, mask: number): void {
    for (let i = 0; i < sizeBytes; i++) this.wmask[offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Offsets past 0xff (ECAM) read as zero: no PCI Express extended capabilities. */
  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      data[i] = at >= 0 && at < PCI_CFG_SPACE_SIZE ? this.bytes[at]! : 0;
    }
  }

  /** A guest write: only writable bits change; BAR and command changes are reported to barMoved. */
  write(offset: number, data: Uint8Array): void {
    let touchesDecode = false;
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (at < 0 || at >= PCI_CFG_SPACE_SIZE) continue;
      const m = this.wmask[at]!;
      this.bytes[at] = (this.bytes[at]! & ~m) | (data[i]! & m);
      if ((at >= PCI_COMMAND && at < PCI_COMMAND + 2) || (at >= PCI_BASE_ADDRESS_0 && at < PCI_BASE_ADDRESS_0 + 4 * PCI_STD_NUM_BARS)) touchesDecode = true;
    }
    if (touchesDecode) {
      this.updateDecoding();
      this.updateIntx();
    }
  }

  u8(offset: number): number {
    return this.bytes[offset]!;
  }

  u16(offset: number): number {
    return this.view.getUint16(offset, true);
  }

  u32(offset: number): number {
    return this.view.getUint32(offset, true);
  }

  /** Sets read-only bytes (device-owned registers inside a capability, for example). */
  setU8(offset: number, v: number): void {
    this.bytes[offset] = v;
  }

  setU16(offset: number, v: number): void {
    this.view.setUint16(offset, v, true);
  }

  setU32(offset: number, v: number): void {
    this.view.setUint32(offset, v >>> 0, true);
  }

  get command(): number {
    return this.u16(PCI_COMMAND);
  }

  /**
   * Appends a capability: `body` is the whole structure with its first two bytes (ID, next)
   * filled in here; `writeMask` (same length) says which bits the guest may change. Returns its offset.
   */
  addCapability(capId: number, body: Uint8Array, writeMask?: Uint8Array): number {
    const offset = this.capEnd;
    const end = offset + body.length;
    if (body.length < 2 || end > PCI_CFG_SPACE_SIZE) {
      throw new PciError('capability-space', `${this.identity.name}: capability 0x${capId.toString(16)} of ${body.length} bytes does not fit below offset ${PCI_CFG_SPACE_SIZE}; use fewer or smaller capabilities`);
    }
    this.bytes.set(body, offset);
    this.bytes[offset + PCI_CAP_LIST_ID] = capId;
    this.bytes[offset + PCI_CAP_LIST_NEXT] = 0;
    if (writeMask) {
      for (let i = 2; i < body.length; i++) this.wmask[offset + i] = writeMask[i] ?? 0;
    }
    if (this.lastCap < 0) {
      this.bytes[PCI_CAPABILITY_LIST] = offset;
      this.view.setUint16(PCI_STATUS, this.u16(PCI_STATUS) | PCI_STATUS_CAP_LIST, true);
    } else {
      this.bytes[this.lastCap + PCI_CAP_LIST_NEXT] = offset;
    }
    this.lastCap = offset;
    this.capEnd = Math.ceil(end / 4) * 4;
    return offset;
  }

  /** The device's INTx state (PCI_STATUS_INTERRUPT); the line follows it unless INTx is disabled. */
  setInterruptStatus(pending: boolean): void {
    const s = this.u16(PCI_STATUS);
    this.view.setUint16(PCI_STATUS, pending ? s | PCI_STATUS_INTERRUPT : s & ~PCI_STATUS_INTERRUPT, true);
    this.updateIntx();
  }

  get intxAsserted(): boolean {
    return this.intxLevel === 1;
  }

  private updateIntx(): void {
    const level: 0 | 1 = (this.u16(PCI_STATUS) & PCI_STATUS_INTERRUPT) && !(this.command & PCI_COMMAND_INTX_DISABLE) ? 1 : 0;
    if (level === this.intxLevel) return;
    this.intxLevel = level;
    this.intx?.(level);
  }

  /** The address a BAR's registers hold now (type bits cleared), whether or not it decodes. */
  barAddress(bar: PciBar): number {
    const at = PCI_BASE_ADDRESS_0 + 4 * bar.index;
    const low = this.u32(at);
    if (bar.kind === 'io') return (low & ~0x3) >>> 0;
    const base = (low & ~0xf) >>> 0;
    return bar.kind === 'mem64' ? this.u32(at + 4) * U32_RANGE + base : base;
  }

  /**
   * Where the BAR decodes: null with its space disabled in PCI_COMMAND, at address 0, or where it
   * would wrap or leave its address space (the half-written BAR of a 64-bit sizing probe, say).
   */
  private decodedAddress(bar: PciBar): number | null {
    const cmd = this.command;
    if (bar.kind === 'io' ? !(cmd & PCI_COMMAND_IO) : !(cmd & PCI_COMMAND_MEMORY)) return null;
    const gpa = this.barAddress(bar);
    const limit = bar.kind === 'io' ? IO_SPACE_END : bar.kind === 'mem32' ? U32_RANGE : MAX_BAR_END;
    if (gpa === 0 || gpa + bar.sizeBytes > limit) return null;
    return gpa;
  }

  private updateDecoding(): void {
    for (const bar of this.bars) {
      const next = this.decodedAddress(bar);
      if (next === bar.gpa) continue;
      const old = bar.gpa;
      bar.gpa = next;
      this.barMoved?.(bar, old, next);
    }
  }

  /** Programs a BAR as firmware does (the VMM's pre-assignment); decoding still follows PCI_COMMAND. */
  programBar(bar: PciBar, gpa: number): void {
    const at = PCI_BASE_ADDRESS_0 + 4 * bar.index;
    const low = new Uint8Array(4);
    new DataView(low.buffer).setUint32(0, gpa % U32_RANGE, true);
    this.write(at, low);
    if (bar.kind === 'mem64') {
      new DataView(low.buffer).setUint32(0, Math.floor(gpa / U32_RANGE), true);
      this.write(at + 4, low);
    }
  }

  /** Sets PCI_COMMAND bits as firmware does after placing the BARs. */
  enable(bits: number): void {
    this.writeCommand(this.command | bits);
  }

  disable(bits: number): void {
    this.writeCommand(this.command & ~bits);
  }

  private writeCommand(v: number): void {
    const d = new Uint8Array(2);
    new DataView(d.buffer).setUint16(0, v, true);
    this.write(PCI_COMMAND, d);
  }
}
