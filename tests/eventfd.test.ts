// ioeventfd on real KVM: guest doorbell writes reach the VMM's event loop with no vCPU exit.
import assert from 'node:assert/strict';
import test from 'node:test';
import { DOORBELL_DONE_GPA, DOORBELL_GO_GPA, DOORBELL_PORT, doorbellGuest } from './guests/generated.js';
import { runImage, waitFor } from './run-guest.js';
import { kvmSkip } from './kvm-available.js';

const RINGS = 100;

test('ioeventfd: every doorbell write is counted on the event loop and none exits to userspace', { skip: kvmSkip }, async () => {
  let rung = 0n;
  let callbacks = 0;
  const r = await runImage(doorbellGuest(RINGS), 'doorbell', {
    timeoutMs: 60000,
    during: async (m) => {
      m.vm.addIoEventFd('pio', DOORBELL_PORT, 1, null, (n) => { rung += n; callbacks++; });
      m.memory.writeU32(DOORBELL_GO_GPA, 1);
      await waitFor(`${RINGS} doorbell notifications`, () => rung >= BigInt(RINGS), 20000);
      m.memory.writeU32(DOORBELL_DONE_GPA, 1);
    },
  });
  assert.equal(r.status, 0);
  assert.equal(rung, BigInt(RINGS), 'each write counted once');
  assert.ok(callbacks >= 1 && callbacks <= RINGS);
  assert.equal(r.stats[0]!.byReason['IO']!.exits, 1, 'the only port exit is the debug-exit');
  assert.equal(r.unclaimed.size, 0);
});

test('ioeventfd with datamatch: only the matching value is taken in the kernel; others exit', { skip: kvmSkip }, async () => {
  let rung = 0n;
  const r = await runImage(doorbellGuest(RINGS), 'doorbell', {
    timeoutMs: 60000,
    during: async (m) => {
      // The guest writes whatever AL holds (0 at entry); a datamatch of 0x55 never matches.
      m.vm.addIoEventFd('pio', DOORBELL_PORT, 1, 0x55, (n) => { rung += n; });
      m.memory.writeU32(DOORBELL_GO_GPA, 1);
      await waitFor('the unmatched writes to reach the VMM as exits', () => (m.unclaimed.get(`port 0x${DOORBELL_PORT.toString(16)}`) ?? 0) >= RINGS, 20000);
      m.memory.writeU32(DOORBELL_DONE_GPA, 1);
    },
  });
  assert.equal(r.status, 0);
  assert.equal(rung, 0n);
  assert.equal(r.stats[0]!.byReason['IO']!.exits, RINGS + 1);
});
