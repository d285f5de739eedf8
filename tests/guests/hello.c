/*
 * hello: the smallest tsvmm test guest. Prints "hello from tsvmm test guest\n" on COM1
 * (polling UART_LSR_THRE before each byte) and ends the VM with debug-exit status 0.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/hello.elf
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

int guest_main(void) {
	print("hello from tsvmm test guest\n");
	return 0;
}
