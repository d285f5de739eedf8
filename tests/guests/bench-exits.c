/*
 * bench-exits: exactly N `outb` to the POST port 0x80 from CPL3, N from `count=N` on the
 * command line (default 1000000), then debug-exit 0. Prints nothing and touches no other
 * device, so a bare C KVM_RUN loop needs to handle only ports 0x80 and 0xf4 to run it. Used
 * to compare userspace PIO exit round trips: tsvmm vs a C loop vs QEMU.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/bench-exits.elf
 *   -append 'count=1000000'
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define DEFAULT_COUNT 1000000

int guest_main(void) {
	u64 n = DEFAULT_COUNT;
	cmdline_u64("count", &n);
	if (n == 0)
		return 0;
	__asm__ volatile("1: outb %%al, %[port]\n\t"
			 "dec %[n]\n\t"
			 "jnz 1b"
			 : [n] "+r"(n)
			 : "a"((u8)0), [port] "i"(POST_PORT)
			 : "cc");
	return 0;
}
