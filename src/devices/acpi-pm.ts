// The ACPI fixed-hardware registers our FADT points at (layout.ACPI_PM1A_EVT_PORT, _CNT_PORT,
// ACPI_PM_TMR_PORT): PM1a event block (PM1_STS, PM1_EN), PM1a control block (PM1_CNT) and the
// PM timer. Linux reads the PM timer as a clocksource and to calibrate the TSC, and powers off by
// writing \_S5's SLP_TYP with SLP_EN to PM1_CNT, which ends the VM here.
// Spec: ACPI 6.5, 4.8.3.1 (PM1 event registers), 4.8.3.2 (PM1 control registers), 4.8.3.3
// (PM timer), 7.4.2 (\_Sx objects; our DSDT's \_S5 gives layout.ACPI_S5_SLP_TYP).
import type { BusDevice } from '../bus/bus.js';

/** Offsets in the PM1a event block (4 bytes: PM1_STS then PM1_EN, 16 bits each). */
export const PM1_STS = 0;
export const PM1_EN = 2;
export const PM1_EVT_BYTES = 4;
export const PM1_CNT_BYTES = 2;
export const PM_TMR_BYTES = 4;

/** PM1_STS bits (table 4.16): TMR_STS, and WAK_STS, which a wake from a sleep state sets. */
export const PM1_STS_TMR_STS = 1 << 0;
export const PM1_STS_WAK_STS = 1 << 15;
/** PM1_CNT bits (table 4.18). */
export const PM1_CNT_SCI_EN = 1 << 0;
export const PM1_CNT_SLP_TYP_SHIFT = 10;
export const PM1_CNT_SLP_TYP_MASK = 7 << PM1_CNT_SLP_TYP_SHIFT;
export const PM1_CNT_SLP_EN = 1 << 13;
/** The PM timer's rate (4.8.3.3): 3.579545 MHz, 24 bits wide (the FADT's TMR_VAL_EXT is clear). */
export const PM_TIMER_HZ = 3_579_545n;
export const PM_TIMER_MASK = 0xff_ffff;

export interface AcpiPmHost {
  /** a monotonic clock in ns (process.hrtime.bigint on a machine) */
  nowNs(): bigint;
  /** the guest entered the sleep state `slpTyp` (SLP_EN written); layout.ACPI_S5_SLP_TYP is power-off */
  sleep(slpTyp: number): void;
}

export class AcpiPm {
  private sts = 0;
  private en = 0;
  /** SCI_EN reads 1: the FADT has no SMI_CMD, so the platform is always in ACPI mode. */
  private cnt = PM1_CNT_SCI_EN;
  private readonly zeroNs: bigint;

  constructor(private readonly host: AcpiPmHost) {
    this.zeroNs = host.nowNs();
  }

  /** The PM1a event block's bus device. WAK_STS and TMR_STS are write-1-to-clear. */
  readonly eventBlock: BusDevice = {
    read: (offset, data) => readWords(offset, data, [this.sts, this.en]),
    write: (offset, data) => writeWords(offset, data, [0, this.en], (i, v) => {
      if (i === 0) this.sts &= ~v & 0xffff; // merged with 0 above: a byte not written clears nothing
      else this.en = v;
    }),
  };

  /** The PM1a control block's bus device; SLP_EN with a SLP_TYP calls host.sleep and reads back 0. */
  readonly controlBlock: BusDevice = {
    read: (offset, data) => readWords(offset, data, [this.cnt]),
    write: (offset, data) => writeWords(offset, data, [this.cnt], (_i, v) => {
      // SCI_EN stays set (there is no SMI_CMD to leave ACPI mode through); SLP_EN is write-only.
      this.cnt = (v & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
      if (v & PM1_CNT_SLP_EN) this.host.sleep((v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT);
    }),
  };

  /** The PM timer's bus device: a free-running 24-bit count at PM_TIMER_HZ; writes are ignored. */
  readonly timer: BusDevice = {
    read: (offset, data) => {
      const ticks = ((this.host.nowNs() - this.zeroNs) * PM_TIMER_HZ) / 1_000_000_000n;
      const value = Number(ticks & BigInt(PM_TIMER_MASK));
      for (let i = 0; i < data.length; i++) data[i] = offset + i < PM_TMR_BYTES ? (value >>> (8 * (offset + i))) & 0xff : 0;
    },
    write: () => {},
  };
}

/** Reads the bytes of consecutive little-endian 16-bit registers; beyond them, zeros. */
function readWords(offset: number, data: Uint8Array, words: readonly number[]): void {
  for (let i = 0; i < data.length; i++) {
    const byte = offset + i;
    const word = words[byte >> 1];
    data[i] = word === undefined ? 0 : (word >> (8 * (byte & 1))) & 0xff;
  }
}

/**
 * Writes 16-bit registers: each register the access touches gets `merge[i]` with the written
 * bytes put in, so `set` sees a whole register value whatever the access width.
 */
function writeWords(offset: number, data: Uint8Array, merge: readonly number[], set: (index: number, value: number) => void): void {
  const touched = new Map<number, number>();
  for (let i = 0; i < data.length; i++) {
    const byte = offset + i;
    const index = byte >> 1;
    if (index >= merge.length) continue;
    const shift = 8 * (byte & 1);
    const value = touched.get(index) ?? merge[index]!;
    touched.set(index, (value & ~(0xff << shift)) | (data[i]! << shift));
  }
  for (const [index, value] of touched) set(index, value & 0xffff);
}
