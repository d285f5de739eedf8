/*
 * irqchip: checks the interrupt controllers the way hardware behaves (issue 3, point 4: the test
 * guest for `--irqchip userspace`; it passes on KVM's in-kernel chips and under QEMU TCG too).
 *
 * Every interrupt it takes goes through this file's stubs (vectors VEC_BASE..VEC_BASE+7), which
 * count it per CPU, in hits[APIC id][slot], by reading the receiving CPU's APIC_ID, then write
 * APIC_EOI. The checks, in order, each printing one line:
 *   0. (no line) The LAPIC timer's rate in TSC ticks, for 1 and 3: a masked one-shot count-down
 *      timed by TMCCT reads, each between two TSC reads; retried when a busy host deschedules
 *      the vCPU at the wrong moment.
 *   1. LAPIC timer one-shot (BSP): TMCCT reads non-zero right after TMICT is written (or the
 *      vCPU was away that long: then again), never goes up and reaches 0; the interrupt is then
 *      pending (IRR, with IF=0 at CPL3) and is taken exactly once; none follows (IRR clear,
 *      TMCCT stays 0).
 *   2. IOAPIC (BSP): PIT channel 0 in mode 2 at 1000 Hz (over time_scale) on ISA IRQ0, at the
 *      GSI the MADT's interrupt source override names (else GSI 0, then 2: see below), edge, fixed, physical
 *      destination = the BSP; halts until IOAPIC_TICKS ticks (LAPIC one-shot as watchdog) and
 *      checks the entry reads back with Remote IRR 0 and the vector's TMR and ISR bits clear.
 *      The line stays unmasked as the watchdog of 3..6 and is masked and checked in 7.
 *   3. LAPIC timer periodic (BSP): halts until PERIODIC_TICKS interrupts (PIT as watchdog); the
 *      elapsed TSC time must be 0.75..20 times PERIODIC_TICKS periods at the rate from 0 (plus
 *      1 s); then LVTT is masked and no interrupt may follow for 3 periods.
 *   4. TSC-deadline (BSP), if CPUID.1:ECX[24]: LVTT in TSC-deadline mode, IA32_TSC_DEADLINE
 *      (MSR 0x6e0) = now + 20 ms; IRR must stay clear until the TSC passes the deadline (less
 *      TSC_DEADLINE_EARLY_US), the MSR reads back the deadline, then the interrupt arrives
 *      (halted, PIT as watchdog) exactly once and the MSR reads 0; a deadline armed and then
 *      written 0 must never fire. Else prints "tsc-deadline: not offered" and skips it.
 *   5. Self-IPI (BSP): ICR shorthand self, fixed; pending in IRR, then taken exactly once.
 *   6. IPIs, with every enabled CPU of the MADT started (smp_start_aps). For each AP i in turn:
 *      the AP arms its own LAPIC one-shot as a watchdog and halts (`sti; hlt` at CPL0); the BSP
 *      waits 10 ms, sends a fixed IPI to its physical APIC id, and checks that AP i counted it
 *      once and no other CPU did. Then the BSP halts (LAPIC watchdog) and AP i, 10 ms later,
 *      sends a fixed IPI to the BSP's physical APIC id; the BSP must count it once, no AP.
 *   7. The IOAPIC entry masked (and read back masked): after 2 ms for a message already on its
 *      way, no PIT interrupt may follow for 20 ms.
 * Prints (with N-CPU MADTs: lines for ap1..ap<N-1>; with one CPU "ipi: skipped, 1 cpu")
 *   "lapic one-shot: ok\n" "ioapic gsi 2: routed\n" "lapic periodic: ok (10 ticks)\n"
 *   "tsc-deadline: ok\n" (or "tsc-deadline: not offered\n") "self-ipi: ok\n"
 *   "ipi bsp->ap1: ok\n" "ipi ap1->bsp: ok\n" ... "ioapic gsi 2: ok (20)\n" "irqchip: all ok\n"
 * and exits 0; at the first failed check it prints "CHECK: FAILED: what (value)\n" and exits 1.
 *
 * Command line: time_scale=N (default 1, at most 64) stretches every time span the checks use
 * (the one-shot count, the TMCCT sample bracket, the LAPIC periodic and the PIT periods, the
 * watchdogs, waits, settle and quiet windows) N times, for hosts where a userspace exit costs far
 * more than on hardware (the KVM lab: KVM inside QEMU TCG, ~650 us per exit, more than the 500 us
 * bracket). The periods matter most: with the userspace irqchip every interrupt costs several
 * exits, and once taking one lasts longer than the period, the next is pending at every `iretq`
 * and the halt loop never gets to its `cli` (a livelock, as on hardware). The bounds that are
 * correctness (TSC-deadline earliness, the periodic rate's ratio) are not stretched.
 *
 * Timing: the pass/fail decisions depend on time only through generous bounds: watchdogs of
 * ~3 s of LAPIC time (1 GHz on KVM), TSC waits from tsc_khz() (a guess of 4 GHz when CPUID has
 * no frequency, so waits come out longer, never shorter), the periodic rate bounds of 3 (the
 * rate from 0 is within ~5%: SAMPLE_BRACKET_US over at least half of ONESHOT_COUNT), the
 * 10 ms settle delays of 6 (if they are too short the IPI finds the target not yet halted but
 * pending in IRR, which passes too), and 3 periods / 20 ms "nothing follows" windows. Time
 * stamps are taken so that a descheduled vCPU can only make an interval look longer.
 *
 * CPL0 helpers (cpl0_call): cpl0_halt_until (entry.S); here cpl0_wrmsr and cpl0_rdmsr (for
 * IA32_TSC_DEADLINE) and cpl0_sti_window (`sti; nop; cli`: takes what is pending, if anything;
 * where an interrupt must be taken and IRR still shows it after the window, the guest halts).
 * Everything else (LAPIC/IOAPIC MMIO, PIT and PIC ports, the waits) runs at CPL3.
 *
 * QEMU 7.2 microvm publishes no IRQ0 override in its MADT but wires the PIT to IOAPIC pin 2;
 * without an override the guest tries GSI 0 and, if it stays silent, prints
 *   "ioapic: no ticks on gsi 0 and no irq0 override in the madt; trying gsi 2\n"
 * and carries on with GSI 2. tsvmm's MADT has the override, so there that line never appears.
 * QEMU's TCG offers no TSC-deadline timer, so there 4 prints "not offered".
 *
 * QEMU (TCG runs it: no KVM needed):
 *   qemu-system-x86_64 -M microvm,acpi=on -accel tcg -cpu max -m 256M -smp 4 -nodefaults
 *   -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
 *   -kernel .cache/guests/irqchip.elf   (exits with status 1 = 2*0+1)
 *
 * Specs: Intel SDM vol. 3A 11.4-11.6, 11.8 (LAPIC, timer modes, IPIs, IRR/ISR/TMR),
 * 82093AA I/O APIC data sheet, Intel 8254 data sheet, ACPI 6.5 5.2.12 (MADT).
 */
#include "common/guest.h"

/* ---- Vectors: one priority class (4), counted per CPU by the stubs below ---- */
#define VEC_BASE 0x40
#define S_TIMER 0      /* the LAPIC timer under test (every mode) */
#define S_WATCHDOG 1   /* the LAPIC timer as a one-shot watchdog */
#define S_SELF 2       /* self-IPI */
#define S_TO_AP 3      /* BSP -> AP IPI */
#define S_TO_BSP 4     /* AP -> BSP IPI */
#define S_PIT 5        /* PIT through the IOAPIC */
#define SLOTS 8
#define VEC(slot) (VEC_BASE + (slot))

/* hits[apic id][slot], incremented by the stubs on the CPU that took the interrupt. */
volatile u64 irqchip_hits[256][SLOTS];

/* Stub per slot (16 bytes apart): push rax, slot in eax, then count and EOI. ~15 instructions
 * at CPL0, one LAPIC read (APIC_ID) and one write (APIC_EOI). */
__asm__(
	"	.text\n"
	"	.balign 16\n"
	"	.globl irqchip_stubs\n"
	"irqchip_stubs:\n"
	"	.set slot, 0\n"
	"	.rept 8\n"
	"	.balign 16\n"
	"	pushq %rax\n"
	"	movl $slot, %eax\n"
	"	jmp irqchip_common\n"
	"	.set slot, slot + 1\n"
	"	.endr\n"
	"irqchip_common:\n"
	"	pushq %rdx\n"
	"	movq lapic_gpa, %rdx\n"
	"	movl 0x20(%rdx), %edx\n" /* APIC_ID, bits 31:24 */
	"	shrl $24, %edx\n"
	"	shll $3, %edx\n"         /* * SLOTS */
	"	addl %edx, %eax\n"
	"	incq irqchip_hits(, %rax, 8)\n"
	"	movq lapic_gpa, %rdx\n"
	"	movl $0, 0xb0(%rdx)\n"   /* APIC_EOI */
	"	popq %rdx\n"
	"	popq %rax\n"
	"	iretq\n");
extern char irqchip_stubs[];

/* ---- LAPIC registers beyond guest.h (SDM vol. 3A table 11-1) ---- */
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_TMCCT 0x390
#define APIC_LVT0 0x350
#define APIC_DEST_SELF 0x40000        /* ICR destination shorthand 01 */
#define APIC_DM_FIXED 0x000
#define APIC_LVT_TIMER_TSCDEADLINE 0x40000 /* LVTT timer mode 10 */
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)

/* ---- I/O APIC (82093AA) ---- */
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_VER 0x01
#define IOAPIC_REDTBL(n) (0x10 + 2 * (n))
#define IOAPIC_REDIR_VECTOR_MASK 0xffu
#define IOAPIC_REDIR_POLARITY_LOW (1u << 13)
#define IOAPIC_REDIR_REMOTE_IRR (1u << 14)
#define IOAPIC_REDIR_LEVEL (1u << 15)
#define IOAPIC_REDIR_MASKED (1u << 16)
#define ISA_IRQ0_CONVENTIONAL_GSI 2

/* ---- 8254 PIT and 8259 PICs ---- */
#define PIT_CH0 0x40
#define PIT_MODE 0x43
#define PIT_TICK_RATE 1193182
#define PIT_HZ_1 1000 /* divided by time_scale */
#define PIT_CMD_CH0_LOHI_MODE2 0x34
#define PIC1_COMMAND 0x20
#define PIC1_DATA 0x21
#define PIC2_COMMAND 0xa0
#define PIC2_DATA 0xa1

/* ---- Counts and bounds (LAPIC counts at divide-by-1: KVM's APIC bus runs at 1 GHz) ----
 * The spans marked "scaled" are multiplied by time_scale (see the head of this file). */
#define ONESHOT_COUNT_1 20000000u   /* ~20 ms, scaled */
#define WATCHDOG_COUNT 3000000000u  /* ~3 s; scaled by the timer's divide (APIC_TDCR) */
#define PERIOD_COUNT_1 4000000u     /* ~4 ms, scaled */
#define PERIODIC_TICKS 10
#define PERIODIC_SLACK_US_1 1000000 /* beyond 20 times the expected time, scaled */
#define IOAPIC_TICKS 20
#define PIT_WATCHDOG_TICKS 3000     /* ~3 s, scaled: the PIT runs time_scale times slower */
#define WAIT_US_1 5000000           /* bound on CPL3 waits for something that must happen, scaled */
#define QUIET_US_1 20000            /* "nothing follows" windows, scaled */
#define SETTLE_US_1 10000           /* lets the other CPU reach its hlt, scaled */
#define MASK_SETTLE_US_1 2000       /* for an IOAPIC message in flight when the entry is masked, scaled */
#define TSC_DEADLINE_US 20000
#define SAMPLE_BRACKET_US_1 500     /* a TMCCT sample's TSC bracket: 5% of the timed span at most, scaled */
#define CAL_ATTEMPTS 8
/* KVM arms its timer early by lapic_timer_advance_ns (~1 us) and waits out the rest before entry;
 * allow that much earliness, no more. */
#define TSC_DEADLINE_EARLY_US 20
#define MAX_TIME_SCALE 64 /* ONESHOT_COUNT stays below 2^32; the watchdog divide at most 64 */

static u64 time_scale = 1;
static u32 watchdog_tdcr = APIC_TDR_DIV_1; /* the divide (>= time_scale) for the watchdog */
#define ONESHOT_COUNT ((u32)(ONESHOT_COUNT_1 * time_scale))
#define PERIODIC_SLACK_US (PERIODIC_SLACK_US_1 * time_scale)
#define PERIOD_COUNT ((u32)(PERIOD_COUNT_1 * time_scale))
/* At most 65535, the 8254's largest divisor (18.2 Hz). */
#define PIT_DIVISOR ((u32)(PIT_TICK_RATE / PIT_HZ_1 * time_scale > 0xffff ? 0xffff : PIT_TICK_RATE / PIT_HZ_1 * time_scale))
#define WAIT_US (WAIT_US_1 * time_scale)
#define QUIET_US (QUIET_US_1 * time_scale)
#define SETTLE_US (SETTLE_US_1 * time_scale)
#define MASK_SETTLE_US (MASK_SETTLE_US_1 * time_scale)
#define SAMPLE_BRACKET_US (SAMPLE_BRACKET_US_1 * time_scale)
#define MAX_CPUS 64

static u32 bsp_id;
static u64 ioapic_base;
static u32 ioapic_pin;
static u32 pit_gsi;

static inline u64 hits(u32 id, u32 slot) { return irqchip_hits[id & 0xff][slot]; }
static inline volatile u64 *hitp(u32 id, u32 slot) { return &irqchip_hits[id & 0xff][slot]; }
static u32 my_apic_id(void) { return lapic_read(APIC_ID) >> 24; }
static u64 us_to_tsc(u64 us) { return us * tsc_khz() / 1000; }

static bool lapic_bit(u32 base, u32 vector) { return (lapic_read(base + 0x10 * (vector / 32)) >> (vector % 32)) & 1; }

static u64 cpl0_wrmsr(u64 msr, u64 value, u64 unused_c, u64 unused_d) {
	(void)unused_c, (void)unused_d;
	__asm__ volatile("wrmsr" ::"c"((u32)msr), "a"((u32)value), "d"((u32)(value >> 32)) : "memory");
	return 0;
}

static u64 cpl0_rdmsr(u64 msr, u64 unused_b, u64 unused_c, u64 unused_d) {
	(void)unused_b, (void)unused_c, (void)unused_d;
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"((u32)msr) : "memory");
	return (u64)hi << 32 | lo;
}

/* Opens the interrupt window for one instruction: whatever is pending is taken (the stubs
 * return to the `cli`, where the next pending one may come in). */
static u64 cpl0_sti_window(u64 a, u64 b, u64 c, u64 d) {
	(void)a, (void)b, (void)c, (void)d;
	__asm__ volatile("sti; nop; cli" ::: "memory");
	return 0;
}

static void sti_window(void) { cpl0_call(cpl0_sti_window, 0, 0, 0, 0); }

/* Halts until *count >= target or *watch >= watch_target; true if count got there. */
static bool halt_until(volatile u64 *count, u64 target, volatile u64 *watch, u64 watch_target) {
	cpl0_call(cpl0_halt_until, (u64)count, target, (u64)watch, watch_target);
	return *count >= target;
}

/* Takes what is pending here: the one-instruction window, then, if the vector is still pending
 * in IRR (a VMM may inject only at the next exit), a halt, which it ends at once. */
static void take_pending(u32 vector, u32 slot) {
	sti_window();
	u32 id = my_apic_id();
	if (lapic_bit(APIC_IRR, vector))
		halt_until(hitp(id, slot), hits(id, slot) + 1, hitp(id, slot), hits(id, slot) + 1);
}

/* Halts with this CPU's LAPIC timer as a one-shot watchdog (leaves the timer stopped). */
static bool halt_lapic_watchdog(volatile u64 *count, u64 target) {
	u32 id = my_apic_id();
	u64 dog = hits(id, S_WATCHDOG);
	/* The divide changes with TMICT 0: KVM's LAPIC re-arms the timer when the divide changes
	 * while TMICT is non-zero, even a one-shot that expired long ago, which then fires at once. */
	lapic_write(APIC_TMICT, 0);
	lapic_write(APIC_TDCR, watchdog_tdcr);
	lapic_write(APIC_LVTT, VEC(S_WATCHDOG));
	lapic_write(APIC_TMICT, WATCHDOG_COUNT);
	bool ok = halt_until(count, target, hitp(id, S_WATCHDOG), dog + 1);
	lapic_write(APIC_TMICT, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	return ok;
}

/* Halts with the PIT (through the IOAPIC, checked by then) as the watchdog. */
static bool halt_pit_watchdog(volatile u64 *count, u64 target) {
	return halt_until(count, target, hitp(bsp_id, S_PIT), hits(bsp_id, S_PIT) + PIT_WATCHDOG_TICKS);
}

/* Spins at CPL3 (IF=0) until the vector is pending in this CPU's IRR; false after WAIT_US. */
static bool wait_pending(u32 vector) {
	u64 end = rdtsc() + us_to_tsc(WAIT_US);
	while (!lapic_bit(APIC_IRR, vector))
		if (rdtsc() > end)
			return false;
	return true;
}

/* Waits `us` microseconds with the vector not pending, then opens the interrupt window; true if
 * it never became pending and the count did not move. */
static bool stays_quiet(u32 vector, u32 slot, u64 us) {
	u64 before = hits(my_apic_id(), slot);
	u64 end = rdtsc() + us_to_tsc(us);
	while (rdtsc() < end)
		if (lapic_bit(APIC_IRR, vector))
			return false;
	sti_window();
	return hits(my_apic_id(), slot) == before;
}

static void send_ipi(u32 apic_id, u32 icr_low) {
	u64 end = rdtsc() + us_to_tsc(1000);
	while ((lapic_read(APIC_ICR) & APIC_ICR_BUSY) && rdtsc() < end)
		cpu_relax();
	lapic_write(APIC_ICR2, apic_id << 24);
	lapic_write(APIC_ICR, icr_low);
}

static int failed(const char *check, const char *what, u64 value) {
	print(check);
	print(": FAILED: ");
	print(what);
	print(" (");
	print_dec(value);
	print(")\n");
	return 1;
}

static void ok_line(const char *check) {
	print(check);
	print(": ok\n");
}

static void lapic_enable(void) {
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
}

/* ---- 1. the LAPIC timer's rate, then one-shot ---- */

/* A TMCCT read between two TSC reads, stamped with their midpoint; good if nothing (a busy host
 * descheduling the vCPU) stretched the bracket past SAMPLE_BRACKET_US. */
struct tmcct_sample {
	u64 tsc;
	u32 count;
	bool good;
};

static struct tmcct_sample sample_tmcct(void) {
	u64 a = rdtsc();
	u32 v = lapic_read(APIC_TMCCT);
	u64 b = rdtsc();
	return (struct tmcct_sample){a + (b - a) / 2, v, b - a <= us_to_tsc(SAMPLE_BRACKET_US)};
}

/* The LAPIC timer's rate as counts (dc) per TSC ticks (dt), from a masked one-shot count-down:
 * the first and the last good samples, at least half the count apart. Retried when the vCPU was
 * away at the wrong moments; fails only if that happens CAL_ATTEMPTS times. */
static int calibrate(u64 *dc, u64 *dt) {
	for (int attempt = 0; attempt < CAL_ATTEMPTS; attempt++) {
		lapic_write(APIC_LVTT, APIC_LVT_MASKED | VEC(S_TIMER));
		lapic_write(APIC_TMICT, ONESHOT_COUNT);
		struct tmcct_sample first = {0}, last = {0};
		u64 end = rdtsc() + us_to_tsc(WAIT_US);
		for (;;) {
			struct tmcct_sample t = sample_tmcct();
			if (t.count == 0 || t.tsc > end)
				break;
			if (!t.good)
				continue;
			if (!first.good)
				first = t;
			else
				last = t;
		}
		lapic_write(APIC_TMICT, 0);
		if (first.good && last.good && last.count < first.count && first.count - last.count >= ONESHOT_COUNT / 2 &&
		    last.tsc > first.tsc) {
			*dc = first.count - last.count;
			*dt = last.tsc - first.tsc;
			return 0;
		}
	}
	return failed("lapic timer", "no tmcct count-down could be timed against the tsc; tries", CAL_ATTEMPTS);
}

static int check_oneshot(u64 dc, u64 dt) {
	const char *c = "lapic one-shot";
	for (int attempt = 0;; attempt++) {
		u64 before = hits(bsp_id, S_TIMER);
		lapic_write(APIC_LVTT, VEC(S_TIMER));
		u64 t_write = rdtsc();
		lapic_write(APIC_TMICT, ONESHOT_COUNT);
		u32 c0 = lapic_read(APIC_TMCCT);
		u64 t_read = rdtsc();
		if (c0 > ONESHOT_COUNT)
			return failed(c, "tmcct right after tmict above it", c0);
		if (c0 == 0) {
			/* Expired already: fine only if the vCPU was away that long (then try again). */
			u64 away = (t_read - t_write) * dc / dt;
			if (away < ONESHOT_COUNT / 10 * 9 || attempt + 1 >= CAL_ATTEMPTS)
				return failed(c, "tmcct read 0 right after tmict; counts elapsed", away);
			if (!wait_pending(VEC(S_TIMER)))
				return failed(c, "tmcct reached 0 but no interrupt pending; taken", hits(bsp_id, S_TIMER) - before);
			take_pending(VEC(S_TIMER), S_TIMER);
			continue;
		}
		u32 last = c0, cur;
		u64 end = rdtsc() + us_to_tsc(WAIT_US);
		while ((cur = lapic_read(APIC_TMCCT)) != 0) {
			if (cur > last)
				return failed(c, "tmcct went up to", cur);
			last = cur;
			if (rdtsc() > end)
				return failed(c, "tmcct still counting after the wait bound at", cur);
		}
		if (!wait_pending(VEC(S_TIMER)))
			return failed(c, "tmcct reached 0 but no interrupt pending; taken", hits(bsp_id, S_TIMER) - before);
		take_pending(VEC(S_TIMER), S_TIMER);
		if (hits(bsp_id, S_TIMER) != before + 1)
			return failed(c, "interrupts taken, want 1", hits(bsp_id, S_TIMER) - before);
		if (lapic_bit(APIC_ISR, VEC(S_TIMER)))
			return failed(c, "isr bit still set after eoi", 1);
		if (!stays_quiet(VEC(S_TIMER), S_TIMER, QUIET_US))
			return failed(c, "a second interrupt; taken", hits(bsp_id, S_TIMER) - before);
		if (lapic_read(APIC_TMCCT) != 0)
			return failed(c, "tmcct moved again after expiry", lapic_read(APIC_TMCCT));
		ok_line(c);
		return 0;
	}
}

/* ---- 2. IOAPIC: PIT on ISA IRQ0 ---- */
static u32 ioapic_read(u32 reg) {
	mmio_write32(ioapic_base + IOAPIC_IOREGSEL, reg);
	return mmio_read32(ioapic_base + IOAPIC_IOWIN);
}

static void ioapic_write(u32 reg, u32 v) {
	mmio_write32(ioapic_base + IOAPIC_IOREGSEL, reg);
	mmio_write32(ioapic_base + IOAPIC_IOWIN, v);
}

/* Finds the IOAPIC input for gsi; false if no IOAPIC of the MADT covers it. */
static bool find_gsi(const struct madt_info *madt, u32 gsi) {
	for (u32 i = 0; i < madt->ioapic_count; i++) {
		ioapic_base = madt->ioapics[i].gpa;
		u32 entries = ((ioapic_read(IOAPIC_VER) >> 16) & 0xff) + 1;
		if (gsi >= madt->ioapics[i].gsi_base && gsi < madt->ioapics[i].gsi_base + entries) {
			ioapic_pin = gsi - madt->ioapics[i].gsi_base;
			pit_gsi = gsi;
			return true;
		}
	}
	return false;
}

static u32 redir_low(u16 inti_flags) {
	u32 lo = VEC(S_PIT); /* fixed, physical */
	if ((inti_flags & MPS_INTI_POLARITY_MASK) == MPS_INTI_POLARITY_ACTIVE_LOW)
		lo |= IOAPIC_REDIR_POLARITY_LOW;
	if ((inti_flags & MPS_INTI_TRIGGER_MASK) == MPS_INTI_TRIGGER_LEVEL)
		lo |= IOAPIC_REDIR_LEVEL;
	return lo;
}

static bool pit_ticks_on(u16 inti_flags) {
	ioapic_write(IOAPIC_REDTBL(ioapic_pin) + 1, bsp_id << 24);
	ioapic_write(IOAPIC_REDTBL(ioapic_pin), redir_low(inti_flags));
	return halt_lapic_watchdog(hitp(bsp_id, S_PIT), hits(bsp_id, S_PIT) + IOAPIC_TICKS);
}

static void print_gsi_check(void) {
	print("ioapic gsi ");
	print_dec(pit_gsi);
}

static int check_ioapic_route(const struct madt_info *madt) {
	const char *c = "ioapic";
	if (madt->ioapic_count == 0)
		return failed(c, "no ioapic in the madt; ioapics", 0);
	u32 gsi = 0;
	u16 flags = 0;
	bool override = false;
	for (u32 i = 0; i < madt->override_count; i++)
		if (madt->overrides[i].bus == 0 && madt->overrides[i].source == 0) {
			gsi = madt->overrides[i].gsi;
			flags = madt->overrides[i].flags;
			override = true;
		}
	if (!find_gsi(madt, gsi))
		return failed(c, "no ioapic input for isa irq0 at gsi", gsi);
	/* The 8259s (which the PIT drives too) off the exception vectors and masked; LINT0 masked. */
	outb(PIC1_COMMAND, 0x11);
	outb(PIC2_COMMAND, 0x11);
	outb(PIC1_DATA, 0x30);
	outb(PIC2_DATA, 0x38);
	outb(PIC1_DATA, 4);
	outb(PIC2_DATA, 2);
	outb(PIC1_DATA, 1);
	outb(PIC2_DATA, 1);
	outb(PIC1_DATA, 0xff);
	outb(PIC2_DATA, 0xff);
	lapic_write(APIC_LVT0, APIC_LVT_MASKED);
	outb(PIT_MODE, PIT_CMD_CH0_LOHI_MODE2);
	outb(PIT_CH0, PIT_DIVISOR & 0xff);
	outb(PIT_CH0, PIT_DIVISOR >> 8);
	bool ticked = pit_ticks_on(flags);
	if (!ticked && hits(bsp_id, S_PIT) == 0 && !override && gsi != ISA_IRQ0_CONVENTIONAL_GSI &&
	    find_gsi(madt, ISA_IRQ0_CONVENTIONAL_GSI)) {
		print("ioapic: no ticks on gsi 0 and no irq0 override in the madt; trying gsi 2\n");
		find_gsi(madt, gsi);
		ioapic_write(IOAPIC_REDTBL(ioapic_pin), IOAPIC_REDIR_MASKED);
		find_gsi(madt, ISA_IRQ0_CONVENTIONAL_GSI);
		ticked = pit_ticks_on(flags);
	}
	if (!ticked) {
		print_gsi_check();
		return failed("", "pit interrupts within the watchdog, want 20", hits(bsp_id, S_PIT));
	}
	u32 lo = ioapic_read(IOAPIC_REDTBL(ioapic_pin));
	if ((lo & IOAPIC_REDIR_VECTOR_MASK) != VEC(S_PIT) || (lo & IOAPIC_REDIR_MASKED)) {
		print_gsi_check();
		return failed("", "redirection entry reads back as", lo);
	}
	if (!(lo & IOAPIC_REDIR_LEVEL) && (lo & IOAPIC_REDIR_REMOTE_IRR)) {
		print_gsi_check();
		return failed("", "remote irr set on an edge entry", lo);
	}
	if (!(lo & IOAPIC_REDIR_LEVEL) && lapic_bit(APIC_TMR, VEC(S_PIT))) {
		print_gsi_check();
		return failed("", "tmr bit set for an edge interrupt", 1);
	}
	if (lapic_bit(APIC_ISR, VEC(S_PIT))) {
		print_gsi_check();
		return failed("", "isr bit still set after eoi", 1);
	}
	print_gsi_check();
	print(": routed\n");
	return 0;
}

/* ---- 7. the IOAPIC entry masked ---- */
static int check_ioapic_mask(void) {
	ioapic_write(IOAPIC_REDTBL(ioapic_pin), IOAPIC_REDIR_MASKED | VEC(S_PIT));
	/* A message the IOAPIC sent before the mask took may still be on its way to the LAPIC (it
	 * is posted on the APIC bus): read the entry back, give it MASK_SETTLE_US, take it. */
	u32 lo = ioapic_read(IOAPIC_REDTBL(ioapic_pin));
	if (!(lo & IOAPIC_REDIR_MASKED)) {
		print_gsi_check();
		return failed("", "entry reads back unmasked after masking", lo);
	}
	delay_us(MASK_SETTLE_US);
	take_pending(VEC(S_PIT), S_PIT);
	bool quiet = stays_quiet(VEC(S_PIT), S_PIT, QUIET_US);
	print_gsi_check();
	if (!quiet)
		return failed("", "pit interrupts after masking; taken", hits(bsp_id, S_PIT));
	print(": ok (");
	print_dec(IOAPIC_TICKS);
	print(")\n");
	return 0;
}

/* ---- 3. periodic ---- */
static int check_periodic(u64 dc, u64 dt) {
	const char *c = "lapic periodic";
	u64 before = hits(bsp_id, S_TIMER);
	lapic_write(APIC_LVTT, APIC_LVT_TIMER_PERIODIC | VEC(S_TIMER));
	u64 t0 = rdtsc(); /* before the write: a delay between the two can only lengthen `elapsed` */
	lapic_write(APIC_TMICT, PERIOD_COUNT);
	bool ok = halt_pit_watchdog(hitp(bsp_id, S_TIMER), before + PERIODIC_TICKS);
	u64 elapsed = rdtsc() - t0;
	lapic_write(APIC_LVTT, APIC_LVT_MASKED | APIC_LVT_TIMER_PERIODIC | VEC(S_TIMER));
	if (!ok)
		return failed(c, "interrupts before the pit watchdog, want 10", hits(bsp_id, S_TIMER) - before);
	u64 expected = (u64)PERIODIC_TICKS * PERIOD_COUNT * dt / dc;
	if (elapsed * 4 < expected * 3)
		return failed(c, "too fast: percent of the expected time", elapsed * 100 / expected);
	if (elapsed > expected * 20 + us_to_tsc(PERIODIC_SLACK_US))
		return failed(c, "too slow: percent of the expected time", elapsed * 100 / expected);
	/* Masked: one may have fired before the mask; after that, none (the count goes on). */
	take_pending(VEC(S_TIMER), S_TIMER);
	u64 period_us = (u64)PERIOD_COUNT * dt / dc * 1000 / tsc_khz();
	if (!stays_quiet(VEC(S_TIMER), S_TIMER, 3 * period_us + 1000))
		return failed(c, "interrupts with lvtt masked; taken", hits(bsp_id, S_TIMER) - before);
	lapic_write(APIC_TMICT, 0);
	print(c);
	print(": ok (");
	print_dec(PERIODIC_TICKS);
	print(" ticks)\n");
	return 0;
}

/* ---- 4. TSC-deadline ---- */
static int check_tsc_deadline(void) {
	const char *c = "tsc-deadline";
	u32 a, b, ecx, d;
	cpuid(1, 0, &a, &b, &ecx, &d);
	if (!(ecx & CPUID_1_ECX_TSC_DEADLINE)) {
		print("tsc-deadline: not offered\n");
		return 0;
	}
	u64 before = hits(bsp_id, S_TIMER);
	lapic_write(APIC_LVTT, APIC_LVT_TIMER_TSCDEADLINE | VEC(S_TIMER));
	/* SDM 11.5.4.1: the LVTT write must be ordered before the MSR write (Linux uses mfence). */
	__asm__ volatile("mfence" ::: "memory");
	u64 deadline = rdtsc() + us_to_tsc(TSC_DEADLINE_US);
	cpl0_call(cpl0_wrmsr, MSR_IA32_TSC_DEADLINE, deadline, 0, 0);
	u64 readback = cpl0_call(cpl0_rdmsr, MSR_IA32_TSC_DEADLINE, 0, 0, 0);
	u64 early = deadline - us_to_tsc(TSC_DEADLINE_EARLY_US);
	for (;;) {
		bool pending = lapic_bit(APIC_IRR, VEC(S_TIMER));
		u64 now = rdtsc();
		if (pending && now < early)
			return failed(c, "interrupt pending this many us before the deadline", (deadline - now) * 1000 / tsc_khz());
		if (now >= deadline)
			break;
	}
	if (readback != deadline)
		return failed(c, "ia32_tsc_deadline read back as", readback);
	if (!halt_pit_watchdog(hitp(bsp_id, S_TIMER), before + 1))
		return failed(c, "no interrupt within the pit watchdog after the deadline; taken", 0);
	sti_window();
	if (hits(bsp_id, S_TIMER) != before + 1)
		return failed(c, "interrupts taken, want 1", hits(bsp_id, S_TIMER) - before);
	u64 after = cpl0_call(cpl0_rdmsr, MSR_IA32_TSC_DEADLINE, 0, 0, 0);
	if (after != 0)
		return failed(c, "ia32_tsc_deadline not cleared when it fired", after);
	/* Armed, then disarmed by writing 0: it must never fire. */
	cpl0_call(cpl0_wrmsr, MSR_IA32_TSC_DEADLINE, rdtsc() + us_to_tsc(TSC_DEADLINE_US), 0, 0);
	cpl0_call(cpl0_wrmsr, MSR_IA32_TSC_DEADLINE, 0, 0, 0);
	if (!stays_quiet(VEC(S_TIMER), S_TIMER, 2 * TSC_DEADLINE_US))
		return failed(c, "a disarmed deadline fired; taken", hits(bsp_id, S_TIMER) - before);
	lapic_write(APIC_LVTT, APIC_LVT_MASKED);
	ok_line(c);
	return 0;
}

/* ---- 5. self-IPI ---- */
static int check_self_ipi(void) {
	const char *c = "self-ipi";
	send_ipi(0, APIC_DEST_SELF | APIC_DM_FIXED | VEC(S_SELF));
	if (!wait_pending(VEC(S_SELF)))
		return failed(c, "not pending after the icr write; taken", hits(bsp_id, S_SELF));
	if (!halt_pit_watchdog(hitp(bsp_id, S_SELF), 1))
		return failed(c, "pending but never taken", 0);
	if (!stays_quiet(VEC(S_SELF), S_SELF, QUIET_US) || hits(bsp_id, S_SELF) != 1)
		return failed(c, "interrupts taken, want 1", hits(bsp_id, S_SELF));
	ok_line(c);
	return 0;
}

/* ---- 6. IPIs between the BSP and each AP ---- */
enum { AP_OFF, AP_READY, AP_HALTING, AP_RECEIVED, AP_SENT };
enum { CMD_NONE, CMD_RECEIVE, CMD_SEND };
static struct {
	volatile u32 cmd, state, apic_id;
	volatile u64 got, watchdog;
} aps[MAX_CPUS];

static void ap_main(u32 index) {
	lapic_enable();
	u32 id = my_apic_id();
	aps[index].apic_id = id;
	aps[index].state = AP_READY;
	while (aps[index].cmd != CMD_RECEIVE)
		cpu_relax();
	aps[index].state = AP_HALTING;
	halt_lapic_watchdog(hitp(id, S_TO_AP), 1);
	sti_window();
	aps[index].got = hits(id, S_TO_AP);
	aps[index].watchdog = hits(id, S_WATCHDOG);
	aps[index].state = AP_RECEIVED;
	while (aps[index].cmd != CMD_SEND)
		cpu_relax();
	delay_us(SETTLE_US);
	send_ipi(bsp_id, APIC_DM_FIXED | VEC(S_TO_BSP));
	aps[index].state = AP_SENT;
	for (;;)
		cpu_relax();
}

static bool wait_state(u32 index, u32 state) {
	u64 end = rdtsc() + us_to_tsc(WAIT_US);
	while (aps[index].state < state)
		if (rdtsc() > end)
			return false;
	return true;
}

static u64 sum_hits(u32 cpus, u32 slot, bool with_bsp) {
	u64 n = with_bsp ? hits(bsp_id, slot) : 0;
	for (u32 i = 1; i < cpus; i++)
		n += hits(aps[i].apic_id, slot);
	return n;
}

static void ap_check_name(char *buf, const char *head, u32 index, const char *tail) {
	/* "ipi bsp->apN" / "ipi apN->bsp" */
	char *p = buf;
	for (const char *s = head; *s; s++)
		*p++ = *s;
	char digits[4];
	int n = 0;
	do
		digits[n++] = (char)('0' + index % 10);
	while ((index /= 10) && n < 4);
	while (n)
		*p++ = digits[--n];
	for (const char *s = tail; *s; s++)
		*p++ = *s;
	*p = 0;
}

static int check_ipis(const struct madt_info *madt) {
	u32 enabled = 0;
	for (u32 i = 0; i < madt->cpu_count; i++)
		if (madt->cpus[i].flags & MADT_LAPIC_ENABLED)
			enabled++;
	if (enabled <= 1) {
		print("ipi: skipped, 1 cpu\n");
		return 0;
	}
	if (enabled > MAX_CPUS)
		enabled = MAX_CPUS;
	u32 started = smp_start_aps(ap_main, enabled - 1);
	if (started != enabled - 1)
		return failed("ipi", "aps started, of the madt's other cpus", started);
	u32 cpus = 1 + started;
	for (u32 i = 1; i < cpus; i++)
		if (!wait_state(i, AP_READY))
			return failed("ipi", "ap never ran its code; ap", i);
	char check[32];
	for (u32 i = 1; i < cpus; i++) {
		/* BSP -> AP i */
		ap_check_name(check, "ipi bsp->ap", i, "");
		u64 total = sum_hits(cpus, S_TO_AP, true);
		aps[i].cmd = CMD_RECEIVE;
		if (!wait_state(i, AP_HALTING))
			return failed(check, "ap never got to halt; state", aps[i].state);
		delay_us(SETTLE_US);
		send_ipi(aps[i].apic_id, APIC_DM_FIXED | VEC(S_TO_AP));
		if (!wait_state(i, AP_RECEIVED))
			return failed(check, "ap still halted after the wait bound; ap interrupts", hits(aps[i].apic_id, S_TO_AP));
		if (aps[i].watchdog != 0)
			return failed(check, "the ap's watchdog woke it; ipis taken", aps[i].got);
		if (aps[i].got != 1)
			return failed(check, "ipis taken by the ap, want 1", aps[i].got);
		if (sum_hits(cpus, S_TO_AP, true) != total + 1)
			return failed(check, "ipis taken by all cpus together, want 1", sum_hits(cpus, S_TO_AP, true) - total);
		ok_line(check);
		/* AP i -> BSP */
		ap_check_name(check, "ipi ap", i, "->bsp");
		u64 before = hits(bsp_id, S_TO_BSP);
		aps[i].cmd = CMD_SEND;
		bool ok = halt_lapic_watchdog(hitp(bsp_id, S_TO_BSP), before + 1);
		if (!wait_state(i, AP_SENT))
			return failed(check, "ap never sent it; state", aps[i].state);
		if (!ok)
			return failed(check, "no ipi at the bsp within the watchdog", 0);
		if (!stays_quiet(VEC(S_TO_BSP), S_TO_BSP, QUIET_US) || hits(bsp_id, S_TO_BSP) != before + 1)
			return failed(check, "ipis taken by the bsp, want 1", hits(bsp_id, S_TO_BSP) - before);
		if (sum_hits(cpus, S_TO_BSP, false) != 0)
			return failed(check, "ipis to the bsp taken by aps", sum_hits(cpus, S_TO_BSP, false));
		ok_line(check);
	}
	return 0;
}

int guest_main(void) {
	for (u32 s = 0; s < SLOTS; s++)
		idt_set_gate((u8)VEC(s), (void (*)(void))(irqchip_stubs + 16 * s), 0);
	struct madt_info *madt = &(struct madt_info){0};
	if (!acpi_read_madt(madt))
		return failed("irqchip", "no acpi madt; tables", 0);
	if (madt->lapic_gpa)
		lapic_gpa = madt->lapic_gpa;
	cmdline_u64("time_scale", &time_scale);
	if (time_scale < 1 || time_scale > MAX_TIME_SCALE)
		return failed("irqchip", "time_scale must be 1..64; got", time_scale);
	/* APIC_TDCR encodings for divide by 2, 4, ... 64 (SDM vol. 3A figure 11-10). */
	static const u32 tdcr_for_shift[] = {APIC_TDR_DIV_1, 0x0, 0x1, 0x2, 0x3, 0x8, 0x9};
	u32 shift = 0;
	while ((1u << shift) < time_scale)
		shift++;
	watchdog_tdcr = tdcr_for_shift[shift];
	bsp_id = my_apic_id();
	lapic_enable();
	u64 dc, dt;
	if (calibrate(&dc, &dt) || check_oneshot(dc, dt) || check_ioapic_route(madt) || check_periodic(dc, dt) || check_tsc_deadline() ||
	    check_self_ipi() || check_ipis(madt) || check_ioapic_mask())
		return 1;
	print("irqchip: all ok\n");
	return 0;
}
