/*
 * memmap: reads, writes and executes inside the torture region while the host changes the memory
 * map under it (issue 4: splits, merges, moves of the region's memslots with the vCPU running).
 *
 * The region is MEMMAP_PAGES 4 KiB pages at MEMMAP_REGION_GPA (64 MiB; the guest image, its
 * stack and page tables stay below it, in memory the host leaves alone). At start the guest fills
 * the last word of every page with a constant (MEMMAP_CONST | page) and copies a 6-byte function
 * `mov $MEMMAP_FN_VALUE, %eax; ret` to MEMMAP_FN_GPA inside the region. Then, at CPL3 until the
 * host sets the stop flag, each round r:
 *   - for every page p: writes (r << 20 | p) to word (r % 8) of the page, reads it back, and
 *     checks the page's constant;
 *   - calls the function in the region and checks what it returns;
 *   - stores r + 1 in the round counter.
 * Status block at MEMMAP_STATUS_GPA (u64 words): [0] rounds done, [1] stop flag (the host writes
 * 1), [2] errors, [3] first bad gpa, [4] value read there.
 * Prints "memmap: ready\n" once the region is filled, and at the stop
 * "memmap: rounds N errors E\n"; exits 0 when E == 0, 3 otherwise.
 *
 * QEMU: qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 256M
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/memmap.elf
 *   (runs until the monitor writes the stop flag: `xp`/`memsave` and a gdbstub can do it)
 */
#include "common/guest.h"

#define MEMMAP_REGION_GPA 0x4000000ul /* 64 MiB */
#define MEMMAP_PAGES 256ul
#define MEMMAP_PAGE_WORDS 512ul
#define MEMMAP_CONST 0xc0de000000000000ul
#define MEMMAP_FN_GPA (MEMMAP_REGION_GPA + (MEMMAP_PAGES - 1) * 4096ul + 0x800ul)
#define MEMMAP_FN_VALUE 0x5eed1234u
#define MEMMAP_STATUS_GPA 0x200000ul

static void record_error(volatile u64 *status, u64 gpa, u64 value) {
	if (status[2]++ == 0) {
		status[3] = gpa;
		status[4] = value;
	}
}

int guest_main(void) {
	volatile u64 *status = (volatile u64 *)MEMMAP_STATUS_GPA;
	volatile u64 *region = (volatile u64 *)MEMMAP_REGION_GPA;
	for (u64 i = 0; i < 5; i++) status[i] = 0;
	for (u64 p = 0; p < MEMMAP_PAGES; p++) region[p * MEMMAP_PAGE_WORDS + MEMMAP_PAGE_WORDS - 1] = MEMMAP_CONST | p;
	/* mov $imm32, %eax (b8 imm32); ret (c3) */
	volatile u8 *fn = (volatile u8 *)MEMMAP_FN_GPA;
	fn[0] = 0xb8;
	fn[1] = MEMMAP_FN_VALUE & 0xff;
	fn[2] = (MEMMAP_FN_VALUE >> 8) & 0xff;
	fn[3] = (MEMMAP_FN_VALUE >> 16) & 0xff;
	fn[4] = MEMMAP_FN_VALUE >> 24;
	fn[5] = 0xc3;
	u32 (*call)(void) = (u32 (*)(void))MEMMAP_FN_GPA;
	print("memmap: ready\n");

	u64 round = 0;
	while (status[1] == 0) {
		for (u64 p = 0; p < MEMMAP_PAGES; p++) {
			volatile u64 *page = region + p * MEMMAP_PAGE_WORDS;
			u64 want = round << 20 | p;
			page[round % 8] = want;
			u64 got = page[round % 8];
			if (got != want) record_error(status, (u64)&page[round % 8], got);
			got = page[MEMMAP_PAGE_WORDS - 1];
			if (got != (MEMMAP_CONST | p)) record_error(status, (u64)&page[MEMMAP_PAGE_WORDS - 1], got);
		}
		u32 v = call();
		if (v != MEMMAP_FN_VALUE) record_error(status, MEMMAP_FN_GPA, v);
		status[0] = ++round;
	}
	print("memmap: rounds ");
	print_dec(round);
	print(" errors ");
	print_dec(status[2]);
	print("\n");
	return status[2] == 0 ? 0 : 3;
}
