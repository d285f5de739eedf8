// The I/O APIC: 24 interrupt pins routed by a redirection table to messages on the APIC bus.
// Spec: Intel 82093AA I/O APIC datasheet (290566); the version-0x20 EOI register as in the
// ICH/PCH I/O APIC (Intel 9-series PCH datasheet, "EOI Register"). Names as in Linux
// arch/x86/include/asm/io_apic.h and KVM arch/x86/kvm/ioapic.h.
//
// Messages go out through an injected `deliver` callback, so this model knows nothing of
// LAPICs. Not modelled: the delivery status bit (delivery is instantaneous, it always reads 0),
// polarity inversion (the VMM drives pins with their logical, asserted-or-not state, as KVM and
// QEMU do; the bit is stored and read back), arbitration IDs (ARB reads the ID), IRQ-remapping
// formats.
import type { BusDevice } from '../bus/bus.js';
import {
  APIC_DEST_LOGICAL, APIC_DEST_PHYSICAL, APIC_TRIGGER_EDGE, APIC_TRIGGER_LEVEL, type IoapicMessage,
} from './apic-message.js';
import { IrqchipError } from './irqchip-error.js';

export type { IoapicMessage } from './apic-message.js';

/** MMIO offsets within the IOAPIC window. */
export const IOAPIC_REG_SELECT = 0x00; // IOREGSEL
export const IOAPIC_REG_WINDOW = 0x10; // IOWIN
export const IOAPIC_REG_EOI = 0x40; // version 0x20 and later
/** KVM's IOAPIC_MEM_LENGTH: the registers are all below 0x100. */
export const IOAPIC_MMIO_SIZE_BYTES = 0x100;

/** Indirect register indices (written to IOREGSEL). */
export const IOAPIC_REG_ID = 0x00;
export const IOAPIC_REG_VERSION = 0x01;
export const IOAPIC_REG_ARB = 0x02;
export const IOAPIC_REG_REDTBL_BASE = 0x10; // pin n: low dword at 0x10+2n, high at 0x11+2n

export const IOAPIC_NUM_PINS = 24;
/** Version 0x20: has the EOI register, which Linux uses instead of the edge-toggle trick. */
export const IOAPIC_VERSION_ID = 0x20;

/** Redirection entry bits (low dword). */
export const IO_APIC_REDIR_VECTOR_MASK = 0x000ff;
export const IO_APIC_REDIR_DELIVERY_MODE_SHIFT = 8;
export const IO_APIC_REDIR_DEST_LOGICAL = 0x00800;
export const IO_APIC_REDIR_SEND_PENDING = 0x01000;
export const IO_APIC_REDIR_POLARITY_LOW = 0x02000; // "INTPOL": active low
export const IO_APIC_REDIR_REMOTE_IRR = 0x04000;
export const IO_APIC_REDIR_LEVEL_TRIGGER = 0x08000;
export const IO_APIC_REDIR_MASKED = 0x10000;
/** Destination field: bits 63:56, i.e. 31:24 of the high dword. */
export const IO_APIC_REDIR_DEST_SHIFT = 24;

/** Bits of the low dword the guest can write (delivery status and remote IRR are read-only). */
const REDIR_LOW_WRITABLE = IO_APIC_REDIR_VECTOR_MASK | (7 << IO_APIC_REDIR_DELIVERY_MODE_SHIFT)
  | IO_APIC_REDIR_DEST_LOGICAL | IO_APIC_REDIR_POLARITY_LOW | IO_APIC_REDIR_LEVEL_TRIGGER | IO_APIC_REDIR_MASKED;
const ID_MASK = 0x0f00_0000; // 4-bit ID in bits 27:24

export class Ioapic implements BusDevice {
  private regsel = 0;
  private id = 0;
  /** low and high dword of each redirection entry */
  private readonly redirLow = new Uint32Array(IOAPIC_NUM_PINS);
  private readonly redirHigh = new Uint32Array(IOAPIC_NUM_PINS);
  /** pin levels as driven by `setIrq` */
  private levels = 0;
  /** one scratch message, reused: delivery happens on hot paths (every device interrupt) */
  private readonly msg: IoapicMessage = { dest: 0, destMode: 0, deliveryMode: 0, vector: 0, trigger: 0 };

  /**
   * @param deliver sends a message on the APIC bus; the object is reused, copy what you keep.
   * @param apicId the IOAPIC's ID (the MADT's I/O APIC ID)
   */
  constructor(private readonly deliver: (msg: Readonly<IoapicMessage>) => void, apicId = 0) {
    this.id = (apicId << 24) & ID_MASK;
    this.redirLow.fill(IO_APIC_REDIR_MASKED); // every pin masked at reset
  }

  /**
   * Drives pin 0-23 to its logical level. Edge pins send one message per rising edge (lost while
   * masked, as the datasheet says); level pins send while asserted, once per EOI (remote IRR).
   */
  setIrq(pin: number, level: boolean | 0 | 1): void {
    if (!Number.isInteger(pin) || pin < 0 || pin >= IOAPIC_NUM_PINS) {
      throw new IrqchipError('bad-pin', `IOAPIC: pin ${pin} does not exist (0-${IOAPIC_NUM_PINS - 1})`);
    }
    const bit = 1 << pin;
    const asserted = level === true || level === 1;
    const wasAsserted = (this.levels & bit) !== 0;
    if (asserted) this.levels |= bit;
    else this.levels &= ~bit;
    if (!asserted) return;
    const low = this.redirLow[pin]!;
    if (low & IO_APIC_REDIR_LEVEL_TRIGGER) this.serviceLevel(pin);
    else if (!wasAsserted && !(low & IO_APIC_REDIR_MASKED)) this.send(pin);
  }

  /**
   * End of interrupt for `vector` from a LAPIC (the EOI broadcast of a level-triggered vector, or
   * a write to the EOI register): clears remote IRR of each level pin with that vector, and a pin
   * still asserted interrupts again.
   */
  eoi(vector: number): void {
    for (let pin = 0; pin < IOAPIC_NUM_PINS; pin++) {
      const low = this.redirLow[pin]!;
      if ((low & IO_APIC_REDIR_VECTOR_MASK) !== vector || !(low & IO_APIC_REDIR_REMOTE_IRR)) continue;
      this.redirLow[pin] = low & ~IO_APIC_REDIR_REMOTE_IRR;
      this.serviceLevel(pin);
    }
  }

  /** The raw 64-bit entry of `pin`, as [low, high] (for the VMM's diagnostics and tests). */
  redirectionEntry(pin: number): [number, number] {
    return [this.redirLow[pin]!, this.redirHigh[pin]!];
  }

  private serviceLevel(pin: number): void {
    const low = this.redirLow[pin]!;
    if (!(this.levels & (1 << pin)) || low & (IO_APIC_REDIR_MASKED | IO_APIC_REDIR_REMOTE_IRR)) return;
    if (!(low & IO_APIC_REDIR_LEVEL_TRIGGER)) return;
    this.redirLow[pin] = low | IO_APIC_REDIR_REMOTE_IRR; // set before sending: the EOI may come back synchronously
    this.send(pin);
  }

  private send(pin: number): void {
    const low = this.redirLow[pin]!;
    const m = this.msg;
    m.vector = low & IO_APIC_REDIR_VECTOR_MASK;
    m.deliveryMode = (low >> IO_APIC_REDIR_DELIVERY_MODE_SHIFT) & 7;
    m.destMode = low & IO_APIC_REDIR_DEST_LOGICAL ? APIC_DEST_LOGICAL : APIC_DEST_PHYSICAL;
    m.trigger = low & IO_APIC_REDIR_LEVEL_TRIGGER ? APIC_TRIGGER_LEVEL : APIC_TRIGGER_EDGE;
    m.dest = this.redirHigh[pin]! >>> IO_APIC_REDIR_DEST_SHIFT;
    this.deliver(m);
  }

  private readIndirect(): number {
    const index = this.regsel;
    switch (index) {
      case IOAPIC_REG_ID:
      case IOAPIC_REG_ARB:
        return this.id;
      case IOAPIC_REG_VERSION:
        return ((IOAPIC_NUM_PINS - 1) << 16) | IOAPIC_VERSION_ID;
      default: {
        const pin = (index - IOAPIC_REG_REDTBL_BASE) >> 1;
        if (index < IOAPIC_REG_REDTBL_BASE || pin >= IOAPIC_NUM_PINS) return 0;
        return index & 1 ? this.redirHigh[pin]! : this.redirLow[pin]!;
      }
    }
  }

  private writeIndirect(value: number): void {
    const index = this.regsel;
    if (index === IOAPIC_REG_ID) {
      this.id = value & ID_MASK;
      return;
    }
    const pin = (index - IOAPIC_REG_REDTBL_BASE) >> 1;
    if (index < IOAPIC_REG_REDTBL_BASE || pin >= IOAPIC_NUM_PINS) return; // VER, ARB, holes: read-only
    if (index & 1) {
      this.redirHigh[pin] = value & 0xff00_0000;
      return;
    }
    const old = this.redirLow[pin]!;
    let low = (value & REDIR_LOW_WRITABLE) | (old & IO_APIC_REDIR_REMOTE_IRR);
    // Switching a pin to edge clears remote IRR: Linux's way to unstick a level pin on IOAPICs
    // without an EOI register (__eoi_ioapic_pin), and what KVM does.
    if (!(low & IO_APIC_REDIR_LEVEL_TRIGGER)) low &= ~IO_APIC_REDIR_REMOTE_IRR;
    this.redirLow[pin] = low;
    // Unmasking (or re-arming) a level pin whose line is still asserted interrupts now.
    this.serviceLevel(pin);
  }

  read(offset: number, data: Uint8Array): void {
    let value = 0;
    const reg = offset & ~3;
    if (reg === IOAPIC_REG_SELECT) value = this.regsel;
    else if (reg === IOAPIC_REG_WINDOW) value = this.readIndirect();
    // the EOI register is write-only
    const shift = (offset & 3) * 8;
    for (let i = 0; i < data.length; i++) data[i] = i + (offset & 3) < 4 ? (value >>> (shift + 8 * i)) & 0xff : 0;
  }

  write(offset: number, data: Uint8Array): void {
    const reg = offset & ~3;
    // A narrower write replaces only its bytes of the 32-bit register (guests poke IOREGSEL by byte).
    const current = reg === IOAPIC_REG_WINDOW ? this.readIndirect() : reg === IOAPIC_REG_SELECT ? this.regsel : 0;
    let value = current;
    for (let i = 0; i < data.length && (offset & 3) + i < 4; i++) {
      const shift = ((offset & 3) + i) * 8;
      value = (value & ~(0xff << shift)) | (data[i]! << shift);
    }
    value >>>= 0;
    if (reg === IOAPIC_REG_SELECT) this.regsel = value & 0xff;
    else if (reg === IOAPIC_REG_WINDOW) this.writeIndirect(value);
    else if (reg === IOAPIC_REG_EOI) this.eoi(value & 0xff);
  }
}
