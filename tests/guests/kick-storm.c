/*
 * kick-storm: vCPUs kick each other (issue 3: kicks from other vCPUs and from a vCPU to itself).
 *
 * The BSP starts the MADT's other CPUs (smp_start_aps). Each AP i does one of three things, by
 * i % 3, so the kicks find vCPUs in every state: 1 spins at CPL3 (no exits at all), 2 halts with
 * interrupts off at CPL0 (inside KVM, with the in-kernel LAPIC), 0 exits to the VMM all the time
 * (`out` to the POST port 0x80). Then the BSP sends `kicks=N` (default 20000) kicks: a byte
 * naming the target CPU written to the VMM's kick port (KICK_PORT, the VMM's `kickPeerPort`),
 * with pseudo-random targets (itself included) and pseudo-random gaps; every 8th kick goes to
 * itself. The VMM's thread of the writing vCPU kicks the named vCPU.
 * Prints "kick-storm: cpus N\n" when the APs run, and "kick-storm: sent K\n" after the
 * barrage; then waits until the host writes 1 to the u64 at KICK_STOP_GPA and exits 0.
 *
 * QEMU has no kick port (writes to 0x510 are dropped), so there it only checks the runtime:
 *   qemu-system-x86_64 -M microvm,acpi=on -accel tcg -cpu max -m 256M -smp 4 -nodefaults
 *   -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
 *   -kernel .cache/guests/kick-storm.elf -append "kicks=1000 stop=1"  (exits with status 1)
 */
#include "common/guest.h"

#define KICK_PORT 0x510
#define KICK_STOP_GPA 0x200000ul
#define KICK_DEFAULT 20000

static volatile u64 spin_counter;

static void ap_main(u32 index) {
	switch (index % 3) {
	case 1:
		for (;;)
			spin_counter++;
	case 2:
		cpl0_call(cpl0_halt_forever, 0, 0, 0, 0);
		for (;;)
			cpu_relax();
	default:
		for (;;)
			outb(POST_PORT, 0);
	}
}

int guest_main(void) {
	volatile u64 *stop = (volatile u64 *)KICK_STOP_GPA;
	*stop = 0;
	u64 kicks = KICK_DEFAULT, stop_now = 0;
	cmdline_u64("kicks", &kicks);
	cmdline_u64("stop", &stop_now);
	u32 cpus = 1 + smp_start_aps(ap_main, 63);
	print("kick-storm: cpus ");
	print_dec(cpus);
	print("\n");

	u32 rng = 12345;
	for (u64 k = 0; k < kicks; k++) {
		rng = rng * 1103515245u + 12345u;
		u32 target = k % 8 == 7 ? 0 : (rng >> 16) % cpus;
		outb(KICK_PORT, (u8)target);
		for (u32 gap = (rng >> 8) % 64; gap > 0; gap--)
			cpu_relax();
	}
	print("kick-storm: sent ");
	print_dec(kicks);
	print("\n");
	while (*stop == 0 && !stop_now)
		cpu_relax();
	return 0;
}
