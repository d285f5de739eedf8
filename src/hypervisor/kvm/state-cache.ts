// The vCPU register-state cache: every piece of vCPU state the VMM reads or writes goes through
// here, with per-field valid and dirty flags generated from one field table (FIELDS). Nothing is
// read after an exit until asked; dirty state is flushed in one place (flush(), just before
// KVM_RUN), through kvm_run's sync_regs for the groups KVM mirrors there (regs, sregs, events:
// no syscall) and with one ioctl per group otherwise (MSRs, FPU). Who is the reference: after an
// exit, KVM; after a set(), the cache, until flush().
// Spec: Documentation/virt/kvm/api.rst (KVM_CAP_SYNC_REGS, kvm_run.kvm_valid_regs/kvm_dirty_regs).
import * as abi from '../../kvm/abi.js';
import * as io from '../../kvm/ioctls.js';
import { KvmError } from '../../kvm/errors.js';
import * as libc from '../../kvm/libc.js';

/** How a group of fields is fetched from and written back to KVM. */
interface GroupSpec {
  readonly name: string;
  /** KVM_SYNC_X86_* bit when kvm_run mirrors this group, else 0 */
  readonly syncBit: number;
  /** byte offset in kvm_run of the mirrored struct (sync groups) */
  readonly runOffset?: number;
  readonly sizeBytes: number;
  readonly get: io.Ioctl;
  readonly set: io.Ioctl;
  /**
   * Another group that holds the same vCPU state in another format (KVM_GET_FPU and
   * KVM_GET_XSAVE both carry the x87/SSE registers): the two are never dirty at once, and a
   * group is loaded only after its alias has been written back.
   */
  readonly alias?: string;
}

/** MSRs the cache holds (one KVM_GET_MSRS/KVM_SET_MSRS for all of them). */
export const CACHED_MSRS = {
  MSR_IA32_TSC: 0x10,
  MSR_IA32_APICBASE: 0x1b,
  MSR_IA32_SYSENTER_CS: 0x174,
  MSR_IA32_SYSENTER_ESP: 0x175,
  MSR_IA32_SYSENTER_EIP: 0x176,
  MSR_IA32_MISC_ENABLE: 0x1a0,
  MSR_IA32_CR_PAT: 0x277,
  MSR_STAR: 0xc0000081,
  MSR_LSTAR: 0xc0000082,
  MSR_CSTAR: 0xc0000083,
  MSR_SYSCALL_MASK: 0xc0000084,
  MSR_KERNEL_GS_BASE: 0xc0000102,
  MSR_TSC_AUX: 0xc0000103,
} as const;
const MSR_LIST = Object.values(CACHED_MSRS);

const GROUPS = {
  regs: { name: 'regs', syncBit: abi.KVM_SYNC_X86_REGS, runOffset: abi.RUN.syncRegs, sizeBytes: abi.kvm_regs.sizeBytes, get: io.KVM_GET_REGS, set: io.KVM_SET_REGS },
  sregs: { name: 'sregs', syncBit: abi.KVM_SYNC_X86_SREGS, runOffset: abi.RUN.syncSregs, sizeBytes: abi.kvm_sregs.sizeBytes, get: io.KVM_GET_SREGS, set: io.KVM_SET_SREGS },
  events: { name: 'events', syncBit: abi.KVM_SYNC_X86_EVENTS, runOffset: abi.RUN.syncEvents, sizeBytes: abi.kvm_vcpu_events.sizeBytes, get: io.KVM_GET_VCPU_EVENTS, set: io.KVM_SET_VCPU_EVENTS },
  msrs: { name: 'msrs', syncBit: 0, sizeBytes: abi.kvm_msrs.sizeBytes + MSR_LIST.length * abi.kvm_msr_entry.sizeBytes, get: io.KVM_GET_MSRS, set: io.KVM_SET_MSRS },
  fpu: { name: 'fpu', syncBit: 0, sizeBytes: abi.kvm_fpu.sizeBytes, get: io.KVM_GET_FPU, set: io.KVM_SET_FPU, alias: 'xsave' },
  xsave: { name: 'xsave', syncBit: 0, sizeBytes: abi.kvm_xsave.sizeBytes, get: io.KVM_GET_XSAVE, set: io.KVM_SET_XSAVE, alias: 'fpu' },
} as const satisfies Record<string, GroupSpec>;
type GroupName = keyof typeof GROUPS;
const GROUP_NAMES = Object.keys(GROUPS) as GroupName[];

export interface FieldSpec {
  readonly name: string;
  readonly group: GroupName;
  readonly offset: number;
  readonly sizeBytes: 1 | 2 | 4 | 8;
}

const SCALAR_BYTES = { u8: 1, u16: 2, u32: 4, i32: 4, u64: 8 } as const;

/** Every scalar field of an ABI layout, nested structs flattened as "outer.inner"; arrays skipped. */
function fieldsOf(layout: abi.Layout, group: GroupName, prefix = '', base = 0): FieldSpec[] {
  const out: FieldSpec[] = [];
  for (const [name, spec] of Object.entries(layout.fields)) {
    if (typeof spec[1] === 'string') {
      if (spec[2] !== undefined) continue;
      out.push({ name: prefix + name, group, offset: base + spec[0], sizeBytes: SCALAR_BYTES[spec[1]] });
    } else {
      out.push(...fieldsOf(spec[1], group, `${prefix}${name}.`, base + spec[0]));
    }
  }
  return out;
}

/**
 * The field table. Adding a field (or an MSR to CACHED_MSRS, or a field to an ABI layout) gives
 * it storage, valid/dirty tracking and get/set by name with no other code.
 */
export const FIELDS: readonly FieldSpec[] = [
  ...fieldsOf(abi.kvm_regs, 'regs'),
  ...fieldsOf(abi.kvm_sregs, 'sregs').filter((f) => !f.name.endsWith('.padding') && !f.name.startsWith('interrupt_bitmap')),
  ...fieldsOf(abi.kvm_vcpu_events, 'events').filter((f) => !f.name.includes('pad')),
  ...Object.entries(CACHED_MSRS).map(([name, index], i) => ({
    name, group: 'msrs' as const, offset: abi.kvm_msrs.sizeBytes + i * abi.kvm_msr_entry.sizeBytes + abi.kvm_msr_entry.at.data!, sizeBytes: 8 as const,
    msrIndex: index,
  })),
  ...fieldsOf(abi.kvm_fpu, 'fpu').filter((f) => !f.name.startsWith('pad')),
  // Prefixed: the same registers as the fpu group's, named apart (xsave.fcw, xsave.xmm0_lo, ...).
  ...fieldsOf(abi.kvm_xsave, 'xsave', 'xsave.').filter((f) => !f.name.startsWith('xsave.reserved')),
];
export type FieldName = string;
const FIELD_INDEX = new Map(FIELDS.map((f, i) => [f.name, i]));

export function fieldId(name: FieldName): number {
  const id = FIELD_INDEX.get(name);
  if (id === undefined) throw new Error(`vCPU state cache: no field "${name}"; fields come from FIELDS in state-cache.ts`);
  return id;
}

/** Syscall accounting: one counter the worker attributes to the exit being handled. */
export interface SyscallCounter {
  count(n?: number): void;
}

/** Group bits KVM refreshes in kvm_run on every exit (see SYNC_ON_EXIT). */
const VALID_AFTER_EXIT = GROUP_NAMES.reduce(
  (mask, g, i) => ((GROUPS[g] as GroupSpec).syncBit & abi.KVM_SYNC_X86_REGS ? mask | (1 << i) : mask), 0);

export class VcpuStateCache {
  /** bit per group (GROUP_NAMES order) */
  private validGroups = 0;
  private dirtyGroups = 0;
  /** per-field dirty flags, for callers that want to know exactly what changed */
  private readonly dirtyFields = new Uint8Array(FIELDS.length);
  private readonly views: DataView[];
  private readonly buffers: Uint8Array[];
  private readonly fieldGroup = Uint8Array.from(FIELDS, (f) => GROUP_NAMES.indexOf(f.group));
  /** per group, the index of its alias group (GroupSpec.alias), or -1 */
  private readonly aliasOf = Int8Array.from(GROUP_NAMES, (g) => {
    const alias = (GROUPS[g] as GroupSpec).alias;
    return alias === undefined ? -1 : GROUP_NAMES.indexOf(alias as GroupName);
  });

  /** Writes group g's alias back first if it holds changes (before g is read or replaced). */
  private settleAlias(g: number): void {
    const a = this.aliasOf[g]!;
    if (a >= 0 && this.dirtyGroups & (1 << a)) this.writeBack(a);
  }

  constructor(
    private readonly fd: number,
    private readonly target: string,
    runBuf: ArrayBuffer,
    private readonly run: DataView,
    private readonly syscalls: SyscallCounter,
  ) {
    this.buffers = GROUP_NAMES.map((g) => {
      const spec: GroupSpec = GROUPS[g];
      return spec.runOffset !== undefined ? new Uint8Array(runBuf, spec.runOffset, spec.sizeBytes) : new Uint8Array(spec.sizeBytes);
    });
    this.views = this.buffers.map((b) => new DataView(b.buffer, b.byteOffset, b.byteLength));
    // The MSR request names its indices once; KVM fills in the data.
    const msrs = this.views[GROUP_NAMES.indexOf('msrs')]!;
    msrs.setUint32(abi.kvm_msrs.at.nmsrs!, MSR_LIST.length, true);
    MSR_LIST.forEach((index, i) => msrs.setUint32(abi.kvm_msrs.sizeBytes + i * abi.kvm_msr_entry.sizeBytes, index, true));
  }

  /** KVM's mirror bits to ask for on every exit: just the GPRs, which nearly every handler wants. */
  static readonly SYNC_ON_EXIT = abi.KVM_SYNC_X86_REGS;

  /** After KVM_RUN returns: only what KVM mirrored is valid; nothing may be dirty (flush ran). */
  afterExit(): void {
    this.validGroups = VALID_AFTER_EXIT;
  }

  /** Forgets everything (state changed behind the cache's back, e.g. at creation). */
  invalidate(): void {
    this.validGroups = 0;
  }

  private load(g: number): void {
    const spec: GroupSpec = GROUPS[GROUP_NAMES[g]!];
    // The alias's changes first, or this read would miss them (and the next flush undo them).
    this.settleAlias(g);
    if (libc.ioctlPointer(this.fd, spec.get.number, this.buffers[g]!) < 0) {
      throw new KvmError('ioctl', spec.get.name, this.target, libc.errno(), `reading the ${spec.name} group into the state cache`);
    }
    this.syscalls.count();
    this.validGroups |= 1 << g;
  }

  get(name: FieldName): bigint {
    return this.getById(fieldId(name));
  }

  getById(id: number): bigint {
    const f = FIELDS[id]!;
    const g = this.fieldGroup[id]!;
    if (!(this.validGroups & (1 << g))) this.load(g);
    const v = this.views[g]!;
    switch (f.sizeBytes) {
      case 1: return BigInt(v.getUint8(f.offset));
      case 2: return BigInt(v.getUint16(f.offset, true));
      case 4: return BigInt(v.getUint32(f.offset, true));
      default: return v.getBigUint64(f.offset, true);
    }
  }

  set(name: FieldName, value: bigint): void {
    this.setById(fieldId(name), value);
  }

  setById(id: number, value: bigint): void {
    const f = FIELDS[id]!;
    const g = this.fieldGroup[id]!;
    // A struct is written back whole, so the rest of it must be current first.
    if (!(this.validGroups & (1 << g))) this.load(g);
    const v = this.views[g]!;
    switch (f.sizeBytes) {
      case 1: v.setUint8(f.offset, Number(value & 0xffn)); break;
      case 2: v.setUint16(f.offset, Number(value & 0xffffn), true); break;
      case 4: v.setUint32(f.offset, Number(value & 0xffffffffn), true); break;
      default: v.setBigUint64(f.offset, BigInt.asUintN(64, value), true);
    }
    this.markDirty(g);
    this.dirtyFields[id] = 1;
  }

  /** Group g now holds changes; its alias's copy of the same state is stale from here on. */
  private markDirty(g: number): void {
    this.dirtyGroups |= 1 << g;
    const a = this.aliasOf[g]!;
    if (a >= 0) this.validGroups &= ~(1 << a);
  }

  /** Writes one non-sync group back now (KVM_SET_*) and clears its dirty bit. */
  private writeBack(g: number): void {
    const spec: GroupSpec = GROUPS[GROUP_NAMES[g]!];
    const r = libc.ioctlPointer(this.fd, spec.set.number, this.buffers[g]!);
    this.syscalls.count();
    if (r < 0) throw new KvmError('ioctl', spec.set.name, this.target, libc.errno(), `writing the ${spec.name} group back`);
    this.dirtyGroups &= ~(1 << g);
  }

  /** Replaces a whole group (e.g. the reset state on INIT); it is written back at the next flush. */
  setGroup(name: GroupName, bytes: Uint8Array): void {
    const g = GROUP_NAMES.indexOf(name);
    const buf = this.buffers[g]!;
    if (bytes.length !== buf.length) throw new Error(`vCPU state cache: group ${name} is ${buf.length} bytes, not ${bytes.length}`);
    this.settleAlias(g);
    buf.set(bytes);
    this.validGroups |= 1 << g;
    this.markDirty(g);
  }

  isDirty(name: FieldName): boolean {
    return this.dirtyFields[fieldId(name)] === 1;
  }

  /** The raw bytes of a group (loading it if needed), e.g. for a diagnostic or a snapshot. */
  group(name: GroupName): Uint8Array {
    const g = GROUP_NAMES.indexOf(name);
    if (!(this.validGroups & (1 << g))) this.load(g);
    return this.buffers[g]!;
  }

  /** Writes dirty state back. Called once, just before KVM_RUN. */
  flush(): void {
    if (this.dirtyGroups === 0) return;
    let syncBits = 0;
    for (let g = 0; g < GROUP_NAMES.length; g++) {
      if (!(this.dirtyGroups & (1 << g))) continue;
      const spec: GroupSpec = GROUPS[GROUP_NAMES[g]!];
      if (spec.syncBit) syncBits |= spec.syncBit;
      else this.writeBack(g);
    }
    if (syncBits) {
      const at = abi.kvm_run.at.kvm_dirty_regs!;
      this.run.setBigUint64(at, this.run.getBigUint64(at, true) | BigInt(syncBits), true);
    }
    this.dirtyGroups = 0;
    this.dirtyFields.fill(0);
  }
}
