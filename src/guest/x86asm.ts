// A small x86 machine-code emitter with labels, so guest programs can be written in TypeScript.
// Spec: Intel SDM Vol. 2 (instruction formats: ch. 2; opcode maps: appendix A).
//
// What it does: the instructions tsvmm's own guests need, in 16-, 32- and 64-bit code, with the
// shortest encoding GNU as would pick (x86asm.test.ts checks byte-for-byte against `as`), and
// labels resolved at link() time, with short/near jump selection done like as (relaxation).
// What it will not do: index registers (no [base+index*scale]), SPL/BPL/SIL/DIL and r8b-r15b,
// segment overrides, SSE and anything else no guest of ours uses yet. Unsupported operand
// combinations throw GuestBuildError('operand') rather than emitting something plausible.
//
// Usage:
//   const a = new Assembler({ bits: 32, originGpa: 0x100000 });
//   a.label('loop'); a.dec(ECX); a.jnz('loop'); a.hlt();
//   const bytes = a.link();
//
// An operand is a register (EAX, AL, CR0, DS...), a memory reference built with byte()/word()/
// dword()/qword()/mem(), a number (immediate) or a string (the absolute address of a label,
// used as an immediate).

import { GuestBuildError } from './guest-error.js';

export { GuestBuildError };

export type Bits = 16 | 32 | 64;
export type Width = 8 | 16 | 32 | 64;

/** A general-purpose register. `code` is the 4-bit register number (bit 3 goes into REX). */
export interface Gpr {
  readonly kind: 'gpr';
  readonly name: string;
  readonly width: Width;
  readonly code: number;
}
/** A segment register (code = the ModRM reg field of MOV Sreg). */
export interface SegReg {
  readonly kind: 'sreg';
  readonly name: string;
  readonly code: number;
}
/** A control register (code = n of CRn). */
export interface CtlReg {
  readonly kind: 'creg';
  readonly name: string;
  readonly code: number;
}

const gpr = (name: string, width: Width, code: number): Gpr => ({ kind: 'gpr', name, width, code });

export const AL = gpr('al', 8, 0), CL = gpr('cl', 8, 1), DL = gpr('dl', 8, 2), BL = gpr('bl', 8, 3);
export const AH = gpr('ah', 8, 4), CH = gpr('ch', 8, 5), DH = gpr('dh', 8, 6), BH = gpr('bh', 8, 7);
export const AX = gpr('ax', 16, 0), CX = gpr('cx', 16, 1), DX = gpr('dx', 16, 2), BX = gpr('bx', 16, 3);
export const SP = gpr('sp', 16, 4), BP = gpr('bp', 16, 5), SI = gpr('si', 16, 6), DI = gpr('di', 16, 7);
export const EAX = gpr('eax', 32, 0), ECX = gpr('ecx', 32, 1), EDX = gpr('edx', 32, 2), EBX = gpr('ebx', 32, 3);
export const ESP = gpr('esp', 32, 4), EBP = gpr('ebp', 32, 5), ESI = gpr('esi', 32, 6), EDI = gpr('edi', 32, 7);
export const RAX = gpr('rax', 64, 0), RCX = gpr('rcx', 64, 1), RDX = gpr('rdx', 64, 2), RBX = gpr('rbx', 64, 3);
export const RSP = gpr('rsp', 64, 4), RBP = gpr('rbp', 64, 5), RSI = gpr('rsi', 64, 6), RDI = gpr('rdi', 64, 7);
export const R8 = gpr('r8', 64, 8), R9 = gpr('r9', 64, 9), R10 = gpr('r10', 64, 10), R11 = gpr('r11', 64, 11);
export const R12 = gpr('r12', 64, 12), R13 = gpr('r13', 64, 13), R14 = gpr('r14', 64, 14), R15 = gpr('r15', 64, 15);
export const R8D = gpr('r8d', 32, 8), R9D = gpr('r9d', 32, 9), R10D = gpr('r10d', 32, 10), R11D = gpr('r11d', 32, 11);
export const R12D = gpr('r12d', 32, 12), R13D = gpr('r13d', 32, 13), R14D = gpr('r14d', 32, 14), R15D = gpr('r15d', 32, 15);

export const ES: SegReg = { kind: 'sreg', name: 'es', code: 0 };
export const CS: SegReg = { kind: 'sreg', name: 'cs', code: 1 };
export const SS: SegReg = { kind: 'sreg', name: 'ss', code: 2 };
export const DS: SegReg = { kind: 'sreg', name: 'ds', code: 3 };
export const FS: SegReg = { kind: 'sreg', name: 'fs', code: 4 };
export const GS: SegReg = { kind: 'sreg', name: 'gs', code: 5 };

export const CR0: CtlReg = { kind: 'creg', name: 'cr0', code: 0 };
export const CR2: CtlReg = { kind: 'creg', name: 'cr2', code: 2 };
export const CR3: CtlReg = { kind: 'creg', name: 'cr3', code: 3 };
export const CR4: CtlReg = { kind: 'creg', name: 'cr4', code: 4 };

/**
 * A memory operand: [base + disp], [disp] or [label + disp]. `width` is the access size
 * (undefined for lgdt/lidt/lea, whose operand has no size).
 */
export interface Mem {
  readonly kind: 'mem';
  readonly width: Width | undefined;
  readonly base: Gpr | undefined;
  readonly disp: number;
  readonly label: string | undefined;
}

/** Where a memory operand points: a register base, an absolute address, or a label. */
export type Address = Gpr | number | string;

function memRef(width: Width | undefined, where: Address, disp: number): Mem {
  if (typeof where === 'number') return { kind: 'mem', width, base: undefined, disp: where + disp, label: undefined };
  if (typeof where === 'string') return { kind: 'mem', width, base: undefined, disp, label: where };
  if (where.width === 8) throw new GuestBuildError('operand', `${where.name} cannot be a memory base register`);
  return { kind: 'mem', width, base: where, disp, label: undefined };
}
/** byte [where + disp] */
export const byte = (where: Address, disp = 0): Mem => memRef(8, where, disp);
/** word [where + disp] */
export const word = (where: Address, disp = 0): Mem => memRef(16, where, disp);
/** dword [where + disp] */
export const dword = (where: Address, disp = 0): Mem => memRef(32, where, disp);
/** qword [where + disp] */
export const qword = (where: Address, disp = 0): Mem => memRef(64, where, disp);
/** [where + disp] with no access size (lgdt, lidt, lea). */
export const mem = (where: Address, disp = 0): Mem => memRef(undefined, where, disp);

export type Operand = Gpr | SegReg | CtlReg | Mem | number | string;

/** Condition codes, as the low nibble of Jcc (70+cc rel8, 0F 80+cc rel32). */
export const CONDITION_CODES = {
  o: 0x0, no: 0x1, b: 0x2, c: 0x2, nae: 0x2, ae: 0x3, nb: 0x3, nc: 0x3,
  e: 0x4, z: 0x4, ne: 0x5, nz: 0x5, be: 0x6, na: 0x6, a: 0x7, nbe: 0x7,
  s: 0x8, ns: 0x9, p: 0xa, pe: 0xa, np: 0xb, po: 0xb,
  l: 0xc, nge: 0xc, ge: 0xd, nl: 0xd, le: 0xe, ng: 0xe, g: 0xf, nle: 0xf,
} as const;
export type Condition = keyof typeof CONDITION_CODES;

// ---------------------------------------------------------------------------------------------
// Internal representation: a list of items laid out by link().

type FixupKind =
  | 'abs8' | 'abs16' | 'abs32' | 'abs32s' | 'abs64' // the label's absolute address (abs32s: sign-extended to 64)
  | 'lo16' | 'hi16' // bits 0-15 or 16-31 of the label's 32-bit address (IDT gates split it this way)
  | 'rel8' | 'rel16' | 'rel32'; // label minus the end of the instruction

interface Fixup {
  /** Byte offset of the field inside its item. */
  readonly at: number;
  readonly kind: FixupKind;
  readonly label: string;
  readonly addend: number;
}

type Item =
  | { readonly kind: 'bytes'; readonly bytes: number[]; readonly fixups: Fixup[] }
  | { readonly kind: 'label'; readonly name: string }
  | { readonly kind: 'align'; readonly boundary: number; readonly fill: number }
  /** A jmp/jcc to a label: short (rel8) if it reaches, else near; chosen by link(). */
  | { readonly kind: 'branch'; readonly cond: number | undefined; readonly label: string; prefixBytes: number[]; near: boolean };

const FIELD_BYTES: Record<FixupKind, number> = {
  abs8: 1, abs16: 2, abs32: 4, abs32s: 4, abs64: 8, lo16: 2, hi16: 2, rel8: 1, rel16: 2, rel32: 4,
};

const fitsInt8 = (v: number): boolean => v >= -0x80 && v <= 0x7f;
const fitsInt32 = (v: number): boolean => v >= -0x8000_0000 && v <= 0x7fff_ffff;

/** One instruction being encoded: prefixes, REX, opcode, ModRM/SIB/displacement, immediate. */
class Encoding {
  readonly bytes: number[] = [];
  readonly fixups: Fixup[] = [];

  push(...bytes: number[]): void {
    for (const b of bytes) this.bytes.push(b & 0xff);
  }
  /** A little-endian field of `size` bytes holding `value`, or a label's address to be filled in. */
  field(value: number | bigint | string, size: 1 | 2 | 4 | 8, kind?: FixupKind, addend = 0): void {
    if (typeof value === 'string') {
      this.fixups.push({ at: this.bytes.length, kind: kind ?? absKind(size), label: value, addend });
      for (let i = 0; i < size; i++) this.bytes.push(0);
      return;
    }
    const bits = BigInt(size * 8);
    const big = BigInt(value);
    if (big < -(1n << (bits - 1n)) || big >= 1n << bits) {
      throw new GuestBuildError('range', `${value} does not fit a ${size * 8}-bit field`);
    }
    let v = BigInt.asUintN(size * 8, big);
    for (let i = 0; i < size; i++) {
      this.bytes.push(Number(v & 0xffn));
      v >>= 8n;
    }
  }
}

function absKind(size: 1 | 2 | 4 | 8): FixupKind {
  return size === 1 ? 'abs8' : size === 2 ? 'abs16' : size === 4 ? 'abs32' : 'abs64';
}

/** The immediate size for an operand width: imm8/imm16/imm32 (64-bit operations take imm32, sign-extended). */
const immBytes = (width: Width): 1 | 2 | 4 => (width === 8 ? 1 : width === 16 ? 2 : 4);

/** Normalise an immediate for a `width`-bit operation to a signed value, so 0xffffffff == -1 for 32 bits. */
function signedImm(value: number, width: Width): number {
  if (!Number.isInteger(value)) throw new GuestBuildError('operand', `immediate ${value} is not an integer`);
  if (width === 64) {
    if (!fitsInt32(value)) throw new GuestBuildError('range', `immediate ${value} does not fit a sign-extended imm32`);
    return value;
  }
  const limit = 2 ** width;
  if (value < -(limit / 2) || value >= limit) throw new GuestBuildError('range', `immediate ${value} does not fit ${width} bits`);
  return Number(BigInt.asIntN(width, BigInt(value)));
}

/** ALU operations sharing the classic encoding (opcode base 8*n, group-1 /n with 80/81/83). */
const ALU = { add: 0, or: 1, adc: 2, sbb: 3, and: 4, sub: 5, xor: 6, cmp: 7 } as const;
type AluOp = keyof typeof ALU;

/** Shift group 2 ModRM.reg values. */
const SHIFT = { shl: 4, shr: 5, sar: 7 } as const;

/** Prefix bytes, in the order GNU as emits them (address size, operand size, rep, lock, then REX). */
const PREFIX_ADDRESS_SIZE = 0x67;
const PREFIX_OPERAND_SIZE = 0x66;
const PREFIX_REP = 0xf3;
const PREFIX_LOCK = 0xf0;

export interface AssemblerOptions {
  /** The code size the processor will run this code in. */
  readonly bits: Bits;
  /** The address the first byte will be at, as the code sees it (physical address, or segment offset in real mode). */
  readonly originGpa: number;
}

export class Assembler {
  readonly bits: Bits;
  readonly originGpa: number;
  private readonly items: Item[] = [];
  private readonly labelNames = new Set<string>();
  private pendingRep = false;
  private pendingLock = false;
  private linked: { bytes: Uint8Array; labels: Map<string, number> } | undefined;

  constructor(options: AssemblerOptions) {
    this.bits = options.bits;
    this.originGpa = options.originGpa;
  }

  // -------------------------------------------------------------------------------------------
  // Labels and data

  /** Binds `name` to the current position. */
  label(name: string): this {
    if (this.labelNames.has(name)) throw new GuestBuildError('label', `label '${name}' is defined twice`);
    this.labelNames.add(name);
    this.items.push({ kind: 'label', name });
    return this;
  }

  /** Raw bytes, or the bytes of an ASCII string. */
  db(...values: (number | string)[]): this {
    const e = new Encoding();
    for (const v of values) {
      if (typeof v === 'string') for (const ch of v) e.push(asciiCode(ch));
      else e.field(v, 1);
    }
    return this.commit(e);
  }
  /** 16-bit little-endian words (a string is a label's address). */
  dw(...values: (number | string)[]): this {
    const e = new Encoding();
    for (const v of values) e.field(v, 2);
    return this.commit(e);
  }
  /** The low 16 bits of a label's 32-bit address (an IDT gate's offset 15..0). */
  dwAddressLow(label: string): this {
    const e = new Encoding();
    e.field(label, 2, 'lo16');
    return this.commit(e);
  }
  /** The high 16 bits of a label's 32-bit address (an IDT gate's offset 31..16). */
  dwAddressHigh(label: string): this {
    const e = new Encoding();
    e.field(label, 2, 'hi16');
    return this.commit(e);
  }
  /** 32-bit little-endian dwords (a string is a label's address). */
  dd(...values: (number | string)[]): this {
    const e = new Encoding();
    for (const v of values) e.field(v, 4);
    return this.commit(e);
  }
  /** 64-bit little-endian qwords (a string is a label's address). */
  dq(...values: (number | bigint | string)[]): this {
    const e = new Encoding();
    for (const v of values) e.field(v, 8);
    return this.commit(e);
  }
  /** A NUL-terminated ASCII string. */
  asciz(text: string): this {
    return this.db(text, 0);
  }
  /** `count` bytes of `fill`. */
  space(count: number, fill = 0): this {
    const e = new Encoding();
    for (let i = 0; i < count; i++) e.push(fill);
    return this.commit(e);
  }
  /** Pads with `fill` to a multiple of `boundary` (relative to address 0, not the origin). */
  align(boundary: number, fill = 0): this {
    if (boundary <= 0 || (boundary & (boundary - 1)) !== 0) throw new GuestBuildError('operand', `alignment ${boundary} is not a power of two`);
    this.items.push({ kind: 'align', boundary, fill });
    return this;
  }
  /** The bytes of another, already linked, program (e.g. a real-mode trampoline to copy elsewhere). */
  embed(bytes: Uint8Array): this {
    const e = new Encoding();
    e.push(...bytes);
    return this.commit(e);
  }

  // -------------------------------------------------------------------------------------------
  // Prefixes

  /** F0: the next instruction is atomic (only with a memory destination). */
  lock(): this {
    this.pendingLock = true;
    return this;
  }
  /** F3: repeat the next string instruction ECX times. */
  rep(): this {
    this.pendingRep = true;
    return this;
  }

  // -------------------------------------------------------------------------------------------
  // Data movement

  /**
   * mov dst, src.
   *   88/89 /r        mov r/m, r
   *   8A/8B /r        mov r, r/m
   *   A0/A1, A2/A3    mov al/eax, [moffs] and back (16/32-bit code, absolute address)
   *   B0+r ib, B8+r   mov r, imm (64-bit: REX.W C7 /0 id if it fits a sign-extended imm32, else REX.W B8+r iq)
   *   C6/C7 /0        mov r/m, imm
   *   8C /r, 8E /r    mov r/m, Sreg and mov Sreg, r/m
   *   0F 20 /r, 0F 22 /r  mov r, CRn and mov CRn, r
   */
  mov(dst: Operand, src: Operand): this {
    if (isSreg(dst)) {
      const s = this.rmOperand(src, 'mov Sreg, src');
      return this.modrm({ opcode: [0x8e], reg: dst.code, rm: s, width: undefined });
    }
    if (isSreg(src)) {
      const d = this.rmOperand(dst, 'mov dst, Sreg');
      return this.modrm({ opcode: [0x8c], reg: src.code, rm: d, width: undefined });
    }
    if (isCreg(dst)) return this.movCr(0x22, dst, src);
    if (isCreg(src)) return this.movCr(0x20, src, dst);

    if (isGpr(dst) && isGpr(src)) {
      sameWidth(dst, src);
      return this.modrm({ opcode: [dst.width === 8 ? 0x88 : 0x89], reg: src.code, rm: dst, width: dst.width });
    }
    if (isGpr(dst) && isMem(src)) {
      if (this.isMoffs(dst, src)) return this.moffs(dst.width === 8 ? 0xa0 : 0xa1, dst.width, src);
      return this.modrm({ opcode: [dst.width === 8 ? 0x8a : 0x8b], reg: dst.code, rm: src, width: dst.width });
    }
    if (isMem(dst) && isGpr(src)) {
      if (this.isMoffs(src, dst)) return this.moffs(src.width === 8 ? 0xa2 : 0xa3, src.width, dst);
      return this.modrm({ opcode: [src.width === 8 ? 0x88 : 0x89], reg: src.code, rm: dst, width: src.width });
    }
    if (isGpr(dst) && isImm(src)) return this.movRegImm(dst, src);
    if (isMem(dst) && isImm(src)) {
      const width = memWidth(dst, 'mov mem, imm');
      return this.modrm({ opcode: [width === 8 ? 0xc6 : 0xc7], reg: 0, rm: dst, width, imm: this.imm(src, width) });
    }
    throw badOperands('mov', dst, src);
  }

  /** movzx r, r/m8 (0F B6 /r) or r/m16 (0F B7 /r). */
  movzx(dst: Gpr, src: Gpr | Mem): this {
    const srcWidth = isGpr(src) ? src.width : memWidth(src, 'movzx');
    if (srcWidth !== 8 && srcWidth !== 16) throw new GuestBuildError('operand', 'movzx source must be 8 or 16 bits');
    return this.modrm({ opcode: [0x0f, srcWidth === 8 ? 0xb6 : 0xb7], reg: dst.code, rm: src, width: dst.width });
  }

  /** lea r, [mem] (8D /r): the address itself, no memory access. */
  lea(dst: Gpr, src: Mem): this {
    return this.modrm({ opcode: [0x8d], reg: dst.code, rm: src, width: dst.width });
  }

  /** push r (50+r), push imm (6A ib / 68 id). In 64-bit code a register push is 64 bits with no REX.W. */
  push(src: Gpr | number | string): this {
    const e = this.start();
    if (isGpr(src)) {
      this.operandPrefixes(e, this.bits === 64 ? undefined : src.width, src.code >= 8 ? 0x41 : 0);
      e.push(0x50 + (src.code & 7));
    } else if (typeof src === 'number' && fitsInt8(src)) {
      e.push(0x6a);
      e.field(src, 1);
    } else {
      e.push(0x68);
      e.field(src, this.bits === 16 ? 2 : 4);
    }
    return this.commit(e);
  }
  /** pop r (58+r). */
  pop(dst: Gpr): this {
    const e = this.start();
    this.operandPrefixes(e, this.bits === 64 ? undefined : dst.width, dst.code >= 8 ? 0x41 : 0);
    e.push(0x58 + (dst.code & 7));
    return this.commit(e);
  }

  /**
   * xchg: 90+r when one side is ax/eax/rax (but not xchg eax, eax in 64-bit code: 90 is nop there), else
   * 86/87 /r with ModRM.reg = the register (the second one for two registers). With memory it is
   * atomic without lock().
   */
  xchg(a: Gpr | Mem, b: Gpr | Mem): this {
    if (isGpr(a) && isGpr(b)) {
      sameWidth(a, b);
      const other = a.code === 0 ? b : b.code === 0 ? a : undefined;
      if (other && a.width !== 8 && !(this.bits === 64 && a.width === 32 && a.code === 0 && b.code === 0)) {
        const e = this.start();
        this.operandPrefixes(e, a.width, other.code >= 8 ? 0x41 : 0);
        e.push(0x90 + (other.code & 7));
        return this.commit(e);
      }
      return this.modrm({ opcode: [a.width === 8 ? 0x86 : 0x87], reg: b.code, rm: a, width: a.width });
    }
    const [reg, rm] = isGpr(a) ? [a, b] : [b, a];
    if (!isGpr(reg)) throw new GuestBuildError('operand', 'xchg needs at least one register');
    return this.modrm({ opcode: [reg.width === 8 ? 0x86 : 0x87], reg: reg.code, rm, width: reg.width });
  }

  /** pushf (9C): push EFLAGS at the code's native width (pushfd in 32-bit code, pushfq in 64-bit). */
  pushf(): this { return this.op(0x9c); }
  /** popf (9D): pop EFLAGS at the native width (popfd/popfq). */
  popf(): this { return this.op(0x9d); }

  /** xadd r/m, r (0F C0/C1 /r): exchange and add; with lock() an atomic fetch-and-add. */
  xadd(dst: Gpr | Mem, src: Gpr): this {
    return this.modrm({ opcode: [0x0f, src.width === 8 ? 0xc0 : 0xc1], reg: src.code, rm: dst, width: src.width });
  }

  // -------------------------------------------------------------------------------------------
  // Arithmetic and logic

  /** add/or/adc/sbb/and/sub/xor/cmp: see alu(). */
  add(dst: Gpr | Mem, src: Operand): this { return this.alu('add', dst, src); }
  or(dst: Gpr | Mem, src: Operand): this { return this.alu('or', dst, src); }
  adc(dst: Gpr | Mem, src: Operand): this { return this.alu('adc', dst, src); }
  sbb(dst: Gpr | Mem, src: Operand): this { return this.alu('sbb', dst, src); }
  and(dst: Gpr | Mem, src: Operand): this { return this.alu('and', dst, src); }
  sub(dst: Gpr | Mem, src: Operand): this { return this.alu('sub', dst, src); }
  xor(dst: Gpr | Mem, src: Operand): this { return this.alu('xor', dst, src); }
  cmp(dst: Gpr | Mem, src: Operand): this { return this.alu('cmp', dst, src); }

  /**
   * test r/m, r (84/85 /r); test al/ax/eax, imm (A8 ib / A9 iz); test r/m, imm (F6 /0 ib / F7 /0 iz).
   */
  test(dst: Gpr | Mem, src: Gpr | number): this {
    if (isGpr(src)) {
      if (isGpr(dst)) sameWidth(dst, src);
      return this.modrm({ opcode: [src.width === 8 ? 0x84 : 0x85], reg: src.code, rm: dst, width: src.width });
    }
    const width = isGpr(dst) ? dst.width : memWidth(dst, 'test mem, imm');
    if (isGpr(dst) && dst.code === 0) {
      const e = this.start();
      this.operandPrefixes(e, width, 0);
      e.push(width === 8 ? 0xa8 : 0xa9);
      e.field(signedImm(src, width), immBytes(width));
      return this.commit(e);
    }
    return this.modrm({ opcode: [width === 8 ? 0xf6 : 0xf7], reg: 0, rm: dst, width, imm: this.imm(src, width) });
  }

  /** inc r/m: 40+r in 16/32-bit code (that byte is REX in 64-bit code), else FE/FF /0. */
  inc(dst: Gpr | Mem): this { return this.incDec(0, dst); }
  /** dec r/m: 48+r in 16/32-bit code, else FE/FF /1. */
  dec(dst: Gpr | Mem): this { return this.incDec(1, dst); }

  /** not r/m (F6/F7 /2). */
  not(dst: Gpr | Mem): this { return this.group3(2, dst); }
  /** neg r/m (F6/F7 /3). */
  neg(dst: Gpr | Mem): this { return this.group3(3, dst); }
  /** mul r/m (F6/F7 /4): edx:eax = eax * src, unsigned. */
  mul(src: Gpr | Mem): this { return this.group3(4, src); }
  /** div r/m (F6/F7 /6): eax = edx:eax / src, edx = remainder, unsigned (#DE if the quotient overflows). */
  div(src: Gpr | Mem): this { return this.group3(6, src); }

  /** shl r/m, imm/cl: D0/D1 /4 for a count of 1, C0/C1 /4 ib, D2/D3 /4 for CL. */
  shl(dst: Gpr | Mem, count: number | Gpr): this { return this.shift('shl', dst, count); }
  /** shr r/m, imm/cl (group 2 /5). */
  shr(dst: Gpr | Mem, count: number | Gpr): this { return this.shift('shr', dst, count); }
  /** sar r/m, imm/cl (group 2 /7). */
  sar(dst: Gpr | Mem, count: number | Gpr): this { return this.shift('sar', dst, count); }

  // -------------------------------------------------------------------------------------------
  // Control flow

  /** jmp label: EB rel8 if it reaches, else E9 rel32 (rel16 in 16-bit code); jmp r/m: FF /4. */
  jmp(target: string | Gpr | Mem): this {
    if (typeof target === 'string') return this.branch(undefined, target);
    return this.modrm({ opcode: [0xff], reg: 4, rm: target, width: undefined });
  }
  /** jcc label: 70+cc rel8 if it reaches, else 0F 80+cc rel32 (rel16 in 16-bit code). */
  j(cond: Condition, target: string): this {
    return this.branch(CONDITION_CODES[cond], target);
  }
  je(target: string): this { return this.j('e', target); }
  jne(target: string): this { return this.j('ne', target); }
  jz(target: string): this { return this.j('z', target); }
  jnz(target: string): this { return this.j('nz', target); }
  jb(target: string): this { return this.j('b', target); }
  jae(target: string): this { return this.j('ae', target); }
  jbe(target: string): this { return this.j('be', target); }
  ja(target: string): this { return this.j('a', target); }
  jl(target: string): this { return this.j('l', target); }
  jge(target: string): this { return this.j('ge', target); }

  /** call label: E8 rel32 (rel16 in 16-bit code); call r/m: FF /2. */
  call(target: string | Gpr | Mem): this {
    if (typeof target !== 'string') return this.modrm({ opcode: [0xff], reg: 2, rm: target, width: undefined });
    const e = this.start();
    e.push(0xe8);
    e.field(target, this.bits === 16 ? 2 : 4, this.bits === 16 ? 'rel16' : 'rel32');
    return this.commit(e);
  }
  /** ret (C3), or ret imm16 (C2 iw): return, then drop `popBytes` more bytes of stack. */
  ret(popBytes = 0): this {
    if (popBytes === 0) return this.op(0xc3);
    const e = this.start();
    this.operandPrefixes(e, undefined, 0);
    e.push(0xc2);
    e.field(popBytes, 2);
    return this.commit(e);
  }
  /**
   * iret (CF); iretq (REX.W CF) in 64-bit code. Caution: on hosts whose KVM emulates CPL0 code
   * (see shared/guide/HOST.md), KVM's emulator handles iret only in real mode; in protected or
   * long mode the vCPU stops with an emulation failure. default-guest.ts shows a way around it.
   */
  iret(): this { return this.bits === 64 ? this.op(0x48, 0xcf) : this.op(0xcf); }

  /**
   * jmp far selector:label (EA ptr16:32, or ptr16:16 in 16-bit code): reloads CS, e.g. after lgdt.
   * Not encodable in 64-bit code.
   */
  jmpFar(selector: number, target: string | number): this {
    if (this.bits === 64) throw new GuestBuildError('operand', 'jmp far ptr16:32 (EA) does not exist in 64-bit code');
    const e = this.start();
    e.push(0xea);
    e.field(target, this.bits === 16 ? 2 : 4);
    e.field(selector, 2);
    return this.commit(e);
  }

  // -------------------------------------------------------------------------------------------
  // Port I/O

  /** in al/ax/eax, imm8 (E4/E5 ib) or dx (EC/ED). */
  in(dst: Gpr, port: number | Gpr): this {
    if (dst.code !== 0 || dst.width === 64) throw new GuestBuildError('operand', `in needs al, ax or eax, not ${dst.name}`);
    return this.portIo(dst.width === 8 ? 0xe4 : 0xe5, dst.width, port);
  }
  /** out imm8, al/ax/eax (E6/E7 ib) or out dx, ... (EE/EF). */
  out(port: number | Gpr, src: Gpr): this {
    if (src.code !== 0 || src.width === 64) throw new GuestBuildError('operand', `out needs al, ax or eax, not ${src.name}`);
    return this.portIo(src.width === 8 ? 0xe6 : 0xe7, src.width, port);
  }

  // -------------------------------------------------------------------------------------------
  // String instructions (use rep() for the repeated forms)

  /** movsb (A4): byte [edi++] = byte [esi++]. */
  movsb(): this { return this.op(0xa4); }
  /** movsd (A5, with 66 in 16-bit code). */
  movsd(): this { return this.sized(32, 0xa5); }
  /** stosb (AA): byte [edi++] = al. */
  stosb(): this { return this.op(0xaa); }
  /** stosd (AB). */
  stosd(): this { return this.sized(32, 0xab); }
  /** lodsb (AC): al = byte [esi++]. */
  lodsb(): this { return this.op(0xac); }

  // -------------------------------------------------------------------------------------------
  // System instructions

  /** cli (FA). */
  cli(): this { return this.op(0xfa); }
  /** sti (FB): interrupts are enabled after the next instruction, so `sti; hlt` cannot miss one. */
  sti(): this { return this.op(0xfb); }
  /** hlt (F4). */
  hlt(): this { return this.op(0xf4); }
  /** cld (FC): string instructions count up. */
  cld(): this { return this.op(0xfc); }
  /** nop (90). */
  nop(): this { return this.op(0x90); }
  /** pause (F3 90): spin-loop hint. */
  pause(): this { return this.op(0xf3, 0x90); }
  /** cpuid (0F A2). */
  cpuid(): this { return this.op(0x0f, 0xa2); }
  /** rdtsc (0F 31): edx:eax = time-stamp counter. */
  rdtsc(): this { return this.op(0x0f, 0x31); }
  /** rdmsr (0F 32): edx:eax = MSR[ecx]. */
  rdmsr(): this { return this.op(0x0f, 0x32); }
  /** wrmsr (0F 30): MSR[ecx] = edx:eax. */
  wrmsr(): this { return this.op(0x0f, 0x30); }
  /** lgdt [m] (0F 01 /2): load GDTR from a limit:base pseudo-descriptor. */
  lgdt(src: Mem): this { return this.modrm({ opcode: [0x0f, 0x01], reg: 2, rm: src, width: undefined }); }
  /** lidt [m] (0F 01 /3). */
  lidt(src: Mem): this { return this.modrm({ opcode: [0x0f, 0x01], reg: 3, rm: src, width: undefined }); }

  // -------------------------------------------------------------------------------------------
  // Linking

  /**
   * Lays out the program, choosing short or near for each label branch (start short, widen the
   * ones that do not reach, repeat: branches only grow, so this ends), then fills in fix-ups.
   */
  link(): Uint8Array {
    if (this.linked) return this.linked.bytes;
    if (this.pendingLock || this.pendingRep) throw new GuestBuildError('operand', 'lock()/rep() at the end of the program has no instruction to apply to');
    let labels: Map<string, number>;
    for (let pass = 0; ; pass++) {
      labels = this.layout();
      const next = labels;
      let grew = false;
      let offset = 0;
      for (const item of this.items) {
        if (item.kind === 'branch' && !item.near) {
          const target = next.get(item.label);
          if (target === undefined) throw undefinedLabel(item.label);
          const end = offset + this.branchSize(item);
          if (!fitsInt8(target - (this.originGpa + end))) {
            item.near = true;
            grew = true;
          }
        }
        offset += this.itemSize(item, offset);
      }
      if (!grew) break; // every short branch reaches with these very addresses: done
      if (pass > this.items.length) throw new GuestBuildError('range', 'branch relaxation did not settle');
    }

    const out: number[] = [];
    for (const item of this.items) {
      const start = out.length;
      if (item.kind === 'bytes') {
        out.push(...item.bytes);
        for (const f of item.fixups) this.applyFixup(out, start, item.bytes.length, f, labels);
      } else if (item.kind === 'align') {
        const pad = this.itemSize(item, start);
        for (let i = 0; i < pad; i++) out.push(item.fill);
      } else if (item.kind === 'branch') {
        const bytes = this.branchBytes(item);
        out.push(...bytes);
        const size = FIELD_BYTES[this.branchFixupKind(item)];
        this.applyFixup(out, start, bytes.length, { at: bytes.length - size, kind: this.branchFixupKind(item), label: item.label, addend: 0 }, labels);
      }
    }
    this.linked = { bytes: Uint8Array.from(out), labels };
    return this.linked.bytes;
  }

  /** The address of a label (after link()). */
  addressOf(name: string): number {
    const labels = this.linked?.labels ?? (this.link(), this.linked!.labels);
    const address = labels.get(name);
    if (address === undefined) throw undefinedLabel(name);
    return address;
  }

  // -------------------------------------------------------------------------------------------
  // Encoding helpers

  private start(): Encoding {
    if (this.linked) throw new GuestBuildError('operand', 'the program is already linked; no more instructions can be added');
    return new Encoding();
  }

  private commit(e: Encoding): this {
    if (this.pendingLock || this.pendingRep) throw new GuestBuildError('operand', 'lock()/rep() must be followed by an instruction');
    this.items.push({ kind: 'bytes', bytes: e.bytes, fixups: e.fixups });
    return this;
  }

  /** Operand-size (66), rep (F3), lock (F0) and REX prefixes for an operation of `width` bits. */
  private operandPrefixes(e: Encoding, width: Width | undefined, rexBits: number, addressSize = false): void {
    if (addressSize) e.push(PREFIX_ADDRESS_SIZE);
    if ((width === 16 && this.bits !== 16) || (width === 32 && this.bits === 16)) e.push(PREFIX_OPERAND_SIZE);
    if (this.pendingRep) e.push(PREFIX_REP);
    if (this.pendingLock) e.push(PREFIX_LOCK);
    this.pendingRep = this.pendingLock = false;
    let rex = rexBits;
    if (width === 64) {
      if (this.bits !== 64) throw new GuestBuildError('operand', `64-bit operands need 64-bit code, not ${this.bits}-bit`);
      rex |= 0x48; // REX.W
    }
    if (rex !== 0) {
      if (this.bits !== 64) throw new GuestBuildError('operand', 'r8-r15 need 64-bit code');
      e.push(0x40 | rex);
    }
  }

  /** An instruction with no operands. */
  private op(...bytes: number[]): this {
    const e = this.start();
    this.operandPrefixes(e, undefined, 0);
    e.push(...bytes);
    return this.commit(e);
  }

  /** An instruction with no explicit operands whose size follows the operand size (movsd, stosd). */
  private sized(width: Width, ...bytes: number[]): this {
    const e = this.start();
    this.operandPrefixes(e, width, 0);
    e.push(...bytes);
    return this.commit(e);
  }

  /**
   * The general form: [prefixes] opcode ModRM [SIB] [disp] [imm], with `reg` in ModRM.reg and
   * `rm` (a register or memory operand) in ModRM.mod/rm.
   */
  private modrm(args: {
    opcode: number[];
    reg: number;
    rm: Gpr | Mem;
    width: Width | undefined;
    imm?: { value: number | string; size: 1 | 2 | 4; kind?: FixupKind };
  }): this {
    const { opcode, reg, rm, width, imm } = args;
    const e = this.start();
    let rex = reg >= 8 ? 0x44 : 0; // REX.R
    if (isGpr(rm)) {
      if (rm.code >= 8) rex |= 0x41; // REX.B
      this.operandPrefixes(e, width, rex & 0x0f);
      e.push(...opcode);
      e.push(0xc0 | ((reg & 7) << 3) | (rm.code & 7)); // mod=11: register direct
    } else {
      if (rm.base && rm.base.code >= 8) rex |= 0x41;
      if (rm.base && rm.base.width !== (this.bits === 64 ? 64 : 32)) {
        throw new GuestBuildError('operand', `base register ${rm.base.name} has the wrong size for ${this.bits}-bit code (16-bit code uses 32-bit bases with a 67 prefix)`);
      }
      const addressSize = this.bits === 16 && rm.base !== undefined; // [reg+disp] in real mode: 67 + 32-bit form
      this.operandPrefixes(e, width, rex & 0x0f, addressSize);
      e.push(...opcode);
      this.memoryOperand(e, reg & 7, rm);
    }
    if (imm) e.field(imm.value, imm.size, imm.kind);
    return this.commit(e);
  }

  /** ModRM, SIB and displacement for a memory operand. */
  private memoryOperand(e: Encoding, reg: number, m: Mem): void {
    const dispField = (size: 1 | 2 | 4, kind?: FixupKind): void =>
      m.label !== undefined ? e.field(m.label, size, kind, m.disp) : e.field(m.disp, size);
    if (m.base === undefined) {
      if (this.bits === 16) {
        if (m.label === undefined && (m.disp < 0 || m.disp > 0xffff)) throw new GuestBuildError('range', `[0x${m.disp.toString(16)}] does not fit a 16-bit offset`);
        e.push(0x06 | (reg << 3)); // mod=00 rm=110: [disp16]
        dispField(2);
      } else if (this.bits === 32) {
        e.push(0x05 | (reg << 3)); // mod=00 rm=101: [disp32]
        dispField(4);
      } else if (m.label !== undefined) {
        e.push(0x05 | (reg << 3)); // mod=00 rm=101 in 64-bit code: [rip + disp32]
        dispField(4, 'rel32');
      } else {
        e.push(0x04 | (reg << 3), 0x25); // mod=00 rm=100, SIB base=101 index=100: [disp32], absolute
        dispField(4, 'abs32s');
      }
      return;
    }
    const base = m.base.code & 7;
    const needsSib = base === 4; // rm=100 means "SIB follows", so [esp]/[r12] need a SIB with no index
    let mod: number;
    if (m.label !== undefined) mod = 2;
    else if (m.disp === 0 && base !== 5) mod = 0; // mod=00 rm=101 means [disp32]/[rip], so [ebp] needs a disp8 of 0
    else if (fitsInt8(m.disp)) mod = 1;
    else mod = 2;
    e.push((mod << 6) | (reg << 3) | (needsSib ? 4 : base));
    if (needsSib) e.push(0x24); // SIB: scale=0, index=100 (none), base=100
    if (mod === 1) e.field(m.disp, 1);
    if (mod === 2) dispField(4, this.bits === 64 ? 'abs32s' : 'abs32'); // sign-extended in 64-bit code
  }

  private rmOperand(op: Operand, what: string): Gpr | Mem {
    if (isGpr(op) || isMem(op)) return op;
    throw new GuestBuildError('operand', `${what}: expected a register or memory operand, got ${describe(op)}`);
  }

  private imm(value: number | string, width: Width): { value: number | string; size: 1 | 2 | 4; kind?: FixupKind } {
    if (typeof value === 'string') {
      if (width === 8 || width === 16) throw new GuestBuildError('operand', `a label address does not fit ${width} bits`);
      return { value, size: 4, kind: width === 64 ? 'abs32s' : 'abs32' };
    }
    return { value: signedImm(value, width), size: immBytes(width) };
  }

  private isMoffs(reg: Gpr, m: Mem): boolean {
    return reg.code === 0 && this.bits !== 64 && m.base === undefined;
  }

  /** A0-A3: mov between al/ax/eax and an absolute address, no ModRM. */
  private moffs(opcode: number, width: Width, m: Mem): this {
    const e = this.start();
    this.operandPrefixes(e, width, 0);
    e.push(opcode);
    const size = this.bits === 16 ? 2 : 4;
    if (this.bits === 16 && m.label === undefined && (m.disp < 0 || m.disp > 0xffff)) {
      throw new GuestBuildError('range', `[0x${m.disp.toString(16)}] does not fit a 16-bit offset`);
    }
    if (m.label !== undefined) e.field(m.label, size, undefined, m.disp);
    else e.field(m.disp, size);
    return this.commit(e);
  }

  private movRegImm(dst: Gpr, src: number | string): this {
    if (dst.width === 64 && (typeof src === 'string' || fitsInt32(src))) {
      return this.modrm({ opcode: [0xc7], reg: 0, rm: dst, width: 64, imm: this.imm(src, 64) });
    }
    const e = this.start();
    this.operandPrefixes(e, dst.width, dst.code >= 8 ? 0x41 : 0);
    e.push((dst.width === 8 ? 0xb0 : 0xb8) + (dst.code & 7));
    if (dst.width === 64) e.field(src as number, 8); // movabs: REX.W B8+r iq
    else if (typeof src === 'string') e.field(src, immBytes(dst.width));
    else e.field(signedImm(src, dst.width), immBytes(dst.width));
    return this.commit(e);
  }

  private movCr(opcode: 0x20 | 0x22, cr: CtlReg, other: Operand): this {
    if (!isGpr(other) || other.width !== (this.bits === 64 ? 64 : 32)) {
      throw new GuestBuildError('operand', `mov to/from ${cr.name} needs a ${this.bits === 64 ? 64 : 32}-bit register`);
    }
    // The operand size is fixed (32 or 64 bits by mode), so no REX.W and no 66.
    return this.modrm({ opcode: [0x0f, opcode], reg: cr.code, rm: other, width: undefined });
  }

  /**
   * Group 1 ALU: 00+8n.. r/m,r (base+0/+1); r,r/m (base+2/+3); al/eax,imm (base+4/+5);
   * r/m,imm8 sign-extended (83 /n ib); r/m,imm (80 /n ib, 81 /n iz).
   */
  private alu(op: AluOp, dst: Gpr | Mem, src: Operand): this {
    const n = ALU[op];
    const base = n * 8;
    if (isGpr(src)) {
      if (isGpr(dst)) sameWidth(dst, src);
      return this.modrm({ opcode: [base + (src.width === 8 ? 0 : 1)], reg: src.code, rm: dst, width: src.width });
    }
    if (isMem(src)) {
      if (!isGpr(dst)) throw badOperands(op, dst, src);
      return this.modrm({ opcode: [base + (dst.width === 8 ? 2 : 3)], reg: dst.code, rm: src, width: dst.width });
    }
    if (!isImm(src)) throw badOperands(op, dst, src);
    const width = isGpr(dst) ? dst.width : memWidth(dst, `${op} mem, imm`);
    if (width === 8) {
      if (isGpr(dst) && dst.code === 0) return this.accImm(base + 4, 8, src);
      return this.modrm({ opcode: [0x80], reg: n, rm: dst, width, imm: this.imm(src, 8) });
    }
    if (typeof src === 'number' && fitsInt8(signedImm(src, width))) {
      return this.modrm({ opcode: [0x83], reg: n, rm: dst, width, imm: { value: signedImm(src, width), size: 1 } });
    }
    if (isGpr(dst) && dst.code === 0) return this.accImm(base + 5, width, src);
    return this.modrm({ opcode: [0x81], reg: n, rm: dst, width, imm: this.imm(src, width) });
  }

  /** The short accumulator forms: op al/ax/eax/rax, imm. */
  private accImm(opcode: number, width: Width, src: number | string): this {
    const e = this.start();
    this.operandPrefixes(e, width, 0);
    e.push(opcode);
    const imm = this.imm(src, width);
    e.field(imm.value, imm.size, imm.kind);
    return this.commit(e);
  }

  private incDec(n: 0 | 1, dst: Gpr | Mem): this {
    if (isGpr(dst) && dst.width !== 8 && this.bits !== 64) {
      const e = this.start();
      this.operandPrefixes(e, dst.width, 0);
      e.push(0x40 + n * 8 + dst.code);
      return this.commit(e);
    }
    const width = isGpr(dst) ? dst.width : memWidth(dst, n === 0 ? 'inc' : 'dec');
    return this.modrm({ opcode: [width === 8 ? 0xfe : 0xff], reg: n, rm: dst, width });
  }

  private group3(n: number, dst: Gpr | Mem): this {
    const width = isGpr(dst) ? dst.width : memWidth(dst, 'not/neg/mul/div');
    return this.modrm({ opcode: [width === 8 ? 0xf6 : 0xf7], reg: n, rm: dst, width });
  }

  private shift(op: keyof typeof SHIFT, dst: Gpr | Mem, count: number | Gpr): this {
    const n = SHIFT[op];
    const width = isGpr(dst) ? dst.width : memWidth(dst, op);
    const w = width === 8 ? 0 : 1;
    if (isGpr(count)) {
      if (count !== CL) throw new GuestBuildError('operand', `${op}: the count register must be cl, not ${count.name}`);
      return this.modrm({ opcode: [0xd2 + w], reg: n, rm: dst, width });
    }
    if (count === 1) return this.modrm({ opcode: [0xd0 + w], reg: n, rm: dst, width });
    if (count < 0 || count > 63) throw new GuestBuildError('range', `${op}: shift count ${count} is out of range`);
    return this.modrm({ opcode: [0xc0 + w], reg: n, rm: dst, width, imm: { value: count, size: 1 } });
  }

  private portIo(opcode: number, width: Width, port: number | Gpr): this {
    const e = this.start();
    this.operandPrefixes(e, width === 8 ? undefined : width, 0);
    if (typeof port === 'number') {
      if (port < 0 || port > 0xff) throw new GuestBuildError('range', `port 0x${port.toString(16)} needs dx (imm8 ports are 0-0xff)`);
      e.push(opcode, port);
    } else {
      if (port !== DX) throw new GuestBuildError('operand', `the port register must be dx, not ${port.name}`);
      e.push(opcode + 8); // EC-EF: the dx forms
    }
    return this.commit(e);
  }

  private branch(cond: number | undefined, label: string): this {
    const prefix = this.start();
    this.operandPrefixes(prefix, undefined, 0); // consumes a stray lock/rep (there should be none)
    this.items.push({ kind: 'branch', cond, label, prefixBytes: prefix.bytes, near: false });
    return this;
  }

  private branchBytes(item: Extract<Item, { kind: 'branch' }>): number[] {
    const relBytes = item.near ? (this.bits === 16 ? 2 : 4) : 1;
    const zeros = new Array<number>(relBytes).fill(0);
    if (item.cond === undefined) return [...item.prefixBytes, item.near ? 0xe9 : 0xeb, ...zeros];
    return item.near ? [...item.prefixBytes, 0x0f, 0x80 + item.cond, ...zeros] : [...item.prefixBytes, 0x70 + item.cond, ...zeros];
  }

  private branchFixupKind(item: Extract<Item, { kind: 'branch' }>): FixupKind {
    return !item.near ? 'rel8' : this.bits === 16 ? 'rel16' : 'rel32';
  }

  private branchSize(item: Extract<Item, { kind: 'branch' }>): number {
    return this.branchBytes(item).length;
  }

  private itemSize(item: Item, offset: number): number {
    switch (item.kind) {
      case 'bytes': return item.bytes.length;
      case 'label': return 0;
      case 'align': return (item.boundary - ((this.originGpa + offset) % item.boundary)) % item.boundary;
      case 'branch': return this.branchSize(item);
    }
  }

  /** Label addresses for the current choice of branch sizes. */
  private layout(): Map<string, number> {
    const labels = new Map<string, number>();
    let offset = 0;
    for (const item of this.items) {
      if (item.kind === 'label') labels.set(item.name, this.originGpa + offset);
      offset += this.itemSize(item, offset);
    }
    return labels;
  }

  private applyFixup(out: number[], itemStart: number, itemLength: number, f: Fixup, labels: Map<string, number>): void {
    const target = labels.get(f.label);
    if (target === undefined) throw undefinedLabel(f.label);
    const size = FIELD_BYTES[f.kind];
    let value: number;
    if (f.kind.startsWith('rel')) {
      // Relative to the end of the instruction (for a branch or RIP-relative operand).
      value = target + f.addend - (this.originGpa + itemStart + itemLength);
      const limit = 2 ** (size * 8 - 1);
      if (value < -limit || value >= limit) throw new GuestBuildError('range', `label '${f.label}' is ${value} bytes away: out of ${f.kind} range`);
    } else if (f.kind === 'lo16' || f.kind === 'hi16') {
      const address = target + f.addend;
      if (address < 0 || address >= 2 ** 32) throw new GuestBuildError('range', `address 0x${address.toString(16)} of '${f.label}' is not a 32-bit address`);
      value = f.kind === 'lo16' ? address & 0xffff : address >>> 16;
    } else {
      value = target + f.addend;
      const ok =
        f.kind === 'abs32s' ? fitsInt32(value) : f.kind === 'abs64' ? value >= 0 : value >= 0 && value < 2 ** (size * 8);
      if (!ok) throw new GuestBuildError('range', `address 0x${value.toString(16)} of '${f.label}' does not fit ${f.kind}`);
    }
    let v = BigInt.asUintN(size * 8, BigInt(value));
    for (let i = 0; i < size; i++) {
      out[itemStart + f.at + i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
}

// ---------------------------------------------------------------------------------------------

const isGpr = (op: unknown): op is Gpr => typeof op === 'object' && op !== null && (op as Gpr).kind === 'gpr';
const isSreg = (op: unknown): op is SegReg => typeof op === 'object' && op !== null && (op as SegReg).kind === 'sreg';
const isCreg = (op: unknown): op is CtlReg => typeof op === 'object' && op !== null && (op as CtlReg).kind === 'creg';
const isMem = (op: unknown): op is Mem => typeof op === 'object' && op !== null && (op as Mem).kind === 'mem';
const isImm = (op: unknown): op is number | string => typeof op === 'number' || typeof op === 'string';

function describe(op: Operand): string {
  if (typeof op === 'number') return `immediate ${op}`;
  if (typeof op === 'string') return `label '${op}'`;
  if (op.kind === 'mem') return 'a memory operand';
  return op.name;
}

function badOperands(what: string, dst: Operand, src: Operand): GuestBuildError {
  return new GuestBuildError('operand', `${what} ${describe(dst)}, ${describe(src)}: no such encoding here`);
}

function sameWidth(a: Gpr, b: Gpr): void {
  if (a.width !== b.width) throw new GuestBuildError('operand', `${a.name} and ${b.name} have different sizes`);
}

function memWidth(m: Mem, what: string): Width {
  if (m.width === undefined) throw new GuestBuildError('operand', `${what}: say the access size with byte()/word()/dword()/qword()`);
  return m.width;
}

function undefinedLabel(name: string): GuestBuildError {
  return new GuestBuildError('label', `label '${name}' is used but never defined`);
}

function asciiCode(ch: string): number {
  const code = ch.codePointAt(0)!;
  if (code > 0x7f) throw new GuestBuildError('operand', `'${ch}' is not ASCII`);
  return code;
}
