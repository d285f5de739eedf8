import assert from 'node:assert/strict';
import test from 'node:test';
import * as abi from '../../kvm/abi.js';
import { CONTROL_BLOCK_BYTES, CTRL, STAT_REASONS } from './vcpu-protocol.js';

// Regression: DEADLINES_REACHED once shared bytes with the deadline timer id (an Int32 slot inside
// a BigInt64 slot), so arming a deadline passed a corrupted timer id to timer_settime (EINVAL).
test('control block slots never share bytes and fit the block', () => {
  const spans: Array<[string, number, number]> = [];
  for (const [name, slot] of Object.entries(CTRL)) {
    if (name === 'REGS_BYTE_OFFSET') spans.push([name, slot, slot + abi.kvm_regs.sizeBytes + abi.kvm_sregs.sizeBytes]);
    else if (name === 'STAT_EXIT_BASE' || name === 'STAT_SYSCALL_BASE') spans.push([name, slot * 4, (slot + STAT_REASONS) * 4]);
    else if (name.endsWith('BIGINT_SLOT')) spans.push([name, slot * 8, slot * 8 + 8]);
    else if (name === 'MBOX_DATA') spans.push([name, slot * 4, slot * 4 + 8]);
    else spans.push([name, slot * 4, slot * 4 + 4]);
  }
  for (const [name, start, end] of spans) {
    assert.ok(end <= CONTROL_BLOCK_BYTES, `${name} ends past the block`);
    for (const [other, s2, e2] of spans) {
      if (other !== name) assert.ok(end <= s2 || e2 <= start, `${name} [${start},${end}) overlaps ${other} [${s2},${e2})`);
    }
  }
});
