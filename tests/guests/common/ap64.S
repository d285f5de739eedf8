/*
 * ap64.S: brings an application processor from its STARTUP IPI to CPL3 in 64-bit mode, where
 * it runs the C function smp_start_aps() (smp.c) gave it. One AP at a time: the BSP fills the
 * ap64_boot_* variables, sends INIT/SIPI/SIPI, and waits for ap64_boot_arrived to move before it
 * reuses them for the next AP.
 *
 * Spec: Intel SDM vol. 3A 9.4.4 (MP initialization: the AP starts in real mode at
 * CS = vector << 8, IP = 0), 9.8.5 (initializing IA-32e mode), 7.2.3 (64-bit TSS descriptor).
 *
 * The trampoline (ap64_trampoline_start..end) is copied to AP64_TRAMPOLINE_GPA, below 1 MiB and
 * 4 KiB aligned as the SIPI vector requires; it runs with DS = 0, so it addresses its own data
 * as AP64_TRAMPOLINE_GPA + offset. Real and protected mode are emulated on the test hosts: each
 * stage does the least it can and jumps on. Everything from ap64_long_entry on runs at the
 * image's own (linked) addresses, like entry.S.
 */

#define AP64_TRAMPOLINE_GPA 0x9000  /* must agree with smp.c */
#include "long-mode.h"
#define KERNEL_DS 0x10
#define USER_DS (0x18 | 3)
#define USER_CS (0x20 | 3)
#define TSS_SEL 0x28
#define USER_RFLAGS 0x3002
/* The trampoline's own GDT: 32-bit code, flat data, 64-bit code. */
#define TRAMP_CS32 0x08
#define TRAMP_DS 0x10
#define TRAMP_CS64 0x18

#define TRAMP(sym) (AP64_TRAMPOLINE_GPA + ((sym) - ap64_trampoline_start))

	.section .rodata.ap64_trampoline, "a"
	.globl ap64_trampoline_start, ap64_trampoline_end
	.code16
ap64_trampoline_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl TRAMP(tramp_gdt_ptr)
	movl %cr0, %eax
	orl $CR0_PE, %eax
	movl %eax, %cr0
	ljmpl $TRAMP_CS32, $TRAMP(tramp32)

	.code32
tramp32:
	movl $TRAMP_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	/* The BSP's page tables (entry.S): the image is identity mapped, so they serve every CPU. */
	ENTER_LONG_MODE_PAGING
	ljmpl $TRAMP_CS64, $TRAMP(tramp64)

	.code64
tramp64:
	movabsq $ap64_long_entry, %rax
	jmpq *%rax

	.balign 8
tramp_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff        /* TRAMP_CS32: 32-bit code, flat */
	.quad 0x00cf92000000ffff        /* TRAMP_DS: flat data */
	.quad 0x00209a0000000000        /* TRAMP_CS64: 64-bit code */
tramp_gdt_end:
tramp_gdt_ptr:
	.word tramp_gdt_end - tramp_gdt - 1
	.long TRAMP(tramp_gdt)
ap64_trampoline_end:

/* ---------------------------------------------------------------------------------------- */
	.text
	.code64
/* 64-bit, CPL0, still on the trampoline's GDT: switch to this AP's own GDT (its TSS is its own:
 * a TSS cannot be loaded on two CPUs, ltr marks it busy), stack and the shared IDT, then iretq to
 * CPL3 as entry.S does for the BSP. */
ap64_long_entry:
	movq ap64_boot_gdt_ptr, %rax
	lgdt (%rax)
	movl $KERNEL_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	movq ap64_boot_cpl0_rsp, %rsp
	movw $TSS_SEL, %ax
	ltr %ax
	lidt idt_ptr
	pushq $USER_DS
	pushq ap64_boot_user_rsp
	pushq $USER_RFLAGS
	pushq $USER_CS
	pushq $ap64_user_entry
	iretq

/* CPL3: take this AP's index and function, then let the BSP reuse the boot variables. */
ap64_user_entry:
	movl ap64_boot_index, %edi
	movq ap64_boot_fn, %rax
	lock incl ap64_boot_arrived
	andq $-16, %rsp
	call *%rax
1:	pause
	jmp 1b

	.data
	.balign 8
	.globl ap64_boot_gdt_ptr, ap64_boot_cpl0_rsp, ap64_boot_user_rsp, ap64_boot_fn, ap64_boot_index, ap64_boot_arrived
ap64_boot_gdt_ptr:
	.quad 0
ap64_boot_cpl0_rsp:
	.quad 0
ap64_boot_user_rsp:
	.quad 0
ap64_boot_fn:
	.quad 0
ap64_boot_index:
	.long 0
ap64_boot_arrived:
	.long 0

	.section .note.GNU-stack, "", @progbits
