/*
 * virtio-pci-qemu: the `virtio-pci` guest (virtio-pci.c; same output and status) for QEMU
 * microvm's PCIe host (-M microvm,pcie=on): no firmware places its BARs, so the driver puts them
 * at 0xc0000000 (the start of microvm's 32-bit PCIe MMIO window in QEMU 7.2, 0xc0000000-
 * 0xdfffffff as `info mtree` shows it), and INTA# of slot s is GSI 12 + s % 4 (the GPEX's
 * four lines from GSI 12, swizzled by slot). Its ACPI tables have no MCFG (QEMU 7.2): the ECAM is at 0xe0000000
 * (PCIE_ECAM_BASE). The QEMU command line is in virtio-pci.c; QEMU exits with status 2E+1.
 */
#define VIRTIO_PCI_ECAM_GPA 0xe0000000ul
#define VIRTIO_PCI_ASSIGN_GPA 0xc0000000ul
#define VIRTIO_PCI_INTX_GSI(slot) (12 + (slot) % 4)
/* One translation unit, so the driver sees these too. */
#include "common/virtio-pci.c"
#include "virtio-pci.c"
