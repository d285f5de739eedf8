// vCPU execution on real KVM: the register-state cache's syscall floor, and lossless kicks.
// Guests here are tiny programs written with our own x86 emitter, next to the tests they serve.
import assert from 'node:assert/strict';
import test from 'node:test';
import { invtscGuest, REGS_PROBE_PORT, regsProbeGuest } from './guests/generated.js';
import { guestPath } from './guests/index.js';
import { runGuestFile, runImage, waitFor } from './run-guest.js';
import { kvmSkip } from './kvm-available.js';

const PROBES = 200;

test('an exit whose handler reads and writes RAX and RIP costs exactly one syscall (KVM_RUN)', { skip: kvmSkip }, async () => {
  const r = await runImage(regsProbeGuest(PROBES), 'regs-probe', { regsProbePort: REGS_PROBE_PORT });
  assert.equal(r.status, 0, 'the guest saw every RAX update');
  const io = r.stats[0]!.byReason['IO']!;
  assert.equal(io.exits, PROBES + 1, 'one exit per probe, plus the debug-exit');
  assert.equal(io.syscalls, io.exits, `syscalls per IO exit: ${io.syscalls / io.exits}`);
  // The same handler without the cache costs two more (KVM_GET_REGS, KVM_SET_REGS): the counter counts.
  const raw = await runImage(regsProbeGuest(PROBES), 'regs-probe', { regsProbePort: REGS_PROBE_PORT, regsProbeVia: 'ioctl' });
  assert.equal(raw.status, 0);
  assert.equal(raw.stats[0]!.byReason['IO']!.syscalls, 1 + PROBES * 3);
});

test('kicks are never lost: a barrage against a spinning vCPU, each seen within a bound', { skip: kvmSkip }, async (t) => {
  const KICKS = 20000;
  const BOUND_MS = 1000;
  const latenciesUs: number[] = [];
  await runGuestFile(guestPath('spin'), {
    timeoutMs: 120000,
    during: async (m) => {
      await waitFor('"spinning"', () => m.serialOutput().includes('spinning'));
      const v = m.vcpus[0]!;
      let rng = 12345;
      for (let i = 0; i < KICKS; i++) {
        const before = v.stats().kickSeq;
        const t0 = process.hrtime.bigint();
        v.kick();
        // Some kicks are waited for (latency, no loss); the rest are fired in bursts that must coalesce.
        rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
        if ((rng >>> 16) % 8 === 0) {
          while (v.stats().kickAck <= before) {
            if (Number(process.hrtime.bigint() - t0) / 1e6 > BOUND_MS) assert.fail(`kick ${i} not seen within ${BOUND_MS} ms`);
            await new Promise((res) => setImmediate(res));
          }
          latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1e3);
        }
        // Random spacing: back to back, after a turn of the event loop, or after a short sleep.
        const gap = (rng >>> 8) % 16;
        if (gap === 1) await new Promise((res) => setImmediate(res));
        else if (gap === 2) await new Promise((res) => setTimeout(res, 1));
      }
      const last = v.stats().kickSeq;
      await waitFor('the last kick to be seen', () => v.stats().kickAck >= last, BOUND_MS);
      const s = v.stats();
      assert.equal(s.kickSeq, KICKS);
      assert.ok(s.byReason['INTR']!.exits <= KICKS, 'bursts coalesce into fewer exits than kicks');
      await m.shutdown();
    },
  });
  latenciesUs.sort((x, y) => x - y);
  const pct = (p: number) => latenciesUs[Math.min(latenciesUs.length - 1, Math.floor(latenciesUs.length * p))]!.toFixed(0);
  t.diagnostic(`kick-to-seen latency µs: median ${pct(0.5)} p99 ${pct(0.99)} max ${pct(1)} (${latenciesUs.length} of ${KICKS} waited)`);
});

// It hung once in the KVM lab with every lab thread asleep (README, "What does not work yet"):
// the lab's default run (tests/kvm-lab/run.sh) leaves it out until that is understood.
const labSkip = process.env.TSVMM_LAB_SKIP_KICK_STORM ? 'left out of the KVM lab default run: it hung there once, not understood yet (README)' : false;
test('kicks between vCPUs: a barrage from one vCPU at spinning, halted and exiting vCPUs and at itself, none lost', { skip: kvmSkip || labSkip }, async () => {
  const KICK_PORT = 0x510; // tests/guests/kick-storm.c
  const KICK_STOP_GPA = 0x20_0000;
  const CPUS = 4;
  const KICKS = 20000;
  const r = await runGuestFile(guestPath('kick-storm'), {
    cpus: CPUS, kickPeerPort: KICK_PORT, cmdline: `kicks=${KICKS}`, timeoutMs: 240000,
    during: async (m) => {
      await waitFor('the barrage to end', () => m.serialOutput().includes(`kick-storm: sent ${KICKS}\n`), 200000);
      assert.match(m.serialOutput(), new RegExp(`kick-storm: cpus ${CPUS}\n`));
      // Each kick has been seen at its target's command point. vCPU 1 spins at CPL3 and never
      // exits by itself, so a lost kick would leave it behind for good; vCPU 2 halts in KVM.
      for (const v of m.vcpus) {
        const seq = v.stats().kickSeq;
        await waitFor(`vCPU ${v.index} to see its ${seq} kicks`, () => v.stats().kickAck >= seq, 1000);
      }
      const stats = m.vcpus.map((v) => v.stats());
      assert.equal(stats.reduce((n, s) => n + s.kickSeq, 0), KICKS, 'every kick the guest asked for, and no other');
      assert.ok(stats[0]!.kickSeq >= KICKS / 8, `vCPU 0 kicked itself (${stats[0]!.kickSeq} kicks)`);
      for (const [i, s] of stats.entries()) {
        if (s.kickSeq === 0) continue;
        const intr = s.byReason['INTR']?.exits ?? 0;
        assert.ok(intr >= 1 && intr <= s.kickSeq, `vCPU ${i}: ${intr} kick exits for ${s.kickSeq} kicks (at least one, bursts coalesce)`);
      }
      m.memory.writeU64(KICK_STOP_GPA, 1n);
    },
  });
  assert.equal(r.status, 0, r.fatal ?? r.serial);
});

test('a vCPU halted in the kernel (AP waiting for SIPI) is kicked out and back without loss', { skip: kvmSkip }, async () => {
  await runGuestFile(guestPath('spin'), {
    cpus: 2,
    timeoutMs: 60000,
    during: async (m) => {
      await waitFor('"spinning"', () => m.serialOutput().includes('spinning'));
      const ap = m.vcpus[1]!; // never started by the spin guest: blocked in KVM_RUN waiting for INIT/SIPI
      for (let i = 0; i < 2000; i++) {
        const before = ap.stats().kickSeq;
        ap.kick();
        await waitFor(`AP kick ${i}`, () => ap.stats().kickAck > before, 1000);
      }
      await ap.pause();
      await ap.resume();
      assert.equal(ap.state(), 'running');
      await m.shutdown();
    },
  });
});

test('--cpu-invtsc: the guest sees INVTSC exactly when offered, and offering it blocks migration', { skip: kvmSkip }, async () => {
  const on = await runImage(invtscGuest(), 'invtsc', { invtsc: 'on' });
  assert.equal(on.status, 1, 'CPUID.80000007H:EDX[8] set');
  assert.equal(on.migrationBlockers.length, 1);
  assert.match(on.migrationBlockers[0]!, /INVTSC/);
  const off = await runImage(invtscGuest(), 'invtsc', { invtsc: 'off' });
  assert.equal(off.status, 0, 'CPUID.80000007H:EDX[8] clear');
  assert.deepEqual(off.migrationBlockers, []);
});

test('runUntil: a vCPU whose guest never exits leaves KVM_RUN at each deadline', { skip: kvmSkip }, async (t) => {
  const lateUs: number[] = [];
  await runGuestFile(guestPath('spin'), {
    timeoutMs: 60000,
    during: async (m) => {
      // Past its last serial write: the counter at 0x200000 moves only in the CPL3 loop.
      await waitFor('the spin loop', () => m.serialOutput().includes('spinning\n') && m.memory.readU64(0x200000) > 1000n);
      const v = m.vcpus[0]!;
      const before = v.stats();
      for (let i = 0; i < 50; i++) {
        const deadline = process.hrtime.bigint() + 5_000_000n;
        const { lateNs } = await v.runUntil(deadline);
        assert.ok(process.hrtime.bigint() >= deadline, 'never before the deadline');
        lateUs.push(Number(lateNs) / 1e3);
      }
      // A deadline already past is reached at once.
      await v.runUntil(process.hrtime.bigint() - 1_000_000n);
      const after = v.stats();
      assert.equal(after.byReason['IO']?.exits ?? 0, before.byReason['IO']?.exits ?? 0, 'the spinning guest made no exits of its own');
      assert.ok(after.byReason['INTR']!.exits - (before.byReason['INTR']?.exits ?? 0) >= 50, 'the deadlines themselves made the exits');
      await m.shutdown();
    },
  });
  lateUs.sort((a, b) => a - b);
  t.diagnostic(`deadline lateness µs: median ${lateUs[25]!.toFixed(0)} max ${lateUs[49]!.toFixed(0)}`);
  // A correctness bound (the guest never exits, so without the timer nothing would come at all), not a speed target.
  assert.ok(lateUs[49]! < 1_000_000, 'every deadline noticed within a second');
});

// Issue 3, point 3: the cache holds the FPU state in two views (KVM_GET_FPU and KVM_GET_XSAVE):
// a change made through one is seen through the other, and the floor is what that must cost.
test('state cache: the x87 control word changed through either view of the FPU state (XSAVE, KVM_GET_FPU) is seen through the other, at a known syscall cost', { skip: kvmSkip }, async () => {
  const PROBES = 500;
  const r = await runGuestFile(guestPath('fpu-probe'), { cmdline: `probes=${PROBES}`, regsProbePort: REGS_PROBE_PORT, regsProbeVia: 'fpu' });
  assert.equal(r.status, 0, r.fatal ?? r.serial);
  assert.match(r.serial, new RegExp(`fpu-probe: ok \\(${PROBES} probes\\)\\n`));
  const io = r.stats[0]!.byReason['IO']!;
  // Per probe: KVM_RUN, the first view's get and set (written back before the other is read), the
  // other's get and set (the flush); every other IO exit (serial, debug-exit) costs only KVM_RUN.
  assert.equal(io.syscalls, io.exits + 4 * PROBES, JSON.stringify(io));
});
