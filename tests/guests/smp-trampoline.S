/*
 * smp-trampoline.S: the real-mode code each application processor runs after its STARTUP IPI
 * (smp.c copies it to AP_TRAMPOLINE_GPA, below 1 MiB and 4 KiB aligned, as the SIPI vector
 * requires; the AP starts at CS = vector << 8, IP = 0).
 *
 * Real mode is emulated on the test hosts, so it stays there and does the least it can: note
 * its initial APIC id (CPUID leaf 1, EBX bits 31:24) in ap_trampoline_seen[id], then count
 * itself in ap_trampoline_count with a locked increment (the BSP reads both through the copy),
 * and halt with interrupts off for good.
 */
	.section .rodata.ap_trampoline, "a"
	.code16
	.globl ap_trampoline_start, ap_trampoline_end, ap_trampoline_count, ap_trampoline_seen
ap_trampoline_start:
	cli
	movw %cs, %ax
	movw %ax, %ds
	movl $1, %eax
	cpuid
	shrl $24, %ebx
	/* The id first, then the count: x86 stores are seen in order, so a BSP that sees the
	 * count also sees the id. */
	movb $1, (ap_trampoline_seen - ap_trampoline_start)(%bx)
	lock incw (ap_trampoline_count - ap_trampoline_start)
1:	cli
	hlt
	jmp 1b
	.balign 2
ap_trampoline_count:
	.word 0
ap_trampoline_seen:
	.fill 256, 1, 0
ap_trampoline_end:
	.code64

	.section .note.GNU-stack, "", @progbits
