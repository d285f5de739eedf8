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

/** This host's KVM is kvm_pvm (HOST.md: kernel-mode guest code emulated, some instructions fail). */
export const isKvmPvm: boolean = fs.existsSync('/sys/module/kvm_pvm');

/** false when KVM is usable; otherwise why the KVM tests are skipped */
export const kvmSkip: string | false = probe();

/** Set by tests/kvm-lab/run.sh: these tests run inside the KVM lab (kvm-amd under QEMU's TCG). */
export const inKvmLab: boolean = process.env.TSVMM_KVM_LAB === '1';

/**
 * Multiplier for the KVM tests' time bounds, from TSVMM_TEST_TIME_SCALE (default 1). The bounds
 * catch hangs; they are not speed claims. A KVM that is itself emulated (the KVM lab,
 * tests/kvm-lab/run.sh, runs KVM inside QEMU TCG at a few hundred µs per exit) needs them longer.
 */
export const testTimeScale: number = (() => {
  const raw = process.env.TSVMM_TEST_TIME_SCALE;
  const n = raw === undefined ? 1 : Number(raw);
  if (!Number.isFinite(n) || n < 1) throw new Error(`TSVMM_TEST_TIME_SCALE=${raw} is not a number >= 1; unset it or give e.g. 10`);
  return n;
})();

/** `ms` scaled by TSVMM_TEST_TIME_SCALE */
export function scaled(ms: number): number {
  return Math.round(ms * testTimeScale);
}
