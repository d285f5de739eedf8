// Conversions between backend-neutral register types and KVM's kvm_regs/kvm_sregs bytes.
import * as abi from '../../kvm/abi.js';
import { REG_NAMES, type Regs, type Segment, type Sregs } from '../types.js';

export function regsToBuffer(regs: Regs, out = Buffer.alloc(abi.kvm_regs.sizeBytes)): Buffer {
  for (const name of REG_NAMES) out.writeBigUInt64LE(BigInt.asUintN(64, regs[name]), abi.kvm_regs.at[name]!);
  return out;
}

export function regsFromBuffer(b: Uint8Array): Regs {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = {} as Regs;
  for (const name of REG_NAMES) out[name] = buf.readBigUInt64LE(abi.kvm_regs.at[name]!);
  return out;
}

const SEG_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SEG = abi.kvm_segment.at;

function writeSegment(b: Buffer, off: number, s: Segment): void {
  b.writeBigUInt64LE(s.base, off + SEG.base!);
  b.writeUInt32LE(s.limit >>> 0, off + SEG.limit!);
  b.writeUInt16LE(s.selector, off + SEG.selector!);
  b[off + SEG.type!] = s.type; b[off + SEG.present!] = s.present; b[off + SEG.dpl!] = s.dpl;
  b[off + SEG.db!] = s.db; b[off + SEG.s!] = s.s; b[off + SEG.l!] = s.l; b[off + SEG.g!] = s.g;
  b[off + SEG.avl!] = s.avl; b[off + SEG.unusable!] = s.unusable;
}

function readSegment(b: Buffer, off: number): Segment {
  return {
    base: b.readBigUInt64LE(off + SEG.base!), limit: b.readUInt32LE(off + SEG.limit!), selector: b.readUInt16LE(off + SEG.selector!),
    type: b[off + SEG.type!]!, present: b[off + SEG.present!]!, dpl: b[off + SEG.dpl!]!, db: b[off + SEG.db!]!,
    s: b[off + SEG.s!]!, l: b[off + SEG.l!]!, g: b[off + SEG.g!]!, avl: b[off + SEG.avl!]!, unusable: b[off + SEG.unusable!]!,
  };
}

const S = abi.kvm_sregs.at;
const CR_FIELDS = [['cr0', 'cr0'], ['cr2', 'cr2'], ['cr3', 'cr3'], ['cr4', 'cr4'], ['cr8', 'cr8'], ['efer', 'efer'], ['apicBase', 'apic_base']] as const;

/** Writes `sregs` over `b` (which should hold the current kvm_sregs, so interrupt_bitmap is kept). */
export function sregsToBuffer(sregs: Sregs, b: Buffer): Buffer {
  for (const name of SEG_NAMES) writeSegment(b, S[name]!, sregs[name]);
  for (const t of ['gdt', 'idt'] as const) {
    b.writeBigUInt64LE(sregs[t].base, S[t]! + abi.kvm_dtable.at.base!);
    b.writeUInt16LE(sregs[t].limit, S[t]! + abi.kvm_dtable.at.limit!);
  }
  for (const [ours, theirs] of CR_FIELDS) b.writeBigUInt64LE(sregs[ours], S[theirs]!);
  return b;
}

export function sregsFromBuffer(u: Uint8Array): Sregs {
  const b = Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  const out = {} as Sregs;
  for (const name of SEG_NAMES) out[name] = readSegment(b, S[name]!);
  for (const t of ['gdt', 'idt'] as const) {
    out[t] = { base: b.readBigUInt64LE(S[t]! + abi.kvm_dtable.at.base!), limit: b.readUInt16LE(S[t]! + abi.kvm_dtable.at.limit!) };
  }
  for (const [ours, theirs] of CR_FIELDS) out[ours] = b.readBigUInt64LE(S[theirs]!);
  return out;
}
