/*
 * entry.S: PVH entry, the switch to 64-bit long mode, and the CPL0 half of the test-guest runtime.
 *
 * Spec: Xen PVH boot ABI (xen/include/public/elfnote.h XEN_ELFNOTE_PHYS32_ENTRY,
 * docs/misc/pvh.pandoc), Intel SDM vol. 3A ch. 4 (paging), 6 (interrupts), 7 (TSS), 9.8
 * (initializing IA-32e mode).
 *
 * The PVH entry state is 32-bit protected mode, paging off, flat segments, EBX = the
 * guest-physical address of struct hvm_start_info, no stack. On the test hosts every CPL0
 * instruction is emulated (~0.6 us each), so this file does as little as it can at CPL0:
 * the page tables, GDT and TSS are built by the assembler and linker (no loops at run time),
 * and after ~40 instructions it irets to CPL3 where guest_start() (lib.c) fills the IDT and
 * runs guest_main(). Back to CPL0 only through cpl0_call(), whose `ud2` the #UD handler
 * recognises by address.
 *
 * Two things that work on ordinary KVM do not work on this host's kvm_pvm, measured with QEMU:
 * - RFLAGS.IOPL=3 (from iretq or sysretq) is dropped for guest user mode: `out` at CPL3 takes
 *   #GP. The TSS I/O permission bitmap is honoured, so the TSS carries an all-zero bitmap
 *   (every port allowed) besides IOPL=3.
 * - `int $n` at CPL3 takes #UD, and after `syscall` the handler still runs as user mode
 *   (`mov %cr0` takes #GP with CS=0x23 in the frame). Exceptions are delivered to CPL0
 *   properly, so the gate to CPL0 is a `ud2` at a known address (cpl0_call).
 * And one cost: port I/O from CPL3 (through the bitmap) is ~27 us an exit against ~8 us from
 * emulated CPL0, so exit-bound loops may run at CPL0 (run_at_cpl in lib.c).
 */

/* Control registers and MSRs (SDM vol. 3A 2.5, 2.2.1), and the switch to long mode. */
#include "long-mode.h"

/* Page-table entry bits (SDM vol. 3A 4.5). */
#define PTE_P 0x001
#define PTE_RW 0x002
#define PTE_US 0x004   /* user accessible: CPL3 code reaches all memory and MMIO */
#define PTE_PWT 0x008
#define PTE_PCD 0x010  /* with PWT: PAT entry 3 = UC in the power-on PAT, for MMIO */
#define PTE_PS 0x080   /* 2 MiB page in a PD entry */
#define PTE_TABLE (PTE_P | PTE_RW | PTE_US)
#define PTE_RAM_2M (PTE_P | PTE_RW | PTE_US | PTE_PS)
#define PTE_MMIO_2M (PTE_RAM_2M | PTE_PWT | PTE_PCD)
/* Everything from the 32-bit MMIO hole up is mapped uncached (layout.ts MMIO_HOLE_START_GPA). */
#define MMIO_HOLE_START 0xc0000000

/* GDT selectors; user selectors carry RPL 3. */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER_DS (0x18 | 3)
#define USER_CS (0x20 | 3)
#define TSS_SEL 0x28
#define TSS_SIZE 104
/* I/O permission bitmap: one bit per port (65536), then a terminating 0xff byte (SDM 19.5.2). */
#define IO_BITMAP_SIZE 8192
#define TSS_LIMIT (TSS_SIZE + IO_BITMAP_SIZE)

/* RFLAGS for CPL3: IOPL=3 (bits 13:12) for port I/O on ordinary KVM (see above for this host);
 * bit 1 is reserved-1; IF=0. */
#define USER_RFLAGS 0x3002

#define CPL0_STACK_SIZE 0x4000
#define USER_STACK_SIZE 0x10000

/* ---------------------------------------------------------------------------------------- */
/* The PVH entry note. QEMU (hw/i386/x86.c read_pvh_start_addr) reads a u64 descriptor from an */
/* ELF64 image (Linux emits it with _ASM_PTR), with the name padded to the segment alignment; */
/* so: 4-byte aligned, name "Xen\0" (4 bytes), and an 8-byte desc whose low 32 bits are the */
/* entry address. A reader expecting a 32-bit desc finds the same address in its first 4 bytes. */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz */
	.long 8                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad pvh_start32

/* ---------------------------------------------------------------------------------------- */
	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	movl %ebx, pvh_start_info_gpa
	lgdt gdt_ptr
	ENTER_LONG_MODE_PAGING
	ljmp $KERNEL_CS, $long_mode_start

	.code64
long_mode_start:
	movl $KERNEL_DS, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	leaq cpl0_stack_top(%rip), %rsp
	/* The TSS base cannot be split into descriptor fields at link time: patch it in. */
	movl $tss, %eax
	movw %ax, gdt_tss + 2
	shrl $16, %eax
	movb %al, gdt_tss + 4
	movb %ah, gdt_tss + 7
	movw $TSS_SEL, %ax
	ltr %ax
	/* The IDT is empty until guest_start() fills it at CPL3 (IF stays 0 until then). */
	lidt idt_ptr
	pushq $USER_DS
	pushq $user_stack_top
	pushq $USER_RFLAGS
	pushq $USER_CS
	pushq $user_entry
	iretq

/* ---------------------------------------------------------------------------------------- */
/* CPL3 entry: zero .bss (natively fast here), then the C runtime. */
	.text
user_entry:
	leaq __bss_start(%rip), %rdi
	leaq __bss_end(%rip), %rcx
	subq %rdi, %rcx
	xorl %eax, %eax
	rep stosb
	call guest_start
1:	jmp 1b

/* u64 cpl0_call(fn, a, b, c, d): an ordinary SysV function whose body is a `ud2`. The #UD
 * handler (ud_entry) sees the fault at cpl0_gate_ud2, runs fn(a, b, c, d) at CPL0 with
 * interrupts off, and resumes at the `ret` with fn's result in rax. */
	.globl cpl0_call
cpl0_call:
cpl0_gate_ud2:
	ud2
	ret

/* #UD (vector 6, no error code). Stack: RIP, CS, RFLAGS, RSP, SS. */
ud_entry:
	cmpq $cpl0_gate_ud2, (%rsp)
	jne 1f
	addq $2, (%rsp)         /* resume after the ud2 */
	movq %rdi, %rax
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
	movq %r8, %rcx
	/* The CPU pushed 5 qwords onto a 16-aligned stack: realign for the SysV call. */
	subq $8, %rsp
	call *%rax
	addq $8, %rsp
	iretq
1:	pushq $0
	pushq $6
	jmp exception_common

	.globl cpl0_halt_forever
cpl0_halt_forever:
	cli
1:	hlt
	jmp 1b

/* u64 cpl0_halt_until(u64 *count, u64 target, u64 *watch, u64 watch_target)
 * Entered with IF=0. `sti; hlt` is atomic (STI blocks interrupts for one instruction), so an
 * interrupt arriving after the check still wakes the hlt. Returns *count. */
	.globl cpl0_halt_until
cpl0_halt_until:
1:	cmpq %rsi, (%rdi)
	jae 2f
	cmpq %rcx, (%rdx)
	jae 2f
	sti
	hlt
	cli
	jmp 1b
2:	movq (%rdi), %rax
	ret

	.globl cpl0_load_empty_idt
cpl0_load_empty_idt:
	lidt empty_idt_ptr
	xorl %eax, %eax
	ret

/* Exception stubs for vectors 0..31, 16 bytes apart (lib.c computes addresses from that). */
/* lib.c points vector 6 at ud_entry instead. */
/* Vectors that push an error code (SDM vol. 3A table 6-1): 8, 10-14, 17, 21, 29, 30. */
	.balign 16
	.globl exception_stubs
exception_stubs:
	.set vec, 0
	.rept 32
	.balign 16
	.if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	/* the CPU pushed an error code */
	.else
	pushq $0
	.endif
	pushq $vec
	jmp exception_common
	.set vec, vec + 1
	.endr

/* Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS. Reports and ends the VM (lib.c). */
exception_common:
	movq %rsp, %rdi
	movq %cr2, %rsi
	andq $-16, %rsp
	call guest_exception
1:	cli
	hlt
	jmp 1b

/* Counting interrupt stubs for vectors IRQ_VECTOR_BASE + 0..15, 16 bytes apart. */
	.balign 16
	.globl irq_stubs
irq_stubs:
	.set irq, 0
	.rept 16
	.balign 16
	pushq %rax
	movl $irq, %eax
	jmp irq_common
	.set irq, irq + 1
	.endr

/* Counts the interrupt, then acknowledges it the way irq_eoi_mode[] says. Few instructions:
 * at ~1000 Hz each one costs ~0.6 us of emulated CPL0 time here. */
irq_common:
	pushq %rdx
	incq irq_count(, %rax, 8)
	movzbl irq_eoi_mode(%rax), %edx
	cmpl $1, %edx           /* IRQ_EOI_PIC */
	je 2f
	ja 3f                   /* IRQ_EOI_NONE */
	movq lapic_gpa, %rdx
	movl $0, 0xb0(%rdx)     /* APIC_EOI */
	jmp 3f
2:	movb $0x20, %al         /* OCW2: non-specific EOI */
	outb %al, $0x20         /* PIC1_COMMAND */
3:	popq %rdx
	popq %rax
	iretq

/* Spurious and unexpected vectors: no EOI (a LAPIC spurious interrupt must not get one). */
	.globl ud_entry
	.globl irq_ignore
irq_ignore:
	iretq

/* ---------------------------------------------------------------------------------------- */
	.data
	.balign 16
	/* gdt, idt_ptr and pml4 are shared with the APs (ap64.S, smp.c). */
	.globl gdt, idt_ptr, pml4
gdt:
	.quad 0                         /* null */
	.quad 0x00209a0000000000        /* KERNEL_CS: 64-bit code, DPL0 */
	.quad 0x00cf92000000ffff        /* KERNEL_DS: flat data, DPL0 */
	.quad 0x00cff2000000ffff        /* USER_DS: flat data, DPL3 */
	.quad 0x0020fa0000000000        /* USER_CS: 64-bit code, DPL3 */
gdt_tss:                                /* TSS_SEL: 16-byte system descriptor, base patched at entry */
	.word TSS_LIMIT, 0
	.byte 0, 0x89, 0, 0             /* present, DPL0, type 9 = available 64-bit TSS */
	.quad 0
gdt_end:

	.balign 8
gdt_ptr:                                /* loaded in 32-bit mode: 16-bit limit, 32-bit base */
	.word gdt_end - gdt - 1
	.long gdt
	.balign 8
idt_ptr:
	.word 256 * 16 - 1
	.quad idt
	.balign 8
empty_idt_ptr:
	.word 0
	.quad 0

	.balign 16
tss:
	.long 0
	.quad cpl0_stack_top            /* RSP0: the stack interrupts from CPL3 switch to */
	.quad 0, 0                      /* RSP1, RSP2 */
	.quad 0                         /* reserved */
	.quad 0, 0, 0, 0, 0, 0, 0       /* IST1..7 (unused) */
	.quad 0                         /* reserved */
	.word 0                         /* reserved */
	.word TSS_SIZE                  /* I/O map base: the bitmap follows */
	.fill IO_BITMAP_SIZE, 1, 0      /* all ports allowed at CPL3 (see the header comment) */
	.byte 0xff

	.globl pvh_start_info_gpa
	.balign 4
pvh_start_info_gpa:
	.long 0

	.globl lapic_gpa
	.balign 8
lapic_gpa:
	.quad 0xfee00000

/* Identity map of the first 4 GiB with 2 MiB pages, all with the U bit; the 32-bit MMIO hole */
/* (LAPIC, IOAPIC, virtio-mmio, unclaimed MMIO) is uncached. Built by the assembler: no CPL0 loop. */
	.section .data.pagetables, "aw"
	.balign 4096
pml4:
	.quad pdpt + PTE_TABLE
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + PTE_TABLE
	.quad pd + 0x1000 + PTE_TABLE
	.quad pd + 0x2000 + PTE_TABLE
	.quad pd + 0x3000 + PTE_TABLE
	.fill 508, 8, 0
pd:
	.set pa, 0
	.rept 2048
	.if pa >= MMIO_HOLE_START
	.quad pa + PTE_MMIO_2M
	.else
	.quad pa + PTE_RAM_2M
	.endif
	.set pa, pa + 0x200000
	.endr

/* ---------------------------------------------------------------------------------------- */
	.bss
	.balign 4096
	.globl idt
idt:
	.skip 256 * 16
	.globl irq_count
	.balign 8
irq_count:
	.skip 16 * 8
	.globl irq_eoi_mode
irq_eoi_mode:
	.skip 16

/* Stacks are NOBITS but outside .bss: user_entry zeroes .bss while running on the user stack. */
	.section .stack, "aw", @nobits
	.balign 16
	.skip CPL0_STACK_SIZE
cpl0_stack_top:
	.skip USER_STACK_SIZE
user_stack_top:

	.section .note.GNU-stack, "", @progbits
