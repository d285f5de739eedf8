/*
 * reset: prints "resetting\n", then asks the i8042 keyboard controller to pulse the CPU reset
 * line (command 0xfe written to the command port 0x64, after waiting for I8042_STR_IBF to
 * clear). The VM must end there. If the guest is still running ~100 ms later it exits with
 * status 3.
 *
 * QEMU: microvm has no i8042 unless asked for one, and QEMU reboots on reset unless told not to:
 *   qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio -no-reboot -device i8042
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/reset.elf
 *   (QEMU exits with status 0 at the reset; without -device i8042 the guest exits 3: 2*3+1 = 7)
 */
#include "common/guest.h"

#define I8042_STR_IBF 0x02        /* input buffer full: the controller has not taken the last byte */
#define I8042_CMD_PULSE_RESET 0xfe /* pulse output port bit 0 (CPU reset) low */
#define I8042_WAIT_US 10000 /* no controller reads as 0xff (IBF set): don't wait long */
#define STILL_RUNNING_WAIT_US 100000
#define STILL_RUNNING_STATUS 3

int guest_main(void) {
	print("resetting\n");
	u64 deadline = rdtsc() + I8042_WAIT_US * tsc_khz() / 1000;
	while ((inb(I8042_COMMAND_PORT) & I8042_STR_IBF) && rdtsc() < deadline)
		;
	outb(I8042_COMMAND_PORT, I8042_CMD_PULSE_RESET);
	delay_us(STILL_RUNNING_WAIT_US);
	print("still running after the i8042 reset command\n");
	return STILL_RUNNING_STATUS;
}
