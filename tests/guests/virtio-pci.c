/*
 * virtio-pci: the `virtio` guest's device checks (virtio-checks.c) over modern virtio-pci
 * (common/virtio-pci.c) instead of virtio-mmio, at CPL3.
 *
 * Finds configuration space (ECAM from the MCFG, else ports 0xCF8/0xCFC) and prints
 *   "pci: config via ecam 0xE0000000\n"   (or "pci: config via cf8\n")
 * then scans bus 0 and prints, for each modern virtio device,
 *   "pci slot S: DEVICE (id D) gsi G, common cfg at 0xA\n"   G: INTA#'s pin (PCI_INTERRUPT_LINE)
 * then runs the same block, rng and console checks as virtio.c, with the same lines (see
 * virtio.c), except that the rng's interrupt check is two checks here:
 *   "rng: interrupt by msi-x vector 0 (0x22)\n"  MSI-X on, queue 0 on vector 0, whose message
 *       goes to this CPU's APIC ID with vector 0x22; one request completed by that interrupt
 *   "rng: interrupt by intx on gsi G, ISR 0x1\n" MSI-X off, the IOAPIC pin programmed level,
 *       active low (what ACPI's _PRT means for PCI); the ISR read de-asserts the line, then EOI
 * and finally "virtio-pci: N devices, E errors\n". Exit status: E. `bench_blk=N` as in virtio.c.
 *
 * The same program for QEMU microvm's PCIe host (no firmware: the driver places the BARs
 * itself; INTA# of slot s on GSI 12 + s % 4) is `virtio-pci-qemu` (virtio-pci-qemu.c):
 *   qemu-system-x86_64 -M microvm,pcie=on,ioapic2=off -accel tcg -cpu max -m 256M -nodefaults
 *   -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
 *   -drive id=d0,file=disk.img,format=raw,if=none -device virtio-blk-pci,drive=d0,disable-legacy=on
 *   -device virtio-rng-pci,disable-legacy=on -kernel .cache/guests/virtio-pci-qemu.elf  (status 2E+1)
 */
#include "common/guest.h"
#include "common/virtio-pci.h"

/* I/O APIC (82093AA data sheet) at its default address. */
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_REDTBL(n) (0x10 + 2 * (n))
#define IOAPIC_REDIR_MASKED (1u << 16)
#define IOAPIC_REDIR_LEVEL (1u << 15)
#define IOAPIC_REDIR_ACTIVE_LOW (1u << 13)

#define VIRTIO_VECTOR (IRQ_VECTOR_BASE + 2)
#define WATCHDOG_VECTOR (IRQ_VECTOR_BASE + 3)
#define VIRTIO_SLOT_IRQ (VIRTIO_VECTOR - IRQ_VECTOR_BASE)
#define WATCHDOG_SLOT_IRQ (WATCHDOG_VECTOR - IRQ_VECTOR_BASE)
#define LAPIC_WATCHDOG_COUNT 500000000u /* ~0.5 s on a 1 GHz APIC bus clock, divide by 1 */

#include "virtio-checks.c"

static u32 ioapic_read(u32 reg) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	return mmio_read32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN);
}

static void ioapic_write(u32 reg, u32 v) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN, v);
}

/* Submits one 16-byte rng request with interrupts on and halts until it interrupts (or the watchdog). */
static u64 rng_request_by_interrupt(const struct virtio_dev *d) {
	irq_count[VIRTIO_SLOT_IRQ] = 0;
	irq_count[WATCHDOG_SLOT_IRQ] = 0;
	rng_vq.avail.flags = 0;
	struct vq_buf b = {rng_buf[0], 16, true};
	vq_submit(&rng_vq, &b, 1);
	vq_kick(d, &rng_vq);
	lapic_write(APIC_LVTT, WATCHDOG_VECTOR); /* one-shot */
	lapic_write(APIC_TMICT, LAPIC_WATCHDOG_COUNT);
	cpl0_call(cpl0_halt_until, (u64)&irq_count[VIRTIO_SLOT_IRQ], 1, (u64)&irq_count[WATCHDOG_SLOT_IRQ], 1);
	lapic_write(APIC_TMICT, 0);
	rng_vq.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	return irq_count[VIRTIO_SLOT_IRQ];
}

static void rng_interrupt(const struct virtio_dev *cd) {
	struct virtio_dev *d = (struct virtio_dev *)cd;
	/* Both 8259s masked: firmware (SeaBIOS on QEMU pc/q35) leaves them on with the PIT ticking
	 * into vectors 8-15, which would land in the exception handlers once interrupts are on. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[WATCHDOG_SLOT_IRQ] = IRQ_EOI_LAPIC;
	u32 apic_id = lapic_read(APIC_ID) >> 24;

	/* MSI-X: an edge message, EOI at the LAPIC as usual. */
	irq_eoi_mode[VIRTIO_SLOT_IRQ] = IRQ_EOI_LAPIC;
	if (!virtio_pci_msix_enable(d, apic_id, VIRTIO_VECTOR)) {
		error("rng: the device has no MSI-X capability");
	} else if (virtio_pci_queue_vector(d, 0, 0) != 0) {
		error("rng: the device refused MSI-X vector 0 for queue 0");
	} else {
		u64 n = rng_request_by_interrupt(d);
		bool used = vq_wait(&rng_vq, NULL, REQUEST_TIMEOUT_US);
		if (n == 0) {
			error("rng: no MSI-X interrupt within the watchdog");
		} else {
			print("rng: interrupt by msi-x vector 0 (");
			print_hex(VIRTIO_VECTOR);
			print(")\n");
			if (!used)
				error("rng: the MSI-X interrupt came without a used buffer");
		}
		virtio_pci_queue_vector(d, 0, VIRTIO_MSI_NO_VECTOR);
	}
	virtio_pci_msix_disable(d);

	/* INTx: a level line. No automatic EOI: the ISR read de-asserts the line first, then EOI,
	 * so the IOAPIC does not deliver it again. */
	irq_eoi_mode[VIRTIO_SLOT_IRQ] = IRQ_EOI_NONE;
	u32 saved = ioapic_read(IOAPIC_REDTBL(d->gsi));
	virtio_ack_interrupt(d); /* start from a clean ISR */
	ioapic_write(IOAPIC_REDTBL(d->gsi) + 1, apic_id << 24);
	ioapic_write(IOAPIC_REDTBL(d->gsi), VIRTIO_VECTOR | IOAPIC_REDIR_LEVEL | IOAPIC_REDIR_ACTIVE_LOW);
	u64 n = rng_request_by_interrupt(d);
	u32 isr = virtio_ack_interrupt(d);
	if (n)
		lapic_write(APIC_EOI, 0);
	bool used = vq_wait(&rng_vq, NULL, REQUEST_TIMEOUT_US);
	ioapic_write(IOAPIC_REDTBL(d->gsi), saved | IOAPIC_REDIR_MASKED);
	irq_eoi_mode[VIRTIO_SLOT_IRQ] = IRQ_EOI_LAPIC;
	if (n == 0) {
		print("rng: no INTx interrupt on gsi ");
		print_dec(d->gsi);
		print(" within the watchdog\n");
		errors++;
		return;
	}
	print("rng: interrupt by intx on gsi ");
	print_dec(d->gsi);
	print(", ISR ");
	print_hex(isr);
	print("\n");
	if (!(isr & VIRTIO_PCI_ISR_QUEUE) || !used)
		error("rng: the INTx interrupt came without a used buffer");
}

int guest_main(void) {
	u64 ecam = pci_init();
	if (ecam) {
		print("pci: config via ecam ");
		print_hex(ecam);
		print("\n");
	} else {
		print("pci: config via cf8\n");
	}
	static struct virtio_dev devs[VIRTIO_MAX_DEVICES];
	u32 count = virtio_pci_scan(devs, VIRTIO_MAX_DEVICES);
	for (u32 i = 0; i < count; i++) {
		print("pci slot ");
		print_dec(devs[i].slot);
		print(": ");
		print(virtio_device_name(devs[i].device_id));
		print(" (id ");
		print_dec(devs[i].device_id);
		print(") gsi ");
		print_dec(devs[i].gsi);
		print(", common cfg at ");
		print_hex(devs[i].common);
		print("\n");
	}
	u64 bench_n;
	if (cmdline_u64("bench_blk", &bench_n)) {
		for (u32 i = 0; i < count; i++)
			if (devs[i].device_id == VIRTIO_ID_BLOCK)
				return bench_block(&devs[i], bench_n);
		print("bench: no block device\n");
		return 1;
	}
	u32 blocks = 0;
	for (u32 i = 0; i < count; i++) {
		struct virtio_dev *d = &devs[i];
		if (d->device_id == VIRTIO_ID_BLOCK)
			exercise_block(d, blocks++);
		else if (d->device_id == VIRTIO_ID_RNG)
			exercise_rng(d);
		else if (d->device_id == VIRTIO_ID_CONSOLE)
			exercise_console(d);
		else if (d->device_id == VIRTIO_ID_NET)
			exercise_net(d);
	}
	print("virtio-pci: ");
	print_dec(count);
	print(" devices, ");
	print_dec(errors);
	print(" errors\n");
	return (int)errors;
}
