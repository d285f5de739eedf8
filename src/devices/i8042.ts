// The PS/2 controller (i8042), as far as a VMM needs it: Linux's probe succeeds, and the CPU
// reset command (0xFE, "pulse output line 0") ends the VM, which is how guests reboot.
// Spec: IBM PS/2 Technical Reference, 8042 keyboard controller; Linux drivers/input/serio/i8042.h.
import type { BusDevice } from '../bus/bus.js';

export const I8042_DATA_REG = 0; // port 0x60
export const I8042_COMMAND_REG = 4; // port 0x64 (status on read)
export const I8042_STR_OBF = 0x01;
export const I8042_STR_SYSFLAG = 0x04;
export const I8042_STR_CMDDAT = 0x08;
export const I8042_STR_AUXDATA = 0x20;
export const I8042_CMD_CTL_RCTR = 0x20;
export const I8042_CMD_CTL_WCTR = 0x60;
export const I8042_CMD_AUX_DISABLE = 0xa7;
export const I8042_CMD_AUX_ENABLE = 0xa8;
export const I8042_CMD_AUX_TEST = 0xa9;
export const I8042_CMD_CTL_TEST = 0xaa;
export const I8042_CMD_KBD_TEST = 0xab;
export const I8042_CMD_KBD_DISABLE = 0xad;
export const I8042_CMD_KBD_ENABLE = 0xae;
export const I8042_CMD_READ_OUTPUT = 0xd0;
export const I8042_CMD_WRITE_OUTPUT = 0xd1;
export const I8042_CMD_AUX_LOOP = 0xd3;
export const I8042_CMD_AUX_SEND = 0xd4;
export const I8042_CMD_PULSE_RESET = 0xfe;

export class I8042 implements BusDevice {
  private ctr = 0x61; // keyboard interrupt on, translation on, system flag
  private outputPort = 0x03; // A20 on, not in reset
  private readonly out: number[] = [];
  private expectingDataFor: number | null = null;

  /** `onReset` is called when the guest pulses the CPU reset line. */
  constructor(private readonly onReset: () => void) {}

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset === I8042_DATA_REG) {
      data[0] = this.out.shift() ?? 0;
    } else if (offset === I8042_COMMAND_REG) {
      data[0] = I8042_STR_SYSFLAG | (this.out.length > 0 ? I8042_STR_OBF : 0);
    } else {
      data[0] = 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0]!;
    if (offset === I8042_COMMAND_REG) this.command(value);
    else if (offset === I8042_DATA_REG) this.dataWrite(value);
  }

  private command(cmd: number): void {
    this.expectingDataFor = null;
    switch (cmd) {
      case I8042_CMD_CTL_RCTR: this.out.push(this.ctr); break;
      case I8042_CMD_CTL_WCTR:
      case I8042_CMD_WRITE_OUTPUT:
      case I8042_CMD_AUX_LOOP:
      case I8042_CMD_AUX_SEND:
        this.expectingDataFor = cmd;
        break;
      case I8042_CMD_CTL_TEST: this.out.push(0x55); break; // self-test passed
      case I8042_CMD_KBD_TEST: this.out.push(0x00); break; // interface OK
      case I8042_CMD_AUX_TEST: this.out.push(0x00); break;
      case I8042_CMD_READ_OUTPUT: this.out.push(this.outputPort); break;
      case I8042_CMD_PULSE_RESET: this.onReset(); break;
      default: break; // enable/disable commands need no state here
    }
  }

  private dataWrite(value: number): void {
    const pendingCmd = this.expectingDataFor;
    this.expectingDataFor = null;
    switch (pendingCmd) {
      case I8042_CMD_CTL_WCTR: this.ctr = value; break;
      case I8042_CMD_WRITE_OUTPUT:
        this.outputPort = value;
        if ((value & 0x01) === 0) this.onReset(); // bit 0 low holds the CPU in reset
        break;
      case I8042_CMD_AUX_LOOP: this.out.push(value); break;
      case I8042_CMD_AUX_SEND: this.out.push(0xfe); break; // no mouse: resend
      default:
        // A byte for the keyboard: no keyboard attached, answer "resend" so drivers give up fast.
        this.out.push(0xfe);
        break;
    }
  }
}
