/*
 * idle: an idle guest, for the host-CPU benchmark (`npm run bench -- idle`). Puts the local APIC
 * timer in periodic mode at 100 Hz (10,000,000 counts at divide-by-1 on KVM's 1 GHz APIC bus, as a
 * HZ=100 kernel's tick) and halts (`sti; hlt` at CPL0) until `seconds=N` (default 20) seconds of
 * ticks have arrived. Prints "idle: N ticks\n" and exits 0.
 *
 * QEMU (TCG runs it too: -accel tcg -cpu max):
 *   qemu-system-x86_64 -M microvm,acpi=on -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/idle.elf -append seconds=2
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define IDLE_TIMER_VECTOR (IRQ_VECTOR_BASE + 1)
#define IDLE_SLOT (IDLE_TIMER_VECTOR - IRQ_VECTOR_BASE)
#define IDLE_HZ 100
#define IDLE_PERIOD_COUNT 10000000u /* 10 ms at 1 GHz, divide by 1 */

int guest_main(void) {
	u64 seconds = 20;
	cmdline_u64("seconds", &seconds);
	u64 ticks = seconds * IDLE_HZ;
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[IDLE_SLOT] = IRQ_EOI_LAPIC;
	irq_count[IDLE_SLOT] = 0;
	lapic_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | IDLE_TIMER_VECTOR);
	lapic_write(APIC_TMICT, IDLE_PERIOD_COUNT);
	/* No second condition: the watch pointer is the same counter. */
	cpl0_call(cpl0_halt_until, (u64)&irq_count[IDLE_SLOT], ticks, (u64)&irq_count[IDLE_SLOT], ticks);
	lapic_write(APIC_LVTT, APIC_LVT_MASKED);
	lapic_write(APIC_TMICT, 0);
	print("idle: ");
	print_dec(irq_count[IDLE_SLOT]);
	print(" ticks\n");
	return 0;
}
