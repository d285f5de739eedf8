// Checks the emitter byte-for-byte against GNU as (binutils 2.40, `as --32`/`as --64`, Intel
// syntax, disassembled with objdump). The expected bytes were produced by as when these tests
// were written and are kept here as literals, so the tests do not need binutils.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  AL, AH, AX, BX, CL, DX, EAX, EBP, EBX, ECX, EDI, EDX, ESI, ESP, RAX, RBX, RCX, RDX, RSP,
  R8, R9D, R12, R13, R15, CR0, CR3, CR4, CS, DS, SS,
  Assembler, GuestBuildError, byte, dword, mem, qword, word,
  type Bits,
} from './x86asm.js';

type Case = readonly [gas: string, emit: (a: Assembler) => unknown, expectedHex: string];

const CASES_16: Case[] = [
  ['cli', (a) => a.cli(), 'fa'],
  ['mov ax, cs', (a) => a.mov(AX, CS), '8c c8'],
  ['mov ds, ax', (a) => a.mov(DS, AX), '8e d8'],
  ['mov ss, ax', (a) => a.mov(SS, AX), '8e d0'],
  ['mov ax, 0x1234', (a) => a.mov(AX, 0x1234), 'b8 34 12'],
  ['mov eax, 5', (a) => a.mov(EAX, 5), '66 b8 05 00 00 00'],
  ['lock inc dword ptr [0x40]', (a) => a.lock().inc(dword(0x40)), '66 f0 ff 06 40 00'],
  ['lock inc word ptr [0x40]', (a) => a.lock().inc(word(0x40)), 'f0 ff 06 40 00'],
  ['mov ax, [0x40]', (a) => a.mov(AX, word(0x40)), 'a1 40 00'],
  ['mov bx, [0x40]', (a) => a.mov(BX, word(0x40)), '8b 1e 40 00'],
  ['mov dword ptr [0x40], 7', (a) => a.mov(dword(0x40), 7), '66 c7 06 40 00 07 00 00 00'],
  ['mov eax, [ebx+4]', (a) => a.mov(EAX, dword(EBX, 4)), '67 66 8b 43 04'],
  ['inc ax', (a) => a.inc(AX), '40'],
  ['inc eax', (a) => a.inc(EAX), '66 40'],
  ['out dx, al', (a) => a.out(DX, AL), 'ee'],
  ['in al, 0x60', (a) => a.in(AL, 0x60), 'e4 60'],
  ['hlt', (a) => a.hlt(), 'f4'],
  ['iret', (a) => a.iret(), 'cf'],
  ['push 0x12', (a) => a.push(0x12), '6a 12'],
  ['jmp 0x08:0x1234', (a) => a.jmpFar(0x08, 0x1234), 'ea 34 12 08 00'],
];

const CASES_32: Case[] = [
  // mov, all forms
  ['mov eax, ebx', (a) => a.mov(EAX, EBX), '89 d8'],
  ['mov ah, al', (a) => a.mov(AH, AL), '88 c4'],
  ['mov eax, 0x10', (a) => a.mov(EAX, 0x10), 'b8 10 00 00 00'],
  ['mov ecx, 0xfee00300', (a) => a.mov(ECX, 0xfee00300), 'b9 00 03 e0 fe'],
  ['mov edx, -1', (a) => a.mov(EDX, -1), 'ba ff ff ff ff'],
  ['mov al, 0x34', (a) => a.mov(AL, 0x34), 'b0 34'],
  ['mov dx, 0x3fd', (a) => a.mov(DX, 0x3fd), '66 ba fd 03'],
  ['mov eax, [0x1234]', (a) => a.mov(EAX, dword(0x1234)), 'a1 34 12 00 00'],
  ['mov [0x1234], eax', (a) => a.mov(dword(0x1234), EAX), 'a3 34 12 00 00'],
  ['mov al, [0x1234]', (a) => a.mov(AL, byte(0x1234)), 'a0 34 12 00 00'],
  ['mov ebx, [0x1234]', (a) => a.mov(EBX, dword(0x1234)), '8b 1d 34 12 00 00'],
  ['mov [0x1234], esi', (a) => a.mov(dword(0x1234), ESI), '89 35 34 12 00 00'],
  ['mov eax, [ebx]', (a) => a.mov(EAX, dword(EBX)), '8b 03'],
  ['mov eax, [ebx+40]', (a) => a.mov(EAX, dword(EBX, 40)), '8b 43 28'],
  ['mov eax, [ebx-4]', (a) => a.mov(EAX, dword(EBX, -4)), '8b 43 fc'],
  ['mov eax, [ebx+0x200]', (a) => a.mov(EAX, dword(EBX, 0x200)), '8b 83 00 02 00 00'],
  ['mov eax, [ebp]', (a) => a.mov(EAX, dword(EBP)), '8b 45 00'],
  ['mov eax, [esp]', (a) => a.mov(EAX, dword(ESP)), '8b 04 24'],
  ['mov eax, [esp+8]', (a) => a.mov(EAX, dword(ESP, 8)), '8b 44 24 08'],
  ['mov [edi+4], ecx', (a) => a.mov(dword(EDI, 4), ECX), '89 4f 04'],
  ['mov al, [esi]', (a) => a.mov(AL, byte(ESI)), '8a 06'],
  ['mov dword ptr [0xfee000f0], 0x13f', (a) => a.mov(dword(0xfee000f0), 0x13f), 'c7 05 f0 00 e0 fe 3f 01 00 00'],
  ['mov byte ptr [ebx+1], 7', (a) => a.mov(byte(EBX, 1), 7), 'c6 43 01 07'],
  ['mov word ptr [ebx], 0x1234', (a) => a.mov(word(EBX), 0x1234), '66 c7 03 34 12'],
  ['mov ds, eax', (a) => a.mov(DS, EAX), '8e d8'],
  ['mov eax, cr0', (a) => a.mov(EAX, CR0), '0f 20 c0'],
  ['mov cr0, eax', (a) => a.mov(CR0, EAX), '0f 22 c0'],
  ['mov cr3, ebx', (a) => a.mov(CR3, EBX), '0f 22 db'],
  ['mov cr4, eax', (a) => a.mov(CR4, EAX), '0f 22 e0'],
  ['mov eax, cr4', (a) => a.mov(EAX, CR4), '0f 20 e0'],
  ['movzx eax, byte ptr [esi+1]', (a) => a.movzx(EAX, byte(ESI, 1)), '0f b6 46 01'],
  ['movzx eax, word ptr [esi]', (a) => a.movzx(EAX, word(ESI)), '0f b7 06'],
  ['movzx ecx, al', (a) => a.movzx(ECX, AL), '0f b6 c8'],
  ['lea eax, [ebx+8]', (a) => a.lea(EAX, mem(EBX, 8)), '8d 43 08'],
  // ALU
  ['add eax, ebx', (a) => a.add(EAX, EBX), '01 d8'],
  ['add eax, 1', (a) => a.add(EAX, 1), '83 c0 01'],
  ['add eax, 0x1000', (a) => a.add(EAX, 0x1000), '05 00 10 00 00'],
  ['add ebx, 0x1000', (a) => a.add(EBX, 0x1000), '81 c3 00 10 00 00'],
  ['add al, 0x30', (a) => a.add(AL, 0x30), '04 30'],
  ['add cl, 0x30', (a) => a.add(CL, 0x30), '80 c1 30'],
  ['add edi, [esi+8]', (a) => a.add(EDI, dword(ESI, 8)), '03 7e 08'],
  ['adc ebp, [esi+12]', (a) => a.adc(EBP, dword(ESI, 12)), '13 6e 0c'],
  ['add dword ptr [0x2000], 1', (a) => a.add(dword(0x2000), 1), '83 05 00 20 00 00 01'],
  ['sub eax, ecx', (a) => a.sub(EAX, ECX), '29 c8'],
  ['sub eax, [0x2000]', (a) => a.sub(EAX, dword(0x2000)), '2b 05 00 20 00 00'],
  ['sbb edx, [0x2004]', (a) => a.sbb(EDX, dword(0x2004)), '1b 15 04 20 00 00'],
  ['sbb edx, edi', (a) => a.sbb(EDX, EDI), '19 fa'],
  ['and eax, 0xfffff000', (a) => a.and(EAX, 0xfffff000), '25 00 f0 ff ff'],
  ['and ecx, 0xfffff000', (a) => a.and(ECX, 0xfffff000), '81 e1 00 f0 ff ff'],
  ['or edi, ebp', (a) => a.or(EDI, EBP), '09 ef'],
  ['or eax, 0x80000000', (a) => a.or(EAX, 0x80000000), '0d 00 00 00 80'],
  ['xor eax, eax', (a) => a.xor(EAX, EAX), '31 c0'],
  ['xor edx, edx', (a) => a.xor(EDX, EDX), '31 d2'],
  ['cmp eax, 0xffffffff', (a) => a.cmp(EAX, 0xffffffff), '83 f8 ff'],
  ['cmp eax, 0x336ec578', (a) => a.cmp(EAX, 0x336ec578), '3d 78 c5 6e 33'],
  ['cmp dword ptr [ebx], 0x336ec578', (a) => a.cmp(dword(EBX), 0x336ec578), '81 3b 78 c5 6e 33'],
  ['cmp dword ptr [ebx+4], 1', (a) => a.cmp(dword(EBX, 4), 1), '83 7b 04 01'],
  ['cmp byte ptr [esi+15], 2', (a) => a.cmp(byte(ESI, 15), 2), '80 7e 0f 02'],
  ['cmp byte ptr [esi], 0', (a) => a.cmp(byte(ESI), 0), '80 3e 00'],
  ['cmp [0x2000], ecx', (a) => a.cmp(dword(0x2000), ECX), '39 0d 00 20 00 00'],
  ['cmp esi, ecx', (a) => a.cmp(ESI, ECX), '39 ce'],
  ['test al, 0x20', (a) => a.test(AL, 0x20), 'a8 20'],
  ['test eax, eax', (a) => a.test(EAX, EAX), '85 c0'],
  ['test al, al', (a) => a.test(AL, AL), '84 c0'],
  ['test ebx, 1', (a) => a.test(EBX, 1), 'f7 c3 01 00 00 00'],
  ['test byte ptr [esi+4], 1', (a) => a.test(byte(ESI, 4), 1), 'f6 46 04 01'],
  ['inc eax', (a) => a.inc(EAX), '40'],
  ['inc esi', (a) => a.inc(ESI), '46'],
  ['dec ecx', (a) => a.dec(ECX), '49'],
  ['inc dword ptr [0x2000]', (a) => a.inc(dword(0x2000)), 'ff 05 00 20 00 00'],
  ['dec byte ptr [ebx]', (a) => a.dec(byte(EBX)), 'fe 0b'],
  ['inc al', (a) => a.inc(AL), 'fe c0'],
  ['lock inc dword ptr [0x3020]', (a) => a.lock().inc(dword(0x3020)), 'f0 ff 05 20 30 00 00'],
  ['lock xadd [ebx], eax', (a) => a.lock().xadd(dword(EBX), EAX), 'f0 0f c1 03'],
  ['lock xadd [0x3020], ecx', (a) => a.lock().xadd(dword(0x3020), ECX), 'f0 0f c1 0d 20 30 00 00'],
  ['shr edi, 20', (a) => a.shr(EDI, 20), 'c1 ef 14'],
  ['shl ebp, 12', (a) => a.shl(EBP, 12), 'c1 e5 0c'],
  ['shl eax, 1', (a) => a.shl(EAX, 1), 'd1 e0'],
  ['sar eax, cl', (a) => a.sar(EAX, CL), 'd3 f8'],
  ['shr al, 4', (a) => a.shr(AL, 4), 'c0 e8 04'],
  ['mul ecx', (a) => a.mul(ECX), 'f7 e1'],
  ['div ecx', (a) => a.div(ECX), 'f7 f1'],
  ['div dword ptr [0x2000]', (a) => a.div(dword(0x2000)), 'f7 35 00 20 00 00'],
  ['neg eax', (a) => a.neg(EAX), 'f7 d8'],
  ['not ebx', (a) => a.not(EBX), 'f7 d3'],
  // stack
  ['push eax', (a) => a.push(EAX), '50'],
  ['push esi', (a) => a.push(ESI), '56'],
  ['pop edi', (a) => a.pop(EDI), '5f'],
  ['push 3', (a) => a.push(3), '6a 03'],
  ['push 0x1000', (a) => a.push(0x1000), '68 00 10 00 00'],
  ['push ax', (a) => a.push(AX), '66 50'],
  // port I/O
  ['in al, dx', (a) => a.in(AL, DX), 'ec'],
  ['in eax, dx', (a) => a.in(EAX, DX), 'ed'],
  ['in ax, dx', (a) => a.in(AX, DX), '66 ed'],
  ['in al, 0x61', (a) => a.in(AL, 0x61), 'e4 61'],
  ['out dx, al', (a) => a.out(DX, AL), 'ee'],
  ['out 0x20, al', (a) => a.out(0x20, AL), 'e6 20'],
  ['out 0xf4, eax', (a) => a.out(0xf4, EAX), 'e7 f4'],
  ['out dx, eax', (a) => a.out(DX, EAX), 'ef'],
  ['out dx, ax', (a) => a.out(DX, AX), '66 ef'],
  // strings
  ['rep movsb', (a) => a.rep().movsb(), 'f3 a4'],
  ['rep movsd', (a) => a.rep().movsd(), 'f3 a5'],
  ['rep stosd', (a) => a.rep().stosd(), 'f3 ab'],
  ['stosb', (a) => a.stosb(), 'aa'],
  ['lodsb', (a) => a.lodsb(), 'ac'],
  // system
  ['cli', (a) => a.cli(), 'fa'],
  ['sti', (a) => a.sti(), 'fb'],
  ['hlt', (a) => a.hlt(), 'f4'],
  ['cld', (a) => a.cld(), 'fc'],
  ['nop', (a) => a.nop(), '90'],
  ['pause', (a) => a.pause(), 'f3 90'],
  ['cpuid', (a) => a.cpuid(), '0f a2'],
  ['rdtsc', (a) => a.rdtsc(), '0f 31'],
  ['rdmsr', (a) => a.rdmsr(), '0f 32'],
  ['wrmsr', (a) => a.wrmsr(), '0f 30'],
  ['iret', (a) => a.iret(), 'cf'],
  ['ret', (a) => a.ret(), 'c3'],
  ['ret 4', (a) => a.ret(4), 'c2 04 00'],
  ['pushfd', (a) => a.pushf(), '9c'],
  ['popfd', (a) => a.popf(), '9d'],
  ['xchg eax, [esp+4]', (a) => a.xchg(EAX, dword(ESP, 4)), '87 44 24 04'],
  ['xchg [esp+4], eax', (a) => a.xchg(dword(ESP, 4), EAX), '87 44 24 04'],
  ['xchg ebx, ecx', (a) => a.xchg(EBX, ECX), '87 cb'],
  ['xchg eax, ebx', (a) => a.xchg(EAX, EBX), '93'],
  ['xchg al, [ebx]', (a) => a.xchg(AL, byte(EBX)), '86 03'],
  ['lgdt [0x100200]', (a) => a.lgdt(mem(0x100200)), '0f 01 15 00 02 10 00'],
  ['lidt [0x100208]', (a) => a.lidt(mem(0x100208)), '0f 01 1d 08 02 10 00'],
  ['lgdt [eax]', (a) => a.lgdt(mem(EAX)), '0f 01 10'],
  ['jmp 0x08:0x100010', (a) => a.jmpFar(0x08, 0x100010), 'ea 10 00 10 00 08 00'],
  ['jmp eax', (a) => a.jmp(EAX), 'ff e0'],
  ['call ebx', (a) => a.call(EBX), 'ff d3'],
];

const CASES_64: Case[] = [
  ['mov rax, 1', (a) => a.mov(RAX, 1), '48 c7 c0 01 00 00 00'],
  ['mov rax, 0x80000000', (a) => a.mov(RAX, 0x80000000), '48 b8 00 00 00 80 00 00 00 00'],
  ['mov eax, 1', (a) => a.mov(EAX, 1), 'b8 01 00 00 00'],
  ['mov rbx, rax', (a) => a.mov(RBX, RAX), '48 89 c3'],
  ['mov r8, [r12+8]', (a) => a.mov(R8, qword(R12, 8)), '4d 8b 44 24 08'],
  ['mov [r13], r9d', (a) => a.mov(dword(R13), R9D), '45 89 4d 00'],
  ['mov eax, [0x1234]', (a) => a.mov(EAX, dword(0x1234)), '8b 04 25 34 12 00 00'],
  ['mov qword ptr [rsp+16], 5', (a) => a.mov(qword(RSP, 16), 5), '48 c7 44 24 10 05 00 00 00'],
  ['mov rax, cr3', (a) => a.mov(RAX, CR3), '0f 20 d8'],
  ['mov cr3, rax', (a) => a.mov(CR3, RAX), '0f 22 d8'],
  ['mov cr4, rcx', (a) => a.mov(CR4, RCX), '0f 22 e1'],
  ['mov cr0, r15', (a) => a.mov(CR0, R15), '41 0f 22 c7'],
  ['add rax, 8', (a) => a.add(RAX, 8), '48 83 c0 08'],
  ['add rax, 0x1000', (a) => a.add(RAX, 0x1000), '48 05 00 10 00 00'],
  ['sub rsp, 0x100', (a) => a.sub(RSP, 0x100), '48 81 ec 00 01 00 00'],
  ['cmp rcx, rdx', (a) => a.cmp(RCX, RDX), '48 39 d1'],
  ['xor r8, r8', (a) => a.xor(R8, R8), '4d 31 c0'],
  ['test rax, rax', (a) => a.test(RAX, RAX), '48 85 c0'],
  ['and rax, 0xfffffffffffff000', (a) => a.and(RAX, -0x1000), '48 25 00 f0 ff ff'],
  ['inc eax', (a) => a.inc(EAX), 'ff c0'],
  ['inc rcx', (a) => a.inc(RCX), '48 ff c1'],
  ['dec r8', (a) => a.dec(R8), '49 ff c8'],
  ['lock inc dword ptr [rbx]', (a) => a.lock().inc(dword(RBX)), 'f0 ff 03'],
  ['lock xadd [rbx], rax', (a) => a.lock().xadd(qword(RBX), RAX), 'f0 48 0f c1 03'],
  ['shl rax, 12', (a) => a.shl(RAX, 12), '48 c1 e0 0c'],
  ['push rax', (a) => a.push(RAX), '50'],
  ['push r12', (a) => a.push(R12), '41 54'],
  ['pop rbx', (a) => a.pop(RBX), '5b'],
  ['out dx, al', (a) => a.out(DX, AL), 'ee'],
  ['out 0xf4, eax', (a) => a.out(0xf4, EAX), 'e7 f4'],
  ['iretq', (a) => a.iret(), '48 cf'],
  ['popfq', (a) => a.popf(), '9d'],
  ['ret 8', (a) => a.ret(8), 'c2 08 00'],
  ['xchg rax, [rsp]', (a) => a.xchg(RAX, qword(RSP)), '48 87 04 24'],
  ['xchg eax, ebx', (a) => a.xchg(EAX, EBX), '93'],
  ['xchg r8, rax', (a) => a.xchg(R8, RAX), '49 90'],
  ['xchg eax, eax', (a) => a.xchg(EAX, EAX), '87 c0'],
  ['lgdt [rax]', (a) => a.lgdt(mem(RAX)), '0f 01 10'],
  ['rdmsr', (a) => a.rdmsr(), '0f 32'],
  ['wrmsr', (a) => a.wrmsr(), '0f 30'],
];

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

function assemble(bits: Bits, emit: (a: Assembler) => unknown, originGpa = 0): string {
  const a = new Assembler({ bits, originGpa });
  emit(a);
  return hex(a.link());
}

for (const [bits, cases] of [[16, CASES_16], [32, CASES_32], [64, CASES_64]] as const) {
  test(`x86asm: ${bits}-bit encodings match GNU as`, () => {
    for (const [gas, emit, expected] of cases) {
      assert.equal(assemble(bits, emit), expected, gas);
    }
  });
}

// Programs with labels, also checked against `as` (the label addresses come out of its listing).
test('x86asm: short backward loop (as: "l: dec ecx; jnz l")', () => {
  assert.equal(assemble(32, (a) => a.label('l').dec(ECX).jnz('l')), '49 75 fd');
});

test('x86asm: forward branches relax to short when they reach, like as', () => {
  // as: "jmp l1; jz l1; nop; l1: call l1; ret"
  const bytes = assemble(32, (a) => a.jmp('l1').jz('l1').nop().label('l1').call('l1').ret());
  assert.equal(bytes, 'eb 03 74 01 90 e8 fb ff ff ff c3');
});

test('x86asm: branches that do not reach become near (rel32, rel16 in 16-bit code)', () => {
  // as: "jmp far_; jne far_; .fill 200, 1, 0x90; far_: ret"
  const pad = (a: Assembler): Assembler => a.space(200, 0x90);
  assert.equal(
    assemble(32, (a) => pad(a.jmp('far').jne('far')).label('far').ret()).slice(0, 32),
    'e9 ce 00 00 00 0f 85 c8 00 00 00',
  );
  // as --32 with .code16: "jmp far_; jne far_; .fill 200, 1, 0x90; far_: ret"
  assert.equal(
    assemble(16, (a) => pad(a.jmp('far').jne('far')).label('far').ret()).slice(0, 20),
    'e9 cc 00 0f 85 c8 00',
  );
});

test('x86asm: a short branch that grows pushes a later one out of reach (relaxation settles)', () => {
  // b1 reaches 'end' only while b2 is short; b2 cannot be short, so b1 must grow too.
  const a = new Assembler({ bits: 32, originGpa: 0 });
  a.jmp('end').jmp('far').space(124, 0x90).label('end').space(10, 0x90).label('far').ret();
  const bytes = a.link();
  assert.equal(hex(bytes.subarray(0, 10)), 'e9 81 00 00 00 e9 86 00 00 00');
  assert.equal(a.addressOf('end'), 134);
});

test('x86asm: label addresses as immediates and memory operands (origin 0x100000)', () => {
  // as + ld -Ttext=0x100000: "mov esi, offset msg; mov eax, [msg]; mov [msg+4], ecx; push offset msg; msg: .long msg"
  const bytes = assemble(
    32,
    (a) => a.mov(ESI, 'msg').mov(EAX, dword('msg')).mov(dword('msg', 4), ECX).push('msg').label('msg').dd('msg'),
    0x100000,
  );
  assert.equal(bytes, 'be 15 00 10 00 a1 15 00 10 00 89 0d 19 00 10 00 68 15 00 10 00 15 00 10 00');
});

test('x86asm: 64-bit label memory operands are RIP-relative', () => {
  // as --64: "mov eax, [rip+v]; inc dword ptr [rip+v]; mov dword ptr [rip+v], 1; v: .long 0"
  const bytes = assemble(64, (a) => a.mov(EAX, dword('v')).inc(dword('v')).mov(dword('v'), 1).label('v').dd(0));
  assert.equal(bytes, '8b 05 10 00 00 00 ff 05 0a 00 00 00 c7 05 00 00 00 00 01 00 00 00 00 00 00 00');
});

test('x86asm: data directives', () => {
  const a = new Assembler({ bits: 32, originGpa: 0x1000 });
  a.db(1, 'AB').dw(0x1234).align(4, 0xcc).dd(0xdeadbeef, 'x').dq(0x1122334455667788n).label('x').asciz('hi');
  assert.equal(hex(a.link()), '01 41 42 34 12 cc cc cc ef be ad de 18 10 00 00 88 77 66 55 44 33 22 11 68 69 00');

  const gate = new Assembler({ bits: 32, originGpa: 0x10_2340 });
  gate.label('handler').dwAddressLow('handler').dwAddressHigh('handler');
  assert.equal(hex(gate.link()), '40 23 10 00');
});

test('x86asm: mistakes are reported, not encoded', () => {
  const a32 = (): Assembler => new Assembler({ bits: 32, originGpa: 0 });
  assert.throws(() => a32().mov(EAX, BX), (e: unknown) => e instanceof GuestBuildError && e.kind === 'operand');
  assert.throws(() => a32().mov(RAX, 1), (e: unknown) => e instanceof GuestBuildError && e.kind === 'operand');
  assert.throws(() => a32().mov(dword(EBX), dword(ECX)), GuestBuildError);
  assert.throws(() => a32().inc(mem(EBX)), /access size/);
  assert.throws(() => a32().out(0x3f8, AL), /needs dx/);
  assert.throws(() => a32().in(EBX, DX), /al, ax or eax/);
  assert.throws(() => a32().mov(AL, 0x100), (e: unknown) => e instanceof GuestBuildError && e.kind === 'range');
  assert.throws(() => a32().jmp('nowhere').link(), (e: unknown) => e instanceof GuestBuildError && e.kind === 'label');
  assert.throws(() => a32().label('x').label('x'), /defined twice/);
  assert.throws(() => new Assembler({ bits: 64, originGpa: 0 }).jmpFar(8, 0), /64-bit/);
  assert.throws(() => new Assembler({ bits: 16, originGpa: 0 }).mov(AX, word(0x10000)), /16-bit offset/);
});
