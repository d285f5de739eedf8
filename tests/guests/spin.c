/*
 * spin: prints "spinning\n", then increments the 64-bit counter at guest-physical address
 * 0x200000 (SPIN_COUNTER_GPA, the first byte of the second 2 MiB page, just past the guest
 * image) forever, at CPL3, in a tight loop of plain `incq` (no exits, no locked instructions).
 * The counter is set to 0 before the line is printed. The host test pauses and resumes the
 * vCPU and reads the counter from guest RAM: it must not move while paused and must move
 * again after resume. The guest never exits by itself.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/spin.elf
 *   (runs until killed; `-monitor` commands `stop`/`cont` and `xp /1gx 0x200000` show the counter)
 */
#include "common/guest.h"

#define SPIN_COUNTER_GPA 0x200000ul

int guest_main(void) {
	volatile u64 *counter = (volatile u64 *)SPIN_COUNTER_GPA;
	*counter = 0;
	print("spinning\n");
	__asm__ volatile("1: incq (%0)\n\t"
			 "jmp 1b" ::"r"(counter)
			 : "memory", "cc");
	__builtin_unreachable();
}
