// The interrupt controllers on real KVM, through the Machine API: the irqchip guest (LAPIC timer
// in one-shot, periodic and TSC-deadline mode, self-IPI, IPIs between 2 vCPUs, the PIT through
// the IOAPIC) against KVM's in-kernel chips and against tsvmm's userspace ones (issue 3, point 4).
import assert from 'node:assert/strict';
import test from 'node:test';
import { guestPath } from './guests/index.js';
import { kvmSkip, scaled, testTimeScale } from './kvm-available.js';
import { runGuestFile, waitFor } from './run-guest.js';

/** What the guest prints on 2 vCPUs, line by line (tsvmm's MADT has the IRQ0 -> GSI 2 override,
 *  so no "trying gsi 2" line). The TSC-deadline line is either: whether CPUID.1:ECX[24] is
 *  offered depends on the host kernel's KVM_GET_SUPPORTED_CPUID. */
const EXPECTED_LINES: readonly (string | RegExp)[] = [
  'lapic one-shot: ok',
  'ioapic gsi 2: routed',
  'lapic periodic: ok (10 ticks)',
  /^tsc-deadline: (ok|not offered)$/,
  'self-ipi: ok',
  'ipi bsp->ap1: ok',
  'ipi ap1->bsp: ok',
  'ioapic gsi 2: ok (20)',
  'irqchip: all ok',
];

function assertIrqchipOutput(serial: string): void {
  const lines = serial.split('\n');
  assert.equal(lines.pop(), '', `output ends with a newline: ${JSON.stringify(serial)}`);
  assert.equal(lines.length, EXPECTED_LINES.length, serial);
  EXPECTED_LINES.forEach((want, i) => {
    if (typeof want === 'string') assert.equal(lines[i], want, serial);
    else assert.match(lines[i]!, want, serial);
  });
}

for (const irqchip of ['kernel', 'userspace'] as const) {
  const opts = irqchip === 'kernel' ? {} : { irqchip };
  test(`irqchip (${irqchip === 'kernel' ? 'in-kernel, the default' : 'userspace'}): LAPIC timer modes, IPIs between 2 vCPUs, PIT through the IOAPIC`, { skip: kvmSkip }, async () => {
    // time_scale stretches the guest's own spans where exits are slow (the KVM lab), up to its cap.
    const timeScale = Math.min(64, Math.ceil(testTimeScale));
    const r = await runGuestFile(guestPath('irqchip'), { cpus: 2, cmdline: `time_scale=${timeScale}`, timeoutMs: 120000, ...opts });
    assert.equal(r.status, 0, r.serial);
    assert.equal(r.reason, 'debug-exit port');
    assertIrqchipOutput(r.serial);
  });
}

// Design principle 3: idle vCPUs hand their time to the VMM's deferred work, and a fallback timer
// runs it anyway. With the userspace irqchip HLT exits to tsvmm, so the idle guest's halts run the
// queue; with KVM's irqchip they never reach tsvmm, and every item runs at its deadline instead.
for (const irqchip of ['userspace', 'kernel'] as const) {
  test(`deferred work (${irqchip} irqchip): every item runs once, ${irqchip === 'userspace' ? 'in halted vCPUs\' idle time' : 'by the fallback timer'}`, { skip: kvmSkip }, async () => {
    const ITEMS = 50;
    const ran: number[] = [];
    let stats = { ranIdle: 0, ranFallback: 0 };
    const r = await runGuestFile(guestPath('idle'), {
      cmdline: `seconds=${Math.ceil(2 * testTimeScale)}`, irqchip, timeoutMs: 60000,
      during: async (m) => {
        // The guest is in its halt loop once it has halted (HLT exits reach us only with the
        // userspace irqchip; with KVM's, a while after start is as good as it gets).
        if (irqchip === 'userspace') await waitFor('the first HLT exit', () => (m.vcpus[0]!.stats().byReason['HLT']?.exits ?? 0) > 0);
        else await new Promise((res) => setTimeout(res, scaled(200)));
        for (let i = 0; i < ITEMS; i++) m.deferredWork.post(`item ${i}`, () => ran.push(i), { maxDelayNs: BigInt(scaled(500)) * 1_000_000n });
        await new Promise((res) => setTimeout(res, scaled(1000)));
        stats = { ranIdle: m.deferredWork.stats.ranIdle, ranFallback: m.deferredWork.stats.ranFallback };
      },
    });
    assert.equal(r.status, 0, r.fatal ?? r.serial);
    assert.deepEqual([...ran].sort((a, b) => a - b), Array.from({ length: ITEMS }, (_, i) => i), 'each item exactly once');
    if (irqchip === 'userspace') assert.ok(stats.ranIdle > 0, `some items ran in idle time: ${JSON.stringify(stats)}`);
    else assert.deepEqual(stats, { ranIdle: 0, ranFallback: ITEMS }, 'no idle points reach tsvmm with KVM\'s irqchip');
  });
}
