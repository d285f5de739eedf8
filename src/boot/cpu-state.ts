// The CPU state a boot protocol promises at the kernel's first instruction: the boot GDT, the
// identity page tables for 64-bit entry, and the registers. Specs: Linux
// Documentation/arch/x86/boot.rst ("64-bit Boot Protocol"), Xen docs/misc/pvh.pandoc.
import type { Regs, Segment, Sregs } from '../hypervisor/types.js';
import type { BootMemory } from '../memory/guest-memory.js';
import { BOOT_GDT_GPA, BOOT_IDT_GPA, PD_GPA, PDPT_GPA, PML4_GPA } from './layout.js';

// GDT layout: Linux's 64-bit protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
export const BOOT_CS64 = 0x10;
export const BOOT_DS = 0x18;
export const BOOT_TSS = 0x20;
export const BOOT_CS32 = 0x28;
const GDT_ENTRIES: bigint[] = [
  0n, // null
  0n, // unused
  0x00af9b000000ffffn, // 0x10: 64-bit code, DPL0, flat
  0x00cf93000000ffffn, // 0x18: data, read/write, flat 4 GiB
  0x00008b0000000067n, // 0x20: 32-bit TSS (busy), base 0, limit 0x67
  0x00cf9b000000ffffn, // 0x28: 32-bit code, flat 4 GiB
];

/** Decodes a GDT descriptor into KVM's segment form (so the two can never disagree). */
export function segmentFromDescriptor(selector: number, d: bigint): Segment {
  const lo = Number(d & 0xffffffffn);
  const hi = Number(d >> 32n);
  const base = BigInt(((lo >>> 16) & 0xffff) | ((hi & 0xff) << 16) | (hi & 0xff000000)) & 0xffffffffn;
  let limit = (lo & 0xffff) | (hi & 0xf0000);
  const g = (hi >>> 23) & 1;
  if (g) limit = limit * 4096 + 0xfff;
  return {
    base, limit: limit >>> 0, selector, type: (hi >>> 8) & 0xf, present: (hi >>> 15) & 1, dpl: (hi >>> 13) & 3,
    db: (hi >>> 22) & 1, s: (hi >>> 12) & 1, l: (hi >>> 21) & 1, g, avl: (hi >>> 20) & 1, unusable: 0,
  };
}

function segment(selector: number): Segment {
  return segmentFromDescriptor(selector, GDT_ENTRIES[selector >> 3]!);
}

export function writeBootGdt(mem: BootMemory): void {
  GDT_ENTRIES.forEach((d, i) => mem.writeU64(BOOT_GDT_GPA + i * 8, d));
  mem.fill(BOOT_IDT_GPA, 8, 0);
}

/** Identity-maps the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..3] -> four PDs. */
export function writeIdentityPageTables(mem: BootMemory): void {
  const PRESENT_RW = 0x3n;
  const PAGE_SIZE_2M = 0x80n;
  mem.fill(PML4_GPA, 0x1000, 0);
  mem.fill(PDPT_GPA, 0x1000, 0);
  mem.writeU64(PML4_GPA, BigInt(PDPT_GPA) | PRESENT_RW);
  for (let i = 0; i < 4; i++) {
    mem.writeU64(PDPT_GPA + i * 8, BigInt(PD_GPA + i * 0x1000) | PRESENT_RW);
    for (let j = 0; j < 512; j++) {
      const gpa = BigInt(i) * 0x4000_0000n + BigInt(j) * 0x20_0000n;
      mem.writeU64(PD_GPA + i * 0x1000 + j * 8, gpa | PRESENT_RW | PAGE_SIZE_2M);
    }
  }
}

const X86_CR0_PE = 1n << 0n;
const X86_CR0_ET = 1n << 4n;
const X86_CR0_PG = 1n << 31n;
const X86_CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const X86_EFLAGS_FIXED = 0x2n;

function zeroRegs(): Regs {
  return {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n, r8: 0n, r9: 0n, r10: 0n, r11: 0n,
    r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0n, rflags: X86_EFLAGS_FIXED,
  };
}

function flatSregs(base: Sregs, cs: number): Sregs {
  const ds = segment(BOOT_DS);
  return {
    ...base, cs: segment(cs), ds, es: ds, fs: ds, gs: ds, ss: ds, tr: segment(BOOT_TSS),
    gdt: { base: BigInt(BOOT_GDT_GPA), limit: GDT_ENTRIES.length * 8 - 1 },
    idt: { base: BigInt(BOOT_IDT_GPA), limit: 0 },
  };
}

/** PVH: 32-bit protected mode, paging off, flat segments, EBX = hvm_start_info. */
export function pvhBootState(current: Sregs, entryGpa: number, startInfoGpa: number): { regs: Regs; sregs: Sregs } {
  const regs = zeroRegs();
  regs.rip = BigInt(entryGpa);
  regs.rbx = BigInt(startInfoGpa);
  const sregs = flatSregs(current, BOOT_CS32);
  sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
  sregs.cr3 = 0n;
  sregs.cr4 = 0n;
  sregs.efer = 0n;
  return { regs, sregs };
}

/** Linux 64-bit boot protocol: long mode, identity paging, RSI = zero page, entry at load + 0x200. */
export function linux64BootState(current: Sregs, entryGpa: number, zeroPageGpa: number, stackGpa: number): { regs: Regs; sregs: Sregs } {
  const regs = zeroRegs();
  regs.rip = BigInt(entryGpa);
  regs.rsi = BigInt(zeroPageGpa);
  regs.rsp = BigInt(stackGpa);
  regs.rbp = BigInt(stackGpa);
  const sregs = flatSregs(current, BOOT_CS64);
  sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
  sregs.cr3 = BigInt(PML4_GPA);
  sregs.cr4 = X86_CR4_PAE;
  sregs.efer = EFER_LME | EFER_LMA;
  return { regs, sregs };
}
