/*
 * bench-exits: exactly N `outb` to the POST port 0x80, N from `count=N` on the command line
 * (default 1000000), then debug-exit 0. Prints nothing and touches no other device, so a bare
 * C KVM_RUN loop needs to handle only ports 0x80 and 0xf4 to run it. Used to compare userspace
 * PIO exit round trips: tsvmm vs a C loop vs QEMU.
 *
 * The `out`s run at CPL0 unless the command line says `cpl=3`. On ordinary KVM that makes no
 * difference. On this host an exit from CPL3 goes through kvm_pvm's #GP + I/O bitmap path and
 * costs ~27 us against ~8 us from emulated CPL0 (QEMU, one run), which would bury the VMM's
 * share of the round trip under a constant that is the same for every VMM. The loop is
 * unrolled 8 times to keep emulated non-`out` instructions to ~1/4 per exit.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/bench-exits.elf
 *   -append 'count=1000000'
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define DEFAULT_COUNT 1000000
#define OUTB_POST "outb %%al, %[port]\n\t"

static u64 post_writes(u64 n, u64 b, u64 c, u64 d) {
	(void)b, (void)c, (void)d;
	u64 blocks = n / 8, rest = n % 8;
	if (blocks)
		__asm__ volatile("1: " OUTB_POST OUTB_POST OUTB_POST OUTB_POST OUTB_POST OUTB_POST OUTB_POST OUTB_POST
				 "dec %[n]\n\t"
				 "jnz 1b"
				 : [n] "+r"(blocks)
				 : "a"((u8)0), [port] "i"(POST_PORT)
				 : "cc");
	if (rest)
		__asm__ volatile("1: " OUTB_POST
				 "dec %[n]\n\t"
				 "jnz 1b"
				 : [n] "+r"(rest)
				 : "a"((u8)0), [port] "i"(POST_PORT)
				 : "cc");
	return 0;
}

int guest_main(void) {
	u64 n = DEFAULT_COUNT;
	cmdline_u64("count", &n);
	run_at_cpl(0, post_writes, n, 0);
	return 0;
}
