// The guest-physical layout of a tsvmm machine: where boot data, tables and devices live.
// One table so the loader, ACPI builder, e820 builder and test guests agree.
// Spec: Linux Documentation/arch/x86/boot.rst (zero page, cmdline), x86 PVH (xen/include/public/arch-x86/hvm/start_info.h).

/** Boot GDT (flat code/data) written for Linux 64-bit and PVH 32-bit entry. */
export const BOOT_GDT_GPA = 0x500;
/** Empty IDT the boot vCPU starts with. */
export const BOOT_IDT_GPA = 0x520;
/** PVH hvm_start_info and its memory map follow it. */
export const PVH_START_INFO_GPA = 0x6000;
export const PVH_MEMMAP_GPA = 0x6040;
/** Linux zero page (struct boot_params). */
export const ZERO_PAGE_GPA = 0x7000;
/** Identity page tables for the 64-bit Linux entry: PML4, PDPT, then 4 PDs of 2 MiB pages (first 4 GiB). */
export const PML4_GPA = 0x9000;
export const PDPT_GPA = 0xa000;
export const PD_GPA = 0xb000;
/** Kernel command line (NUL-terminated). */
export const CMDLINE_GPA = 0x20000;
export const CMDLINE_MAX_BYTES = 0x10000;
/** Top of the low RAM usable by the guest; EBDA and legacy ROM area above it are reserved. */
export const EBDA_START_GPA = 0x9fc00;
/** ACPI tables: RSDP at the start (inside the BIOS search area 0xE0000-0xFFFFF), then the rest. */
export const ACPI_START_GPA = 0xe0000;
export const ACPI_END_GPA = 0x100000;
/** Protected-mode kernels load at 1 MiB. */
export const HIGH_MEMORY_GPA = 0x100000;
/** Low RAM ends at the 32-bit PCI/MMIO hole; RAM beyond it continues at 4 GiB. */
export const MMIO_HOLE_START_GPA = 0xc000_0000;
export const HIGH_RAM_START_GPA = 0x1_0000_0000;

/** Where `memoryBytes` of RAM go: below the MMIO hole, and the rest from 4 GiB. */
export function ramRegions(memoryBytes: number): Array<{ gpa: number; sizeBytes: number }> {
  const low = Math.min(memoryBytes, MMIO_HOLE_START_GPA);
  const regions = [{ gpa: 0, sizeBytes: low }];
  if (memoryBytes > low) regions.push({ gpa: HIGH_RAM_START_GPA, sizeBytes: memoryBytes - low });
  return regions;
}
/**
 * virtio-mmio slots: slot n's register window is at VIRTIO_MMIO_BASE_GPA + n * VIRTIO_MMIO_STRIDE_BYTES
 * (0x200 bytes used: registers and config space), its interrupt on IOAPIC GSI VIRTIO_MMIO_FIRST_IRQ + n.
 * One page per slot, so a guest can map each on its own. GSIs 16-23 are IOAPIC-only pins (KVM routes
 * 0-15 to the 8259s too) with no ISA meaning, and clear of COM1 (4), the SCI (9) and the PIT (2).
 * The slots are fixed so a test guest can probe them without parsing the DSDT (tests/guests/common/virtio-mmio.h).
 */
export const VIRTIO_MMIO_BASE_GPA = 0xd000_0000;
export const VIRTIO_MMIO_STRIDE_BYTES = 0x1000;
export const VIRTIO_MMIO_SLOTS = 8;
export const VIRTIO_MMIO_FIRST_IRQ = 16;
/**
 * PCI (only when a device uses the virtio-pci transport; without one none of this exists):
 * - ECAM for bus 0 (1 MiB; the MCFG table points at it, e820 and the DSDT's PNP0C02 reserve it).
 *   Where QEMU's microvm and q35 put theirs, clear of the virtio-mmio slots and the IOAPIC.
 * - The 32-bit BAR window: the bottom of the MMIO hole, from where low RAM ends (RAM never goes
 *   above MMIO_HOLE_START_GPA) up to the virtio-mmio slots; the DSDT's _CRS declares it.
 * - INTA# of PCI slot s is IOAPIC pin PCI_INTX_GSI_TOP + 1 - s (slot 1: GSI 23, slot 2: 22, ...):
 *   the IOAPIC-only pins that virtio-mmio fills from 16 upwards, taken from the other end, so the
 *   two never meet while the machine has at most VIRTIO_MMIO_SLOTS virtio devices in all.
 * - Configuration mechanism #1 at ports PCI_CONFIG_PORT..+7 (0xCF8-0xCFF).
 */
export const PCI_ECAM_GPA = 0xe000_0000;
export const PCI_ECAM_SIZE_BYTES = 0x10_0000;
export const PCI_MMIO32_BASE_GPA = MMIO_HOLE_START_GPA;
export const PCI_MMIO32_SIZE_BYTES = VIRTIO_MMIO_BASE_GPA - MMIO_HOLE_START_GPA;
export const PCI_INTX_GSI_TOP = 23;
export const PCI_CONFIG_PORT = 0xcf8;
export const PCI_CONFIG_PORT_COUNT = 8;
/** Platform MMIO (KVM's in-kernel chips answer here). */
export const IOAPIC_GPA = 0xfec0_0000;
export const LAPIC_GPA = 0xfee0_0000;
/** KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR: three pages + one page below 4 GiB, kept out of RAM. */
export const KVM_TSS_GPA = 0xfffb_d000;
export const KVM_IDENTITY_MAP_GPA = 0xfffb_c000;

/** Legacy I/O ports. */
export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
/** Write N here to end the VM with exit status N (QEMU isa-debug-exit exits with 2N+1). */
export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_PORT_SIZE = 4;
/** POST diagnostic port; writes are accepted and dropped on the vCPU thread (Linux uses it as io_delay). */
export const POST_PORT = 0x80;
/** ACPI PM1a event/control blocks and PM timer for the FADT (hardware-reduced is not used: Linux wants a PM timer). */
export const ACPI_PM1A_EVT_PORT = 0x600;
export const ACPI_PM1A_CNT_PORT = 0x604;
export const ACPI_PM_TMR_PORT = 0x608;
export const ACPI_SCI_IRQ = 9;

// Added with the boot tables (src/boot/e820.ts, acpi.ts):
/** PVH hvm_modlist_entry array (the initrd), after room for PVH_MEMMAP_MAX_ENTRIES memmap entries and before the zero page. */
export const PVH_MODLIST_GPA = 0x6f00;
export const PVH_MEMMAP_MAX_ENTRIES = Math.floor((PVH_MODLIST_GPA - PVH_MEMMAP_GPA) / 24);
/** \_S5 SLP_TYPa in the DSDT: a guest write to PM1a_CNT with SLP_EN (bit 13) and SLP_TYP (bits 12:10) = 5 asks for power-off. */
export const ACPI_S5_SLP_TYP = 5;
