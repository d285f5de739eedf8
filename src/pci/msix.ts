// MSI-X for one PCI function: the capability (table size, table and PBA location, function mask,
// enable), the vector table and the pending bit array, with delivery through an injected
// signalMsi. Spec: PCI Local Bus Specification 3.0, 6.8.2 MSI-X Capability and Table Structure;
// names as in Linux include/uapi/linux/pci_regs.h.
//
// A vector that fires while masked (its own mask bit or the function mask) sets its pending bit;
// unmasking delivers it and clears the bit. How a message becomes an interrupt (KVM_SIGNAL_MSI,
// an irqfd on a GSI routed to the message) is the VMM's: signalMsi names the vector with each
// message, and onVectorChanged reports every change of a vector's address, data or mask as the
// guest writes it. The table and PBA live in a BAR of the owning function, which forwards
// accesses at their offsets inside the BAR.
import { struct } from '../boot/struct.js';
import { PCI_CAP_ID_MSIX, type PciConfigSpace } from './config-space.js';

export const PCI_CAP_MSIX = struct('MSI-X capability', 12, {
  cap_id: [0, 'u8'],
  cap_next: [1, 'u8'],
  msg_ctrl: [2, 'u16'],
  table: [4, 'u32'],
  pba: [8, 'u32'],
});
export const PCI_MSIX_FLAGS = PCI_CAP_MSIX.offsetOf('msg_ctrl');
export const PCI_MSIX_TABLE = PCI_CAP_MSIX.offsetOf('table');
export const PCI_MSIX_PBA = PCI_CAP_MSIX.offsetOf('pba');
export const PCI_CAP_MSIX_SIZEOF = PCI_CAP_MSIX.sizeBytes;
/** Table size - 1, bits 10:0. */
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_TABLE_BIR = 0x7;
export const PCI_MSIX_TABLE_OFFSET = 0xffff_fff8;
export const PCI_MSIX_PBA_BIR = 0x7;
export const PCI_MSIX_PBA_OFFSET = 0xffff_fff8;
export const PCI_MSIX_MAX_VECTORS = 2048;

/** One table entry. */
export const PCI_MSIX_ENTRY = struct('MSI-X table entry', 16, {
  lower_addr: [0, 'u32'],
  upper_addr: [4, 'u32'],
  data: [8, 'u32'],
  vector_ctrl: [12, 'u32'],
});
export const PCI_MSIX_ENTRY_SIZE = PCI_MSIX_ENTRY.sizeBytes;
export const PCI_MSIX_ENTRY_LOWER_ADDR = PCI_MSIX_ENTRY.offsetOf('lower_addr');
export const PCI_MSIX_ENTRY_UPPER_ADDR = PCI_MSIX_ENTRY.offsetOf('upper_addr');
export const PCI_MSIX_ENTRY_DATA = PCI_MSIX_ENTRY.offsetOf('data');
export const PCI_MSIX_ENTRY_VECTOR_CTRL = PCI_MSIX_ENTRY.offsetOf('vector_ctrl');
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;

/** A vector as the VMM needs it to route the message. */
export interface MsixVectorState {
  readonly addressLo: number;
  readonly addressHi: number;
  readonly data: number;
  /** The vector's own mask bit, or the function mask, or MSI-X disabled: messages pend (or are not sent). */
  readonly masked: boolean;
}

export interface MsixOptions {
  readonly vectors: number;
  readonly tableBar: number;
  /** Offset of the table in its BAR, 8-byte aligned. */
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  /** Sends one message (a memory write of `data` to the 64-bit address hi:lo) for `vector`. */
  readonly signalMsi: (addressLo: number, addressHi: number, data: number, vector: number) => void;
  /**
   * A vector's address, data or effective mask changed (also when MSI-X is enabled or disabled),
   * at each table write. (tsvmm's virtio-pci re-routes a vector's irqfd when it next fires with a
   * changed message instead: one route rewrite per use, not one per dword the guest writes.)
   */
  readonly onVectorChanged?: (vector: number, state: MsixVectorState) => void;
}

export class Msix {
  readonly vectors: number;
  readonly tableSizeBytes: number;
  readonly pbaSizeBytes: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  private readonly table: Uint8Array;
  private readonly tableView: DataView;
  private readonly pba: Uint8Array;
  private readonly signalMsi: MsixOptions['signalMsi'];
  private readonly onVectorChanged: MsixOptions['onVectorChanged'];
  private config: PciConfigSpace | null = null;
  private capOffset = -1;
  private enabledBit = false;
  private functionMaskBit = false;
  /** Messages sent, for tests and stats. */
  sent = 0;

  constructor(options: MsixOptions) {
    const n = options.vectors;
    if (!Number.isInteger(n) || n < 1 || n > PCI_MSIX_MAX_VECTORS) throw new RangeError(`MSI-X with ${n} vectors: 1 to ${PCI_MSIX_MAX_VECTORS}`);
    if (options.tableOffset % 8 !== 0 || options.pbaOffset % 8 !== 0) throw new RangeError('MSI-X table and PBA offsets must be 8-byte aligned (the low 3 bits hold the BIR)');
    this.vectors = n;
    this.tableSizeBytes = n * PCI_MSIX_ENTRY_SIZE;
    this.pbaSizeBytes = Math.ceil(n / 64) * 8;
    this.tableBar = options.tableBar;
    this.tableOffset = options.tableOffset;
    this.pbaBar = options.pbaBar;
    this.pbaOffset = options.pbaOffset;
    this.table = new Uint8Array(this.tableSizeBytes);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(this.pbaSizeBytes);
    this.signalMsi = options.signalMsi;
    this.onVectorChanged = options.onVectorChanged;
    this.resetTable();
  }

  /** Adds the capability to `config`; its enable and function-mask bits become guest-writable. */
  addTo(config: PciConfigSpace): number {
    const body = PCI_CAP_MSIX.encode({
      msg_ctrl: this.vectors - 1,
      table: (this.tableOffset | this.tableBar) >>> 0,
      pba: (this.pbaOffset | this.pbaBar) >>> 0,
    });
    const mask = PCI_CAP_MSIX.encode({ msg_ctrl: PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL });
    this.config = config;
    this.capOffset = config.addCapability(PCI_CAP_ID_MSIX, body, mask);
    return this.capOffset;
  }

  get capabilityOffset(): number {
    return this.capOffset;
  }

  /** MSI-X Enable is set: the function must not use INTx. */
  get enabled(): boolean {
    return this.enabledBit;
  }

  get functionMasked(): boolean {
    return this.functionMaskBit;
  }

  /** The owner calls this after every configuration write that touched the capability. */
  controlWritten(): void {
    if (!this.config) return;
    const ctrl = this.config.u16(this.capOffset + PCI_MSIX_FLAGS);
    const enabled = (ctrl & PCI_MSIX_FLAGS_ENABLE) !== 0;
    const masked = (ctrl & PCI_MSIX_FLAGS_MASKALL) !== 0;
    if (enabled === this.enabledBit && masked === this.functionMaskBit) return;
    this.enabledBit = enabled;
    this.functionMaskBit = masked;
    for (let v = 0; v < this.vectors; v++) this.changed(v);
    this.deliverPending();
  }

  /** Overlaps [offset, offset + len) the capability? */
  coversConfig(offset: number, len: number): boolean {
    return this.capOffset >= 0 && offset < this.capOffset + PCI_CAP_MSIX_SIZEOF && this.capOffset < offset + len;
  }

  vectorMasked(vector: number): boolean {
    return (this.tableView.getUint32(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, true) & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  isPending(vector: number): boolean {
    return (this.pba[vector >>> 3]! & (1 << (vector & 7))) !== 0;
  }

  vectorState(vector: number): MsixVectorState {
    const at = vector * PCI_MSIX_ENTRY_SIZE;
    return {
      addressLo: this.tableView.getUint32(at + PCI_MSIX_ENTRY_LOWER_ADDR, true),
      addressHi: this.tableView.getUint32(at + PCI_MSIX_ENTRY_UPPER_ADDR, true),
      data: this.tableView.getUint32(at + PCI_MSIX_ENTRY_DATA, true),
      masked: !this.enabledBit || this.functionMaskBit || this.vectorMasked(vector),
    };
  }

  /**
   * Vector `vector` fires. Returns false when MSI-X is disabled (the caller falls back to INTx)
   * or the vector does not exist; a masked vector pends and counts as handled.
   */
  notify(vector: number): boolean {
    if (!this.enabledBit || !Number.isInteger(vector) || vector < 0 || vector >= this.vectors) return false;
    if (this.functionMaskBit || this.vectorMasked(vector)) {
      this.pba[vector >>> 3] = this.pba[vector >>> 3]! | (1 << (vector & 7));
      return true;
    }
    this.send(vector);
    return true;
  }

  private send(vector: number): void {
    const at = vector * PCI_MSIX_ENTRY_SIZE;
    this.sent++;
    this.signalMsi(
      this.tableView.getUint32(at + PCI_MSIX_ENTRY_LOWER_ADDR, true),
      this.tableView.getUint32(at + PCI_MSIX_ENTRY_UPPER_ADDR, true),
      this.tableView.getUint32(at + PCI_MSIX_ENTRY_DATA, true),
      vector,
    );
  }

  private deliverPending(): void {
    if (!this.enabledBit || this.functionMaskBit) return;
    for (let v = 0; v < this.vectors; v++) {
      if (this.isPending(v) && !this.vectorMasked(v)) {
        this.pba[v >>> 3] = this.pba[v >>> 3]! & ~(1 << (v & 7));
        this.send(v);
      }
    }
  }

  private changed(vector: number): void {
    this.onVectorChanged?.(vector, this.vectorState(vector));
  }

  /** Table accesses at their offset inside the table: aligned dwords and qwords (6.8.2). */
  tableRead(offset: number, data: Uint8Array): void {
    if (!this.aligned(offset, data.length, this.tableSizeBytes)) {
      data.fill(0);
      return;
    }
    data.set(this.table.subarray(offset, offset + data.length));
  }

  tableWrite(offset: number, data: Uint8Array): void {
    if (!this.aligned(offset, data.length, this.tableSizeBytes)) return;
    const first = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
    const last = Math.floor((offset + data.length - 1) / PCI_MSIX_ENTRY_SIZE);
    const before = this.vectorSnapshot(first, last);
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const field = at % PCI_MSIX_ENTRY_SIZE;
      // Vector control: only the mask bit is writable; the rest is reserved and reads zero.
      if (field >= PCI_MSIX_ENTRY_VECTOR_CTRL) this.table[at] = field === PCI_MSIX_ENTRY_VECTOR_CTRL ? data[i]! & PCI_MSIX_ENTRY_CTRL_MASKBIT : 0;
      else this.table[at] = data[i]!;
    }
    for (let v = first; v <= last; v++) {
      if (!sameState(before[v - first]!, this.vectorState(v))) this.changed(v);
    }
    this.deliverPending();
  }

  private vectorSnapshot(first: number, last: number): MsixVectorState[] {
    const out: MsixVectorState[] = [];
    for (let v = first; v <= last; v++) out.push(this.vectorState(v));
    return out;
  }

  /** The PBA is read-only (6.8.2.9: writes are ignored). */
  pbaRead(offset: number, data: Uint8Array): void {
    if (!this.aligned(offset, data.length, this.pbaSizeBytes)) {
      data.fill(0);
      return;
    }
    data.set(this.pba.subarray(offset, offset + data.length));
  }

  private aligned(offset: number, len: number, size: number): boolean {
    return (len === 4 || len === 8) && offset % len === 0 && offset >= 0 && offset + len <= size;
  }

  /** Every vector masked with address and data zero, nothing pending: the state after a function reset. */
  resetTable(): void {
    this.table.fill(0);
    this.pba.fill(0);
    for (let v = 0; v < this.vectors; v++) this.table[v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
  }
}

function sameState(a: MsixVectorState, b: MsixVectorState): boolean {
  return a.addressLo === b.addressLo && a.addressHi === b.addressHi && a.data === b.data && a.masked === b.masked;
}
