/*
 * memmap: reads, writes and executes inside the torture region, on every CPU, while the host
 * changes the memory map under it (issue 4: splits, merges and moves of the region's memslots
 * with the vCPUs running).
 *
 * The region is MEMMAP_PAGES 4 KiB pages at MEMMAP_REGION_GPA (64 MiB; the guest image, stacks,
 * page tables and the AP areas at 4..8 MiB stay below it, in memory the host leaves alone). At
 * start the BSP fills the last word of every page with a constant (MEMMAP_CONST | page), copies
 * a 6-byte function `mov $MEMMAP_FN_VALUE, %eax; ret` to MEMMAP_FN_GPA inside the region, and
 * starts the other CPUs of the MADT (smp_start_aps). The page right after the region
 * (MEMMAP_RO_GPA), which the guest only reads and executes (the host toggles it read-only), gets
 * the constant (MEMMAP_RO_CONST | word) in each of its first 256 words and the function
 * `mov $MEMMAP_RO_FN_VALUE, %eax; ret` at +0x800. Then each CPU c of n, at CPL3 until the stop
 * flag is set, does rounds r = 0, 1, ...:
 *   - for every page p with p % n == c: writes (r << 20 | c << 12 | p) to word (r % 8) of the
 *     page and reads it back;
 *   - for every page: checks its constant;
 *   - calls the function in the region and checks what it returns;
 *   - checks the read-only page's constants and calls its function;
 *   - stores r + 1 in its round counter.
 * Status block at MEMMAP_STATUS_GPA (u64 words): [0] the BSP's rounds, [1] stop flag (the host
 * writes 1; `rounds=N` on the command line makes the BSP set it itself after N rounds), [2]
 * errors, [3] first bad gpa, [4] the value read there, [5] CPUs running, [8 + c] CPU c's rounds.
 * Prints "memmap: ready, cpus N\n" once every CPU runs, and at the stop (the BSP waits
 * `stop_wait_ms=W`, default 1000, for the APs to stop; one that does not is an error)
 * "memmap: rounds R errors E\n", with "memmap: first error at gpa G, read V ...\n" after it when
 * E > 0; exits 0 when E == 0, 3 otherwise.
 *
 * QEMU (TCG runs it too: -accel tcg -cpu max):
 *   qemu-system-x86_64 -M microvm,acpi=on -accel kvm -cpu host,-arch-capabilities -m 256M -smp 4
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/memmap.elf -append rounds=20
 *   (exits with status 1 = 2*0+1)
 */
#include "common/guest.h"

#define MEMMAP_REGION_GPA 0x4000000ul /* 64 MiB */
#define MEMMAP_PAGES 256ul
#define MEMMAP_PAGE_WORDS 512ul
#define MEMMAP_CONST 0xc0de000000000000ul
#define MEMMAP_FN_GPA (MEMMAP_REGION_GPA + (MEMMAP_PAGES - 1) * 4096ul + 0x800ul)
#define MEMMAP_FN_VALUE 0x5eed1234u
#define MEMMAP_RO_GPA (MEMMAP_REGION_GPA + MEMMAP_PAGES * 4096ul)
#define MEMMAP_RO_WORDS 256ul
#define MEMMAP_RO_CONST 0x0c0de00000000000ul
#define MEMMAP_RO_FN_GPA (MEMMAP_RO_GPA + 0x800ul)
#define MEMMAP_RO_FN_VALUE 0x0dd5eed5u
#define MEMMAP_STATUS_GPA 0x200000ul
#define MEMMAP_MAX_CPUS 64
#define ST_ROUNDS 0
#define ST_STOP 1
#define ST_ERRORS 2
#define ST_BAD_GPA 3
#define ST_BAD_VALUE 4
#define ST_CPUS 5
#define ST_CPU_ROUNDS 8

static volatile u64 *const status = (volatile u64 *)MEMMAP_STATUS_GPA;
static volatile u64 stopped_cpus;

static void record_error(u64 gpa, u64 value) {
	if (__atomic_fetch_add(&status[ST_ERRORS], 1, __ATOMIC_SEQ_CST) == 0) {
		status[ST_BAD_GPA] = gpa;
		status[ST_BAD_VALUE] = value;
	}
}

/* One CPU's rounds until the stop flag (or, on the BSP, max_rounds). */
static void torture(u32 cpu, u64 max_rounds) {
	volatile u64 *region = (volatile u64 *)MEMMAP_REGION_GPA;
	u32 (*call)(void) = (u32 (*)(void))MEMMAP_FN_GPA;
	volatile u64 *ro = (volatile u64 *)MEMMAP_RO_GPA;
	u32 (*call_ro)(void) = (u32 (*)(void))MEMMAP_RO_FN_GPA;
	u64 n = status[ST_CPUS];
	u64 round = 0;
	while (status[ST_STOP] == 0) {
		for (u64 p = cpu; p < MEMMAP_PAGES; p += n) {
			volatile u64 *page = region + p * MEMMAP_PAGE_WORDS;
			u64 want = round << 20 | (u64)cpu << 12 | p;
			page[round % 8] = want;
			u64 got = page[round % 8];
			if (got != want)
				record_error((u64)&page[round % 8], got);
		}
		for (u64 p = 0; p < MEMMAP_PAGES; p++) {
			u64 got = region[p * MEMMAP_PAGE_WORDS + MEMMAP_PAGE_WORDS - 1];
			if (got != (MEMMAP_CONST | p))
				record_error((u64)&region[p * MEMMAP_PAGE_WORDS + MEMMAP_PAGE_WORDS - 1], got);
		}
		u32 v = call();
		if (v != MEMMAP_FN_VALUE)
			record_error(MEMMAP_FN_GPA, v);
		for (u64 w = 0; w < MEMMAP_RO_WORDS; w++) {
			u64 got = ro[w];
			if (got != (MEMMAP_RO_CONST | w))
				record_error((u64)&ro[w], got);
		}
		v = call_ro();
		if (v != MEMMAP_RO_FN_VALUE)
			record_error(MEMMAP_RO_FN_GPA, v);
		status[ST_CPU_ROUNDS + cpu] = ++round;
		if (cpu == 0) {
			status[ST_ROUNDS] = round;
			if (max_rounds && round >= max_rounds)
				status[ST_STOP] = 1;
		}
	}
}

/* `mov $value, %eax` (b8 imm32); `ret` (c3) at gpa. */
static void write_fn(u64 gpa, u32 value) {
	volatile u8 *fn = (volatile u8 *)gpa;
	fn[0] = 0xb8;
	fn[1] = value & 0xff;
	fn[2] = (value >> 8) & 0xff;
	fn[3] = (value >> 16) & 0xff;
	fn[4] = value >> 24;
	fn[5] = 0xc3;
}

static void ap_main(u32 cpu) {
	while (status[ST_CPUS] == 0) /* the BSP publishes the count once every AP runs */
		cpu_relax();
	torture(cpu, 0);
	__atomic_fetch_add(&stopped_cpus, 1, __ATOMIC_SEQ_CST);
	for (;;)
		cpu_relax();
}

int guest_main(void) {
	volatile u64 *region = (volatile u64 *)MEMMAP_REGION_GPA;
	for (u64 i = 0; i < ST_CPU_ROUNDS + MEMMAP_MAX_CPUS; i++)
		status[i] = 0;
	for (u64 p = 0; p < MEMMAP_PAGES; p++)
		region[p * MEMMAP_PAGE_WORDS + MEMMAP_PAGE_WORDS - 1] = MEMMAP_CONST | p;
	write_fn(MEMMAP_FN_GPA, MEMMAP_FN_VALUE);
	volatile u64 *ro = (volatile u64 *)MEMMAP_RO_GPA;
	for (u64 w = 0; w < MEMMAP_RO_WORDS; w++)
		ro[w] = MEMMAP_RO_CONST | w;
	write_fn(MEMMAP_RO_FN_GPA, MEMMAP_RO_FN_VALUE);
	u64 max_rounds = 0;
	cmdline_u64("rounds", &max_rounds);
	u32 aps = smp_start_aps(ap_main, MEMMAP_MAX_CPUS - 1);
	status[ST_CPUS] = 1 + aps;
	print("memmap: ready, cpus ");
	print_dec(1 + aps);
	print("\n");

	/* How long the APs get to notice the stop flag: each finishes its round first, and an AP
	 * whose vCPU thread waits for a host CPU (4 vCPUs on 2 cores, or the KVM lab's emulated
	 * CPUs) may need more than a second for that. */
	u64 stop_wait_ms = 1000;
	cmdline_u64("stop_wait_ms", &stop_wait_ms);
	torture(0, max_rounds);
	u64 wait = rdtsc() + stop_wait_ms * tsc_khz();
	while (stopped_cpus < aps && rdtsc() < wait)
		cpu_relax();
	if (stopped_cpus < aps)
		record_error(0, stopped_cpus);
	print("memmap: rounds ");
	print_dec(status[ST_ROUNDS]);
	print(" errors ");
	print_dec(status[ST_ERRORS]);
	print("\n");
	if (status[ST_ERRORS]) {
		print("memmap: first error at gpa ");
		print_hex(status[ST_BAD_GPA]);
		print(", read ");
		print_hex(status[ST_BAD_VALUE]);
		print(" (gpa 0: only that many APs stopped in stop_wait_ms)\n");
	}
	return status[ST_ERRORS] == 0 ? 0 : 3;
}
