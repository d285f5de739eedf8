// ACPI tables for a tsvmm guest: RSDP, XSDT, FADT (+FACS), MADT, with PCI an MCFG, and a DSDT with
// COM1, the virtio-mmio devices and the PCI host bridge, laid out as one block for ACPI_START_GPA.
// Linux finds CPUs (MADT: the Debian cloud kernel has no MP-table parser), virtio-mmio devices
// (DSDT, HID LNRO0005) and the PCI host bridge with its windows (DSDT PNP0A08, MCFG) only here.
// Spec: ACPI 6.5 §5.2 "ACPI System Description Tables" (RSDP 5.2.5, header 5.2.6, XSDT 5.2.8,
// FADT 5.2.9, FACS 5.2.10, DSDT 5.2.11.1, MADT 5.2.12), §5.2.3.2 Generic Address Structure; PCI
// Firmware Specification 3.2, 4.1.2 MCFG Table; ACPI 6.5 §6.2.13 _PRT, §6.5.5 _SEG, §6.5.6 _BBN.
// Struct names follow ACPICA's include/acpi/actbl.h, actbl1.h, actbl2.h; field names the spec's.

import * as aml from './aml.js';
import { BootError } from './boot-error.js';
import {
  ACPI_END_GPA,
  ACPI_PM1A_CNT_PORT,
  ACPI_PM1A_EVT_PORT,
  ACPI_PM_TMR_PORT,
  ACPI_S5_SLP_TYP,
  ACPI_SCI_IRQ,
  ACPI_START_GPA,
  COM1_IRQ,
  COM1_PORT,
  IOAPIC_GPA,
  LAPIC_GPA,
} from './layout.js';
import { alignUp, concatBytes, hex, setAscii, struct, type Struct } from './struct.js';

// ---- structures ----

export const ACPI_TABLE_HEADER = struct('acpi_table_header', 36, {
  Signature: [0, { bytes: 4 }],
  Length: [4, 'u32'],
  Revision: [8, 'u8'],
  Checksum: [9, 'u8'],
  OEMID: [10, { bytes: 6 }],
  OEMTableID: [16, { bytes: 8 }],
  OEMRevision: [24, 'u32'],
  CreatorID: [28, { bytes: 4 }],
  CreatorRevision: [32, 'u32'],
});

/** Root System Description Pointer, revision 2 (ACPI 2.0+). */
export const ACPI_TABLE_RSDP = struct('acpi_table_rsdp', 36, {
  Signature: [0, { bytes: 8 }],
  Checksum: [8, 'u8'],
  OEMID: [9, { bytes: 6 }],
  Revision: [15, 'u8'],
  RsdtAddress: [16, 'u32'],
  Length: [20, 'u32'],
  XsdtAddress: [24, 'u64'],
  ExtendedChecksum: [32, 'u8'],
  Reserved: [33, { bytes: 3 }],
});
/** The RSDP's first checksum covers the ACPI 1.0 part only. */
const RSDP_V1_LENGTH = 20;

/** Generic Address Structure (§5.2.3.2). */
export const ACPI_GENERIC_ADDRESS = struct('acpi_generic_address', 12, {
  AddressSpaceID: [0, 'u8'],
  RegisterBitWidth: [1, 'u8'],
  RegisterBitOffset: [2, 'u8'],
  AccessSize: [3, 'u8'],
  Address: [4, 'u64'],
});
const ACPI_ADR_SPACE_SYSTEM_IO = 1;
const ACPI_ACCESS_SIZE_WORD = 2;
const ACPI_ACCESS_SIZE_DWORD = 3;

/** Fixed ACPI Description Table, ACPI 6.x layout (revision 6, 276 bytes). */
export const ACPI_TABLE_FADT = struct('acpi_table_fadt', 276, {
  FIRMWARE_CTRL: [36, 'u32'],
  DSDT: [40, 'u32'],
  Preferred_PM_Profile: [45, 'u8'],
  SCI_INT: [46, 'u16'],
  SMI_CMD: [48, 'u32'],
  ACPI_ENABLE: [52, 'u8'],
  ACPI_DISABLE: [53, 'u8'],
  S4BIOS_REQ: [54, 'u8'],
  PSTATE_CNT: [55, 'u8'],
  PM1a_EVT_BLK: [56, 'u32'],
  PM1b_EVT_BLK: [60, 'u32'],
  PM1a_CNT_BLK: [64, 'u32'],
  PM1b_CNT_BLK: [68, 'u32'],
  PM2_CNT_BLK: [72, 'u32'],
  PM_TMR_BLK: [76, 'u32'],
  GPE0_BLK: [80, 'u32'],
  GPE1_BLK: [84, 'u32'],
  PM1_EVT_LEN: [88, 'u8'],
  PM1_CNT_LEN: [89, 'u8'],
  PM2_CNT_LEN: [90, 'u8'],
  PM_TMR_LEN: [91, 'u8'],
  GPE0_BLK_LEN: [92, 'u8'],
  GPE1_BLK_LEN: [93, 'u8'],
  GPE1_BASE: [94, 'u8'],
  CST_CNT: [95, 'u8'],
  P_LVL2_LAT: [96, 'u16'],
  P_LVL3_LAT: [98, 'u16'],
  FLUSH_SIZE: [100, 'u16'],
  FLUSH_STRIDE: [102, 'u16'],
  DUTY_OFFSET: [104, 'u8'],
  DUTY_WIDTH: [105, 'u8'],
  DAY_ALRM: [106, 'u8'],
  MON_ALRM: [107, 'u8'],
  CENTURY: [108, 'u8'],
  IAPC_BOOT_ARCH: [109, 'u16'],
  Flags: [112, 'u32'],
  RESET_REG: [116, { bytes: 12 }],
  RESET_VALUE: [128, 'u8'],
  ARM_BOOT_ARCH: [129, 'u16'],
  FADT_Minor_Version: [131, 'u8'],
  X_FIRMWARE_CTRL: [132, 'u64'],
  X_DSDT: [140, 'u64'],
  X_PM1a_EVT_BLK: [148, { bytes: 12 }],
  X_PM1b_EVT_BLK: [160, { bytes: 12 }],
  X_PM1a_CNT_BLK: [172, { bytes: 12 }],
  X_PM1b_CNT_BLK: [184, { bytes: 12 }],
  X_PM2_CNT_BLK: [196, { bytes: 12 }],
  X_PM_TMR_BLK: [208, { bytes: 12 }],
  X_GPE0_BLK: [220, { bytes: 12 }],
  X_GPE1_BLK: [232, { bytes: 12 }],
  SLEEP_CONTROL_REG: [244, { bytes: 12 }],
  SLEEP_STATUS_REG: [256, { bytes: 12 }],
  Hypervisor_Vendor_Identity: [268, 'u64'],
});

/** FADT Flags (Table 5.10). */
export const FADT_WBINVD = 1 << 0;
export const FADT_PROC_C1 = 1 << 2;
export const FADT_PWR_BUTTON = 1 << 4;
export const FADT_SLP_BUTTON = 1 << 5;
export const FADT_FIX_RTC = 1 << 6;
export const FADT_TMR_VAL_EXT = 1 << 8;
export const FADT_RESET_REG_SUP = 1 << 10;
export const FADT_HW_REDUCED_ACPI = 1 << 20;
/** IA-PC Boot Architecture Flags (Table 5.11). */
export const IAPC_LEGACY_DEVICES = 1 << 0;
export const IAPC_8042 = 1 << 1;
export const IAPC_VGA_NOT_PRESENT = 1 << 2;
export const IAPC_MSI_NOT_SUPPORTED = 1 << 3;
export const IAPC_PCIE_ASPM_CONTROLS = 1 << 4;
export const IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5;

/** Firmware ACPI Control Structure (no checksum; 64-byte aligned). */
export const ACPI_TABLE_FACS = struct('acpi_table_facs', 64, {
  Signature: [0, { bytes: 4 }],
  Length: [4, 'u32'],
  Hardware_Signature: [8, 'u32'],
  Firmware_Waking_Vector: [12, 'u32'],
  Global_Lock: [16, 'u32'],
  Flags: [20, 'u32'],
  X_Firmware_Waking_Vector: [24, 'u64'],
  Version: [32, 'u8'],
  OSPM_Flags: [36, 'u32'],
});

/** MADT: header, then Local Interrupt Controller Address and Flags, then interrupt controller structures. */
export const ACPI_TABLE_MADT = struct('acpi_table_madt', 44, {
  Local_Interrupt_Controller_Address: [36, 'u32'],
  Flags: [40, 'u32'],
});
export const MADT_PCAT_COMPAT = 1 << 0;

export const ACPI_MADT_TYPE_LOCAL_APIC = 0;
export const ACPI_MADT_TYPE_IO_APIC = 1;
export const ACPI_MADT_TYPE_INTERRUPT_OVERRIDE = 2;
export const ACPI_MADT_TYPE_LOCAL_APIC_NMI = 4;

export const ACPI_MADT_LOCAL_APIC = struct('acpi_madt_local_apic', 8, {
  Type: [0, 'u8'],
  Length: [1, 'u8'],
  ACPI_Processor_UID: [2, 'u8'],
  APIC_ID: [3, 'u8'],
  Flags: [4, 'u32'],
});
export const MADT_LAPIC_ENABLED = 1 << 0;

export const ACPI_MADT_IO_APIC = struct('acpi_madt_io_apic', 12, {
  Type: [0, 'u8'],
  Length: [1, 'u8'],
  IO_APIC_ID: [2, 'u8'],
  IO_APIC_Address: [4, 'u32'],
  Global_System_Interrupt_Base: [8, 'u32'],
});

export const ACPI_MADT_INTERRUPT_OVERRIDE = struct('acpi_madt_interrupt_override', 10, {
  Type: [0, 'u8'],
  Length: [1, 'u8'],
  Bus: [2, 'u8'],
  Source: [3, 'u8'],
  Global_System_Interrupt: [4, 'u32'],
  Flags: [8, 'u16'],
});
/** MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2 (Table 5.50). */
export const MPS_INTI_POLARITY_ACTIVE_HIGH = 0b01;
export const MPS_INTI_TRIGGER_LEVEL = 0b11 << 2;

export const ACPI_MADT_LOCAL_APIC_NMI = struct('acpi_madt_local_apic_nmi', 6, {
  Type: [0, 'u8'],
  Length: [1, 'u8'],
  ACPI_Processor_UID: [2, 'u8'],
  Flags: [3, 'u16'],
  Local_APIC_LINT: [5, 'u8'],
});

/** MCFG: header, 8 reserved bytes, then one allocation per ECAM segment/bus range (ACPICA actbl1.h). */
export const ACPI_TABLE_MCFG = struct('acpi_table_mcfg', 44, {
  Reserved: [36, { bytes: 8 }],
});
export const ACPI_MCFG_ALLOCATION = struct('acpi_mcfg_allocation', 16, {
  Address: [0, 'u64'],
  PciSegment: [8, 'u16'],
  StartBusNumber: [10, 'u8'],
  EndBusNumber: [11, 'u8'],
  Reserved: [12, 'u32'],
});

// ---- what goes in them ----

const OEM_ID = 'TSVMM';
const CREATOR_ID = 'TSVM';
const CREATOR_REVISION = 1;
/** The tables claim ACPI 6.3: FADT 6.3, MADT revision 5, FACS version 2. */
const FADT_REVISION = 6;
const FADT_MINOR_VERSION = 3;
const MADT_REVISION = 5;
const XSDT_REVISION = 1;
/** DSDT revision 2+: AML integers are 64-bit. */
const DSDT_REVISION = 2;
const FACS_VERSION = 2;
const RSDP_REVISION = 2;
const MCFG_REVISION = 1;

/** Linux (and any BIOS-era OS) scans 0xE0000-0xFFFFF for the RSDP when not told where it is. */
export const RSDP_SEARCH_START_GPA = 0xe0000;
/** Local APIC ids are 8-bit in the MADT entries used here (x2APIC entries would be needed past 254); 255 is broadcast. */
export const ACPI_MAX_CPUS = 254;
/** KVM's in-kernel IOAPIC has 24 pins (GSIs 0-23). */
export const IOAPIC_PINS = 24;
/** ISA IRQ0 (the PIT) arrives on IOAPIC pin 2, as on PCs; the VMM routes KVM GSI 0 there. */
export const ISA_IRQ0_GSI = 2;

export interface VirtioMmioAcpiDevice {
  readonly gpa: number;
  readonly sizeBytes: number;
  /** The GSI (IOAPIC pin) the device interrupts on. */
  readonly irq: number;
  /** Edge (default) suits irqfd injection, which pulses the line; level needs a resample fd. */
  readonly trigger?: 'edge' | 'level';
}

/** A window of addresses the host bridge forwards (its _CRS producer ranges). */
export interface AcpiPciWindow {
  readonly base: number;
  readonly sizeBytes: number;
}

/** PCI segment 0 behind one host bridge, as the VMM built it (src/pci/). */
export interface PciHostBridgeAcpi {
  /** ECAM base (MCFG): bus N's configuration space at ecamGpa + N MiB; 1 MiB aligned, below 4 GiB. */
  readonly ecamGpa: number;
  /** Buses 0..busCount-1 (default 1: bus 0 only). */
  readonly busCount?: number;
  /** The 32-bit MMIO window BARs are assigned from (DWordMemory). */
  readonly mmio32: AcpiPciWindow;
  /** A 64-bit MMIO window (QWordMemory), when the VMM places BARs above 4 GiB. */
  readonly mmio64?: AcpiPciWindow;
  /** An I/O port window (WordIO) for I/O BARs; none by default. */
  readonly io?: AcpiPciWindow;
  /** INTA# of each occupied slot and the GSI (IOAPIC pin) it is wired to, for _PRT. */
  readonly intx?: readonly { readonly slot: number; readonly gsi: number }[];
}

export interface AcpiInput {
  readonly cpus: number;
  readonly virtioMmio?: readonly VirtioMmioAcpiDevice[];
  /** A PCI host bridge: adds the MCFG table and Device (PCI0) to the DSDT. Absent, the tables are as before. */
  readonly pci?: PciHostBridgeAcpi;
  /** Where the block goes; 16-byte aligned, inside the BIOS area Linux scans for the RSDP. Default ACPI_START_GPA. */
  readonly baseGpa?: number;
  /** Whether the VMM emulates a CMOS RTC at ports 0x70/0x71. Default false (the FADT then says so). */
  readonly cmosRtc?: boolean;
}

export interface AcpiTables {
  /** Write at baseGpa. */
  readonly bytes: Uint8Array;
  readonly baseGpa: number;
  /** For boot_params.acpi_rsdp_addr and hvm_start_info.rsdp_paddr. */
  readonly rsdpGpa: number;
  /** Where each table landed (FACS, XSDT, FACP, APIC, MCFG with PCI, DSDT), for tests and logs. */
  readonly tables: readonly { readonly signature: string; readonly gpa: number; readonly lengthBytes: number }[];
}

/** Builds every table and lays them out from `baseGpa`: RSDP, FACS, XSDT, FADT, MADT, (MCFG,) DSDT. */
export function buildAcpiTables(input: AcpiInput): AcpiTables {
  const baseGpa = input.baseGpa ?? ACPI_START_GPA;
  const devices = input.virtioMmio ?? [];
  checkInput(input.cpus, devices, baseGpa);
  if (input.pci) checkPci(input.pci, devices);

  const dsdt = buildDsdt(devices, input.pci);
  const madt = buildMadt(input.cpus);
  const mcfg = input.pci ? buildMcfg(input.pci) : null;
  // Offsets inside the block. FACS must be 64-byte aligned; the rest 16 like firmware does.
  const rsdpOffset = 0;
  const facsOffset = alignUp(rsdpOffset + ACPI_TABLE_RSDP.sizeBytes, 64);
  const xsdtOffset = alignUp(facsOffset + ACPI_TABLE_FACS.sizeBytes, 16);
  const xsdtLength = ACPI_TABLE_HEADER.sizeBytes + (mcfg ? 3 : 2) * 8;
  const fadtOffset = alignUp(xsdtOffset + xsdtLength, 16);
  const madtOffset = alignUp(fadtOffset + ACPI_TABLE_FADT.sizeBytes, 16);
  const mcfgOffset = alignUp(madtOffset + madt.length, 16);
  const dsdtOffset = mcfg ? alignUp(mcfgOffset + mcfg.length, 16) : mcfgOffset;
  const totalBytes = dsdtOffset + dsdt.length;
  if (baseGpa + totalBytes > ACPI_END_GPA) {
    throw new BootError(
      'does-not-fit',
      `ACPI tables for ${input.cpus} vCPUs and ${devices.length} virtio-mmio devices take ${totalBytes} bytes, more than the ${ACPI_END_GPA - baseGpa} from ${hex(baseGpa)} to ACPI_END_GPA; use fewer devices`,
    );
  }
  const gpa = (offset: number) => baseGpa + offset;
  const bytes = new Uint8Array(totalBytes);

  // FACS: mandatory when not hardware-reduced (FIRMWARE_CTRL); all zero but its header.
  setAscii(ACPI_TABLE_FACS.bytesOf(bytes, facsOffset, 'Signature'), 'FACS');
  ACPI_TABLE_FACS.encode({ Length: ACPI_TABLE_FACS.sizeBytes, Version: FACS_VERSION }, bytes, facsOffset);

  const fadt = buildFadt({ facsGpa: gpa(facsOffset), dsdtGpa: gpa(dsdtOffset), cmosRtc: input.cmosRtc ?? false });
  bytes.set(fadt, fadtOffset);
  bytes.set(madt, madtOffset);
  if (mcfg) bytes.set(mcfg, mcfgOffset);
  bytes.set(dsdt, dsdtOffset);

  writeHeader(bytes, xsdtOffset, 'XSDT', xsdtLength, XSDT_REVISION);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(xsdtOffset + ACPI_TABLE_HEADER.sizeBytes, BigInt(gpa(fadtOffset)), true);
  view.setBigUint64(xsdtOffset + ACPI_TABLE_HEADER.sizeBytes + 8, BigInt(gpa(madtOffset)), true);
  if (mcfg) view.setBigUint64(xsdtOffset + ACPI_TABLE_HEADER.sizeBytes + 16, BigInt(gpa(mcfgOffset)), true);
  setChecksum(bytes, xsdtOffset, xsdtLength, ACPI_TABLE_HEADER.offsetOf('Checksum'));

  setAscii(ACPI_TABLE_RSDP.bytesOf(bytes, rsdpOffset, 'Signature'), 'RSD PTR ');
  setAscii(ACPI_TABLE_RSDP.bytesOf(bytes, rsdpOffset, 'OEMID'), OEM_ID);
  ACPI_TABLE_RSDP.encode(
    {
      Revision: RSDP_REVISION,
      // 0: the XSDT is the only root table; ACPI 2.0+ OSes (all x86-64 Linux) use XsdtAddress.
      RsdtAddress: 0,
      Length: ACPI_TABLE_RSDP.sizeBytes,
      XsdtAddress: gpa(xsdtOffset),
    },
    bytes,
    rsdpOffset,
  );
  setChecksum(bytes, rsdpOffset, RSDP_V1_LENGTH, ACPI_TABLE_RSDP.offsetOf('Checksum'));
  setChecksum(bytes, rsdpOffset, ACPI_TABLE_RSDP.sizeBytes, ACPI_TABLE_RSDP.offsetOf('ExtendedChecksum'));

  return {
    bytes,
    baseGpa,
    rsdpGpa: gpa(rsdpOffset),
    tables: [
      { signature: 'FACS', gpa: gpa(facsOffset), lengthBytes: ACPI_TABLE_FACS.sizeBytes },
      { signature: 'XSDT', gpa: gpa(xsdtOffset), lengthBytes: xsdtLength },
      { signature: 'FACP', gpa: gpa(fadtOffset), lengthBytes: fadt.length },
      { signature: 'APIC', gpa: gpa(madtOffset), lengthBytes: madt.length },
      ...(mcfg ? [{ signature: 'MCFG', gpa: gpa(mcfgOffset), lengthBytes: mcfg.length }] : []),
      { signature: 'DSDT', gpa: gpa(dsdtOffset), lengthBytes: dsdt.length },
    ],
  };
}

function checkInput(cpus: number, devices: readonly VirtioMmioAcpiDevice[], baseGpa: number): void {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > ACPI_MAX_CPUS) {
    throw new BootError('bad-config', `${cpus} vCPUs: tsvmm's ACPI tables describe 1 to ${ACPI_MAX_CPUS}; change --cpus`);
  }
  if (baseGpa % 16 !== 0 || baseGpa < RSDP_SEARCH_START_GPA || baseGpa >= ACPI_END_GPA) {
    throw new BootError('bad-config', `ACPI tables at ${hex(baseGpa)}: the RSDP must be 16-byte aligned in 0xe0000-0xfffff where Linux scans for it`);
  }
  const taken = new Map<number, string>([
    [ISA_IRQ0_GSI, 'the timer (ISA IRQ0)'],
    [COM1_IRQ, 'COM1'],
    [ACPI_SCI_IRQ, 'the ACPI SCI'],
  ]);
  devices.forEach((device, i) => {
    const what = `virtio-mmio device ${i} (${hex(device.gpa)}, IRQ ${device.irq})`;
    if (!Number.isInteger(device.irq) || device.irq < 1 || device.irq >= IOAPIC_PINS) {
      throw new BootError('bad-config', `${what}: IRQ must be an IOAPIC pin 1-${IOAPIC_PINS - 1}`);
    }
    const owner = taken.get(device.irq);
    if (owner) throw new BootError('bad-config', `${what}: IRQ ${device.irq} is already used by ${owner}; give each device its own IRQ`);
    taken.set(device.irq, `virtio-mmio device ${i}`);
    if (device.sizeBytes <= 0 || device.gpa < 0 || device.gpa + device.sizeBytes > 0x1_0000_0000) {
      throw new BootError('bad-config', `${what}: the window must be non-empty and below 4 GiB (Memory32Fixed)`);
    }
    devices.forEach((other, j) => {
      if (j < i && device.gpa < other.gpa + other.sizeBytes && other.gpa < device.gpa + device.sizeBytes) {
        throw new BootError('bad-config', `${what}: its window overlaps virtio-mmio device ${j} at ${hex(other.gpa)}`);
      }
    });
  });
}

/** PCI slots (device numbers) on bus 0; 0 is the host bridge. */
const PCI_SLOTS = 32;
const PCI_ECAM_BUS_BYTES = 1 << 20;
const FOUR_GIB = 0x1_0000_0000;

function checkPci(pci: PciHostBridgeAcpi, devices: readonly VirtioMmioAcpiDevice[]): void {
  const busCount = pci.busCount ?? 1;
  if (!Number.isInteger(busCount) || busCount < 1 || busCount > 256) {
    throw new BootError('bad-config', `PCI host bridge with ${busCount} buses: 1 to 256`);
  }
  const ecamBytes = busCount * PCI_ECAM_BUS_BYTES;
  if (pci.ecamGpa % PCI_ECAM_BUS_BYTES !== 0 || pci.ecamGpa < 0 || pci.ecamGpa + ecamBytes > FOUR_GIB) {
    throw new BootError('bad-config', `PCI ECAM at ${hex(pci.ecamGpa)}+${hex(ecamBytes)}: it must be 1 MiB aligned and below 4 GiB (the PNP0C02 reservation is a Memory32Fixed)`);
  }
  const spans: Array<[string, number, number]> = [['the ECAM window', pci.ecamGpa, ecamBytes], ['the 32-bit MMIO window', pci.mmio32.base, pci.mmio32.sizeBytes]];
  if (pci.mmio32.sizeBytes <= 0 || pci.mmio32.base + pci.mmio32.sizeBytes > FOUR_GIB) {
    throw new BootError('bad-config', `PCI 32-bit MMIO window ${hex(pci.mmio32.base)}+${hex(pci.mmio32.sizeBytes)} must be non-empty and below 4 GiB`);
  }
  if (pci.mmio64) {
    if (pci.mmio64.sizeBytes <= 0 || pci.mmio64.base < FOUR_GIB) {
      throw new BootError('bad-config', `PCI 64-bit MMIO window ${hex(pci.mmio64.base)}+${hex(pci.mmio64.sizeBytes)} must be non-empty and above 4 GiB`);
    }
    spans.push(['the 64-bit MMIO window', pci.mmio64.base, pci.mmio64.sizeBytes]);
  }
  if (pci.io && (pci.io.sizeBytes <= 0 || pci.io.base + pci.io.sizeBytes > 0x10000 || (pci.io.base < 0xd00 && pci.io.base + pci.io.sizeBytes > 0xcf8))) {
    throw new BootError('bad-config', `PCI I/O window ${hex(pci.io.base)}+${hex(pci.io.sizeBytes)} must be non-empty, below 0x10000 and clear of ports 0xcf8-0xcff`);
  }
  devices.forEach((d, i) => spans.push([`virtio-mmio device ${i}`, d.gpa, d.sizeBytes]));
  for (let i = 0; i < spans.length; i++) {
    for (let j = 0; j < i; j++) {
      const [a, aBase, aSize] = spans[i]!;
      const [b, bBase, bSize] = spans[j]!;
      if (aBase < bBase + bSize && bBase < aBase + aSize) {
        throw new BootError('bad-config', `PCI: ${a} at ${hex(aBase)}+${hex(aSize)} overlaps ${b} at ${hex(bBase)}; move one of them`);
      }
    }
  }
  const taken = new Map<number, string>([[ISA_IRQ0_GSI, 'the timer (ISA IRQ0)'], [COM1_IRQ, 'COM1'], [ACPI_SCI_IRQ, 'the ACPI SCI']]);
  devices.forEach((d, i) => taken.set(d.irq, `virtio-mmio device ${i}`));
  const slots = new Set<number>();
  for (const { slot, gsi } of pci.intx ?? []) {
    const what = `PCI slot ${slot} INTA# (GSI ${gsi})`;
    if (!Number.isInteger(slot) || slot < 1 || slot >= PCI_SLOTS || slots.has(slot)) {
      throw new BootError('bad-config', `${what}: the slot must be 1-${PCI_SLOTS - 1} and listed once`);
    }
    slots.add(slot);
    if (!Number.isInteger(gsi) || gsi < 1 || gsi >= IOAPIC_PINS) throw new BootError('bad-config', `${what}: GSI must be an IOAPIC pin 1-${IOAPIC_PINS - 1}`);
    const owner = taken.get(gsi);
    if (owner) throw new BootError('bad-config', `${what}: GSI ${gsi} is already used by ${owner}; give each slot its own pin`);
    taken.set(gsi, `PCI slot ${slot}`);
  }
}

function writeHeader(bytes: Uint8Array, offset: number, signature: string, lengthBytes: number, revision: number): void {
  setAscii(ACPI_TABLE_HEADER.bytesOf(bytes, offset, 'Signature'), signature);
  setAscii(ACPI_TABLE_HEADER.bytesOf(bytes, offset, 'OEMID'), OEM_ID);
  setAscii(ACPI_TABLE_HEADER.bytesOf(bytes, offset, 'OEMTableID'), `TSVM${signature}`);
  setAscii(ACPI_TABLE_HEADER.bytesOf(bytes, offset, 'CreatorID'), CREATOR_ID);
  ACPI_TABLE_HEADER.encode({ Length: lengthBytes, Revision: revision, OEMRevision: 1, CreatorRevision: CREATOR_REVISION }, bytes, offset);
}

/** Sets the byte at `checksumOffset` so bytes [offset, offset + length) sum to 0 mod 256. */
function setChecksum(bytes: Uint8Array, offset: number, lengthBytes: number, checksumOffset: number): void {
  bytes[offset + checksumOffset] = 0;
  let sum = 0;
  for (let i = offset; i < offset + lengthBytes; i++) sum += bytes[i];
  bytes[offset + checksumOffset] = (256 - (sum & 0xff)) & 0xff;
}

/** A table: header (checksummed) followed by `body`, where the body's struct offsets count from the table start. */
function finishTable(signature: string, revision: number, table: Uint8Array): Uint8Array {
  writeHeader(table, 0, signature, table.length, revision);
  setChecksum(table, 0, table.length, ACPI_TABLE_HEADER.offsetOf('Checksum'));
  return table;
}

function writeGas(target: Uint8Array, port: number, bitWidth: number, accessSize: number): void {
  ACPI_GENERIC_ADDRESS.encode(
    { AddressSpaceID: ACPI_ADR_SPACE_SYSTEM_IO, RegisterBitWidth: bitWidth, RegisterBitOffset: 0, AccessSize: accessSize, Address: port },
    target,
  );
}

/**
 * FADT for a non-hardware-reduced PC: Linux then uses the ACPI PM timer as a clocksource and
 * calibration reference (a hardware-reduced FADT has none), and a PM1 control block gives \_S5
 * power-off. No SMI_CMD: ACPI mode is always on. No GPE blocks: nothing raises general-purpose
 * events yet. PM timer declared 24-bit (TMR_VAL_EXT clear), the width every OS masks to.
 */
function buildFadt(options: { facsGpa: number; dsdtGpa: number; cmosRtc: boolean }): Uint8Array {
  const PM1_EVT_LEN = 4; // PM1_STS + PM1_EN, 16 bits each
  const PM1_CNT_LEN = 2;
  const PM_TMR_LEN = 4;
  const table = new Uint8Array(ACPI_TABLE_FADT.sizeBytes);
  ACPI_TABLE_FADT.encode(
    {
      FIRMWARE_CTRL: options.facsGpa,
      DSDT: options.dsdtGpa,
      Preferred_PM_Profile: 0, // Unspecified
      SCI_INT: ACPI_SCI_IRQ,
      SMI_CMD: 0,
      PM1a_EVT_BLK: ACPI_PM1A_EVT_PORT,
      PM1a_CNT_BLK: ACPI_PM1A_CNT_PORT,
      PM_TMR_BLK: ACPI_PM_TMR_PORT,
      PM1_EVT_LEN,
      PM1_CNT_LEN,
      PM_TMR_LEN,
      // C2/C3 latencies above 100/1000 us say "not supported": only C1 (HLT) is offered.
      P_LVL2_LAT: 101,
      P_LVL3_LAT: 1001,
      IAPC_BOOT_ARCH: IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | (options.cmosRtc ? 0 : IAPC_CMOS_RTC_NOT_PRESENT),
      // No fixed power/sleep buttons, no RTC wake status in PM1: PWR_BUTTON/SLP_BUTTON/FIX_RTC set mean "absent".
      Flags: FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_FIX_RTC,
      FADT_Minor_Version: FADT_MINOR_VERSION,
      // FIRMWARE_CTRL holds the FACS; the spec wants X_FIRMWARE_CTRL zero when FIRMWARE_CTRL is used.
      X_FIRMWARE_CTRL: 0,
      X_DSDT: options.dsdtGpa,
    },
    table,
  );
  writeGas(ACPI_TABLE_FADT.bytesOf(table, 0, 'X_PM1a_EVT_BLK'), ACPI_PM1A_EVT_PORT, PM1_EVT_LEN * 8, ACPI_ACCESS_SIZE_WORD);
  writeGas(ACPI_TABLE_FADT.bytesOf(table, 0, 'X_PM1a_CNT_BLK'), ACPI_PM1A_CNT_PORT, PM1_CNT_LEN * 8, ACPI_ACCESS_SIZE_WORD);
  writeGas(ACPI_TABLE_FADT.bytesOf(table, 0, 'X_PM_TMR_BLK'), ACPI_PM_TMR_PORT, PM_TMR_LEN * 8, ACPI_ACCESS_SIZE_DWORD);
  return finishTable('FACP', FADT_REVISION, table);
}

/**
 * MADT: one enabled Local APIC per vCPU (APIC id = vCPU index, as cpuid.ts reports), the IOAPIC
 * with id `cpus` (after the LAPIC ids) and GSI base 0, ISA IRQ0 -> GSI 2 and the SCI as level /
 * active-high, LINT1 as NMI on every CPU, and PCAT_COMPAT since KVM's 8259 pair is present.
 */
function buildMadt(cpus: number): Uint8Array {
  const entries: Uint8Array[] = [];
  const entry = <K extends string>(s: Struct<K>, values: Partial<Record<K, number>>) => entries.push(s.encode(values));
  for (let cpu = 0; cpu < cpus; cpu++) {
    entry(ACPI_MADT_LOCAL_APIC, { Type: ACPI_MADT_TYPE_LOCAL_APIC, Length: 8, ACPI_Processor_UID: cpu, APIC_ID: cpu, Flags: MADT_LAPIC_ENABLED });
  }
  entry(ACPI_MADT_IO_APIC, { Type: ACPI_MADT_TYPE_IO_APIC, Length: 12, IO_APIC_ID: cpus, IO_APIC_Address: IOAPIC_GPA, Global_System_Interrupt_Base: 0 });
  entry(ACPI_MADT_INTERRUPT_OVERRIDE, {
    Type: ACPI_MADT_TYPE_INTERRUPT_OVERRIDE,
    Length: 10,
    Bus: 0, // ISA
    Source: 0,
    Global_System_Interrupt: ISA_IRQ0_GSI,
    Flags: 0, // conforms to the bus: edge, active high
  });
  entry(ACPI_MADT_INTERRUPT_OVERRIDE, {
    Type: ACPI_MADT_TYPE_INTERRUPT_OVERRIDE,
    Length: 10,
    Bus: 0,
    Source: ACPI_SCI_IRQ,
    Global_System_Interrupt: ACPI_SCI_IRQ,
    Flags: MPS_INTI_POLARITY_ACTIVE_HIGH | MPS_INTI_TRIGGER_LEVEL,
  });
  entry(ACPI_MADT_LOCAL_APIC_NMI, { Type: ACPI_MADT_TYPE_LOCAL_APIC_NMI, Length: 6, ACPI_Processor_UID: 0xff, Flags: 0, Local_APIC_LINT: 1 });

  const fixed = new Uint8Array(ACPI_TABLE_MADT.sizeBytes);
  ACPI_TABLE_MADT.encode({ Local_Interrupt_Controller_Address: LAPIC_GPA, Flags: MADT_PCAT_COMPAT }, fixed);
  return finishTable('APIC', MADT_REVISION, concatBytes([fixed, ...entries]));
}

/** AML name of virtio-mmio device `index`: V000, V001, ... */
export function virtioMmioDeviceName(index: number): string {
  return `V${index.toString(16).toUpperCase().padStart(3, '0')}`;
}

/**
 * Device (Vnnn) { _HID "LNRO0005", _UID, _CRS { Memory32Fixed, Interrupt } }: the form Linux's
 * virtio_mmio driver matches through ACPI (drivers/virtio/virtio_mmio.c, virtio_mmio_acpi_match).
 */
export function virtioMmioDeviceAml(index: number, device: VirtioMmioAcpiDevice): Uint8Array {
  return aml.device(
    virtioMmioDeviceName(index),
    aml.name('_HID', aml.string('LNRO0005')),
    aml.name('_UID', aml.integer(index)),
    aml.name(
      '_CRS',
      aml.resourceTemplate(aml.memory32Fixed(device.gpa, device.sizeBytes), aml.extendedInterrupt([device.irq], { trigger: device.trigger ?? 'edge' })),
    ),
  );
}

/** Device (COM1): the 8250 UART at COM1_PORT, IRQ COM1_IRQ. */
export function com1Aml(): Uint8Array {
  return aml.device(
    'COM1',
    aml.name('_HID', aml.integer(aml.eisaId('PNP0501'))),
    aml.name('_UID', aml.integer(0)),
    aml.name('_CRS', aml.resourceTemplate(aml.ioPort(COM1_PORT, COM1_PORT, 0, 8), aml.irqNoFlags(COM1_IRQ))),
  );
}

/** MCFG with one allocation: segment 0, buses 0..busCount-1 at ecamGpa. */
export function buildMcfg(pci: PciHostBridgeAcpi): Uint8Array {
  const table = new Uint8Array(ACPI_TABLE_MCFG.sizeBytes + ACPI_MCFG_ALLOCATION.sizeBytes);
  ACPI_MCFG_ALLOCATION.encode({ Address: pci.ecamGpa, PciSegment: 0, StartBusNumber: 0, EndBusNumber: (pci.busCount ?? 1) - 1 }, table, ACPI_TABLE_MCFG.sizeBytes);
  return finishTable('MCFG', MCFG_REVISION, table);
}

/**
 * Device (PCI0): a PCI Express host bridge (PNP0A08, compatible with PNP0A03) for segment 0 from
 * bus 0. _CRS: the bus range, ports 0xCF8-0xCFF (consumed, as QEMU lists them), and the windows
 * the bridge forwards: BARs must lie inside these or Linux will not use firmware's assignment.
 * _PRT: each slot's INTA# straight to a GSI (source Zero), which ACPI makes level, active low.
 * No _OSC: Linux then keeps PCIe native features off, which a bridge without ports does not need.
 */
export function pciHostBridgeAml(pci: PciHostBridgeAcpi): Uint8Array {
  const busCount = pci.busCount ?? 1;
  const crs = [
    aml.wordBusNumber(0, busCount - 1),
    aml.ioPort(0xcf8, 0xcf8, 1, 8),
    ...(pci.io ? [aml.wordIo(pci.io.base, pci.io.sizeBytes)] : []),
    aml.dwordMemory(pci.mmio32.base, pci.mmio32.sizeBytes),
    ...(pci.mmio64 ? [aml.qwordMemory(pci.mmio64.base, pci.mmio64.sizeBytes)] : []),
  ];
  const ALL_FUNCTIONS = 0xffff;
  const INTA = 0;
  const prt = (pci.intx ?? []).map(({ slot, gsi }) => aml.pkg(aml.integer(slot * 0x1_0000 + ALL_FUNCTIONS), aml.integer(INTA), aml.integer(0), aml.integer(gsi)));
  return aml.device(
    'PCI0',
    aml.name('_HID', aml.integer(aml.eisaId('PNP0A08'))),
    aml.name('_CID', aml.integer(aml.eisaId('PNP0A03'))),
    aml.name('_SEG', aml.integer(0)),
    aml.name('_BBN', aml.integer(0)),
    aml.name('_UID', aml.integer(0)),
    aml.name('_CRS', aml.resourceTemplate(...crs)),
    ...(prt.length > 0 ? [aml.name('_PRT', aml.pkg(...prt))] : []),
  );
}

/**
 * Device (PRES): a motherboard resource (PNP0C02) reserving the ECAM window. Linux uses an MCFG
 * region only if it is reserved here or in the e820 map ("MMCONFIG ... not reserved in ACPI
 * motherboard resources" otherwise), and falls back to 0xCF8.
 */
export function pciEcamReservationAml(pci: PciHostBridgeAcpi): Uint8Array {
  return aml.device(
    'PRES',
    aml.name('_HID', aml.integer(aml.eisaId('PNP0C02'))),
    aml.name('_UID', aml.integer(1)),
    aml.name('_CRS', aml.resourceTemplate(aml.memory32Fixed(pci.ecamGpa, (pci.busCount ?? 1) * PCI_ECAM_BUS_BYTES))),
  );
}

/** The DSDT: \_S5 (power-off through PM1a_CNT) and \_SB with COM1, the virtio-mmio devices and the PCI host bridge. */
export function buildDsdt(devices: readonly VirtioMmioAcpiDevice[], pci?: PciHostBridgeAcpi): Uint8Array {
  const body = concatBytes([
    aml.name('\\_S5', aml.pkg(aml.integer(ACPI_S5_SLP_TYP), aml.integer(0), aml.integer(0), aml.integer(0))),
    aml.scope('\\_SB', com1Aml(), ...devices.map((device, i) => virtioMmioDeviceAml(i, device)),
      ...(pci ? [pciHostBridgeAml(pci), pciEcamReservationAml(pci)] : [])),
  ]);
  const table = new Uint8Array(ACPI_TABLE_HEADER.sizeBytes + body.length);
  table.set(body, ACPI_TABLE_HEADER.sizeBytes);
  return finishTable('DSDT', DSDT_REVISION, table);
}
