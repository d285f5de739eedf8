/*
 * virtio-pci.h: a minimal modern virtio-pci driver for the test guests (virtio-pci.c), with the
 * same functions as the virtio-mmio one (virtio_init, vq_kick, vq_transfer, virtio_ack_interrupt,
 * virtio_config_read32/64) over its own struct virtio_dev, plus the PCI side: a scan of bus 0,
 * the vendor capability walk, BAR addresses, MSI-X set-up. Runs at CPL3 (the first 4 GiB are
 * identity-mapped with the U bit; ports through IOPL 3).
 *
 * Specs: VIRTIO 1.2, 4.1 Virtio Over PCI Bus (names as in Linux include/uapi/linux/virtio_pci.h);
 * PCI Local Bus 3.0, 6.1 (header), 6.2.5 (BARs), 6.7 (capabilities), 6.8.2 (MSI-X); PCI Express
 * 4.0, 7.2.2 (ECAM, found through the ACPI MCFG table); Intel SDM vol. 3A 10.11 (MSI address/data).
 *
 * Configuration access: ECAM at the MCFG's base when there is an MCFG, else mechanism #1 (ports
 * 0xCF8/0xCFC). BARs: used where the VMM (firmware) put them; a BAR left at 0 is placed by the
 * driver from VIRTIO_PCI_ASSIGN_GPA, when the program defines it (QEMU microvm has no firmware
 * to do it), else the device is skipped. Only modern devices (1af4:1040-107f) are driven.
 */
#ifndef TSVMM_VIRTIO_PCI_H
#define TSVMM_VIRTIO_PCI_H

#include "guest.h"
#include "virtio.h"

/* ---- PCI configuration header (pci_regs.h) ---- */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BASE_ADDRESS_0 0x10
#define PCI_BASE_ADDRESS_SPACE_IO 0x1
#define PCI_BASE_ADDRESS_MEM_TYPE_64 0x4
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11
#define PCI_MSIX_FLAGS 2
#define PCI_MSIX_FLAGS_QSIZE 0x7ff
#define PCI_MSIX_FLAGS_MASKALL 0x4000
#define PCI_MSIX_FLAGS_ENABLE 0x8000
#define PCI_MSIX_TABLE 4
#define PCI_MSIX_ENTRY_SIZE 16
#define PCI_MSIX_ENTRY_VECTOR_CTRL 12
#define PCI_CONFIG_ADDRESS_PORT 0xcf8
#define PCI_CONFIG_DATA_PORT 0xcfc
#define PCI_SLOTS 32

/* ---- 4.1.2, 4.1.4 ---- */
#define PCI_VENDOR_ID_REDHAT_QUMRANET 0x1af4
#define VIRTIO_PCI_DEVICE_ID_BASE 0x1040
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
/* struct virtio_pci_cap: cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2], offset, length */
#define VIRTIO_PCI_CAP_CFG_TYPE 3
#define VIRTIO_PCI_CAP_BAR 4
#define VIRTIO_PCI_CAP_OFFSET 8
#define VIRTIO_PCI_NOTIFY_CAP_MULT 16
/* struct virtio_pci_common_cfg */
#define VIRTIO_PCI_COMMON_DFSELECT 0
#define VIRTIO_PCI_COMMON_DF 4
#define VIRTIO_PCI_COMMON_GFSELECT 8
#define VIRTIO_PCI_COMMON_GF 12
#define VIRTIO_PCI_COMMON_MSIX 16
#define VIRTIO_PCI_COMMON_NUMQ 18
#define VIRTIO_PCI_COMMON_STATUS 20
#define VIRTIO_PCI_COMMON_CFGGENERATION 21
#define VIRTIO_PCI_COMMON_Q_SELECT 22
#define VIRTIO_PCI_COMMON_Q_SIZE 24
#define VIRTIO_PCI_COMMON_Q_MSIX 26
#define VIRTIO_PCI_COMMON_Q_ENABLE 28
#define VIRTIO_PCI_COMMON_Q_NOFF 30
#define VIRTIO_PCI_COMMON_Q_DESCLO 32
#define VIRTIO_PCI_COMMON_Q_DESCHI 36
#define VIRTIO_PCI_COMMON_Q_AVAILLO 40
#define VIRTIO_PCI_COMMON_Q_AVAILHI 44
#define VIRTIO_PCI_COMMON_Q_USEDLO 48
#define VIRTIO_PCI_COMMON_Q_USEDHI 52
#define VIRTIO_MSI_NO_VECTOR 0xffff
#define VIRTIO_PCI_ISR_QUEUE 0x1
/* MSI address (SDM 10.11.1): 0xFEE, destination APIC ID in bits 19:12, physical mode. */
#define MSI_ADDRESS_BASE 0xfee00000u
#define VIRTIO_PCI_MAX_QUEUES 4

struct virtio_dev {
	u32 slot;            /* bus 0 device number */
	u32 device_id;       /* virtio device type */
	u32 gsi;             /* INTA#'s IOAPIC pin */
	u64 device_features; /* offered */
	u64 features;        /* accepted */
	u64 bar[6];          /* BAR addresses as assigned (0: none) */
	u64 common, isr, devcfg, notify; /* the capability regions, guest-physical */
	u32 notify_mult;
	u32 msix_cap;        /* configuration offset of the MSI-X capability (0: none) */
	u32 msix_vectors;
	u64 msix_table;
	u64 queue_notify[VIRTIO_PCI_MAX_QUEUES];
};

static inline u8 mmio_read8(u64 gpa) { return *(volatile u8 *)gpa; }
static inline u16 mmio_read16(u64 gpa) { return *(volatile u16 *)gpa; }
static inline void mmio_write8(u64 gpa, u8 v) { *(volatile u8 *)gpa = v; }
static inline void mmio_write16(u64 gpa, u16 v) { *(volatile u16 *)gpa = v; }

/* Configuration space of bus 0, function 0 of `slot` (ECAM when pci_init found an MCFG). */
u32 pci_cfg_read(u32 slot, u32 offset, u32 len);
void pci_cfg_write(u32 slot, u32 offset, u32 len, u32 value);
/* Finds the configuration mechanism; returns the ECAM base, or 0 for ports 0xCF8/0xCFC. */
u64 pci_init(void);
/* Scans bus 0 for modern virtio devices, reads their capabilities and BARs, enables memory
 * decoding and bus mastering; fills devs[0..max-1] in slot order and returns how many. */
u32 virtio_pci_scan(struct virtio_dev *devs, u32 max);

/* As in virtio-mmio.h: reset, features (VIRTIO_F_VERSION_1 required), queues 0..nq-1 with
 * interrupts suppressed, DRIVER_OK; false (with the reason printed) on failure. */
bool virtio_init(struct virtio_dev *d, u64 wanted, struct vq *queues, u32 nq);
/* The doorbell: a 16-bit write of the queue index at its notify address (tsvmm: an ioeventfd). */
static inline void vq_kick(const struct virtio_dev *d, const struct vq *q) { mmio_write16(d->queue_notify[q->index], q->index); }
bool vq_transfer(const struct virtio_dev *d, struct vq *q, const struct vq_buf *bufs, u32 n, u32 *len, u64 timeout_us);
/* Reads (and so clears, de-asserting INTx) the ISR status byte. */
u32 virtio_ack_interrupt(const struct virtio_dev *d);
u32 virtio_config_read32(const struct virtio_dev *d, u32 offset);
u64 virtio_config_read64(const struct virtio_dev *d, u32 offset);

/* MSI-X on (function masked while the table is written): vector v sends `first_vector + v` to
 * APIC `apic_id`; INTx is disabled. False when the device has no MSI-X. */
bool virtio_pci_msix_enable(struct virtio_dev *d, u32 apic_id, u8 first_vector);
/* MSI-X off and INTx back on. */
void virtio_pci_msix_disable(struct virtio_dev *d);
/* Maps queue `queue` to MSI-X vector `vector`; returns what the device read back (NO_VECTOR: refused). */
u16 virtio_pci_queue_vector(const struct virtio_dev *d, u16 queue, u16 vector);

#endif
