// Whether this machine can run the tests that need KVM. Each such test passes `{ skip: kvmSkip }`:
// on a machine without a usable /dev/kvm they are reported as skipped with the reason, and every
// test that needs no KVM (unit tests, CLI input checks, guest builds) still runs.
// TSVMM_REQUIRE_KVM=1 turns a missing /dev/kvm into a failure, for hosts that must run them all.
import * as fs from 'node:fs';

export const KVM_DEVICE_PATH = '/dev/kvm';

function probe(): string | false {
  try {
    // A character device, not just a path: a stray regular file there is no KVM either.
    if (!fs.statSync(KVM_DEVICE_PATH).isCharacterDevice()) throw Object.assign(new Error('not a character device'), { code: 'not a character device' });
    fs.closeSync(fs.openSync(KVM_DEVICE_PATH, fs.constants.O_RDWR));
    return false;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    const reason = `needs KVM, and ${KVM_DEVICE_PATH} cannot be opened read-write on this machine (${code})`;
    if (process.env.TSVMM_REQUIRE_KVM === '1') {
      throw new Error(`TSVMM_REQUIRE_KVM=1 but the test ${reason}; run on a host with KVM or unset TSVMM_REQUIRE_KVM`);
    }
    return reason;
  }
}

/** false when KVM is usable; otherwise why the KVM tests are skipped */
export const kvmSkip: string | false = probe();
