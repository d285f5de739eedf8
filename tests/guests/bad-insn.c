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
 *
 * With `at=user` on the command line it instead prints "fetching from unbacked memory at
 * cpl3\n" and, in guest user mode, calls UNBACKED_GPA, where no memslot is (the 32-bit hole above
 * RAM; guest RAM must stay below it). KVM cannot fetch the instruction and fails to emulate it;
 * in user mode that must reach the guest as a #UD at that address (KVM injects it itself, or
 * with KVM_CAP_EXIT_ON_EMULATION_FAILURE the VMM does), which the guest's handler reports as
 * "guest exception: vector 6 error 0x0 rip 0xd0000000 ..." before it exits with status 127. A
 * VMM that stopped the VM instead would let any guest program kill its VM.
 */
#include "common/guest.h"

#define STILL_RUNNING_STATUS 4

static u64 int3_without_idt(u64 a, u64 b, u64 c, u64 d) {
	(void)a, (void)b, (void)c, (void)d;
	cpl0_load_empty_idt(0, 0, 0, 0);
	__asm__ volatile("int3");
	return 0;
}

#define UNBACKED_GPA 0xd0000000ul

int guest_main(void) {
	const char *at = cmdline();
	if (at[0] == 'a' && at[1] == 't' && at[2] == '=' && at[3] == 'u') {
		print("fetching from unbacked memory at cpl3\n");
		((void (*)(void))UNBACKED_GPA)();
		print("the call to unbacked memory returned\n");
		return STILL_RUNNING_STATUS;
	}
	print("executing int3 at cpl0\n");
	cpl0_call(int3_without_idt, 0, 0, 0, 0);
	print("int3 at cpl0 returned\n");
	return STILL_RUNNING_STATUS;
}
