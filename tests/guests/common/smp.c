/*
 * smp.c: starts the other CPUs the ACPI MADT lists, each running a C function at CPL3 in 64-bit
 * mode (ap64.S does the mode switches). Spec: Intel SDM vol. 3A 9.4.4 (INIT, STARTUP, STARTUP:
 * the MP universal start-up algorithm), 7.2.3 and 7.7 (64-bit TSS and its descriptor).
 *
 * Each AP gets a 64 KiB area at AP64_AREA_GPA + (index - 1) * AP64_AREA_BYTES: its own GDT (a
 * copy of entry.S's, whose TSS descriptor points at the AP's TSS: a TSS is busy on one CPU
 * only), its TSS with an all-zero I/O bitmap (port I/O at CPL3, see entry.S), a CPL0 stack for
 * interrupts and its CPL3 stack. Guests that use this keep 4 MiB..8 MiB free.
 */
#include "guest.h"

#define AP64_TRAMPOLINE_GPA 0x9000ul /* must agree with ap64.S */
#define AP64_SIPI_VECTOR (AP64_TRAMPOLINE_GPA >> 12)
#define AP64_AREA_GPA 0x400000ul
#define AP64_AREA_BYTES 0x10000ul
#define AP64_MAX 64
#define AP64_GDT_OFFSET 0x0
#define AP64_GDTR_OFFSET 0x40
#define AP64_TSS_OFFSET 0x100
#define AP64_CPL0_STACK_TOP 0x7000
#define AP64_USER_STACK_TOP 0x10000
#define GDT_ENTRIES 7 /* null, kernel cs/ds, user ds/cs, and the 16-byte TSS descriptor */
#define TSS_SEL_INDEX 5
#define TSS_SIZE 104
#define IO_BITMAP_SIZE 8192
#define INIT_DELAY_US 10000
#define SIPI_DELAY_US 200
#define AP_ARRIVE_WAIT_US 1000000
#define ICR_IDLE_WAIT_US 1000

struct tss64 {
	u32 reserved0;
	u64 rsp0, rsp1, rsp2;
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3;
	u16 iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == TSS_SIZE, "64-bit TSS layout");

struct gdtr64 {
	u16 limit;
	u64 base;
} __attribute__((packed));

extern const char ap64_trampoline_start[], ap64_trampoline_end[];
extern const u64 gdt[GDT_ENTRIES];
extern volatile u64 ap64_boot_gdt_ptr, ap64_boot_cpl0_rsp, ap64_boot_user_rsp, ap64_boot_fn;
extern volatile u32 ap64_boot_index, ap64_boot_arrived;

static struct madt_info ap64_madt;

static void ap64_send_ipi(u32 apic_id, u32 icr_low) {
	u64 deadline = rdtsc() + ICR_IDLE_WAIT_US * tsc_khz() / 1000;
	while ((lapic_read(APIC_ICR) & APIC_ICR_BUSY) && rdtsc() < deadline)
		cpu_relax();
	lapic_write(APIC_ICR2, apic_id << 24);
	lapic_write(APIC_ICR, icr_low);
}

/* The AP's GDT, TSS and stacks; returns the address of its GDT pseudo-descriptor. */
static u64 ap64_prepare(u32 index) {
	u64 area = AP64_AREA_GPA + (u64)(index - 1) * AP64_AREA_BYTES;
	u64 *apgdt = (u64 *)(area + AP64_GDT_OFFSET);
	struct tss64 *tss = (struct tss64 *)(area + AP64_TSS_OFFSET);
	memset(tss, 0, TSS_SIZE + IO_BITMAP_SIZE);
	((u8 *)tss)[TSS_SIZE + IO_BITMAP_SIZE] = 0xff; /* the bitmap's terminating byte */
	tss->rsp0 = area + AP64_CPL0_STACK_TOP;
	tss->iomap_base = TSS_SIZE;
	for (int i = 0; i < GDT_ENTRIES; i++)
		apgdt[i] = gdt[i];
	u64 base = (u64)tss;
	u64 limit = TSS_SIZE + IO_BITMAP_SIZE;
	/* 16-byte system descriptor, type 9 (available 64-bit TSS), present, DPL 0 */
	apgdt[TSS_SEL_INDEX] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ul << 40 |
			       ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
	apgdt[TSS_SEL_INDEX + 1] = base >> 32;
	struct gdtr64 *gdtr = (struct gdtr64 *)(area + AP64_GDTR_OFFSET);
	gdtr->limit = GDT_ENTRIES * 8 - 1;
	gdtr->base = (u64)apgdt;
	ap64_boot_cpl0_rsp = area + AP64_CPL0_STACK_TOP;
	ap64_boot_user_rsp = area + AP64_USER_STACK_TOP;
	return (u64)gdtr;
}

u32 smp_start_aps(void (*fn)(u32 index), u32 max) {
	if (!acpi_read_madt(&ap64_madt))
		return 0;
	if (ap64_madt.lapic_gpa)
		lapic_gpa = ap64_madt.lapic_gpa;
	u32 bsp_id = lapic_read(APIC_ID) >> 24;
	memcpy((void *)AP64_TRAMPOLINE_GPA, ap64_trampoline_start, (u64)(ap64_trampoline_end - ap64_trampoline_start));
	if (max > AP64_MAX)
		max = AP64_MAX;
	u32 started = 0;
	for (u32 i = 0; i < ap64_madt.cpu_count && started < max; i++) {
		u32 id = ap64_madt.cpus[i].apic_id;
		if (!(ap64_madt.cpus[i].flags & MADT_LAPIC_ENABLED) || id == bsp_id)
			continue;
		u32 index = started + 1;
		ap64_boot_gdt_ptr = ap64_prepare(index);
		ap64_boot_fn = (u64)fn;
		ap64_boot_index = index;
		u32 before = ap64_boot_arrived;
		ap64_send_ipi(id, APIC_INT_ASSERT | APIC_DM_INIT);
		delay_us(INIT_DELAY_US);
		for (int sipi = 0; sipi < 2 && ap64_boot_arrived == before; sipi++) {
			ap64_send_ipi(id, APIC_DM_STARTUP | AP64_SIPI_VECTOR);
			delay_us(SIPI_DELAY_US);
		}
		/* The next AP reuses the boot variables: wait until this one has taken them. */
		u64 deadline = rdtsc() + AP_ARRIVE_WAIT_US * tsc_khz() / 1000;
		while (ap64_boot_arrived == before && rdtsc() < deadline)
			cpu_relax();
		if (ap64_boot_arrived == before)
			break;
		started++;
	}
	return started;
}
