/*
 * fpu-probe: the state cache's two views of the FPU state (XSAVE and KVM_GET_FPU), on real KVM.
 * `probes=N` times (default 1000), at CPL3 (x87 instructions run natively there): loads an x87
 * control word whose rounding-control bits (11:10) cycle through all four values, writes to the
 * regs probe port (FPU_PROBE_PORT, as tests/guests/generated.ts REGS_PROBE_PORT), and checks
 * that the word it stores back has those two bits flipped: the VMM flipped them through one view
 * of the FPU state (XSAVE or KVM_GET_FPU, in turn) and then rewrote the word through the other,
 * which must have seen the flip.
 * Prints "fpu-probe: ok (N probes)\n" and exits 0, or names the first wrong word and exits 1.
 * Spec: Intel SDM vol. 1 8.1.5 (x87 control word).
 *
 * Without tsvmm's probe (QEMU: -device isa-debug-exit,iobase=0xf4,iosize=4 -append probes=1)
 * nothing flips the bits and the guest exits 1 at the first probe.
 */
#include "common/guest.h"

#define FPU_PROBE_PORT 0xf0
#define FCW_DEFAULT 0x037f /* after FNINIT: every exception masked, 64-bit precision, round to nearest */
#define FCW_ROUNDING_CONTROL 0x0c00

int guest_main(void) {
	u64 probes = 1000;
	cmdline_u64("probes", &probes);
	__asm__ volatile("fninit");
	for (u64 i = 0; i < probes; i++) {
		u16 want = (u16)(FCW_DEFAULT | ((i & 3) << 10)), got;
		__asm__ volatile("fldcw %0" ::"m"(want));
		outb(FPU_PROBE_PORT, 0);
		__asm__ volatile("fnstcw %0" : "=m"(got));
		if (got != (want ^ FCW_ROUNDING_CONTROL)) {
			print("fpu-probe: probe ");
			print_dec(i);
			print(" loaded ");
			print_hex(want);
			print(", stored ");
			print_hex(got);
			print("\n");
			return 1;
		}
	}
	print("fpu-probe: ok (");
	print_dec(probes);
	print(" probes)\n");
	return 0;
}
