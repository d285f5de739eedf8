/*
 * long-mode.h: the switch from 32-bit protected mode to IA-32e mode, shared by the BSP's PVH entry
 * (entry.S) and the APs' trampoline (ap64.S), as a GNU as macro. Spec: Intel SDM vol. 3A 9.8.5
 * (initializing IA-32e mode): PAE on, CR3 = the PML4, EFER.LME, then paging on; the far jump to a
 * 64-bit code segment that follows is the caller's (its target address differs).
 */
#ifndef TSVMM_LONG_MODE_H
#define TSVMM_LONG_MODE_H

#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100

/* 32-bit code; clobbers eax, ecx, edx. `pml4` is entry.S's identity map of the first 4 GiB. */
.macro ENTER_LONG_MODE_PAGING
	movl $pml4, %eax
	movl %eax, %cr3
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	orl $(CR0_PG | CR0_PE), %eax
	movl %eax, %cr0
.endm

#endif
