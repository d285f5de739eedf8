// Memory-map transactions on real KVM: the memmap guest reads, writes and executes in its region
// on 4 vCPUs (more than the host's cores) while the VMM splits, merges, resizes, toggles read-only
// and moves that region's memslots under it, thousands of commits in atomic and pause-all mode;
// the guest must never see a wrong value or take a fault, and every page it dirtied must be in
// the next harvest.
import assert from 'node:assert/strict';
import test from 'node:test';
import type { GpaRange } from '../src/memory/address-space.js';
import type { Machine } from '../src/vmm/machine.js';
import type { CommitMode } from '../src/vmm/memory-map.js';
import { guestPath } from './guests/index.js';
import { kvmSkip, scaled } from './kvm-available.js';
import { runGuestFile, waitFor } from './run-guest.js';

// Must agree with tests/guests/memmap.c.
const REGION_GPA = 0x400_0000;
const PAGES = 256;
const PAGE = 4096;
const STATUS_GPA = 0x20_0000;
const MiB = 1 << 20;

const CPUS = 4; // more vCPUs than the 2 host cores of our CI machines
/** How long the guest's BSP waits for the APs to stop at the end: 1 s, times the lab's slowness. */
const STOP_WAIT = `stop_wait_ms=${scaled(1000)}`;
/** each guest CPU's round counter */
const roundsPerCpu = (m: Machine) => m.vcpus.map((_, c) => Number(m.memory.readU64(STATUS_GPA + (8 + c) * 8)));
/** the fewest rounds any guest CPU has done */
const rounds = (m: Machine) => Math.min(...roundsPerCpu(m));
const errors = (m: Machine) => Number(m.memory.readU64(STATUS_GPA + 16));

function covers(ranges: readonly GpaRange[], gpa: number, sizeBytes: number): boolean {
  for (let p = gpa; p < gpa + sizeBytes; p += PAGE) {
    if (!ranges.some((r) => p >= r.gpa && p + PAGE <= r.gpa + r.sizeBytes)) return false;
  }
  return true;
}

/**
 * Carves the torture region and, right after it, the page the guest only reads and executes
 * ("ro") out of boot RAM ("ram0", all of low RAM), with every vCPU paused.
 */
async function carve(m: Machine): Promise<void> {
  await m.memoryMap.commit(m.memoryMap.begin()
    .split('ram0', REGION_GPA, 'torture')
    .split('torture', PAGES * PAGE, 'ro')
    .split('ro', PAGE, 'rest')
    .setLogDirty('torture', true), 'pause-all');
}

/**
 * Resizes and read-only toggles under the running guest, none of which may change what it reads:
 * a "lens" region over part of the torture region, one priority above it and backed by the same
 * host bytes, is added, grown, shrunk and removed (each a commit that re-cuts the memslots under
 * the guest's feet), then the page the guest only reads and executes goes read-only and back.
 */
async function resizeAndToggle(m: Machine, mode: CommitMode, i: number): Promise<void> {
  const t = m.memoryMap.space.region('torture')!;
  const startPages = 1 + (i * 53) % (PAGES / 2);
  const pages = 1 + (i * 29) % (PAGES / 4);
  const lens = (sizePages: number) => ({
    id: 'lens', kind: 'ram' as const, gpa: t.gpa + startPages * PAGE, sizeBytes: sizePages * PAGE, priority: t.priority + 1,
    backing: { hostId: t.backing!.hostId, offsetBytes: t.backing!.offsetBytes + startPages * PAGE }, logDirty: true,
  });
  await m.memoryMap.commit(m.memoryMap.begin().add(lens(pages)), mode);
  await m.memoryMap.commit(m.memoryMap.begin().grow('lens', (pages + PAGES / 4) * PAGE), mode);
  await m.memoryMap.commit(m.memoryMap.begin().shrink('lens', pages * PAGE), mode);
  await m.memoryMap.commit(m.memoryMap.begin().remove('lens'), mode);
  await m.memoryMap.commit(m.memoryMap.begin().setReadonly('ro', true), mode);
  await m.memoryMap.commit(m.memoryMap.begin().setReadonly('ro', false), mode);
}

async function torture(m: Machine, mode: CommitMode, iterations: number): Promise<void> {
  // The whole line: serial bytes arrive one exit at a time.
  await waitFor('memmap: ready', () => /memmap: ready, cpus \d+\n/.test(m.serialOutput()));
  assert.match(m.serialOutput(), new RegExp(`memmap: ready, cpus ${m.vcpus.length}\n`));
  await carve(m);
  m.memoryMap.harvestDirty();
  let lastRounds = rounds(m);
  for (let i = 0; i < iterations; i++) {
    const at = (1 + (i * 37) % (PAGES - 1)) * PAGE;
    await m.memoryMap.commit(m.memoryMap.begin().split('torture', at, 'torture-b'), mode);
    // Dirty pages survive the split: two full rounds after a harvest, every page was written.
    if (i % 50 === 0) {
      m.memoryMap.harvestDirty();
      // Each CPU against its own count: the CPUs' counts drift far apart (one may be thousands of
      // rounds ahead and then stall while the others catch up), so "the slowest CPU did two more"
      // says nothing about the others (the min-against-min wait lost whole CPUs' pages).
      const before = roundsPerCpu(m);
      await waitFor('two rounds on every guest CPU', () => roundsPerCpu(m).every((n, c) => n >= before[c]! + 2), 20000);
      // With the vCPUs running: a ring harvest kicks them first (the library does, not the test).
      const dirty = await m.memoryMap.harvestDirtyComplete();
      assert.ok(covers(dirty, REGION_GPA, PAGES * PAGE), `iteration ${i}: every torture page in the harvest; got ${JSON.stringify(dirty)}`);
    }
    await m.memoryMap.commit(m.memoryMap.begin().merge('torture', 'torture-b'), mode);
    await resizeAndToggle(m, mode, i);
    if (i % 25 === 0) {
      // The guest keeps running: rounds go on across the changes.
      await waitFor('guest progress', () => rounds(m) > lastRounds, 20000);
      lastRounds = rounds(m);
    }
    assert.equal(errors(m), 0, `iteration ${i}: guest saw a wrong value at 0x${m.memory.readU64(STATUS_GPA + 24).toString(16)}`);
  }
  // The bytes the guest filled in are where they were.
  for (let p = 0; p < PAGES; p++) {
    assert.equal(m.memory.readU64(REGION_GPA + p * PAGE + PAGE - 8), 0xc0de000000000000n | BigInt(p), `page ${p} constant`);
  }
  m.memory.writeU64(STATUS_GPA + 8, 1n); // stop flag
}

for (const mode of ['atomic', 'pause-all'] as const) {
  test(`memory map (${mode}): splits, merges, resizes and read-only toggles under a running guest, no wrong value, no dirty page lost`, { skip: kvmSkip, timeout: scaled(300_000) }, async () => {
    const r = await runGuestFile(guestPath('memmap'), { cpus: CPUS, memoryBytes: 256 * MiB, timeoutMs: 240_000, cmdline: STOP_WAIT, during: (m) => torture(m, mode, mode === 'atomic' ? 400 : 100) });
    assert.match(r.serial, /memmap: rounds \d+ errors 0\n/);
    assert.equal(r.status, 0, r.fatal ?? r.serial);
  });
}

test('memory map (atomic, dirty ring): the same torture with dirty pages from KVM_CAP_DIRTY_LOG_RING, none lost', { skip: kvmSkip, timeout: scaled(300_000) }, async () => {
  const r = await runGuestFile(guestPath('memmap'), {
    cpus: CPUS, memoryBytes: 256 * MiB, timeoutMs: 240_000, dirtyRing: true, cmdline: STOP_WAIT,
    during: async (m) => {
      // Every host this runs on has the ring (HOST.md); a host without it would test the log path twice.
      assert.equal(m.memoryMap.usesDirtyRing, true, 'this host\'s KVM reports KVM_CAP_DIRTY_LOG_RING');
      await torture(m, 'atomic', 200);
    },
  });
  assert.match(r.serial, /memmap: rounds \d+ errors 0\n/);
  assert.equal(r.status, 0, r.fatal ?? r.serial);
});

test('memory map: a move takes the contents along, the old range stops being RAM, and a move back restores it', { skip: kvmSkip, timeout: scaled(120_000) }, async () => {
  const r = await runGuestFile(guestPath('memmap'), {
    memoryBytes: 256 * MiB, timeoutMs: 60_000,
    during: async (m) => {
      await waitFor('memmap: ready', () => m.serialOutput().includes('memmap: ready'));
      await carve(m);
      // With the vCPU paused the guest cannot notice that its region is away for a while.
      const vcpu = m.vcpus[0]!;
      await vcpu.pause();
      const away = 0x800_0000 - PAGES * PAGE;
      await m.memoryMap.commit(m.memoryMap.begin().shrink('rest', 8 * MiB).move('torture', away));
      assert.equal(m.memory.readU64(away + PAGES * PAGE - 8), 0xc0de000000000000n | BigInt(PAGES - 1));
      assert.equal(m.memory.contains(REGION_GPA, 8), false);
      await m.memoryMap.commit(m.memoryMap.begin().move('torture', REGION_GPA).grow('rest', 256 * MiB - REGION_GPA - PAGES * PAGE - PAGE));
      await vcpu.resume();
      const before = rounds(m);
      await waitFor('guest progress after the round trip', () => rounds(m) > before + 1, 20000);
      m.memory.writeU64(STATUS_GPA + 8, 1n);
    },
  });
  assert.match(r.serial, /memmap: rounds \d+ errors 0\n/);
  assert.equal(r.status, 0, r.fatal ?? r.serial);
});
