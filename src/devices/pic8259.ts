// The PC's dual 8259A programmable interrupt controller (master at 0x20, slave at 0xa0 on the
// master's IRQ2) with the PIIX/ICH edge/level control registers (ELCR, 0x4d0/0x4d1).
// Spec: Intel 8259A datasheet (231468); ELCR: Intel 82371AB (PIIX4) datasheet 4.1.10; register
// names as in Linux arch/x86/include/asm/i8259.h. Behaviour follows the datasheet where Linux,
// KVM's arch/x86/kvm/i8259.c and QEMU's hw/intc/i8259.c agree.
//
// Not modelled: single (non-cascaded) mode beyond skipping ICW3, buffered mode and the 8080/85
// call mode (ICW1 IC4=0 / ICW4 uPM=0 are accepted and ignored), level-triggered mode via ICW1 LTIM
// (PCs use ELCR instead), and the ICW4 SFNM bit's effect on the slave.
import type { BusDevice } from '../bus/bus.js';
import { IrqchipError } from './irqchip-error.js';

/** Offsets within each chip's two-port window (0x20/0x21, 0xa0/0xa1). */
export const PIC_CMD = 0; // ICW1, OCW2, OCW3 on write; IRR/ISR/poll on read
export const PIC_IMR = 1; // ICW2-4 during init, OCW1 (mask) otherwise
export const PIC_MASTER_CMD_PORT = 0x20;
export const PIC_SLAVE_CMD_PORT = 0xa0;
export const PIC_ELCR_PORT = 0x4d0; // 0x4d0 master, 0x4d1 slave
export const PIC_PORTS_SIZE_BYTES = 2;
export const PIC_ELCR_SIZE_BYTES = 2;
/** The master's input the slave's INT output is wired to. */
export const PIC_CASCADE_IR = 2;

export const PIC_ICW1 = 0x10; // command byte with this bit is ICW1
export const PIC_ICW1_IC4 = 0x01; // ICW4 follows
export const PIC_ICW1_SNGL = 0x02; // single mode: no ICW3
export const PIC_ICW1_LTIM = 0x08;
export const PIC_OCW3 = 0x08; // command byte (bit 4 clear) with this bit is OCW3, else OCW2
export const PIC_OCW3_RIS = 0x01; // read ISR (else IRR)
export const PIC_OCW3_RR = 0x02; // RIS is valid
export const PIC_OCW3_P = 0x04; // poll command
export const PIC_OCW3_SMM = 0x20; // special mask mode on/off
export const PIC_OCW3_ESMM = 0x40; // SMM is valid
export const PIC_ICW4_8086 = 0x01;
export const PIC_ICW4_AEOI = 0x02;
export const PIC_ICW4_SFNM = 0x10;
/** OCW2 R/SL/EOI (bits 7:5) commands. */
export const PIC_OCW2_ROTATE_AEOI_CLEAR = 0;
export const PIC_OCW2_NONSPECIFIC_EOI = 1;
export const PIC_OCW2_SPECIFIC_EOI = 3;
export const PIC_OCW2_ROTATE_AEOI_SET = 4;
export const PIC_OCW2_ROTATE_NONSPECIFIC_EOI = 5;
export const PIC_OCW2_SET_PRIORITY = 6;
export const PIC_OCW2_ROTATE_SPECIFIC_EOI = 7;

/** PIIX ELCR: IRQ0, 1, 2 (timer, keyboard, cascade), 8 (RTC) and 13 (FPU) are always edge. */
const ELCR_MASK_MASTER = 0xf8;
const ELCR_MASK_SLAVE = 0xde;
const NO_IRQ = -1;

/** One 8259A. Line numbers here are the chip's own 0-7. */
class Chip {
  irr = 0;
  imr = 0;
  isr = 0;
  /** input line levels as last driven, for edge detection */
  lines = 0;
  elcr = 0;
  /** the line with lowest priority is (priorityAdd - 1) & 7; rotation moves it */
  priorityAdd = 0;
  irqBase = 0;
  readIsr = false;
  poll = false;
  specialMask = false;
  /** 0: operational; 1-3: expecting ICW2-ICW4 */
  initState = 0;
  expectIcw4 = false;
  singleMode = false;
  autoEoi = false;
  rotateOnAutoEoi = false;
  specialFullyNested = false;

  constructor(readonly isMaster: boolean, readonly elcrMask: number) {}

  /** Drives input `line` (0-7); edge lines latch IRR on a rising edge, ELCR lines follow the level. */
  setLine(line: number, level: boolean): void {
    const bit = 1 << line;
    if (this.elcr & bit) {
      if (level) this.irr |= bit;
      else this.irr &= ~bit;
    } else if (level && !(this.lines & bit)) {
      this.irr |= bit;
    }
    if (level) this.lines |= bit;
    else this.lines &= ~bit;
  }

  /** Priority rank (0 highest) of the best line in `mask`, 8 when none. */
  private priority(mask: number): number {
    if ((mask & 0xff) === 0) return 8;
    let p = 0;
    while ((mask & (1 << ((p + this.priorityAdd) & 7))) === 0) p++;
    return p;
  }

  /** The line this chip would signal now, or NO_IRQ: the best unmasked request above everything in service. */
  pendingLine(): number {
    const p = this.priority(this.irr & ~this.imr);
    if (p === 8) return NO_IRQ;
    let inService = this.isr;
    // Special mask mode lets masked in-service levels stop blocking lower ones (datasheet OCW3).
    if (this.specialMask) inService &= ~this.imr;
    // Special fully nested: the slave may interrupt again while its cascade line is in service.
    if (this.specialFullyNested && this.isMaster) inService &= ~(1 << PIC_CASCADE_IR);
    return p < this.priority(inService) ? (p + this.priorityAdd) & 7 : NO_IRQ;
  }

  /** INTA: the line goes in service; an edge request is consumed, a level one stays while asserted. */
  intack(line: number): void {
    const bit = 1 << line;
    this.isr |= bit;
    if (!(this.elcr & bit)) this.irr &= ~bit;
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.priorityAdd = (line + 1) & 7;
      this.isr &= ~bit;
    }
  }

  /** ICW1: the datasheet's initialization: IMR cleared, IR7 lowest, special mask off, read IRR. */
  initialize(icw1: number): void {
    this.lines = 0; // the edge sense latch is reset, so a held line must go low and high again
    this.irr &= this.elcr;
    this.imr = 0;
    this.isr = 0;
    this.priorityAdd = 0;
    this.readIsr = false;
    this.poll = false;
    this.specialMask = false;
    this.autoEoi = false;
    this.rotateOnAutoEoi = false;
    this.specialFullyNested = false;
    this.expectIcw4 = (icw1 & PIC_ICW1_IC4) !== 0;
    this.singleMode = (icw1 & PIC_ICW1_SNGL) !== 0;
    this.initState = 1;
  }

  /** OCW2. Returns nothing; the pair re-evaluates its output afterwards. */
  ocw2(value: number): void {
    const cmd = value >> 5;
    switch (cmd) {
      case PIC_OCW2_ROTATE_AEOI_CLEAR:
      case PIC_OCW2_ROTATE_AEOI_SET:
        this.rotateOnAutoEoi = cmd === PIC_OCW2_ROTATE_AEOI_SET;
        return;
      case PIC_OCW2_NONSPECIFIC_EOI:
      case PIC_OCW2_ROTATE_NONSPECIFIC_EOI: {
        const p = this.priority(this.isr);
        if (p === 8) return;
        const line = (p + this.priorityAdd) & 7;
        this.isr &= ~(1 << line);
        if (cmd === PIC_OCW2_ROTATE_NONSPECIFIC_EOI) this.priorityAdd = (line + 1) & 7;
        return;
      }
      case PIC_OCW2_SPECIFIC_EOI:
        this.isr &= ~(1 << (value & 7));
        return;
      case PIC_OCW2_SET_PRIORITY:
        this.priorityAdd = ((value & 7) + 1) & 7; // the named line becomes the lowest
        return;
      case PIC_OCW2_ROTATE_SPECIFIC_EOI:
        this.isr &= ~(1 << (value & 7));
        this.priorityAdd = ((value & 7) + 1) & 7;
        return;
      default:
        return; // 2: no operation
    }
  }
}

/** Chip register window (two ports); the device sees offsets 0 and 1. */
class ChipPorts implements BusDevice {
  constructor(private readonly pair: PicPair, private readonly index: 0 | 1) {}
  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.pair.readPort(this.index, offset & 1);
  }
  write(offset: number, data: Uint8Array): void {
    this.pair.writePort(this.index, offset & 1, data[0]!);
  }
}

/** ELCR pair: offset 0 is the master's (0x4d0), 1 the slave's (0x4d1). */
class ElcrPorts implements BusDevice {
  constructor(private readonly pair: PicPair) {}
  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    for (let i = 0; i < data.length && offset + i < 2; i++) data[i] = this.pair.readElcr(offset + i);
  }
  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length && offset + i < 2; i++) this.pair.writeElcr(offset + i, data[i]!);
  }
}

/**
 * Master and slave 8259A with the cascade between them. Register `master` at 0x20 (2 ports),
 * `slave` at 0xa0 (2 ports) and `elcr` at 0x4d0 (2 ports). ISA lines 0-15 come in through
 * `setIrq`; the CPU side is `hasInterrupt()` (the INTR pin) and `acknowledge()` (an INTA cycle).
 */
export class PicPair {
  readonly master: BusDevice;
  readonly slave: BusDevice;
  readonly elcr: BusDevice;
  private readonly chips: readonly [Chip, Chip];
  private intr = false;

  /** `onIntrChanged` is called when the master's INT output (the CPU's INTR) changes level. */
  constructor(private readonly onIntrChanged: (level: boolean) => void = () => {}) {
    const master = new Chip(true, ELCR_MASK_MASTER);
    const slave = new Chip(false, ELCR_MASK_SLAVE);
    this.chips = [master, slave];
    this.master = new ChipPorts(this, 0);
    this.slave = new ChipPorts(this, 1);
    this.elcr = new ElcrPorts(this);
  }

  /** Drives ISA line 0-15 (8-15 are the slave's 0-7). Level is the line's logical state. */
  setIrq(line: number, level: boolean | 0 | 1): void {
    if (!Number.isInteger(line) || line < 0 || line > 15 || line === PIC_CASCADE_IR) {
      throw new IrqchipError('bad-pin', `8259 PIC: line ${line} does not exist (0-15, and 2 is the cascade)`);
    }
    this.chips[line >> 3].setLine(line & 7, level === true || level === 1);
    this.update();
  }

  /** The INTR pin: the master has an interrupt for the CPU. */
  hasInterrupt(): boolean {
    return this.intr;
  }

  /**
   * The INTA cycle: the vector of the highest-priority request, now in service. With nothing to
   * deliver (the request went away between INTR and INTA) the chip answers IR7 without setting
   * ISR: the spurious vector base+7 of the master, or of the slave when the cascade was chosen.
   */
  acknowledge(): number {
    const [master, slave] = this.chips;
    let vector: number;
    const line = master.pendingLine();
    if (line === NO_IRQ) {
      vector = master.irqBase + 7;
    } else {
      master.intack(line);
      if (line === PIC_CASCADE_IR && !master.singleMode) {
        const line2 = slave.pendingLine();
        if (line2 === NO_IRQ) {
          vector = slave.irqBase + 7;
        } else {
          slave.intack(line2);
          vector = slave.irqBase + line2;
        }
      } else {
        vector = master.irqBase + line;
      }
    }
    this.update();
    return vector;
  }

  /** Re-evaluates the cascade (slave INT drives master IR2 as a level) and the INTR output. */
  private update(): void {
    const [master, slave] = this.chips;
    master.setLine(PIC_CASCADE_IR, slave.pendingLine() !== NO_IRQ);
    const intr = master.pendingLine() !== NO_IRQ;
    if (intr !== this.intr) {
      this.intr = intr;
      this.onIntrChanged(intr);
    }
  }

  /** @internal for ChipPorts */
  readPort(index: 0 | 1, offset: number): number {
    const chip = this.chips[index];
    if (chip.poll) {
      // Poll command: this read is the INTA; bit 7 says whether there was a request.
      chip.poll = false;
      const line = chip.pendingLine();
      if (line === NO_IRQ) return 0;
      chip.intack(line);
      this.update();
      return 0x80 | line;
    }
    if (offset === PIC_CMD) return chip.readIsr ? chip.isr : chip.irr;
    return chip.imr;
  }

  /** @internal for ChipPorts */
  writePort(index: 0 | 1, offset: number, value: number): void {
    const chip = this.chips[index];
    if (offset === PIC_CMD) {
      if (value & PIC_ICW1) {
        chip.initialize(value);
      } else if (value & PIC_OCW3) {
        if (value & PIC_OCW3_P) chip.poll = true;
        if (value & PIC_OCW3_RR) chip.readIsr = (value & PIC_OCW3_RIS) !== 0;
        if (value & PIC_OCW3_ESMM) chip.specialMask = (value & PIC_OCW3_SMM) !== 0;
      } else {
        chip.ocw2(value);
      }
    } else {
      switch (chip.initState) {
        case 0:
          chip.imr = value; // OCW1
          break;
        case 1:
          chip.irqBase = value & 0xf8; // ICW2: the low 3 bits are the line number on x86
          chip.initState = chip.singleMode ? (chip.expectIcw4 ? 3 : 0) : 2;
          break;
        case 2:
          // ICW3: the master's slave bitmap / the slave's ID. The wiring is fixed (slave on IR2), so
          // a guest writing something else still gets the PC's cascade.
          chip.initState = chip.expectIcw4 ? 3 : 0;
          break;
        default:
          chip.specialFullyNested = (value & PIC_ICW4_SFNM) !== 0;
          chip.autoEoi = (value & PIC_ICW4_AEOI) !== 0;
          chip.initState = 0;
          break;
      }
    }
    this.update();
  }

  /** @internal for ElcrPorts */
  readElcr(index: number): number {
    return this.chips[index]!.elcr;
  }

  /** @internal for ElcrPorts */
  writeElcr(index: number, value: number): void {
    const chip = this.chips[index]!;
    chip.elcr = value & chip.elcrMask;
    // A line switched to level follows its present level from now on.
    chip.irr = (chip.irr & ~chip.elcr) | (chip.lines & chip.elcr);
    this.update();
  }
}
