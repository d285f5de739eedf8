// PCI bus 0 behind a host bridge: device slots, configuration access mechanism #1 (ports 0xCF8
// and 0xCFC-0xCFF) and ECAM (the PCI Express memory-mapped window), firmware-style BAR placement
// from a window the VMM gives, and a BusDevice that routes a window of MMIO to whichever BARs
// decode there. Spec: PCI Local Bus Specification 3.0, 3.2.2.3.2 Configuration Mechanism #1; PCI
// Express Base Specification 4.0, 7.2.2 PCI Express Enhanced Configuration Access Mechanism (ECAM).
//
// Both access mechanisms are BusDevices seeing offsets only. One bus (number 0), one function per
// slot; no bridges, no hot-plug, no multi-function devices. Reads of an absent function return all
// ones, as a master abort does.
//
// Wiring, for the machine: PciConfigIo on the PIO bus at 0xCF8 (8 ports); PciEcam on the MMIO bus
// at the MCFG base (reserved in e820 or by the DSDT's PNP0C02); a PciBarRouter over the BAR window
// on the MMIO bus, given to PciBus as barMoved (or the machine's own listener that also moves
// ioeventfds); attach devices, then assignBars() with the same window the DSDT's _CRS declares.
import type { BusDevice } from '../bus/bus.js';
import {
  PCI_CFG_SPACE_EXP_SIZE, PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PciConfigSpace,
  type BarMovedListener, type PciBar, type PciFunction,
} from './config-space.js';
import { PciError } from './pci-error.js';

// ---- Configuration mechanism #1 ----
/** CONFIG_ADDRESS, a 32-bit register. */
export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
/** CONFIG_DATA: byte, word or dword accesses at 0xCFC-0xCFF reach the selected dword's bytes. */
export const PCI_CONFIG_DATA_PORT = 0xcfc;
/** Ports 0xCF8-0xCFF. */
export const PCI_CONFIG_IO_SIZE_BYTES = 8;
export const PCI_CONFIG_ADDRESS_ENABLE = 0x8000_0000;
const CONFIG_ADDRESS_BUS_SHIFT = 16;
const CONFIG_ADDRESS_DEVICE_SHIFT = 11;
const CONFIG_ADDRESS_FUNCTION_SHIFT = 8;
/** Enable, bus, device, function and dword register number; bits 30:24 and 1:0 read as zero. */
const CONFIG_ADDRESS_WRITABLE = 0x80ff_fffc;

// ---- ECAM ----
/** 1 MiB per bus: 32 devices x 8 functions x 4 KiB. */
export const PCI_ECAM_BUS_BYTES = 1 << 20;
const ECAM_BUS_SHIFT = 20;
const ECAM_DEVICE_SHIFT = 15;
const ECAM_FUNCTION_SHIFT = 12;

export const PCI_SLOTS = 32;
export const PCI_HOST_BRIDGE_SLOT = 0;
/** PCI_CLASS_BRIDGE_HOST: base class 06 (bridge), subclass 00 (host). */
export const PCI_CLASS_BRIDGE_HOST = 0x0600_00;
/**
 * The host bridge's IDs: Red Hat's 1b36:0008, which QEMU's generic PCIe host bridge (gpex)
 * reports; no Linux driver or quirk binds to it, which is what a bridge with no registers wants.
 */
export const PCI_VENDOR_ID_REDHAT = 0x1b36;
export const PCI_DEVICE_ID_REDHAT_PCIE_HOST = 0x0008;

/** A window of guest-physical addresses (or I/O ports) the VMM sets aside for BARs. */
export interface PciWindow {
  readonly base: number;
  readonly sizeBytes: number;
}

export interface PciBarWindows {
  /** Below 4 GiB: every 32-bit BAR, and 64-bit BARs when `mmio64` is absent. */
  readonly mmio32: PciWindow;
  /** Above 4 GiB, for 64-bit BARs. */
  readonly mmio64?: PciWindow;
  /** For I/O BARs. */
  readonly io?: PciWindow;
}

/** The host bridge, 00.0: a type 0 header of class 0x0600 and nothing else to configure. */
export class PciHostBridge implements PciFunction {
  readonly config = new PciConfigSpace({
    name: 'PCI host bridge',
    vendorId: PCI_VENDOR_ID_REDHAT,
    deviceId: PCI_DEVICE_ID_REDHAT_PCIE_HOST,
    classCode: PCI_CLASS_BRIDGE_HOST,
  });

  configRead(offset: number, data: Uint8Array): void {
    this.config.read(offset, data);
  }

  configWrite(offset: number, data: Uint8Array): void {
    this.config.write(offset, data);
  }
}

export interface PciBusOptions {
  /** Every change in where a BAR decodes, for the machine to (un)map it and move ioeventfds. */
  readonly barMoved?: BarMovedListener;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** "00:02.0", as lspci and Linux print a function's address. */
export function pciAddressLabel(slot: number): string {
  return `00:${slot.toString(16).padStart(2, '0')}.0`;
}

export class PciBus {
  readonly hostBridge = new PciHostBridge();
  private readonly slots: Array<PciFunction | undefined> = new Array(PCI_SLOTS);
  private readonly barMoved: BarMovedListener | undefined;

  constructor(options: PciBusOptions = {}) {
    this.barMoved = options.barMoved;
    this.slots[PCI_HOST_BRIDGE_SLOT] = this.hostBridge;
  }

  /** Puts `fn` in `slot` (default: the first free one) and returns the slot. */
  attach(fn: PciFunction, slot?: number): number {
    const at = slot ?? this.slots.findIndex((s, i) => i !== PCI_HOST_BRIDGE_SLOT && s === undefined);
    if (!Number.isInteger(at) || at < 1 || at >= PCI_SLOTS) {
      throw new PciError('bad-slot', `${fn.config.identity.name}: slot ${slot ?? 'none free'} is not one of 1-${PCI_SLOTS - 1} (0 is the host bridge); use another slot or fewer devices`);
    }
    if (this.slots[at]) throw new PciError('bad-slot', `${fn.config.identity.name}: slot ${at} is taken by ${this.slots[at]!.config.identity.name}; use another slot`);
    this.slots[at] = fn;
    for (const bar of fn.config.bars) bar.label = `${pciAddressLabel(at)} BAR ${bar.index}`;
    fn.config.barMoved = (bar, oldGpa, newGpa) => this.barMoved?.(bar, oldGpa, newGpa);
    return at;
  }

  /** The function at bus 0, `slot`, function 0. */
  function(slot: number): PciFunction | undefined {
    return this.slots[slot];
  }

  /** Occupied slots, host bridge included, in slot order. */
  list(): Array<{ slot: number; fn: PciFunction }> {
    const out: Array<{ slot: number; fn: PciFunction }> = [];
    this.slots.forEach((fn, slot) => { if (fn) out.push({ slot, fn }); });
    return out;
  }

  /** A configuration read; absent functions and other buses answer all ones. */
  configRead(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void {
    const target = bus === 0 && fn === 0 ? this.slots[device] : undefined;
    if (!target || !validAccess(offset, data.length)) {
      data.fill(0xff);
      return;
    }
    target.configRead(offset, data);
  }

  configWrite(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void {
    const target = bus === 0 && fn === 0 ? this.slots[device] : undefined;
    if (!target || !validAccess(offset, data.length)) return;
    target.configWrite(offset, data);
  }

  /**
   * Places every BAR as firmware would (largest first, each naturally aligned) and enables memory
   * and I/O decoding, so a kernel that keeps firmware's assignment (Linux without pci=realloc)
   * finds them ready. The barMoved listener hears each placement. Throws PciError when a window
   * is too small.
   */
  assignBars(windows: PciBarWindows): void {
    const plans: Array<{ window: PciWindow | undefined; name: string; bars: Array<{ config: PciConfigSpace; bar: PciBar }> }> = [
      { window: windows.mmio32, name: '32-bit MMIO', bars: [] },
      { window: windows.mmio64, name: '64-bit MMIO', bars: [] },
      { window: windows.io, name: 'I/O', bars: [] },
    ];
    for (const { fn } of this.list()) {
      for (const bar of fn.config.bars) {
        const plan = bar.kind === 'io' ? plans[2]! : bar.kind === 'mem64' && windows.mmio64 ? plans[1]! : plans[0]!;
        plan.bars.push({ config: fn.config, bar });
      }
    }
    // Decoding off while the BARs are rewritten, as firmware does: a 64-bit BAR is written one
    // dword at a time, and its half-written address must not be mapped.
    for (const { fn } of this.list()) {
      if (fn.config.bars.length > 0) fn.config.disable(PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
    }
    for (const plan of plans) {
      if (plan.bars.length === 0) continue;
      const w = plan.window;
      if (!w) throw new PciError('window-full', `${plan.bars[0]!.bar.label} is an I/O BAR but no I/O window was given; give assignBars an io window`);
      plan.bars.sort((a, b) => b.bar.sizeBytes - a.bar.sizeBytes || a.bar.label.localeCompare(b.bar.label));
      let next = w.base;
      for (const { config, bar } of plan.bars) {
        const gpa = Math.ceil(next / bar.sizeBytes) * bar.sizeBytes;
        if (gpa + bar.sizeBytes > w.base + w.sizeBytes || (bar.kind === 'mem32' && gpa + bar.sizeBytes > 0x1_0000_0000)) {
          throw new PciError('window-full', `${bar.label} (${bar.sizeBytes} bytes) does not fit in the ${plan.name} window ${hex(w.base)}+${hex(w.sizeBytes)}; make the window larger or use fewer devices`);
        }
        config.programBar(bar, gpa);
        next = gpa + bar.sizeBytes;
      }
    }
    for (const { fn } of this.list()) {
      const bars = fn.config.bars;
      if (bars.length === 0) continue;
      fn.config.enable((bars.some((b) => b.isMemory) ? PCI_COMMAND_MEMORY : 0) | (bars.some((b) => !b.isMemory) ? PCI_COMMAND_IO : 0));
    }
  }
}

/** 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB of a function. */
function validAccess(offset: number, len: number): boolean {
  return (len === 1 || len === 2 || len === 4) && offset % len === 0 && offset >= 0 && offset + len <= PCI_CFG_SPACE_EXP_SIZE;
}

/**
 * Configuration mechanism #1 at ports 0xCF8-0xCFF (register at base 0xCF8). Only 32-bit accesses
 * reach CONFIG_ADDRESS: Linux's pci_check_type1() writes a byte to 0xCFB first and expects
 * CONFIG_ADDRESS unchanged (on a PIIX, 0xCF9 is the reset control register; nothing here).
 */
export class PciConfigIo implements BusDevice {
  private address = 0;

  constructor(private readonly bus: PciBus) {}

  get configAddress(): number {
    return this.address;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset === 0) {
      if (data.length === 4) writeLe(data, this.address);
      else data.fill(0xff);
      return;
    }
    const reg = offset - (PCI_CONFIG_DATA_PORT - PCI_CONFIG_ADDRESS_PORT);
    if (reg < 0 || reg + data.length > 4 || !(this.address & PCI_CONFIG_ADDRESS_ENABLE)) {
      data.fill(0xff);
      return;
    }
    const a = this.address;
    this.bus.configRead((a >>> CONFIG_ADDRESS_BUS_SHIFT) & 0xff, (a >>> CONFIG_ADDRESS_DEVICE_SHIFT) & 0x1f, (a >>> CONFIG_ADDRESS_FUNCTION_SHIFT) & 0x7, (a & 0xfc) + reg, data);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset === 0) {
      if (data.length === 4) this.address = (readLe(data) & CONFIG_ADDRESS_WRITABLE) >>> 0;
      return;
    }
    const reg = offset - (PCI_CONFIG_DATA_PORT - PCI_CONFIG_ADDRESS_PORT);
    if (reg < 0 || reg + data.length > 4 || !(this.address & PCI_CONFIG_ADDRESS_ENABLE)) return;
    const a = this.address;
    this.bus.configWrite((a >>> CONFIG_ADDRESS_BUS_SHIFT) & 0xff, (a >>> CONFIG_ADDRESS_DEVICE_SHIFT) & 0x1f, (a >>> CONFIG_ADDRESS_FUNCTION_SHIFT) & 0x7, (a & 0xfc) + reg, data);
  }
}

/**
 * ECAM: offset = bus << 20 | device << 15 | function << 12 | register. The window covers buses
 * 0..busCount-1; the MCFG table describes it. Accesses of 1, 2 or 4 bytes, naturally aligned.
 */
export class PciEcam implements BusDevice {
  readonly sizeBytes: number;

  constructor(private readonly bus: PciBus, readonly busCount = 1) {
    if (!Number.isInteger(busCount) || busCount < 1 || busCount > 256) throw new RangeError(`ECAM for ${busCount} buses: 1 to 256`);
    this.sizeBytes = busCount * PCI_ECAM_BUS_BYTES;
  }

  read(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset >= this.sizeBytes) {
      data.fill(0xff);
      return;
    }
    this.bus.configRead(offset >>> ECAM_BUS_SHIFT, (offset >>> ECAM_DEVICE_SHIFT) & 0x1f, (offset >>> ECAM_FUNCTION_SHIFT) & 0x7, offset & 0xfff, data);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset >= this.sizeBytes) return;
    this.bus.configWrite(offset >>> ECAM_BUS_SHIFT, (offset >>> ECAM_DEVICE_SHIFT) & 0x1f, (offset >>> ECAM_FUNCTION_SHIFT) & 0x7, offset & 0xfff, data);
  }
}

/**
 * One BusDevice over a window of MMIO (or I/O) that hands each access to the BAR decoding there,
 * so the machine registers the window once and BAR moves need no bus changes. Give `barMoved`
 * to the PciBus. Accesses no BAR claims read all ones; where BARs overlap (a guest may program
 * that), the lowest-addressed one wins. BARs outside the window are not reachable through it.
 */
export class PciBarRouter implements BusDevice {
  private entries: Array<{ gpa: number; end: number; bar: PciBar }> = [];

  constructor(readonly window: PciWindow, readonly space: 'mmio' | 'pio' = 'mmio') {}

  readonly barMoved: BarMovedListener = (bar, _oldGpa, newGpa) => {
    if (bar.isMemory !== (this.space === 'mmio')) return;
    this.entries = this.entries.filter((e) => e.bar !== bar);
    if (newGpa !== null) this.entries.push({ gpa: newGpa, end: newGpa + bar.sizeBytes, bar });
    this.entries.sort((a, b) => a.gpa - b.gpa);
  };

  /** The BAR decoding at `gpa`, with the offset into it. */
  find(gpa: number): { bar: PciBar; offset: number } | undefined {
    const e = this.entryAt(gpa);
    return e ? { bar: e.bar, offset: gpa - e.gpa } : undefined;
  }

  // The access path allocates nothing: a doorbell without an ioeventfd comes through here.
  private entryAt(gpa: number): { gpa: number; end: number; bar: PciBar } | undefined {
    const entries = this.entries;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (gpa >= e.gpa && gpa < e.end) return e;
    }
    return undefined;
  }

  read(offset: number, data: Uint8Array): void {
    const gpa = this.window.base + offset;
    const e = this.entryAt(gpa);
    if (!e || gpa + data.length > e.end) data.fill(0xff);
    else e.bar.handler.read(gpa - e.gpa, data);
  }

  write(offset: number, data: Uint8Array): void {
    const gpa = this.window.base + offset;
    const e = this.entryAt(gpa);
    if (e && gpa + data.length <= e.end) e.bar.handler.write(gpa - e.gpa, data);
  }
}

function readLe(data: Uint8Array): number {
  return (data[0]! | data[1]! << 8 | data[2]! << 16 | data[3]! << 24) >>> 0;
}

function writeLe(data: Uint8Array, v: number): void {
  data[0] = v;
  data[1] = v >>> 8;
  data[2] = v >>> 16;
  data[3] = v >>> 24;
}
