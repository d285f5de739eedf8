/*
 * virtio: drives every virtio-mmio device in tsvmm's fixed slots (common/virtio-mmio.c), at CPL3.
 *
 * Probes slots 0-7 and prints, for each device found,
 *   "slot S: DEVICE (id D) gsi G\n"                          DEVICE: block, console, rng, other
 * then exercises each (K counts block devices from 0, in slot order):
 *   block   "blkK: capacity C sectors, ro R, flush F\n"   (features: VERSION_1, FLUSH and RO if offered)
 *           "blkK: id ID\n"                               (GET_ID)
 *           "blkK: host pattern at sector 16 ok\n"        (or "... mismatch at byte N: 0xNN")
 *               the host wrote byte i of sector 16 as (i * 31 + 7) & 0xff
 *           "blkK: write sectors 8-9 status S\n"          S = 0 (OK); on a ro disk S must be 1 (IOERR)
 *               bytes i = 0..1023 written as ((i * 7) ^ 0xa5) & 0xff
 *           "blkK: readback ok\n"                         (writable disks: sectors 8-9 read back)
 *           "blkK: flush status 0\n"                      (when FLUSH was negotiated)
 *   rng     "rng: 128 bytes, varied\n"                    (two 64-byte reads, neither constant, different)
 *           "rng: interrupt on gsi G, InterruptStatus 0x1\n"  (a third read waited for with `sti; hlt`,
 *               the IOAPIC pin programmed edge/active-high as the DSDT says, a LAPIC watchdog)
 *   console "console: sent greeting\n"  after sending "hello from the virtio console\n"
 *           "console: received \"LINE\"\n"  after a line from the host (within console_wait_ms=N,
 *               default 20000), then sends "echo: LINE\n" back
 * and finally "virtio: N devices, E errors\n". Exit status: E (0 when every check passed).
 *
 * With `bench_blk=N` on the command line it does only this instead: N 4 KiB reads from the first
 * block device, one at a time (submit, QueueNotify, poll the used ring), then prints
 * "bench: N block reads\n" and exits 0 (bench/run.ts times it against N=0, tsvmm against QEMU).
 *
 * CPL0 work: only the interrupt wait (~20 emulated instructions); all polling is at CPL3.
 *
 * The same program built for QEMU microvm's virtio-mmio layout is `virtio-qemu` (virtio-qemu.c):
 *   qemu-system-x86_64 -M microvm,ioapic2=off -m 256M -nodefaults -no-user-config -nographic
 *   -serial stdio -global virtio-mmio.force-legacy=false -device isa-debug-exit,iobase=0xf4,iosize=4
 *   -drive id=d0,file=disk.img,format=raw,if=none -device virtio-blk-device,drive=d0
 *   -device virtio-rng-device -kernel .cache/guests/virtio-qemu.elf      (exits with status 2E+1)
 * (QEMU fills its transports from the last one down, so the devices show up in slots 7, 6, ...)
 */
#include "common/guest.h"
#include "common/virtio-mmio.h"

/* I/O APIC (82093AA data sheet) at its default address (tsvmm's MADT says the same). */
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_REDTBL(n) (0x10 + 2 * (n))
#define IOAPIC_REDIR_MASKED (1u << 16)

#define VIRTIO_VECTOR (IRQ_VECTOR_BASE + 2)
#define WATCHDOG_VECTOR (IRQ_VECTOR_BASE + 3)
#define VIRTIO_SLOT_IRQ (VIRTIO_VECTOR - IRQ_VECTOR_BASE)
#define WATCHDOG_SLOT_IRQ (WATCHDOG_VECTOR - IRQ_VECTOR_BASE)
#define LAPIC_WATCHDOG_COUNT 500000000u /* ~0.5 s on KVM's 1 GHz APIC bus clock, divide by 1 */

#include "virtio-checks.c"

static u32 ioapic_read(u32 reg) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	return mmio_read32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN);
}

static void ioapic_write(u32 reg, u32 v) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN, v);
}

/* One rng request completed by interrupt: the irqfd path, end to end. */
static void rng_interrupt(const struct virtio_dev *d) {
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[VIRTIO_SLOT_IRQ] = IRQ_EOI_LAPIC;
	irq_eoi_mode[WATCHDOG_SLOT_IRQ] = IRQ_EOI_LAPIC;
	u32 saved = ioapic_read(IOAPIC_REDTBL(d->gsi));
	/* Edge, active high, fixed delivery to this CPU: what the DSDT's Interrupt descriptor says. */
	ioapic_write(IOAPIC_REDTBL(d->gsi) + 1, (lapic_read(APIC_ID) >> 24) << 24);
	ioapic_write(IOAPIC_REDTBL(d->gsi), VIRTIO_VECTOR);
	virtio_ack_interrupt(d); /* start from a clean InterruptStatus */
	irq_count[VIRTIO_SLOT_IRQ] = 0;
	irq_count[WATCHDOG_SLOT_IRQ] = 0;

	rng_vq.avail.flags = 0; /* this time, interrupt when the buffer is used */
	struct vq_buf b = {rng_buf[0], 16, true};
	vq_submit(&rng_vq, &b, 1);
	vq_kick(d, &rng_vq);
	lapic_write(APIC_LVTT, WATCHDOG_VECTOR); /* one-shot */
	lapic_write(APIC_TMICT, LAPIC_WATCHDOG_COUNT);
	cpl0_call(cpl0_halt_until, (u64)&irq_count[VIRTIO_SLOT_IRQ], 1, (u64)&irq_count[WATCHDOG_SLOT_IRQ], 1);
	lapic_write(APIC_TMICT, 0);
	u64 interrupts = irq_count[VIRTIO_SLOT_IRQ];
	u32 status = virtio_ack_interrupt(d);
	bool used = vq_wait(&rng_vq, NULL, REQUEST_TIMEOUT_US);
	rng_vq.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	ioapic_write(IOAPIC_REDTBL(d->gsi), saved | IOAPIC_REDIR_MASKED);

	if (interrupts == 0) {
		print("rng: no interrupt on gsi ");
		print_dec(d->gsi);
		print(" within the watchdog\n");
		errors++;
		return;
	}
	print("rng: interrupt on gsi ");
	print_dec(d->gsi);
	print(", InterruptStatus ");
	print_hex(status);
	print("\n");
	if (!(status & VIRTIO_MMIO_INT_VRING) || !used)
		error("rng: the interrupt came without a used buffer");
}

int guest_main(void) {
	struct virtio_dev devs[VIRTIO_MMIO_SLOTS];
	u32 count = 0;
	for (u32 slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++) {
		struct virtio_dev *d = &devs[count];
		if (!virtio_probe(virtio_slot_gpa(slot), virtio_slot_gsi(slot), slot, d))
			continue;
		print("slot ");
		print_dec(slot);
		print(": ");
		print(virtio_device_name(d->device_id));
		print(" (id ");
		print_dec(d->device_id);
		print(") gsi ");
		print_dec(d->gsi);
		print("\n");
		count++;
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
	}
	print("virtio: ");
	print_dec(count);
	print(" devices, ");
	print_dec(errors);
	print(" errors\n");
	return (int)errors;
}
