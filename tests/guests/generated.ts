// Test guests generated with our own x86 emitter (no toolchain needed), for tests and benchmarks.
import { DEBUG_EXIT_PORT, HIGH_MEMORY_GPA } from '../../src/boot/layout.js';
import { buildPvhElf } from '../../src/guest/elf-image.js';
import { AL, Assembler, dword, EAX, ECX, EDX } from '../../src/guest/x86asm.js';

export const REGS_PROBE_PORT = 0xf0;

/**
 * 32-bit CPL0 guest: `probes` times, `out` to the regs probe with EAX = ECX and check that EAX
 * came back as ECX + 1 (the VMM adds 1 on its side of the exit). Exit status 0, or 1 on a miss.
 */
export function regsProbeGuest(probes: number): Uint8Array {
  const a = new Assembler({ bits: 32, originGpa: HIGH_MEMORY_GPA });
  a.label('entry')
    .mov(ECX, probes)
    .label('again')
    .mov(EAX, ECX)
    .out(REGS_PROBE_PORT, AL)
    .dec(EAX)
    .cmp(EAX, ECX)
    .jne('fail')
    .dec(ECX)
    .jnz('again')
    .mov(EAX, 0)
    .out(DEBUG_EXIT_PORT, EAX)
    .label('fail')
    .mov(EAX, 1)
    .out(DEBUG_EXIT_PORT, EAX);
  return buildPvhElf({ loadGpa: HIGH_MEMORY_GPA, segment: a.link(), entryGpa: a.addressOf('entry') });
}

/** 32-bit CPL0 guest: exits with CPUID.80000007H:EDX[8] (INVTSC) as its status. */
export function invtscGuest(): Uint8Array {
  const a = new Assembler({ bits: 32, originGpa: HIGH_MEMORY_GPA });
  a.label('entry')
    .mov(EAX, 0x80000007)
    .cpuid()
    .mov(EAX, EDX)
    .shr(EAX, 8)
    .and(EAX, 1)
    .out(DEBUG_EXIT_PORT, EAX);
  return buildPvhElf({ loadGpa: HIGH_MEMORY_GPA, segment: a.link(), entryGpa: a.addressOf('entry') });
}

export const DOORBELL_PORT = 0xf8;
/** Guest-physical flags the host sets: GO lets the guest start ringing, DONE lets it exit. */
export const DOORBELL_GO_GPA = 0x200000;
export const DOORBELL_DONE_GPA = 0x200004;

/**
 * 32-bit CPL0 guest: waits for GO, rings the doorbell port `rings` times, waits for DONE, then
 * exits with status 0. With an ioeventfd on the port, none of the rings should exit to the VMM.
 */
export function doorbellGuest(rings: number): Uint8Array {
  const a = new Assembler({ bits: 32, originGpa: HIGH_MEMORY_GPA });
  a.label('entry')
    .label('wait_go')
    .cmp(dword(DOORBELL_GO_GPA), 0)
    .je('wait_go')
    .mov(ECX, rings)
    .label('ring')
    .out(DOORBELL_PORT, AL)
    .dec(ECX)
    .jnz('ring')
    .label('wait_done')
    .cmp(dword(DOORBELL_DONE_GPA), 0)
    .je('wait_done')
    .mov(EAX, 0)
    .out(DEBUG_EXIT_PORT, EAX);
  return buildPvhElf({ loadGpa: HIGH_MEMORY_GPA, segment: a.link(), entryGpa: a.addressOf('entry') });
}
