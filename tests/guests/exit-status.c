/*
 * exit-status: ends the VM with the status given as `status=N` on the kernel command line
 * (start_info cmdline_paddr; decimal or 0x hex), 7 if there is none. Prints "status=N\n" first.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/exit-status.elf
 *   -append 'status=5'
 *   (exits with status 11 = 2*5+1; QEMU microvm appends its own words to the command line,
 *   which are skipped)
 */
#include "common/guest.h"

#define DEFAULT_STATUS 7

int guest_main(void) {
	u64 status = DEFAULT_STATUS;
	cmdline_u64("status", &status);
	print("status=");
	print_dec((u32)status);
	print("\n");
	return (int)(u32)status;
}
