/*
 * timer: counts interrupts from the PIT and from the local APIC timer while halted.
 *
 *   1. Routes ISA IRQ0 to the BSP: through the IOAPIC if the MADT lists one (at the GSI the
 *      MADT's interrupt source override for IRQ0 names, usually 2; with the 8259s remapped to
 *      0x30-0x3f and masked and LINT0 masked), else through the 8259 PIC and LINT0 in ExtINT
 *      mode (virtual wire). Prints the route.
 *   2. Programs PIT channel 0 in mode 2 (rate generator) at ~1000 Hz (divisor 1193) and
 *      halts (`sti; hlt` at CPL0) until PIT_TICKS_WANTED ticks arrive, with the LAPIC timer
 *      in one-shot mode as a watchdog (~0.5 s on KVM's 1 GHz APIC bus clock).
 *      If no tick came and the MADT has no IRQ0 override, tries IOAPIC GSI 2 once (see below).
 *   3. Puts the LAPIC timer in periodic mode (~1000 Hz) and halts until LAPIC_TICKS_WANTED
 *      ticks arrive, with the still-running PIT as the watchdog (~1 s).
 * Prints
 *   "pit: isa irq0 -> ioapic gsi 2\n"   (or "pit: isa irq0 -> 8259 pic\n")
 *   "pit ticks: N\nlapic ticks: N\n"
 * and exits 0 if both counts are > 0, else 1. If neither timer ever interrupts, the guest
 * halts forever (nothing else could wake it).
 *
 * QEMU 7.2 microvm publishes no IRQ0 override in its MADT but routes KVM's PIT (KVM GSI 0) to
 * IOAPIC pin 2, like every PC chipset (that convention is why firmware publishes IRQ0->GSI2).
 * So when the MADT has no override and GSI 0 stays silent, the guest prints
 *   "pit: no ticks on ioapic gsi 0 and no irq0 override in the madt; trying gsi 2\n"
 *   "pit: isa irq0 -> ioapic gsi 2\n"
 * and carries on. tsvmm's MADT has the override, so this never happens there.
 *
 * CPL0 cost: each interrupt is ~15 emulated instructions (entry.S irq_common, the halt
 * loop); everything else (MADT, IOAPIC/LAPIC MMIO, PIT and PIC ports) runs at CPL3.
 *
 * For tsvmm: KVM's in-kernel PIT raises KVM GSI 0. The MADT says ISA IRQ0 is GSI 2, so the
 * VMM's GSI routing must send GSI 0 to IOAPIC pin 2 (as QEMU does in kvm_pc_setup_irq_routing);
 * KVM's default routing sends it to pin 0, and then the PIT phase ends by the watchdog with
 * 0 ticks.
 *
 * QEMU (microvm's defaults include ACPI, the PIT and the 8259s):
 *   qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/timer.elf
 *   (exits with status 1 = 2*0+1, through the GSI 2 retry above; with -M microvm,acpi=off
 *   the 8259 route is used)
 */
#include "common/guest.h"

#define PIT_VECTOR (IRQ_VECTOR_BASE + 0)
#define LAPIC_TIMER_VECTOR (IRQ_VECTOR_BASE + 1)
#define PIT_SLOT (PIT_VECTOR - IRQ_VECTOR_BASE)
#define LAPIC_SLOT (LAPIC_TIMER_VECTOR - IRQ_VECTOR_BASE)
#define PIT_TICKS_WANTED 100
#define LAPIC_TICKS_WANTED 100

/* i8254 PIT (Intel 8254 data sheet). */
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define PIT_TICK_RATE 1193182
#define PIT_HZ 1000
#define PIT_CMD_CH0_LOHI_MODE2 0x34 /* channel 0, lobyte/hibyte, mode 2, binary */

/* i8259 PIC pair (Intel 8259A data sheet). */
#define PIC1_COMMAND 0x20
#define PIC1_DATA 0x21
#define PIC2_COMMAND 0xa0
#define PIC2_DATA 0xa1
#define ICW1_INIT_ICW4 0x11
#define ICW4_8086 0x01
#define PIC_CASCADE_IRQ 2

/* I/O APIC (Intel 82093AA data sheet): index/data window and redirection table. */
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_VER 0x01          /* bits 23:16: maximum redirection entry */
#define IOAPIC_REDTBL(n) (0x10 + 2 * (n))
#define IOAPIC_REDIR_POLARITY_LOW (1u << 13)
#define IOAPIC_REDIR_LEVEL (1u << 14)
#define IOAPIC_REDIR_MASKED (1u << 16)
/* The PC convention for the 8254's IOAPIC input. */
#define ISA_IRQ0_CONVENTIONAL_GSI 2

/* LAPIC LINT0 (local vector table entry 0). */
#define APIC_LVT0 0x350
#define APIC_DM_EXTINT 0x700

/* KVM's APIC bus clock is 1 GHz (APIC_BUS_CYCLE_NS_DEFAULT = 1); with divide-by-1 these are: */
#define LAPIC_WATCHDOG_COUNT 500000000u /* ~0.5 s one-shot */
#define LAPIC_PERIODIC_COUNT 1000000u    /* ~1000 Hz */
#define PIT_WATCHDOG_TICKS 1000           /* ~1 s */

static u32 ioapic_read(u64 base, u32 reg) {
	mmio_write32(base + IOAPIC_IOREGSEL, reg);
	return mmio_read32(base + IOAPIC_IOWIN);
}

static void ioapic_write(u64 base, u32 reg, u32 v) {
	mmio_write32(base + IOAPIC_IOREGSEL, reg);
	mmio_write32(base + IOAPIC_IOWIN, v);
}

/* Reinitialises both 8259s with the given vector bases and interrupt mask. */
static void pic_init(u8 master_base, u8 master_mask, u8 slave_mask) {
	outb(PIC1_COMMAND, ICW1_INIT_ICW4);
	outb(PIC2_COMMAND, ICW1_INIT_ICW4);
	outb(PIC1_DATA, master_base);                 /* ICW2 */
	outb(PIC2_DATA, (u8)(master_base + 8));
	outb(PIC1_DATA, 1 << PIC_CASCADE_IRQ);        /* ICW3: slave on IRQ2 */
	outb(PIC2_DATA, PIC_CASCADE_IRQ);
	outb(PIC1_DATA, ICW4_8086);
	outb(PIC2_DATA, ICW4_8086);
	outb(PIC1_DATA, master_mask);                 /* OCW1 */
	outb(PIC2_DATA, slave_mask);
}

struct irq0_route {
	bool via_ioapic;
	u64 ioapic_gpa;
	u32 pin;
	u32 gsi;
	u16 flags;     /* MPS INTI flags from the override (0: ISA defaults, active high, edge) */
	bool override; /* the MADT had an override for IRQ0 */
};

/* Where ISA IRQ0 arrives (ACPI 6.5 5.2.12.5: without an override, ISA IRQ n is GSI n, active
 * high, edge triggered): an IOAPIC input if the MADT lists an IOAPIC covering that GSI. */
static struct irq0_route find_irq0_route(const struct madt_info *madt, bool have_madt, u32 gsi) {
	struct irq0_route r = {0};
	r.gsi = gsi;
	for (u32 i = 0; have_madt && i < madt->override_count; i++)
		if (madt->overrides[i].bus == 0 && madt->overrides[i].source == 0) {
			r.gsi = madt->overrides[i].gsi;
			r.flags = madt->overrides[i].flags;
			r.override = true;
		}
	for (u32 i = 0; have_madt && i < madt->ioapic_count; i++) {
		u64 base = madt->ioapics[i].gpa;
		u32 entries = ((ioapic_read(base, IOAPIC_VER) >> 16) & 0xff) + 1;
		if (r.gsi < madt->ioapics[i].gsi_base || r.gsi >= madt->ioapics[i].gsi_base + entries)
			continue;
		r.via_ioapic = true;
		r.ioapic_gpa = base;
		r.pin = r.gsi - madt->ioapics[i].gsi_base;
	}
	return r;
}

/* Unmasks IRQ0 on its route, delivering PIT_VECTOR to this CPU, and prints the route. */
static void enable_irq0_route(const struct irq0_route *r) {
	if (!r->via_ioapic) {
		/* 8259 only: IRQ0 unmasked on the master, vectors from PIT_VECTOR, and LINT0 in
		 * ExtINT mode so the 8259's INTR reaches the CPU (MP spec 3.6.2.2, virtual wire). */
		pic_init(PIT_VECTOR, (u8)~1u, 0xff);
		lapic_write(APIC_LVT0, APIC_DM_EXTINT);
		irq_eoi_mode[PIT_SLOT] = IRQ_EOI_PIC;
		print("pit: isa irq0 -> 8259 pic\n");
		return;
	}
	/* Keep the 8259s (which KVM's PIT also drives) off the exception vectors and silent. */
	pic_init(0x30, 0xff, 0xff);
	lapic_write(APIC_LVT0, APIC_LVT_MASKED);
	u32 lo = PIT_VECTOR; /* fixed delivery, physical destination */
	if ((r->flags & MPS_INTI_POLARITY_MASK) == MPS_INTI_POLARITY_ACTIVE_LOW)
		lo |= IOAPIC_REDIR_POLARITY_LOW;
	if ((r->flags & MPS_INTI_TRIGGER_MASK) == MPS_INTI_TRIGGER_LEVEL)
		lo |= IOAPIC_REDIR_LEVEL;
	u32 bsp_apic_id = lapic_read(APIC_ID) >> 24;
	ioapic_write(r->ioapic_gpa, IOAPIC_REDTBL(r->pin) + 1, bsp_apic_id << 24);
	ioapic_write(r->ioapic_gpa, IOAPIC_REDTBL(r->pin), lo);
	irq_eoi_mode[PIT_SLOT] = IRQ_EOI_LAPIC;
	print("pit: isa irq0 -> ioapic gsi ");
	print_dec(r->gsi);
	print("\n");
}

static void disable_irq0_route(const struct irq0_route *r) {
	if (r->via_ioapic)
		ioapic_write(r->ioapic_gpa, IOAPIC_REDTBL(r->pin), IOAPIC_REDIR_MASKED);
	else
		outb(PIC1_DATA, 0xff);
}

/* Halts until PIT_TICKS_WANTED PIT ticks or the LAPIC one-shot watchdog; returns the ticks. */
static u64 count_pit_ticks(void) {
	irq_count[LAPIC_SLOT] = 0;
	lapic_write(APIC_LVTT, LAPIC_TIMER_VECTOR);
	lapic_write(APIC_TMICT, LAPIC_WATCHDOG_COUNT);
	cpl0_call(cpl0_halt_until, (u64)&irq_count[PIT_SLOT], PIT_TICKS_WANTED, (u64)&irq_count[LAPIC_SLOT], 1);
	lapic_write(APIC_TMICT, 0); /* stops the watchdog */
	return irq_count[PIT_SLOT];
}

int guest_main(void) {
	struct madt_info *madt = &(struct madt_info){0};
	bool have_madt = acpi_read_madt(madt);
	if (have_madt && madt->lapic_gpa)
		lapic_gpa = madt->lapic_gpa;

	/* Software-enable the LAPIC (it accepts no interrupts otherwise), accept every priority. */
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[LAPIC_SLOT] = IRQ_EOI_LAPIC;

	/* Phase 1: PIT, with the LAPIC timer as a one-shot watchdog. */
	struct irq0_route r = find_irq0_route(madt, have_madt, 0);
	enable_irq0_route(&r);
	outb(PIT_MODE, PIT_CMD_CH0_LOHI_MODE2);
	outb(PIT_CH0, (PIT_TICK_RATE / PIT_HZ) & 0xff);
	outb(PIT_CH0, (PIT_TICK_RATE / PIT_HZ) >> 8);
	u64 pit_ticks = count_pit_ticks();
	if (pit_ticks == 0 && r.via_ioapic && !r.override && r.gsi != ISA_IRQ0_CONVENTIONAL_GSI) {
		print("pit: no ticks on ioapic gsi ");
		print_dec(r.gsi);
		print(" and no irq0 override in the madt; trying gsi 2\n");
		disable_irq0_route(&r);
		r = find_irq0_route(madt, have_madt, ISA_IRQ0_CONVENTIONAL_GSI);
		enable_irq0_route(&r);
		pit_ticks = count_pit_ticks();
	}

	/* Phase 2: LAPIC timer, periodic, with the PIT as the watchdog. Interrupts stay pending
	 * while we are at CPL3 with IF=0, so resetting the count here races with nothing. */
	irq_count[LAPIC_SLOT] = 0;
	lapic_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | LAPIC_TIMER_VECTOR);
	lapic_write(APIC_TMICT, LAPIC_PERIODIC_COUNT);
	cpl0_call(cpl0_halt_until, (u64)&irq_count[LAPIC_SLOT], LAPIC_TICKS_WANTED, (u64)&irq_count[PIT_SLOT],
		  irq_count[PIT_SLOT] + PIT_WATCHDOG_TICKS);
	u64 lapic_ticks = irq_count[LAPIC_SLOT];

	/* Quiet both timers before exiting. */
	lapic_write(APIC_LVTT, APIC_LVT_MASKED);
	lapic_write(APIC_TMICT, 0);
	disable_irq0_route(&r);

	print("pit ticks: ");
	print_dec(pit_ticks);
	print("\nlapic ticks: ");
	print_dec(lapic_ticks);
	print("\n");
	return pit_ticks > 0 && lapic_ticks > 0 ? 0 : 1;
}
