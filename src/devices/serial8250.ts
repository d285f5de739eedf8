// A 16550A UART (the PC's COM ports): enough of the register model for Linux's 8250 driver to
// detect a 16550A, run interrupt-driven TX and RX, and for polled early consoles.
// Spec: TI/National PC16550D datasheet; Linux include/uapi/linux/serial_reg.h for names.
import type { BusDevice } from '../bus/bus.js';

export const UART_RX = 0; // in: receive buffer (DLAB=0)
export const UART_TX = 0; // out: transmit holding (DLAB=0)
export const UART_DLL = 0; // divisor latch low (DLAB=1)
export const UART_IER = 1;
export const UART_DLM = 1; // (DLAB=1)
export const UART_IIR = 2; // in
export const UART_FCR = 2; // out
export const UART_LCR = 3;
export const UART_MCR = 4;
export const UART_LSR = 5;
export const UART_MSR = 6;
export const UART_SCR = 7;

export const UART_IER_RDI = 0x01;
export const UART_IER_THRI = 0x02;
export const UART_IER_RLSI = 0x04;
export const UART_IER_MSI = 0x08;
export const UART_IIR_NO_INT = 0x01;
export const UART_IIR_MSI = 0x00;
export const UART_IIR_THRI = 0x02;
export const UART_IIR_RDI = 0x04;
export const UART_IIR_RLSI = 0x06;
export const UART_IIR_FIFO_ENABLED = 0xc0;
export const UART_FCR_ENABLE_FIFO = 0x01;
export const UART_FCR_CLEAR_RCVR = 0x02;
export const UART_FCR_CLEAR_XMIT = 0x04;
export const UART_LCR_DLAB = 0x80;
export const UART_MCR_DTR = 0x01;
export const UART_MCR_RTS = 0x02;
export const UART_MCR_OUT1 = 0x04;
export const UART_MCR_OUT2 = 0x08;
export const UART_MCR_LOOP = 0x10;
export const UART_LSR_DR = 0x01;
export const UART_LSR_OE = 0x02;
export const UART_LSR_BI = 0x10;
export const UART_LSR_THRE = 0x20;
export const UART_LSR_TEMT = 0x40;
export const UART_MSR_CTS = 0x10;
export const UART_MSR_DSR = 0x20;
export const UART_MSR_RI = 0x40;
export const UART_MSR_DCD = 0x80;

/** The 16550A receive FIFO holds 16 bytes; more waits on the host side until the guest drains it. */
const RX_FIFO_BYTES = 16;

export interface SerialBackend {
  /** guest transmitted a byte */
  output(byte: number): void;
  /** the interrupt line changed level */
  setIrq(level: 0 | 1): void;
}

export class Serial8250 implements BusDevice {
  private ier = 0;
  private lcr = 0x03; // 8N1 at reset, as firmware leaves it
  private mcr = UART_MCR_OUT2;
  private lsr = UART_LSR_THRE | UART_LSR_TEMT;
  private scr = 0;
  private dll = 0x0c; // 9600 baud
  private dlm = 0;
  private fifoEnabled = false;
  /** THR-empty interrupt latched: cleared by reading IIR while it is the source, or writing THR */
  private thrInterrupt = false;
  private readonly rx: number[] = [];
  private readonly pending: number[] = [];
  private irqLevel: 0 | 1 = 0;

  constructor(private readonly backend: SerialBackend) {}

  /** Host bytes for the guest (stdin or a socket); queued beyond the FIFO. */
  enqueueInput(bytes: Uint8Array): void {
    for (const b of bytes) this.pending.push(b);
    this.refillRx();
    this.updateIrq();
  }

  private refillRx(): void {
    while (this.rx.length < RX_FIFO_BYTES && this.pending.length > 0) this.rx.push(this.pending.shift()!);
    if (this.rx.length > 0) this.lsr |= UART_LSR_DR;
  }

  private interruptId(): number {
    if (this.ier & UART_IER_RLSI && this.lsr & (UART_LSR_OE | UART_LSR_BI)) return UART_IIR_RLSI;
    if (this.ier & UART_IER_RDI && this.lsr & UART_LSR_DR) return UART_IIR_RDI;
    if (this.ier & UART_IER_THRI && this.thrInterrupt) return UART_IIR_THRI;
    return UART_IIR_NO_INT;
  }

  private updateIrq(): void {
    const level: 0 | 1 = this.interruptId() === UART_IIR_NO_INT ? 0 : 1;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.backend.setIrq(level);
    }
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.readRegister(offset);
  }

  write(offset: number, data: Uint8Array): void {
    this.writeRegister(offset, data[0]!);
  }

  private readRegister(offset: number): number {
    const dlab = (this.lcr & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case UART_RX: {
        if (dlab) return this.dll;
        const byte = this.rx.shift() ?? 0;
        if (this.rx.length === 0) this.lsr &= ~UART_LSR_DR;
        this.refillRx();
        this.updateIrq();
        return byte;
      }
      case UART_IER:
        return dlab ? this.dlm : this.ier;
      case UART_IIR: {
        const id = this.interruptId();
        // Reading IIR acknowledges a THRE interrupt when that is what it reports.
        if (id === UART_IIR_THRI) {
          this.thrInterrupt = false;
          this.updateIrq();
        }
        return id | (this.fifoEnabled ? UART_IIR_FIFO_ENABLED : 0);
      }
      case UART_LCR:
        return this.lcr;
      case UART_MCR:
        return this.mcr;
      case UART_LSR: {
        const v = this.lsr;
        this.lsr &= ~(UART_LSR_OE | UART_LSR_BI); // error bits clear on read
        this.updateIrq();
        return v;
      }
      case UART_MSR:
        if (this.mcr & UART_MCR_LOOP) {
          // Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD; Linux's autoconfig checks this.
          return ((this.mcr & UART_MCR_RTS) ? UART_MSR_CTS : 0) | ((this.mcr & UART_MCR_DTR) ? UART_MSR_DSR : 0)
            | ((this.mcr & UART_MCR_OUT1) ? UART_MSR_RI : 0) | ((this.mcr & UART_MCR_OUT2) ? UART_MSR_DCD : 0);
        }
        return UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;
      case UART_SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const dlab = (this.lcr & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case UART_TX:
        if (dlab) { this.dll = value; return; }
        if (this.mcr & UART_MCR_LOOP) {
          if (this.rx.length < RX_FIFO_BYTES) this.rx.push(value);
          else this.lsr |= UART_LSR_OE;
          this.lsr |= UART_LSR_DR;
        } else {
          this.backend.output(value);
        }
        // Transmission is instantaneous: THR is empty again at once, and says so.
        this.thrInterrupt = true;
        this.updateIrq();
        return;
      case UART_IER: {
        if (dlab) { this.dlm = value; return; }
        const before = this.ier;
        this.ier = value & 0x0f;
        // Enabling THRI while THR is empty raises the interrupt at once (the driver relies on it).
        if (!(before & UART_IER_THRI) && this.ier & UART_IER_THRI) this.thrInterrupt = true;
        this.updateIrq();
        return;
      }
      case UART_FCR:
        this.fifoEnabled = (value & UART_FCR_ENABLE_FIFO) !== 0;
        if (value & UART_FCR_CLEAR_RCVR) {
          this.rx.length = 0;
          this.lsr &= ~UART_LSR_DR;
          this.refillRx();
        }
        this.updateIrq();
        return;
      case UART_LCR:
        this.lcr = value;
        return;
      case UART_MCR:
        this.mcr = value & 0x1f;
        return;
      case UART_SCR:
        this.scr = value;
        return;
      default:
        return; // LSR and MSR are read-only
    }
  }
}
