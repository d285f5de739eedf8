// The test guests on real KVM, through the Machine API.
import assert from 'node:assert/strict';
import test from 'node:test';
import { guestPath } from './guests/index.js';
import { runGuestFile, waitFor } from './run-guest.js';
import { kvmSkip } from './kvm-available.js';

test('hello: serial output and debug-exit status 0', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('hello'));
  assert.equal(r.serial, 'hello from tsvmm test guest\n');
  assert.equal(r.status, 0);
  assert.equal(r.reason, 'debug-exit port');
});

test('serial-flood: every byte arrives, complete and in order', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('serial-flood'), { timeoutMs: 120000 });
  const lines = r.serial.split('\n');
  assert.equal(lines.pop(), '', 'output ends with a newline');
  assert.equal(lines.length, 2000);
  lines.forEach((line, i) => assert.ok(line.startsWith(`line ${String(i).padStart(5, '0')} `), `line ${i}: ${JSON.stringify(line)}`));
  assert.equal(new Set(lines.map((l) => l.slice(11))).size, 1, 'every line carries the same pattern');
  assert.equal(r.status, 0);
});

test('exit-status: the command line reaches the guest and its debug-exit value is the status', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('exit-status'), { cmdline: 'quiet status=42 x=1' });
  assert.equal(r.serial, 'status=42\n');
  assert.equal(r.status, 42);
  const d = await runGuestFile(guestPath('exit-status'));
  assert.equal(d.status, 7);
});

test('pio-mmio: CPL3 port exits, unclaimed port and MMIO read all-ones and are counted', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('pio-mmio'));
  assert.equal(r.status, 0, r.serial);
  assert.match(r.serial, /post writes: 100000\n/);
  assert.match(r.serial, /inb 0x2f0: 0xff\n/);
  assert.match(r.serial, /readl 0xd8000000: 0xffffffff\n/);
  assert.equal(r.unclaimed.get('port 0x2f0'), 1);
  assert.equal(r.unclaimed.get('mmio 0xd8000000'), 1);
});

test('timer: PIT and LAPIC timer interrupts wake a halted vCPU', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('timer'), { timeoutMs: 60000 });
  assert.equal(r.status, 0, r.serial);
  const pit = Number(/pit ticks: (\d+)/.exec(r.serial)?.[1]);
  const lapic = Number(/lapic ticks: (\d+)/.exec(r.serial)?.[1]);
  assert.ok(pit > 0, r.serial);
  assert.ok(lapic > 0, r.serial);
});

for (const cpus of [1, 2, 4]) {
  test(`smp: ${cpus} vCPU(s) described by the MADT all start via INIT/SIPI`, { skip: kvmSkip }, async () => {
    const r = await runGuestFile(guestPath('smp'), { cpus, timeoutMs: 60000 });
    assert.equal(r.status, 0, r.serial);
    assert.match(r.serial, new RegExp(`cpus: ${cpus}\\n`));
    const ids = /apic ids:([ \d]*)/.exec(r.serial)?.[1]!.trim().split(/\s+/).map(Number).sort((a, b) => a - b);
    assert.deepEqual(ids, Array.from({ length: cpus }, (_, i) => i));
  });
}

test('spin: a vCPU spinning in the guest is kicked out, paused, and resumes where it was', { skip: kvmSkip }, async () => {
  const COUNTER_GPA = 0x200000;
  let checked = false;
  const r = await runGuestFile(guestPath('spin'), {
    timeoutMs: 30000,
    during: async (m) => {
      await waitFor('"spinning"', () => m.serialOutput().includes('spinning'));
      await waitFor('the counter to move', () => m.memory.readU64(COUNTER_GPA) > 1000n);
      const vcpu = m.vcpus[0]!;
      await vcpu.pause();
      assert.equal(vcpu.state(), 'paused');
      const first = await vcpu.readState();
      const c1 = m.memory.readU64(COUNTER_GPA);
      await new Promise((res) => setTimeout(res, 100));
      assert.equal(m.memory.readU64(COUNTER_GPA), c1, 'no progress while paused');
      assert.equal(first.sregs.cs.dpl, 3, 'it was spinning at CPL3');
      const again = await vcpu.readState();
      assert.equal(again.regs.rip, first.regs.rip, 'RIP does not move while paused');
      await vcpu.resume();
      assert.equal(vcpu.state(), 'running');
      await waitFor('the counter to move after resume', () => m.memory.readU64(COUNTER_GPA) > c1 + 1000n);
      assert.ok(vcpu.stats().kicks >= 1);
      checked = true;
      await m.shutdown();
    },
  });
  assert.ok(checked);
  assert.equal(r.reason, 'stopped by the VMM');
});

test('reset: the i8042 CPU reset command ends the VM', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('reset'));
  assert.equal(r.serial, 'resetting\n');
  assert.equal(r.reason, 'i8042 reset');
  assert.equal(r.status, 0);
});

test('bad-insn at=user: an instruction fetch KVM cannot emulate in guest user mode is a #UD for the guest, not the end of the VM', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('bad-insn'), { cmdline: 'at=user', timeoutMs: 30000 });
  assert.equal(r.fatal, undefined, r.fatal);
  assert.match(r.serial, /^fetching from unbacked memory at cpl3\nguest exception: vector 6 error 0x0+ rip 0x0*d0000000 cs 0x0*23 /, r.serial);
  assert.equal(r.reason, 'debug-exit port');
  assert.equal(r.status, 127);
});

test('bad-insn: an instruction KVM cannot run stops the VM with a diagnostic and non-zero status', { skip: kvmSkip }, async () => {
  const r = await runGuestFile(guestPath('bad-insn'), { timeoutMs: 30000 });
  assert.match(r.serial, /executing int3 at cpl0/);
  assert.notEqual(r.status, 0);
  assert.ok(r.fatal, 'a diagnostic report');
  // This host reports an emulation failure at the int3; an ordinary host a triple fault.
  assert.match(r.fatal!, /KVM_EXIT_INTERNAL_ERROR|KVM_EXIT_SHUTDOWN/);
  assert.match(r.fatal!, /rip=0x[0-9a-f]{16}/);
  // Where KVM resets the vCPU at a shutdown (AMD), the report says its registers are the reset state.
  if (/KVM_EXIT_SHUTDOWN/.test(r.fatal!) && /rip=0x000000000000fff0 cs=0xf000/.test(r.fatal!)) assert.match(r.fatal!, /registers are the reset state/);
  if (/INTERNAL_ERROR/.test(r.fatal!)) {
    assert.match(r.fatal!, /code at rip: cc/);
    assert.match(r.fatal!, /instruction: int3/);
  }
});
