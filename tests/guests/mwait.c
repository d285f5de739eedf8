/*
 * mwait: MONITOR/MWAIT as idle points (issue 3, point 4). This host's KVM hands both instructions
 * to the VMM as emulation failures (HOST.md); tsvmm emulates them: with --irqchip userspace MWAIT
 * sleeps until the MONITORed line changes or an interrupt may end it, with KVM's irqchip it
 * returns at once (a NOP, as KVM itself treats them on VMX/SVM). On 2 CPUs:
 *
 *  1. Write wake-up, `rounds=R` rounds (default 10). The AP, at CPL0 with interrupts off, loops
 *     `monitor &flag; if flag < r: count it, note round r, mwait(eax 0, ecx 0)` until flag >= r. The
 *     BSP, at CPL3, waits until the AP has noted round r, then `delay_ms=D` ms (default 20),
 *     then stores r in flag. Prints "mwait write-wake: ok (N mwaits in R rounds)\n": an MWAIT that
 *     sleeps gives N = R, one that returns at once gives N in the thousands.
 *  2. Interrupt wake-up with IF clear (BSP): LAPIC timer one-shot in 200 ms, then at CPL0 with
 *     interrupts off `monitor <a line nothing writes>; mwait(eax 0, ecx 1)` (ECX bit 0: interrupts
 *     end MWAIT even when masked; `mwait_ecx=0` for hosts that #GP on it, such as QEMU's TCG, and
 *     whose MWAIT is a NOP) until the timer's vector is in the LAPIC's IRR, then `sti; hlt`
 *     takes it. Prints "mwait interrupt-wake: ok (N mwaits)\n": N = 1 when MWAIT sleeps until the
 *     interrupt, in the thousands when it returns at once (0: the timer fired before the first
 *     MWAIT).
 * Then "mwait: all ok\n" and exit 0; a step that times out prints "mwait <step>: FAIL ...\n" and
 * the guest exits 1. Without a second CPU step 1 is skipped ("mwait write-wake: no AP\n").
 *
 * QEMU (KVM there treats MONITOR/MWAIT as NOPs, or runs them natively with -overcommit cpu-pm=on):
 *   qemu-system-x86_64 -M microvm,acpi=on -accel tcg -cpu max -m 256M -smp 2
 *   -nodefaults -no-user-config -nographic -serial stdio
 *   -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel .cache/guests/mwait.elf -append mwait_ecx=0
 *   (exits with status 1 = 2*0+1)
 * Spec: Intel SDM vol. 2B (MONITOR, MWAIT), vol. 3A 9.10.4.
 */
#include "common/guest.h"

#define MWAIT_TIMER_VECTOR (IRQ_VECTOR_BASE + 2)
#define MWAIT_TIMER_SLOT (MWAIT_TIMER_VECTOR - IRQ_VECTOR_BASE)
#define MWAIT_TIMER_COUNT 200000000u /* 200 ms at KVM's 1 GHz APIC bus, divide by 1: long past the first MWAIT */
#define APIC_IRR 0x200 /* 8 registers of 32 vectors, 0x10 apart */
#define MWAIT_ECX_INTERRUPT_BREAK 1u
#define STEP_TIMEOUT_US 2000000

/* Each on its own 64-byte line: a store to a counter must not look like a store to the flag. */
struct line { volatile u64 v; u8 pad[56]; } __attribute__((aligned(64)));
static struct line flag, quiet, ap_mwaits, ap_mwait_round, ap_done;

static inline void monitor(const volatile void *p) { __asm__ volatile("monitor" ::"a"(p), "c"(0), "d"(0) : "memory"); }
static inline void mwait(u32 eax, u32 ecx) { __asm__ volatile("mwait" ::"a"(eax), "c"(ecx) : "memory"); }

/* CPL0, interrupts off: MWAIT on the flag's line until flag >= target. */
static u64 cpl0_wait_flag(u64 target, u64 b, u64 c, u64 d) {
	(void)b, (void)c, (void)d;
	while (flag.v < target) {
		monitor(&flag.v);
		if (flag.v >= target)
			break;
		ap_mwaits.v++;
		ap_mwait_round.v = target;
		mwait(0, 0);
	}
	return 0;
}

/* CPL0, interrupts off: MWAIT (with ECX `ecx`) until the timer's vector is requested; returns the MWAITs. */
static u64 cpl0_wait_interrupt(u64 ecx, u64 b, u64 c, u64 d) {
	(void)b, (void)c, (void)d;
	u32 irr = APIC_IRR + (MWAIT_TIMER_VECTOR / 32) * 0x10, bit = 1u << (MWAIT_TIMER_VECTOR % 32);
	u64 n = 0;
	while (!(lapic_read(irr) & bit)) {
		monitor(&quiet.v);
		mwait(0, (u32)ecx);
		n++;
	}
	return n;
}

static u64 rounds = 10;

static void ap_main(u32 cpu) {
	(void)cpu;
	for (u64 r = 1; r <= rounds; r++)
		cpl0_call(cpl0_wait_flag, r, 0, 0, 0);
	ap_done.v = 1;
	for (;;)
		cpu_relax();
}

/* Spins at CPL3 until *v >= want or STEP_TIMEOUT_US pass; returns whether it got there. */
static bool wait_for(volatile u64 *v, u64 want) {
	u64 end = rdtsc() + STEP_TIMEOUT_US * tsc_khz() / 1000;
	while (*v < want) {
		if (rdtsc() > end)
			return false;
		cpu_relax();
	}
	return true;
}

static bool write_wake(void) {
	u64 delay_ms = 20;
	cmdline_u64("rounds", &rounds);
	cmdline_u64("delay_ms", &delay_ms);
	if (smp_start_aps(ap_main, 1) == 0) {
		print("mwait write-wake: no AP\n");
		return true;
	}
	for (u64 r = 1; r <= rounds; r++) {
		if (!wait_for(&ap_mwait_round.v, r)) {
			print("mwait write-wake: FAIL (the AP never reached MWAIT in round ");
			print_dec(r);
			print(")\n");
			return false;
		}
		delay_us(delay_ms * 1000);
		flag.v = r;
	}
	if (!wait_for(&ap_done.v, 1)) {
		print("mwait write-wake: FAIL (the AP never saw the last store)\n");
		return false;
	}
	print("mwait write-wake: ok (");
	print_dec(ap_mwaits.v);
	print(" mwaits in ");
	print_dec(rounds);
	print(" rounds)\n");
	return true;
}

static bool interrupt_wake(void) {
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[MWAIT_TIMER_SLOT] = IRQ_EOI_LAPIC;
	irq_count[MWAIT_TIMER_SLOT] = 0;
	lapic_write(APIC_LVTT, MWAIT_TIMER_VECTOR);
	lapic_write(APIC_TMICT, MWAIT_TIMER_COUNT);
	/* mwait_ecx=0 where the host's MWAIT may not take ECX[0] (QEMU's TCG raises #GP for any
	 * non-zero ECX, CPUID.05H:ECX[1] being an extension); KVM's NOP MWAIT loops either way. */
	u64 ecx = MWAIT_ECX_INTERRUPT_BREAK;
	cmdline_u64("mwait_ecx", &ecx);
	u64 n = cpl0_call(cpl0_wait_interrupt, ecx, 0, 0, 0);
	/* sti; hlt takes the requested interrupt (an interrupt window this host may not give after `sti; nop`). */
	cpl0_call(cpl0_halt_until, (u64)&irq_count[MWAIT_TIMER_SLOT], 1, (u64)&irq_count[MWAIT_TIMER_SLOT], 1);
	lapic_write(APIC_LVTT, APIC_LVT_MASKED);
	print("mwait interrupt-wake: ok (");
	print_dec(n);
	print(" mwaits)\n");
	return true;
}

int guest_main(void) {
	if (!write_wake() || !interrupt_wake())
		return 1;
	print("mwait: all ok\n");
	return 0;
}
