/*
 * bad-insn: prints "executing int3 at cpl0\n", loads an IDT with limit 0, and executes `int3`
 * at CPL0. On ordinary KVM that is #BP -> #GP -> #DF -> triple fault (a shutdown exit). On
 * this host's kvm_pvm, `int3` at CPL0 cannot be emulated: KVM_RUN returns
 * KVM_EXIT_INTERNAL_ERROR, suberror 1 (emulation failure), which the VMM must diagnose. If
 * execution ever comes back, the guest exits with status 4.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio -no-reboot
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/bad-insn.elf
 *   (here: "KVM internal error. Suberror: 1" and QEMU stops the VM and waits, so run it
 *   under `timeout`; on ordinary KVM the triple fault ends QEMU with status 0 given -no-reboot)
 */
#include "common/guest.h"

#define STILL_RUNNING_STATUS 4

static u64 int3_without_idt(u64 a, u64 b, u64 c, u64 d) {
	(void)a, (void)b, (void)c, (void)d;
	cpl0_load_empty_idt(0, 0, 0, 0);
	__asm__ volatile("int3");
	return 0;
}

int guest_main(void) {
	print("executing int3 at cpl0\n");
	cpl0_call(int3_without_idt, 0, 0, 0, 0);
	print("int3 at cpl0 returned\n");
	return STILL_RUNNING_STATUS;
}
