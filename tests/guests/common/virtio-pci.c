/*
 * virtio-pci.c: the test guests' modern virtio-pci driver (see virtio-pci.h). Initialisation in
 * the order of Linux's drivers/virtio/virtio_pci_modern.c (vp_reset, features, setup_vq per queue,
 * then queue_enable, DRIVER_OK); MSI-X as drivers/pci/msi/msi.c sets it up (function masked while
 * the table is written). The rings are virtq.c's, as for virtio-mmio.
 */
#include "virtio-pci.h"

static u64 ecam_gpa; /* 0: configuration mechanism #1 */

static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }

u64 pci_init(void) {
	/* MCFG: header (36), 8 reserved, then allocations {u64 base, u16 segment, u8 start, u8 end, u32}. */
	const struct acpi_sdt_header *mcfg = acpi_find_table("MCFG");
	ecam_gpa = 0;
	if (mcfg && mcfg->length >= 44 + 16) {
		const u8 *alloc = (const u8 *)mcfg + 44;
		if (*(const u16 *)(alloc + 8) == 0 && alloc[10] == 0)
			ecam_gpa = *(const u64 *)alloc;
	}
#ifdef VIRTIO_PCI_ECAM_GPA
	if (!ecam_gpa)
		ecam_gpa = VIRTIO_PCI_ECAM_GPA; /* a VMM whose ACPI tables have no MCFG */
#endif
	return ecam_gpa;
}

u32 pci_cfg_read(u32 slot, u32 offset, u32 len) {
	if (ecam_gpa) {
		u64 a = ecam_gpa + ((u64)slot << 15) + offset;
		return len == 1 ? mmio_read8(a) : len == 2 ? mmio_read16(a) : mmio_read32(a);
	}
	outl(PCI_CONFIG_ADDRESS_PORT, 0x80000000u | slot << 11 | (offset & 0xfc));
	u16 port = (u16)(PCI_CONFIG_DATA_PORT + (offset & 3));
	return len == 1 ? inb(port) : len == 2 ? inw(port) : inl(port);
}

void pci_cfg_write(u32 slot, u32 offset, u32 len, u32 value) {
	if (ecam_gpa) {
		u64 a = ecam_gpa + ((u64)slot << 15) + offset;
		if (len == 1) mmio_write8(a, (u8)value);
		else if (len == 2) mmio_write16(a, (u16)value);
		else mmio_write32(a, value);
		return;
	}
	outl(PCI_CONFIG_ADDRESS_PORT, 0x80000000u | slot << 11 | (offset & 0xfc));
	u16 port = (u16)(PCI_CONFIG_DATA_PORT + (offset & 3));
	if (len == 1) outb(port, (u8)value);
	else if (len == 2) outw(port, (u16)value);
	else outl(port, value);
}

#ifdef VIRTIO_PCI_ASSIGN_GPA
static u64 assign_next = VIRTIO_PCI_ASSIGN_GPA;
#endif

/* BAR `index`'s address, placing it first when it is unassigned and the program allows that. */
static u64 bar_address(struct virtio_dev *d, u32 index) {
	if (index > 5)
		return 0;
	if (d->bar[index])
		return d->bar[index];
	u32 reg = PCI_BASE_ADDRESS_0 + 4 * index;
	u32 low = pci_cfg_read(d->slot, reg, 4);
	if (low & PCI_BASE_ADDRESS_SPACE_IO)
		return 0;
	bool is64 = (low & 0x6) == PCI_BASE_ADDRESS_MEM_TYPE_64;
	u64 addr = low & ~0xfu;
	if (is64)
		addr |= (u64)pci_cfg_read(d->slot, reg + 4, 4) << 32;
#ifdef VIRTIO_PCI_ASSIGN_GPA
	if (addr == 0) {
		/* Size it (6.2.5.1): all ones, read back, restore; then place it naturally aligned. */
		pci_cfg_write(d->slot, reg, 4, 0xffffffffu);
		u32 mask = pci_cfg_read(d->slot, reg, 4) & ~0xfu;
		pci_cfg_write(d->slot, reg, 4, low);
		u64 size = (u64)(~mask + 1u);
		if (mask == 0)
			return 0;
		addr = (assign_next + size - 1) & ~(size - 1);
		assign_next = addr + size;
		pci_cfg_write(d->slot, reg, 4, (u32)addr | (low & 0xf));
		if (is64)
			pci_cfg_write(d->slot, reg + 4, 4, (u32)(addr >> 32));
	}
#endif
	d->bar[index] = addr;
	return addr;
}

/* Reads one device's capabilities; false when a region is missing or its BAR is not placed. */
static bool probe_caps(struct virtio_dev *d) {
	if (!(pci_cfg_read(d->slot, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST))
		return false;
	u32 cap = pci_cfg_read(d->slot, PCI_CAPABILITY_LIST, 1) & ~3u;
	for (u32 guard = 0; cap >= 0x40 && guard < 48; guard++) {
		u32 id = pci_cfg_read(d->slot, cap, 1);
		if (id == PCI_CAP_ID_VNDR) {
			u32 type = pci_cfg_read(d->slot, cap + VIRTIO_PCI_CAP_CFG_TYPE, 1);
			u32 bar = pci_cfg_read(d->slot, cap + VIRTIO_PCI_CAP_BAR, 1);
			u32 off = pci_cfg_read(d->slot, cap + VIRTIO_PCI_CAP_OFFSET, 4);
			/* The first capability of each type is the one to use (4.1.4: the driver SHOULD). */
			u64 *region = type == VIRTIO_PCI_CAP_COMMON_CFG ? &d->common
				: type == VIRTIO_PCI_CAP_NOTIFY_CFG ? &d->notify
				: type == VIRTIO_PCI_CAP_ISR_CFG ? &d->isr
				: type == VIRTIO_PCI_CAP_DEVICE_CFG ? &d->devcfg : NULL;
			if (region && *region == 0 && bar <= 5) {
				u64 base = bar_address(d, bar);
				if (base)
					*region = base + off;
				if (type == VIRTIO_PCI_CAP_NOTIFY_CFG)
					d->notify_mult = pci_cfg_read(d->slot, cap + VIRTIO_PCI_NOTIFY_CAP_MULT, 4);
			}
		} else if (id == PCI_CAP_ID_MSIX && !d->msix_cap) {
			u32 table = pci_cfg_read(d->slot, cap + PCI_MSIX_TABLE, 4);
			u64 base = bar_address(d, table & 7);
			if (base) {
				d->msix_cap = cap;
				d->msix_vectors = (pci_cfg_read(d->slot, cap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1;
				d->msix_table = base + (table & ~7u);
			}
		}
		cap = pci_cfg_read(d->slot, cap + 1, 1) & ~3u;
	}
	return d->common && d->notify && d->isr;
}

u32 virtio_pci_scan(struct virtio_dev *devs, u32 max) {
	u32 n = 0;
	for (u32 slot = 0; slot < PCI_SLOTS && n < max; slot++) {
		u32 id = pci_cfg_read(slot, PCI_VENDOR_ID, 4);
		u32 vendor = id & 0xffff, device = id >> 16;
		if (vendor != PCI_VENDOR_ID_REDHAT_QUMRANET || device < VIRTIO_PCI_DEVICE_ID_BASE || device > VIRTIO_PCI_DEVICE_ID_BASE + 0x3f)
			continue;
		struct virtio_dev *d = &devs[n];
		memset(d, 0, sizeof(*d));
		d->slot = slot;
		d->device_id = device - VIRTIO_PCI_DEVICE_ID_BASE;
		d->gsi = pci_cfg_read(slot, PCI_INTERRUPT_LINE, 1);
#ifdef VIRTIO_PCI_INTX_GSI
		d->gsi = VIRTIO_PCI_INTX_GSI(slot);
#endif
		if (!probe_caps(d)) {
			print("virtio-pci: slot ");
			print_dec(slot);
			print(": a virtio capability is missing or its BAR is not assigned; skipped\n");
			continue;
		}
		pci_cfg_write(slot, PCI_COMMAND, 2, pci_cfg_read(slot, PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
		n++;
	}
	return n;
}

static u8 status_of(const struct virtio_dev *d) { return mmio_read8(d->common + VIRTIO_PCI_COMMON_STATUS); }
static void set_status(const struct virtio_dev *d, u8 s) { mmio_write8(d->common + VIRTIO_PCI_COMMON_STATUS, s); }

static void fail(const struct virtio_dev *d, const char *why) {
	print("virtio-pci: slot ");
	print_dec(d->slot);
	print(": ");
	print(why);
	print("\n");
	set_status(d, (u8)(status_of(d) | VIRTIO_CONFIG_S_FAILED));
}

bool virtio_init(struct virtio_dev *d, u64 wanted, struct vq *queues, u32 nq) {
	u64 c = d->common;
	set_status(d, 0);
	for (u32 i = 0; status_of(d) != 0 && i < 1000000; i++) /* 4.1.4.3.2: reset completes when it reads 0 */
		cpu_relax();
	set_status(d, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	set_status(d, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	mmio_write32(c + VIRTIO_PCI_COMMON_DFSELECT, 1);
	u64 offered = (u64)mmio_read32(c + VIRTIO_PCI_COMMON_DF) << 32;
	mmio_write32(c + VIRTIO_PCI_COMMON_DFSELECT, 0);
	offered |= mmio_read32(c + VIRTIO_PCI_COMMON_DF);
	d->device_features = offered;
	if (!(offered & FEATURE(VIRTIO_F_VERSION_1))) {
		print("virtio-pci: offered features ");
		print_hex(offered);
		print(" (a BAR that does not decode reads 0)\n");
		fail(d, "device does not offer VIRTIO_F_VERSION_1");
		return false;
	}
	d->features = offered & (wanted | FEATURE(VIRTIO_F_VERSION_1));
	mmio_write32(c + VIRTIO_PCI_COMMON_GFSELECT, 0);
	mmio_write32(c + VIRTIO_PCI_COMMON_GF, (u32)d->features);
	mmio_write32(c + VIRTIO_PCI_COMMON_GFSELECT, 1);
	mmio_write32(c + VIRTIO_PCI_COMMON_GF, (u32)(d->features >> 32));
	u8 status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
	set_status(d, status);
	if (!(status_of(d) & VIRTIO_CONFIG_S_FEATURES_OK)) {
		fail(d, "device refused FEATURES_OK");
		return false;
	}
	if (nq > VIRTIO_PCI_MAX_QUEUES || nq > mmio_read16(c + VIRTIO_PCI_COMMON_NUMQ)) {
		fail(d, "the device has fewer queues than the driver needs");
		return false;
	}
	for (u32 i = 0; i < nq; i++) {
		struct vq *q = &queues[i];
		mmio_write16(c + VIRTIO_PCI_COMMON_Q_SELECT, (u16)i);
		if (mmio_read16(c + VIRTIO_PCI_COMMON_Q_SIZE) < VQ_SIZE || mmio_read16(c + VIRTIO_PCI_COMMON_Q_ENABLE)) {
			fail(d, "a queue is smaller than VQ_SIZE or already enabled");
			return false;
		}
		vq_reset(q, (u16)i);
		mmio_write16(c + VIRTIO_PCI_COMMON_Q_SIZE, VQ_SIZE);
		u64 desc = (u64)q->desc, avail = (u64)&q->avail, used = (u64)&q->used;
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_DESCLO, (u32)desc);
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_DESCHI, (u32)(desc >> 32));
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_AVAILLO, (u32)avail);
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_AVAILHI, (u32)(avail >> 32));
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_USEDLO, (u32)used);
		mmio_write32(c + VIRTIO_PCI_COMMON_Q_USEDHI, (u32)(used >> 32));
		d->queue_notify[i] = d->notify + (u64)mmio_read16(c + VIRTIO_PCI_COMMON_Q_NOFF) * d->notify_mult;
	}
	for (u32 i = 0; i < nq; i++) {
		mmio_write16(c + VIRTIO_PCI_COMMON_Q_SELECT, (u16)i);
		mmio_write16(c + VIRTIO_PCI_COMMON_Q_ENABLE, 1);
	}
	set_status(d, status | VIRTIO_CONFIG_S_DRIVER_OK);
	if (status_of(d) & VIRTIO_CONFIG_S_NEEDS_RESET) {
		fail(d, "device needs reset right after DRIVER_OK");
		return false;
	}
	return true;
}

bool vq_transfer(const struct virtio_dev *d, struct vq *q, const struct vq_buf *bufs, u32 n, u32 *len, u64 timeout_us) {
	vq_submit(q, bufs, n);
	vq_kick(d, q);
	return vq_wait(q, len, timeout_us);
}

u32 virtio_ack_interrupt(const struct virtio_dev *d) {
	return mmio_read8(d->isr);
}

u32 virtio_config_read32(const struct virtio_dev *d, u32 offset) {
	return d->devcfg ? mmio_read32(d->devcfg + offset) : 0;
}

u64 virtio_config_read64(const struct virtio_dev *d, u32 offset) {
	/* Two 32-bit halves; a real driver would check config_generation around them (4.1.4.3.1). */
	return (u64)virtio_config_read32(d, offset + 4) << 32 | virtio_config_read32(d, offset);
}

bool virtio_pci_msix_enable(struct virtio_dev *d, u32 apic_id, u8 first_vector) {
	if (!d->msix_cap)
		return false;
	u32 ctrl = d->msix_cap + PCI_MSIX_FLAGS;
	pci_cfg_write(d->slot, ctrl, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	for (u32 v = 0; v < d->msix_vectors; v++) {
		u64 e = d->msix_table + v * PCI_MSIX_ENTRY_SIZE;
		mmio_write32(e + 0, MSI_ADDRESS_BASE | (apic_id & 0xff) << 12);
		mmio_write32(e + 4, 0);
		mmio_write32(e + 8, (u32)(u8)(first_vector + v)); /* fixed delivery, edge */
		mmio_write32(e + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);  /* unmasked */
	}
	pci_cfg_write(d->slot, ctrl, 2, PCI_MSIX_FLAGS_ENABLE);
	pci_cfg_write(d->slot, PCI_COMMAND, 2, pci_cfg_read(d->slot, PCI_COMMAND, 2) | PCI_COMMAND_INTX_DISABLE);
	return true;
}

void virtio_pci_msix_disable(struct virtio_dev *d) {
	if (d->msix_cap)
		pci_cfg_write(d->slot, d->msix_cap + PCI_MSIX_FLAGS, 2, 0);
	pci_cfg_write(d->slot, PCI_COMMAND, 2, pci_cfg_read(d->slot, PCI_COMMAND, 2) & ~PCI_COMMAND_INTX_DISABLE);
}

u16 virtio_pci_queue_vector(const struct virtio_dev *d, u16 queue, u16 vector) {
	mmio_write16(d->common + VIRTIO_PCI_COMMON_Q_SELECT, queue);
	mmio_write16(d->common + VIRTIO_PCI_COMMON_Q_MSIX, vector);
	return mmio_read16(d->common + VIRTIO_PCI_COMMON_Q_MSIX);
}
