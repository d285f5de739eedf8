// Turns a vCPU that KVM could not run into a report a person can act on: the exit, registers,
// the bytes at RIP and, for instructions this host is known to reject, what they are.
// Instruction encodings: Intel SDM vol. 2.

interface KnownInstruction { bytes: number[]; name: string; note: string }

const KNOWN: KnownInstruction[] = [
  { bytes: [0xcc], name: 'int3', note: 'software breakpoints are not emulated by this host\'s KVM (HOST.md); use hardware breakpoints' },
  { bytes: [0x0f, 0x01, 0xc8], name: 'monitor', note: 'tsvmm emulates MONITOR/MWAIT only unprefixed at CPL0, and does not offer them in CPUID' },
  { bytes: [0x0f, 0x01, 0xc9], name: 'mwait', note: 'tsvmm emulates MONITOR/MWAIT only unprefixed at CPL0, and does not offer them in CPUID' },
  { bytes: [0x0f, 0x01, 0xc1], name: 'vmcall', note: 'KVM hypercalls are not supported by tsvmm' },
  { bytes: [0x0f, 0x01, 0xd9], name: 'vmmcall', note: 'KVM hypercalls are not supported by tsvmm' },
  { bytes: [0x0f, 0x0b], name: 'ud2', note: 'the guest raised #UD deliberately' },
  { bytes: [0xf4], name: 'hlt', note: '' },
  { bytes: [0x0f, 0xae], name: 'xsave/xrstor/fxsave group', note: 'some XSAVE paths are not emulated by this host\'s KVM' },
  { bytes: [0xf0, 0x48, 0x0f, 0xc7], name: 'lock cmpxchg16b', note: 'not emulated at CPL0 by this host\'s KVM' },
  { bytes: [0x48, 0x0f, 0xc7], name: 'cmpxchg16b', note: 'not emulated at CPL0 by this host\'s KVM' },
];

/** Skips legacy prefixes other than LOCK (which is part of some known patterns). */
export function identifyInstruction(code: Uint8Array): KnownInstruction | undefined {
  for (const k of KNOWN) {
    if (k.bytes.every((b, i) => code[i] === b)) return k;
  }
  return undefined;
}

export function hex(n: number | bigint, width = 0): string {
  return '0x' + n.toString(16).padStart(width, '0');
}

export function formatBytes(code: Uint8Array): string {
  return Array.from(code, (b) => b.toString(16).padStart(2, '0')).join(' ');
}
