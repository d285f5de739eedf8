/*
 * pio-mmio: port I/O and MMIO exits, from CPL3 (or CPL0 with `cpl=0` on the command line).
 *   1. 100000 `outb` to the POST port 0x80 (the VMM drops them on the vCPU thread);
 *   2. `inb` from the unclaimed port 0x2f0 (COM2's range; no device there);
 *   3. a 32-bit read from unclaimed MMIO at 0xd8000000 (inside the 32-bit MMIO hole, away from
 *      the virtio-mmio windows at 0xd0000000; identity mapped uncached with the U bit).
 * Prints
 *   "post writes: 100000\n"
 *   "inb 0x2f0: 0xNN\n"
 *   "readl 0xd8000000: 0xNNNNNNNN\n"
 * (hex without leading zeros) and exits 0. tsvmm returns all-ones for both reads (0xff and
 * 0xffffffff); QEMU 7.2 answers the port with 0xff and the memory with 0 ("0x0").
 *
 * On this host an `out` from CPL3 costs ~27 us (kvm_pvm's #GP + I/O bitmap path), so step 1
 * takes ~2.7 s under QEMU; `cpl=0` makes it ~1 s.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/pio-mmio.elf
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define POST_WRITES 100000
#define UNCLAIMED_PORT 0x2f0
#define UNCLAIMED_MMIO_GPA 0xd8000000ul

static u64 exits(u64 a, u64 b, u64 c, u64 d) {
	(void)a, (void)b, (void)c, (void)d;
	u64 n = POST_WRITES;
	/* A counted loop of single `out`s: exactly POST_WRITES exits, whatever the compiler does. */
	__asm__ volatile("1: outb %%al, %[port]\n\t"
			 "dec %[n]\n\t"
			 "jnz 1b"
			 : [n] "+r"(n)
			 : "a"((u8)0x55), [port] "i"(POST_PORT)
			 : "cc");
	u8 port_value = inb(UNCLAIMED_PORT);
	u32 mmio_value = mmio_read32(UNCLAIMED_MMIO_GPA);
	return (u64)port_value << 32 | mmio_value;
}

int guest_main(void) {
	u64 values = run_at_cpl(3, exits, 0, 0);
	print("post writes: ");
	print_dec(POST_WRITES);
	print("\ninb 0x2f0: ");
	print_hex(values >> 32);
	print("\nreadl 0xd8000000: ");
	print_hex((u32)values);
	print("\n");
	return 0;
}
