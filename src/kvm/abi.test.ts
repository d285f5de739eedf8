import assert from 'node:assert/strict';
import test from 'node:test';
import * as abi from './abi.js';
import * as io from './ioctls.js';
import * as ring from '../memory/dirty-ring.js';

test('struct sizes match the kernel headers', () => {
  // Sizes from include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (x86-64).
  const expected: Array<[abi.Layout, number]> = [
    [abi.kvm_regs, 144], [abi.kvm_sregs, 312], [abi.kvm_segment, 24], [abi.kvm_dtable, 16],
    [abi.kvm_vcpu_events, 64], [abi.kvm_userspace_memory_region, 32], [abi.kvm_cpuid_entry2, 40],
    [abi.kvm_fpu, 416], [abi.kvm_lapic_state, 1024], [abi.kvm_irq_level, 8], [abi.kvm_ioeventfd, 64],
    [abi.kvm_irqfd, 32], [abi.kvm_enable_cap, 104], [abi.kvm_guest_debug, 72], [abi.kvm_pit_config, 64],
    [abi.kvm_clock_data, 48], [abi.kvm_dirty_log, 16], [abi.kvm_run, 2352], [abi.kvm_msr_entry, 16],
    [abi.kvm_irq_routing_entry, 48], [abi.kvm_irq_routing_entry_msi, 48], [abi.kvm_msr_filter, 392], [abi.kvm_msr_filter_range, 24], [abi.kvm_run_msr, 24], [abi.kvm_msi, 32],
    [abi.kvm_dirty_gfn, 16], [abi.kvm_xsave, 4096],
  ];
  for (const [layout, size] of expected) assert.equal(layout.sizeBytes, size, layout.name);
});

test('kvm_run.msr and kvm_msr_filter_range as gcc lays them out from <linux/kvm.h>', () => {
  // offsetof(struct kvm_run, msr.{error,reason,index,data}) = 32, 40, 44, 48 (exit union at 32)
  assert.deepEqual([abi.kvm_run_msr.at.error, abi.kvm_run_msr.at.reason, abi.kvm_run_msr.at.index, abi.kvm_run_msr.at.data], [0, 8, 12, 16]);
  assert.deepEqual([abi.kvm_msr_filter_range.at.nmsrs, abi.kvm_msr_filter_range.at.base, abi.kvm_msr_filter_range.at.bitmap], [4, 8, 16]);
  assert.equal(abi.kvm_msr_filter.at.ranges, 8);
  assert.equal(abi.KVM_MSR_EXIT_REASON_FILTER, 4);
});

test('kvm_msi field offsets (gcc offsetof on <linux/kvm.h>: 0 4 8 12 16, size 32)', () => {
  assert.deepEqual([abi.kvm_msi.at.address_lo, abi.kvm_msi.at.address_hi, abi.kvm_msi.at.data, abi.kvm_msi.at.flags, abi.kvm_msi.at.devid], [0, 4, 8, 12, 16]);
});

test('kvm_run places the exit union at 32 and sync regs at 304', () => {
  assert.equal(abi.kvm_run.at.exit_reason, 8);
  assert.equal(abi.kvm_run.at.exit_union, 32);
  assert.equal(abi.kvm_run.at.kvm_valid_regs, 288);
  assert.equal(abi.kvm_run.at.s, 304);
  assert.equal(abi.RUN.syncSregs, 304 + 144);
  assert.equal(abi.kvm_sync_regs.at.events, 456);
});

test('ioctl numbers equal the values the C headers produce', () => {
  // Computed by gcc from <linux/kvm.h> on x86-64.
  const expected: Array<[io.Ioctl, number]> = [
    [io.KVM_GET_API_VERSION, 0xae00], [io.KVM_CREATE_VM, 0xae01], [io.KVM_CHECK_EXTENSION, 0xae03],
    [io.KVM_GET_VCPU_MMAP_SIZE, 0xae04], [io.KVM_GET_SUPPORTED_CPUID, 0xc008ae05], [io.KVM_CREATE_VCPU, 0xae41],
    [io.KVM_SET_USER_MEMORY_REGION, 0x4020ae46], [io.KVM_SET_TSS_ADDR, 0xae47], [io.KVM_SET_IDENTITY_MAP_ADDR, 0x4008ae48],
    [io.KVM_CREATE_IRQCHIP, 0xae60], [io.KVM_IRQ_LINE, 0x4008ae61], [io.KVM_CREATE_PIT2, 0x4040ae77],
    [io.KVM_IOEVENTFD, 0x4040ae79], [io.KVM_IRQFD, 0x4020ae76], [io.KVM_RUN, 0xae80], [io.KVM_GET_REGS, 0x8090ae81],
    [io.KVM_SET_REGS, 0x4090ae82], [io.KVM_GET_SREGS, 0x8138ae83], [io.KVM_SET_SREGS, 0x4138ae84],
    [io.KVM_TRANSLATE, 0xc018ae85], [io.KVM_SET_CPUID2, 0x4008ae90], [io.KVM_SET_SIGNAL_MASK, 0x4004ae8b],
    [io.KVM_GET_LAPIC, 0x8400ae8e], [io.KVM_SET_LAPIC, 0x4400ae8f], [io.KVM_ENABLE_CAP_VM, 0x4068aea3],
    [io.KVM_GET_VCPU_EVENTS, 0x8040ae9f], [io.KVM_SET_GUEST_DEBUG, 0x4048ae9b], [io.KVM_GET_CLOCK, 0x8030ae7c],
    [io.KVM_GET_DIRTY_LOG, 0x4010ae42], [io.KVM_GET_MSRS, 0xc008ae88], [io.KVM_SET_MSRS, 0x4008ae89],
    [io.KVM_GET_FPU, 0x81a0ae8c], [io.KVM_INTERRUPT, 0x4004ae86], [io.KVM_NMI, 0xae9a],
    [io.KVM_X86_SET_MSR_FILTER, 0x4188aec6], [io.KVM_GET_TSC_KHZ, 0xaea3], [io.KVM_GET_MP_STATE, 0x8004ae98], [io.KVM_SET_GSI_ROUTING, 0x4008ae6a],
    [io.KVM_SIGNAL_MSI, 0x4020aea5], [io.KVM_RESET_DIRTY_RINGS, 0xaec7],
    [io.KVM_GET_XSAVE, 0x9000aea4], [io.KVM_SET_XSAVE, 0x5000aea5],
  ];
  for (const [req, number] of expected) assert.equal(req.number.toString(16), number.toString(16), req.name);
});

test('dirty ring ABI as gcc computes it from <linux/kvm.h> (x86-64, Linux 6.1 headers)', () => {
  // sizeof(struct kvm_dirty_gfn) 16, offsetof flags 0, slot 4, offset 8; KVM_DIRTY_GFN_F_DIRTY 1,
  // _RESET 2, _MASK 3; KVM_DIRTY_LOG_PAGE_OFFSET 64; KVM_EXIT_DIRTY_RING_FULL 31;
  // KVM_CAP_DIRTY_LOG_RING 192, KVM_CAP_DIRTY_LOG_RING_ACQ_REL 223; KVM_RESET_DIRTY_RINGS 0xaec7.
  assert.deepEqual([abi.kvm_dirty_gfn.at.flags, abi.kvm_dirty_gfn.at.slot, abi.kvm_dirty_gfn.at.offset], [0, 4, 8]);
  assert.deepEqual([abi.KVM_DIRTY_GFN_F_DIRTY, abi.KVM_DIRTY_GFN_F_RESET, abi.KVM_DIRTY_GFN_F_MASK], [1, 2, 3]);
  assert.equal(abi.KVM_DIRTY_LOG_PAGE_OFFSET, 64);
  assert.equal(abi.KVM_EXIT_DIRTY_RING_FULL, 31);
  assert.equal(abi.KVM_CAP.KVM_CAP_DIRTY_LOG_RING, 192);
  assert.equal(abi.KVM_CAP.KVM_CAP_DIRTY_LOG_RING_ACQ_REL, 223);
});

test('the pure dirty ring reader (src/memory/dirty-ring.ts) uses the ABI table\'s numbers', () => {
  assert.equal(ring.kvm_dirty_gfn.sizeBytes, abi.kvm_dirty_gfn.sizeBytes);
  assert.deepEqual(ring.kvm_dirty_gfn.at, abi.kvm_dirty_gfn.at);
  assert.deepEqual([ring.KVM_DIRTY_GFN_F_DIRTY, ring.KVM_DIRTY_GFN_F_RESET, ring.KVM_DIRTY_GFN_F_MASK],
    [abi.KVM_DIRTY_GFN_F_DIRTY, abi.KVM_DIRTY_GFN_F_RESET, abi.KVM_DIRTY_GFN_F_MASK]);
});

test('kvm_run.emulation_failure as gcc lays it out from <linux/kvm.h> (offsets from the exit union: 0 4 8 16 17)', () => {
  const at = abi.kvm_run_emulation_failure.at;
  assert.deepEqual([at.suberror, at.ndata, at.flags, at.insn_size, at.insn_bytes], [0, 4, 8, 16, 17]);
  assert.equal(abi.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, 1n);
});

test('kvm_xsave: the standard-format XSAVE area (SDM vol. 1 table 10-2 and 13.4), KVM_CAP_XSAVE 55 as gcc gives it', () => {
  const at = abi.kvm_xsave.at;
  assert.deepEqual([at.fcw, at.mxcsr, at.st_space, at.xmm0_lo, at.xmm0_hi, at.xmm15_hi, at.xstate_bv, at.xcomp_bv, at.extended], [0, 24, 32, 160, 168, 408, 512, 520, 576]);
  assert.equal(abi.KVM_CAP.KVM_CAP_XSAVE, 55);
});
