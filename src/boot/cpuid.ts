// The CPUID table one vCPU sees (for KVM_SET_CPUID2), derived from KVM_GET_SUPPORTED_CPUID: topology
// (one package of vcpuCount cores, one thread each, APIC id = vCPU index, matching the MADT in
// acpi.ts) and features this host's KVM cannot back taken away.
// Sources: Intel SDM vol. 2A "CPUID" (leaves 1, 4, 0xB, 0x1F); AMD APM vol. 3 appendix E (leaves
// 0x80000008, 0x8000001D, 0x8000001E); arch/x86/include/uapi/asm/kvm.h (struct kvm_cpuid_entry2);
// arch/x86/include/uapi/asm/kvm_para.h (KVM_FEATURE_*); Documentation/virt/kvm/x86/cpuid.rst.

import { BootError } from './boot-error.js';

/** struct kvm_cpuid_entry2 without its padding, registers as unsigned 32-bit numbers. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** kvm_cpuid_entry2.flags: the leaf has subleaves selected by ECX (spelled as in the kernel header). */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0;

// Leaf 1
const CPUID_1_ECX_MONITOR = 1 << 3;
const CPUID_1_ECX_HYPERVISOR = 1 << 31;
const CPUID_1_EDX_HTT = 1 << 28;
// Leaf 7 subleaf 0
const CPUID_7_0_EDX_ARCH_CAPABILITIES = 1 << 29;
// Leaves 0xB / 0x1F level types
const LEVEL_TYPE_INVALID = 0;
const LEVEL_TYPE_SMT = 1;
const LEVEL_TYPE_CORE = 2;

export const KVM_CPUID_FEATURES = 0x40000001;
export const KVM_FEATURE_PV_UNHALT = 7;
export const KVM_FEATURE_PV_TLB_FLUSH = 9;
export const KVM_FEATURE_PV_SEND_IPI = 11;
export const KVM_FEATURE_POLL_CONTROL = 12;
export const KVM_FEATURE_PV_SCHED_YIELD = 13;
export const KVM_FEATURE_HC_MAP_GPA_RANGE = 16;

/**
 * KVM paravirt features withheld from the guest. On this project's hosts a `vmcall` never returns
 * (HOST.md), so every feature whose guest side issues KVM hypercalls goes: PV_UNHALT (KVM_HC_KICK_CPU
 * from PV spinlocks), PV_SEND_IPI (KVM_HC_SEND_IPI), PV_SCHED_YIELD (KVM_HC_SCHED_YIELD),
 * HC_MAP_GPA_RANGE (KVM_HC_MAP_GPA_RANGE, used by encrypted guests), and PV_TLB_FLUSH (it works through
 * steal-time flags, but it is only useful with preempted-vCPU hints, and HOST.md lists it).
 * POLL_CONTROL stays: its guest side is a write to MSR_KVM_POLL_CONTROL, which KVM handles in the
 * kernel, never a hypercall.
 */
export const KVM_FEATURES_WITHHELD = [
  KVM_FEATURE_PV_UNHALT,
  KVM_FEATURE_PV_TLB_FLUSH,
  KVM_FEATURE_PV_SEND_IPI,
  KVM_FEATURE_PV_SCHED_YIELD,
  KVM_FEATURE_HC_MAP_GPA_RANGE,
] as const;

/** APIC ids are 8-bit in leaf 1 and the MADT; 255 is the broadcast id. */
export const MAX_VCPUS = 254;

/** Bits needed to number `count` things: the x2APIC id shift of a topology level. */
function countOrder(count: number): number {
  return count <= 1 ? 0 : 32 - Math.clz32(count - 1);
}

/**
 * The CPUID entries for vCPU `vcpuIndex` of `vcpuCount`. `supported` is not modified. Leaves 0xB and
 * 0x1F are rewritten only if KVM reports them; the same for the AMD topology leaves.
 */
export function cpuidForVcpu(supported: readonly CpuidEntry[], vcpuIndex: number, vcpuCount: number): CpuidEntry[] {
  if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_VCPUS) {
    throw new BootError('bad-config', `${vcpuCount} vCPUs: tsvmm supports 1 to ${MAX_VCPUS}; change --cpus`);
  }
  if (!Number.isInteger(vcpuIndex) || vcpuIndex < 0 || vcpuIndex >= vcpuCount) {
    throw new BootError('bad-config', `vCPU index ${vcpuIndex} is not in 0..${vcpuCount - 1}`);
  }
  const apicId = vcpuIndex;
  const coreShift = countOrder(vcpuCount);
  const out: CpuidEntry[] = [];
  const rewritten = new Set<number>();

  for (const original of supported) {
    const e: CpuidEntry = { ...original };
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package (valid when HTT is set).
        e.ebx = ((e.ebx & 0x0000ffff) | ((vcpuCount & 0xff) << 16) | (apicId << 24)) >>> 0;
        e.edx = vcpuCount > 1 ? (e.edx | CPUID_1_EDX_HTT) >>> 0 : (e.edx & ~CPUID_1_EDX_HTT) >>> 0;
        // MONITOR/MWAIT: this KVM cannot emulate them (the vCPU fails with an emulation error).
        e.ecx = ((e.ecx & ~CPUID_1_ECX_MONITOR) | CPUID_1_ECX_HYPERVISOR) >>> 0;
        break;
      case 0x4:
        // Deterministic cache parameters (Intel): EAX[4:0] type (0 = no more caches), EAX[7:5] level,
        // EAX[25:14] logical processors sharing the cache - 1, EAX[31:26] cores per package - 1.
        if ((e.eax & 0x1f) !== 0) {
          const sharing = cacheSharing((e.eax >>> 5) & 0x7, coreShift);
          e.eax = ((e.eax & 0x3fff) | ((sharing - 1) << 14) | ((Math.min(vcpuCount, 64) - 1) << 26)) >>> 0;
        }
        break;
      case 0x7:
        // IA32_ARCH_CAPABILITIES: QEMU aborts on MSR 0x10a with this host's KVM; don't let the guest read it.
        if (e.index === 0) e.edx = (e.edx & ~CPUID_7_0_EDX_ARCH_CAPABILITIES) >>> 0;
        break;
      case 0xb:
      case 0x1f:
        // Replaced as a whole by the subleaves below (KVM lists only some of them).
        if (!rewritten.has(e.function)) {
          rewritten.add(e.function);
          out.push(...x2apicTopology(e.function, apicId, vcpuCount, coreShift));
        }
        continue;
      case KVM_CPUID_FEATURES:
        for (const bit of KVM_FEATURES_WITHHELD) e.eax = (e.eax & ~(1 << bit)) >>> 0;
        break;
      case 0x80000008:
        // ECX[15:12] ApicIdCoreIdSize (bits of APIC id numbering cores), ECX[7:0] NC = cores - 1.
        e.ecx = ((e.ecx & ~0xf0ff) | ((coreShift & 0xf) << 12) | (vcpuCount - 1)) >>> 0;
        break;
      case 0x8000001d:
        // AMD cache topology: EAX[4:0] type, EAX[7:5] level, EAX[25:14] NumSharingCache - 1.
        if ((e.eax & 0x1f) !== 0) {
          const sharing = cacheSharing((e.eax >>> 5) & 0x7, coreShift);
          e.eax = ((e.eax & ~(0xfff << 14)) | ((sharing - 1) << 14)) >>> 0;
        }
        break;
      case 0x8000001e:
        // AMD extended APIC id; EBX[7:0] core id, EBX[15:8] threads per core - 1; ECX node 0 of 1.
        e.eax = apicId;
        e.ebx = ((e.ebx & ~0xffff) | (vcpuIndex & 0xff)) >>> 0;
        e.ecx = 0;
        break;
    }
    out.push(e);
  }
  return out;
}

/** Logical processors sharing a cache: L1/L2 are per core (1 thread), L3 is shared by the package. */
function cacheSharing(level: number, coreShift: number): number {
  return level >= 3 ? 1 << coreShift : 1;
}

/**
 * Leaf 0xB / 0x1F: subleaf 0 is the SMT level (1 thread: shift 0), subleaf 1 the core level
 * (vcpuCount cores: shift = bits to number them), subleaf 2 ends the list (type 0). Every subleaf
 * reports the x2APIC id in EDX and its own index in ECX[7:0].
 */
function x2apicTopology(leaf: number, apicId: number, vcpuCount: number, coreShift: number): CpuidEntry[] {
  const entry = (index: number, shift: number, count: number, type: number): CpuidEntry => ({
    function: leaf,
    index,
    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
    eax: shift,
    ebx: count,
    ecx: ((type << 8) | index) >>> 0,
    edx: apicId,
  });
  return [entry(0, 0, 1, LEVEL_TYPE_SMT), entry(1, coreShift, vcpuCount, LEVEL_TYPE_CORE), entry(2, 0, 0, LEVEL_TYPE_INVALID)];
}

/** CPUID.80000007H:EDX[8], "Invariant TSC": the TSC ticks at a constant rate in every P/C-state. */
export const CPUID_80000007_EDX_INVTSC = 1 << 8;

/**
 * Offers or withholds INVTSC. A guest told its TSC is invariant may rely on it across a
 * migration to a host with another TSC rate, so offering it blocks migration (the caller records
 * the blocker). Adds leaf 0x80000007 when the host list lacks it and `on` is set.
 */
export function setInvariantTsc(entries: readonly CpuidEntry[], on: boolean): CpuidEntry[] {
  const out = entries.map((e) => ({ ...e }));
  let leaf = out.find((e) => e.function === 0x80000007);
  if (!leaf && on) {
    leaf = { function: 0x80000007, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
    out.push(leaf);
    const max = out.find((e) => e.function === 0x80000000);
    if (max && max.eax < 0x80000007) max.eax = 0x80000007;
  }
  if (leaf) leaf.edx = on ? (leaf.edx | CPUID_80000007_EDX_INVTSC) >>> 0 : (leaf.edx & ~CPUID_80000007_EDX_INVTSC) >>> 0;
  return out;
}

/** Whether the host's TSC is invariant, from /proc/cpuinfo's constant_tsc and nonstop_tsc flags. */
export function hostHasInvariantTsc(cpuinfo: string): boolean {
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  return flags.includes('constant_tsc') && flags.includes('nonstop_tsc');
}

/** CPUID.1:ECX bits that only KVM's in-kernel local APIC implements (SDM vol. 2A, CPUID leaf 1). */
export const CPUID_1_ECX_X2APIC = 1 << 21;
export const CPUID_1_ECX_TSC_DEADLINE = 1 << 24;

/**
 * CPUID for the VMM's own interrupt controllers (`--irqchip userspace`): no x2APIC (its MSRs are
 * KVM's in-kernel APIC's), and the TSC-deadline timer only when IA32_TSC_DEADLINE is trapped to
 * the VMM (without an in-kernel APIC, KVM drops writes to it).
 */
export function withoutInKernelApicFeatures(entries: readonly CpuidEntry[], opts: { tscDeadline: boolean }): CpuidEntry[] {
  return entries.map((e) => {
    if (e.function !== 1) return { ...e };
    let ecx = e.ecx & ~CPUID_1_ECX_X2APIC;
    ecx = opts.tscDeadline ? ecx | CPUID_1_ECX_TSC_DEADLINE : ecx & ~CPUID_1_ECX_TSC_DEADLINE;
    return { ...e, ecx: ecx >>> 0 };
  });
}
