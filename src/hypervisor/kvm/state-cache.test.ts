import assert from 'node:assert/strict';
import test from 'node:test';
import * as abi from '../../kvm/abi.js';
import { CACHED_MSRS, FIELDS, fieldId } from './state-cache.js';

test('the field table is generated from the ABI tables: every register group is covered', () => {
  const names = FIELDS.map((f) => f.name);
  assert.equal(new Set(names).size, names.length, 'names are unique');
  for (const n of ['rax', 'rip', 'rflags', 'cr0', 'cr3', 'efer', 'apic_base', 'cs.selector', 'cs.base', 'tr.type', 'gdt.limit',
    'nmi_pending', 'interrupt_shadow', 'sipi_vector', 'MSR_LSTAR', 'MSR_IA32_TSC', 'fcw', 'mxcsr',
    'xsave.fcw', 'xsave.mxcsr', 'xsave.xmm0_lo', 'xsave.xmm15_hi', 'xsave.xstate_bv']) {
    assert.ok(names.includes(n), n);
  }
  assert.equal(FIELDS.filter((f) => f.group === 'regs').length, 18);
  assert.equal(FIELDS.filter((f) => f.group === 'msrs').length, Object.keys(CACHED_MSRS).length);
});

test('every field lies inside its group and fields of a group do not overlap', () => {
  const sizes = { regs: abi.kvm_regs.sizeBytes, sregs: abi.kvm_sregs.sizeBytes, events: abi.kvm_vcpu_events.sizeBytes,
    msrs: abi.kvm_msrs.sizeBytes + Object.keys(CACHED_MSRS).length * abi.kvm_msr_entry.sizeBytes, fpu: abi.kvm_fpu.sizeBytes,
    xsave: abi.kvm_xsave.sizeBytes };
  const byGroup = new Map<string, Array<[number, number]>>();
  for (const f of FIELDS) {
    assert.ok(f.offset + f.sizeBytes <= sizes[f.group], `${f.name} inside ${f.group}`);
    const spans = byGroup.get(f.group) ?? [];
    for (const [a, b] of spans) assert.ok(f.offset >= b || f.offset + f.sizeBytes <= a, `${f.name} overlaps another field`);
    spans.push([f.offset, f.offset + f.sizeBytes]);
    byGroup.set(f.group, spans);
  }
  assert.equal(FIELDS[fieldId('rip')]!.offset, abi.kvm_regs.at.rip);
  assert.equal(FIELDS[fieldId('cs.selector')]!.offset, abi.kvm_sregs.at.cs! + abi.kvm_segment.at.selector!);
});

test('an unknown field name is refused with the place to add it', () => {
  assert.throws(() => fieldId('rzx'), /no field "rzx".*FIELDS/);
});
