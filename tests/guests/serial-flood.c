/*
 * serial-flood: 2000 lines on COM1, then debug-exit 0. The host test checks that every byte
 * arrives, complete and in order. Line k (k = 0..1999) is exactly
 *
 *   "line " + k as 5 decimal digits + " " + "0123456789abcdef" four times + "\n"
 *
 * e.g. "line 00042 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n":
 * 76 bytes a line, 152000 bytes in all, nothing else. One UART_LSR_THRE poll per 16 bytes
 * when the UART reports 16550A FIFOs (serial_write_burst), one per byte otherwise.
 *
 * Runs at CPL0 unless the command line says `cpl=3`: every byte is an exit, and on this host
 * an exit from CPL3 costs ~3x one from emulated CPL0 (whole run, QEMU: 5.5-6.1 s at CPL3,
 * 2.3-2.9 s at CPL0; tsvmm on a loaded machine: 8.4-13.7 s against 5.7-8.8 s).
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/serial-flood.elf
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define FLOOD_LINES 2000
#define FLOOD_PATTERN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static u64 flood(u64 a, u64 b, u64 c, u64 d) {
	(void)a, (void)b, (void)c, (void)d;
	static char line[] = "line 00000 " FLOOD_PATTERN "\n";
	const u64 digits_at = 5, line_len = sizeof(line) - 1;
	for (u32 k = 0; k < FLOOD_LINES; k++) {
		u32 v = k;
		for (int i = 4; i >= 0; i--) {
			line[digits_at + (u64)i] = (char)('0' + v % 10);
			v /= 10;
		}
		serial_write_burst(line, line_len);
	}
	return 0;
}

int guest_main(void) {
	run_at_cpl(0, flood, 0, 0);
	return 0;
}
