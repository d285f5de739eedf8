/*
 * smp: starts every other CPU the ACPI MADT lists and counts who answers.
 *
 * Finds the RSDP (start_info rsdp_paddr, else the EBDA and 0xE0000-0xFFFFF scans), the MADT
 * through the XSDT (or RSDT), and sends each enabled Processor Local APIC entry other than
 * itself INIT, 10 ms, STARTUP, 200 us, STARTUP, 200 us (the Intel MP universal start-up
 * algorithm, MP spec B.4 / SDM vol. 3A 9.4.4) with the vector of a real-mode trampoline
 * copied to AP_TRAMPOLINE_GPA (smp-trampoline.S). Each AP records its APIC id, increments a
 * counter and halts with interrupts off. The BSP waits up to ~1 s for all of them and prints
 *   "cpus: N\n"              (N = 1 + the APs that checked in)
 *   "apic ids: 0 1 2 3\n"    (every CPU that ran, the BSP included, in increasing order)
 * and exits 0 if every enabled MADT CPU checked in, 1 otherwise (also 1, with a message,
 * if there is no MADT). Everything runs at CPL3: LAPIC MMIO is mapped with the U bit.
 *
 * For tsvmm: KVM_RUN on an AP returns EAGAIN once its INIT/SIPI has been taken; run it again.
 * And with exactly 2 vCPUs the INIT to APIC id 1 was lost here (the AP never left
 * KVM_RUN) until the VMM did KVM_GET_LAPIC + KVM_SET_LAPIC on each vCPU after creating them
 * all, which makes KVM rebuild its APIC id map (QEMU puts every LAPIC at reset); with 3 or
 * more vCPUs it worked either way.
 *
 * QEMU: microvm provides the MADT (acpi defaults to on; acpi=on makes it explicit):
 *   qemu-system-x86_64 -M microvm,acpi=on -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -smp 4 -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/smp.elf
 *   (exits with status 1 = 2*0+1; with acpi=off it prints "smp: no ACPI MADT found", 3)
 */
#include "common/guest.h"

/* Below 1 MiB, 4 KiB aligned, free in both tsvmm's layout (past the PVH start_info page at
 * 0x6000 and the Linux zero page at 0x7000) and QEMU microvm's (start_info near 0xf3000). */
#define AP_TRAMPOLINE_GPA 0x8000ul
#define AP_SIPI_VECTOR (AP_TRAMPOLINE_GPA >> 12)
#define INIT_DELAY_US 10000
#define SIPI_DELAY_US 200
#define AP_WAIT_US 1000000
#define ICR_IDLE_WAIT_US 1000

extern const char ap_trampoline_start[], ap_trampoline_end[], ap_trampoline_count[], ap_trampoline_seen[];

static void send_ipi(u32 apic_id, u32 icr_low) {
	u64 deadline = rdtsc() + ICR_IDLE_WAIT_US * tsc_khz() / 1000;
	while ((lapic_read(APIC_ICR) & APIC_ICR_BUSY) && rdtsc() < deadline)
		cpu_relax();
	lapic_write(APIC_ICR2, apic_id << 24);
	lapic_write(APIC_ICR, icr_low);
}

int guest_main(void) {
	struct madt_info *madt = &(struct madt_info){0};
	if (!acpi_read_madt(madt)) {
		print("smp: no ACPI MADT found\n");
		return 1;
	}
	if (madt->lapic_gpa)
		lapic_gpa = madt->lapic_gpa;
	u32 bsp_id = lapic_read(APIC_ID) >> 24;

	u64 size = (u64)(ap_trampoline_end - ap_trampoline_start);
	memcpy((void *)AP_TRAMPOLINE_GPA, ap_trampoline_start, size); /* zeroes the count and ids too */
	volatile u16 *count = (volatile u16 *)(AP_TRAMPOLINE_GPA + (u64)(ap_trampoline_count - ap_trampoline_start));
	volatile u8 *seen = (volatile u8 *)(AP_TRAMPOLINE_GPA + (u64)(ap_trampoline_seen - ap_trampoline_start));
	seen[bsp_id] = 1;

	u32 expected = 0;
	for (u32 i = 0; i < madt->cpu_count; i++) {
		u32 id = madt->cpus[i].apic_id;
		if (!(madt->cpus[i].flags & MADT_LAPIC_ENABLED) || id == bsp_id)
			continue;
		expected++;
		send_ipi(id, APIC_INT_ASSERT | APIC_DM_INIT);
		delay_us(INIT_DELAY_US);
		for (int sipi = 0; sipi < 2; sipi++) {
			send_ipi(id, APIC_DM_STARTUP | AP_SIPI_VECTOR);
			delay_us(SIPI_DELAY_US);
		}
	}

	u64 deadline = rdtsc() + AP_WAIT_US * tsc_khz() / 1000;
	while (*count < expected && rdtsc() < deadline)
		cpu_relax();

	u32 started = *count;
	print("cpus: ");
	print_dec(1 + started);
	print("\napic ids:");
	for (u32 id = 0; id < 256; id++)
		if (seen[id]) {
			print(" ");
			print_dec(id);
		}
	print("\n");
	if (started != expected) {
		print("smp: ");
		print_dec(expected - started);
		print(" of the MADT's enabled CPUs did not start\n");
		return 1;
	}
	return 0;
}
