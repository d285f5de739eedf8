import test from 'node:test';
import assert from 'node:assert/strict';
import { BootError } from './boot-error.js';
import { cpuidForVcpu, CPUID_80000007_EDX_INVTSC, hostHasInvariantTsc, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, setInvariantTsc, withoutInKernelApicFeatures, type CpuidEntry } from './cpuid.js';

/**
 * KVM_GET_SUPPORTED_CPUID as returned on this project's CI/dev hosts (AMD EPYC under the nested
 * kvm_pvm module), dumped with a small C program and pasted verbatim.
 */
const AMD_PVM_SUPPORTED: readonly CpuidEntry[] = [
  { function: 0x0, index: 0, flags: 0, eax: 0x1c, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 },
  { function: 0x1, index: 0, flags: 0, eax: 0xb00f21, ebx: 0x1020800, ecx: 0x81202000, edx: 0x78bfbff },
  { function: 0x2, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x3, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x4, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x5, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x6, index: 0, flags: 0, eax: 0x4, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x7, index: 0, flags: 1, eax: 0x1, ebx: 0x1800002, ecx: 0x104, edx: 0x20000000 },
  { function: 0x7, index: 1, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x9, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0xa, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0xb, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x1 },
  { function: 0xc, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0xd, index: 0, flags: 1, eax: 0xe7, ebx: 0x980, ecx: 0x980, edx: 0x0 },
  { function: 0xd, index: 1, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0xd, index: 2, flags: 1, eax: 0x100, ebx: 0x240, ecx: 0x0, edx: 0x0 },
  { function: 0xd, index: 5, flags: 1, eax: 0x40, ebx: 0x340, ecx: 0x0, edx: 0x0 },
  { function: 0xd, index: 6, flags: 1, eax: 0x200, ebx: 0x380, ecx: 0x0, edx: 0x0 },
  { function: 0xd, index: 7, flags: 1, eax: 0x400, ebx: 0x580, ecx: 0x0, edx: 0x0 },
  { function: 0xe, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0xf, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x10, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x11, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x12, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x13, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x14, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x15, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x16, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x17, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x18, index: 0, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x19, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x1a, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x1b, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x1c, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000000, index: 0, flags: 0, eax: 0x80000021, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 },
  { function: 0x80000001, index: 0, flags: 0, eax: 0xb00f21, ebx: 0x40000000, ecx: 0x400393, edx: 0x23d3fbff },
  { function: 0x80000002, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000003, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000004, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000005, index: 0, flags: 0, eax: 0xff60ff40, ebx: 0xff60ff40, ecx: 0x300c0140, edx: 0x20080140 },
  { function: 0x80000006, index: 0, flags: 0, eax: 0x40802040, ebx: 0x60804040, ecx: 0x4008140, edx: 0xc009140 },
  { function: 0x80000007, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x100 },
  { function: 0x80000008, index: 0, flags: 0, eax: 0x3030, ebx: 0x50020005, ecx: 0x7001, edx: 0x0 },
  { function: 0x80000009, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000a, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000b, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000c, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000d, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000e, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000000f, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000010, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000011, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000012, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000013, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000014, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000015, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000016, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000017, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000018, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000019, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001a, index: 0, flags: 0, eax: 0x2, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001b, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001c, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001d, index: 0, flags: 1, eax: 0x121, ebx: 0x2c0003f, ecx: 0x3f, edx: 0x0 },
  { function: 0x8000001d, index: 1, flags: 1, eax: 0x122, ebx: 0x1c0003f, ecx: 0x3f, edx: 0x0 },
  { function: 0x8000001d, index: 2, flags: 1, eax: 0x143, ebx: 0x3c0003f, ecx: 0x3ff, edx: 0x2 },
  { function: 0x8000001d, index: 3, flags: 1, eax: 0x4163, ebx: 0x3c0003f, ecx: 0x7fff, edx: 0x1 },
  { function: 0x8000001d, index: 4, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001e, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x8000001f, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000020, index: 0, flags: 0, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x80000021, index: 0, flags: 0, eax: 0x204, ebx: 0x0, ecx: 0x6, edx: 0x0 },
  { function: 0x40000000, index: 0, flags: 0, eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
  { function: 0x40000001, index: 0, flags: 0, eax: 0x1007efb, ebx: 0x0, ecx: 0x0, edx: 0x0 },
];

/** An Intel-style table: leaf 4 caches, leaves 0xB and 0x1F, KVM leaves (values shaped like a Sapphire Rapids host's). */
const INTEL_SUPPORTED: readonly CpuidEntry[] = [
  { function: 0x0, index: 0, flags: 0, eax: 0x1f, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 },
  { function: 0x1, index: 0, flags: 0, eax: 0x806f8, ebx: 0x800, ecx: 0xf7fa320b, edx: 0x1f8bfbff },
  { function: 0x4, index: 0, flags: 1, eax: 0xfc004121, ebx: 0x2c0003f, ecx: 0x3f, edx: 0x0 },
  { function: 0x4, index: 1, flags: 1, eax: 0xfc004122, ebx: 0x1c0003f, ecx: 0x3f, edx: 0x0 },
  { function: 0x4, index: 2, flags: 1, eax: 0xfc004143, ebx: 0x3c0003f, ecx: 0x7ff, edx: 0x0 },
  { function: 0x4, index: 3, flags: 1, eax: 0xfc1fc163, ebx: 0x3c0003f, ecx: 0x1ffff, edx: 0x4 },
  { function: 0x4, index: 4, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x0, edx: 0x0 },
  { function: 0x7, index: 0, flags: 1, eax: 0x2, ebx: 0xf1bf07ab, ecx: 0x1b415f6e, edx: 0xa4000010 },
  { function: 0xb, index: 0, flags: 1, eax: 0x1, ebx: 0x2, ecx: 0x100, edx: 0x0 },
  { function: 0xb, index: 1, flags: 1, eax: 0x7, ebx: 0x70, ecx: 0x201, edx: 0x0 },
  { function: 0x1f, index: 0, flags: 1, eax: 0x1, ebx: 0x2, ecx: 0x100, edx: 0x0 },
  { function: 0x1f, index: 1, flags: 1, eax: 0x7, ebx: 0x70, ecx: 0x201, edx: 0x0 },
  { function: 0x1f, index: 2, flags: 1, eax: 0x0, ebx: 0x0, ecx: 0x2, edx: 0x0 },
  { function: 0x40000000, index: 0, flags: 0, eax: 0x40000001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
  { function: 0x40000001, index: 0, flags: 0, eax: 0x1007efb, ebx: 0x0, ecx: 0x0, edx: 0x0 },
];

const find = (entries: readonly CpuidEntry[], fn: number, index = 0) => {
  const found = entries.filter((e) => e.function === fn && e.index === index);
  assert.equal(found.length, 1, `exactly one entry for leaf 0x${fn.toString(16)}.${index}`);
  return found[0];
};
const bit = (value: number, n: number) => (value >>> n) & 1;

test('leaf 1: APIC id and logical count in EBX, HTT with more than one vCPU, hypervisor on, MONITOR off', () => {
  for (const supported of [AMD_PVM_SUPPORTED, INTEL_SUPPORTED]) {
    const leaf1 = find(cpuidForVcpu(supported, 2, 3), 1);
    assert.equal(leaf1.ebx >>> 24, 2, 'initial APIC id');
    assert.equal((leaf1.ebx >>> 16) & 0xff, 3, 'logical processors');
    assert.equal(leaf1.ebx & 0xffff, find(supported, 1).ebx & 0xffff, 'CLFLUSH size and brand kept');
    assert.equal(bit(leaf1.edx, 28), 1, 'HTT');
    assert.equal(bit(leaf1.ecx, 31), 1, 'hypervisor');
    assert.equal(bit(leaf1.ecx, 3), 0, 'MONITOR/MWAIT');
    assert.equal(leaf1.eax, find(supported, 1).eax, 'family/model/stepping kept');
    const single = find(cpuidForVcpu(supported, 0, 1), 1);
    assert.equal(bit(single.edx, 28), 0, 'no HTT for one vCPU');
    assert.equal(single.ebx >>> 24, 0);
  }
  assert.equal(bit(find(INTEL_SUPPORTED, 1).ecx, 3), 1, 'the Intel fixture does offer MONITOR, so clearing it is tested');
});

test('leaf 0xB: SMT level of 1 thread, core level of N cores, terminator; EDX is the x2APIC id in every subleaf', () => {
  for (const supported of [AMD_PVM_SUPPORTED, INTEL_SUPPORTED]) {
    for (const [index, count, shift] of [[0, 1, 0], [4, 5, 3], [1, 2, 1], [6, 8, 3], [8, 9, 4]]) {
      const entries = cpuidForVcpu(supported, index, count);
      const leafB = entries.filter((e) => e.function === 0xb);
      assert.deepEqual(
        leafB.map((e) => [e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx]),
        [
          [0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 1, 0x100, index],
          [1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, shift, count, 0x201, index],
          [2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0, 0x002, index],
        ],
      );
    }
  }
});

test('leaf 0x1F is rewritten like 0xB when KVM reports it, and not invented when it does not', () => {
  const intel = cpuidForVcpu(INTEL_SUPPORTED, 3, 4);
  assert.deepEqual(
    intel.filter((e) => e.function === 0x1f).map((e) => [e.index, e.eax, e.ebx, e.ecx, e.edx]),
    [[0, 0, 1, 0x100, 3], [1, 2, 4, 0x201, 3], [2, 0, 0, 0x002, 3]],
  );
  assert.equal(cpuidForVcpu(AMD_PVM_SUPPORTED, 0, 2).filter((e) => e.function === 0x1f).length, 0);
});

test('leaf 4: cores per package = N, L1/L2 private to a core, L3 shared by all; the null subleaf untouched', () => {
  const entries = cpuidForVcpu(INTEL_SUPPORTED, 1, 6);
  for (const index of [0, 1, 2, 3]) {
    const e = find(entries, 4, index);
    const original = find(INTEL_SUPPORTED, 4, index);
    assert.equal(e.eax >>> 26, 5, 'cores - 1');
    const level = (e.eax >>> 5) & 7;
    assert.equal((e.eax >>> 14) & 0xfff, level === 3 ? 7 : 0, `L${level} sharing - 1 (L3: 2^3 ids for 6 cores)`);
    assert.equal(e.eax & 0x3fff, original.eax & 0x3fff, 'type, level, flags kept');
    assert.deepEqual([e.ebx, e.ecx, e.edx], [original.ebx, original.ecx, original.edx]);
  }
  assert.deepEqual(find(entries, 4, 4), find(INTEL_SUPPORTED, 4, 4));
  assert.deepEqual(find(cpuidForVcpu(AMD_PVM_SUPPORTED, 0, 4), 4), find(AMD_PVM_SUPPORTED, 4), 'AMD reports no leaf-4 caches');
});

test('AMD topology leaves agree: 0x80000008 core count, 0x8000001D sharing, 0x8000001E ids', () => {
  const entries = cpuidForVcpu(AMD_PVM_SUPPORTED, 2, 3);
  const l8 = find(entries, 0x80000008);
  assert.equal(l8.ecx & 0xff, 2, 'NC = cores - 1');
  assert.equal((l8.ecx >>> 12) & 0xf, 2, 'ApicIdCoreIdSize');
  assert.equal(l8.ecx & ~0xf0ff, find(AMD_PVM_SUPPORTED, 0x80000008).ecx & ~0xf0ff, 'other bits kept');
  for (const index of [0, 1, 2]) {
    const e = find(entries, 0x8000001d, index);
    assert.equal((e.eax >>> 14) & 0xfff, 0, `level ${(e.eax >>> 5) & 7} cache private`);
  }
  assert.equal((find(entries, 0x8000001d, 3).eax >>> 14) & 0xfff, 3, 'L3 shared by the 2^2 APIC ids');
  assert.deepEqual(find(entries, 0x8000001d, 4), find(AMD_PVM_SUPPORTED, 0x8000001d, 4));
  const l1e = find(entries, 0x8000001e);
  assert.deepEqual([l1e.eax, l1e.ebx & 0xffff, l1e.ecx], [2, 2, 0]);
});

test('ARCH_CAPABILITIES hidden, hypercall-based KVM PV features withheld, POLL_CONTROL and the rest kept', () => {
  const entries = cpuidForVcpu(AMD_PVM_SUPPORTED, 0, 2);
  assert.equal(bit(find(AMD_PVM_SUPPORTED, 7).edx, 29), 1, 'the fixture offers ARCH_CAPABILITIES');
  assert.equal(bit(find(entries, 7).edx, 29), 0);
  assert.deepEqual(find(entries, 7, 1), find(AMD_PVM_SUPPORTED, 7, 1), 'subleaf 1 untouched');
  const before = find(AMD_PVM_SUPPORTED, 0x40000001).eax;
  const after = find(entries, 0x40000001).eax;
  for (const n of [7, 9, 11, 13]) {
    assert.equal(bit(before, n), 1, `fixture offers feature ${n}`);
    assert.equal(bit(after, n), 0, `feature ${n} withheld`);
  }
  assert.equal(bit(after, 12), 1, 'POLL_CONTROL kept');
  assert.equal(after | (1 << 7) | (1 << 9) | (1 << 11) | (1 << 13), before, 'nothing else changed');
});

test('entries stay in order, inputs are not modified, other leaves pass through', () => {
  const snapshot = JSON.stringify(AMD_PVM_SUPPORTED);
  const entries = cpuidForVcpu(AMD_PVM_SUPPORTED, 1, 2);
  assert.equal(JSON.stringify(AMD_PVM_SUPPORTED), snapshot);
  assert.equal(entries.length, AMD_PVM_SUPPORTED.length + 2, 'leaf 0xB grew from 1 to 3 subleaves');
  const touched = new Set([0x1, 0x4, 0x7, 0xb, 0x1f, 0x40000001, 0x80000008, 0x8000001d, 0x8000001e]);
  for (const e of AMD_PVM_SUPPORTED.filter((x) => !touched.has(x.function))) {
    assert.deepEqual(find(entries, e.function, e.index), e);
  }
  const order = entries.map((e) => e.function);
  assert.deepEqual(order.filter((f, i) => order.indexOf(f) === i), AMD_PVM_SUPPORTED.map((e) => e.function).filter((f, i, all) => all.indexOf(f) === i));
});

test('bad vCPU numbers are refused', () => {
  for (const [index, count] of [[0, 0], [1, 1], [-1, 2], [0, 255]]) {
    assert.throws(() => cpuidForVcpu(AMD_PVM_SUPPORTED, index, count), BootError);
  }
});

test('INVTSC: set, cleared, and leaf 0x80000007 added (with the max extended leaf raised) when missing', () => {
  const base = [
    { function: 0x80000000, index: 0, flags: 0, eax: 0x80000001, ebx: 0, ecx: 0, edx: 0 },
    { function: 0x80000001, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  ];
  const on = setInvariantTsc(base, true);
  assert.equal(on.find((e) => e.function === 0x80000007)!.edx & CPUID_80000007_EDX_INVTSC, CPUID_80000007_EDX_INVTSC);
  assert.equal(on.find((e) => e.function === 0x80000000)!.eax, 0x80000007);
  assert.equal(base.length, 2, 'input untouched');
  const off = setInvariantTsc(on, false);
  assert.equal(off.find((e) => e.function === 0x80000007)!.edx & CPUID_80000007_EDX_INVTSC, 0);
  assert.equal(setInvariantTsc(base, false).length, 2, 'off adds nothing');
});

test('host INVTSC detection needs both constant_tsc and nonstop_tsc', () => {
  assert.equal(hostHasInvariantTsc('processor : 0\nflags : fpu tsc constant_tsc nonstop_tsc pni\n'), true);
  assert.equal(hostHasInvariantTsc('flags : fpu tsc constant_tsc\n'), false);
  assert.equal(hostHasInvariantTsc(''), false);
});

test('userspace irqchip CPUID: leaf 1 loses x2APIC, has TSC-deadline only when trapped, nothing else changes', () => {
  const entries = [
    { function: 1, index: 0, flags: 0, eax: 0x806f8, ebx: 0x800, ecx: 0xfffa3203, edx: 0x178bfbff },
    { function: 7, index: 0, flags: 1, eax: 0, ebx: 0x1000000, ecx: 0x1000000, edx: 0 },
  ];
  const out = withoutInKernelApicFeatures(entries, { tscDeadline: false });
  assert.equal(out[0]!.ecx, (0xfffa3203 & ~((1 << 21) | (1 << 24))) >>> 0);
  const trapped = withoutInKernelApicFeatures([{ ...entries[0]!, ecx: 0 }], { tscDeadline: true });
  assert.equal(trapped[0]!.ecx, 1 << 24, 'offered even where the host CPUID lacks it: our LAPIC implements it');
  assert.equal(out[0]!.edx, 0x178bfbff);
  assert.deepEqual(out[1], entries[1]);
  assert.equal(entries[0]!.ecx, 0xfffa3203, 'the input is not modified');
});
