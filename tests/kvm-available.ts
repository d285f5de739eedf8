// Whether this machine can run the tests that need real KVM: `test('...', { skip: kvmSkip }, ...)`.
// false when /dev/kvm is a character device this process can open read-write; otherwise the
// one-line reason the test runner prints next to each skipped test.
import * as fs from 'node:fs';

const KVM_DEVICE = '/dev/kvm';

function whyNoKvm(): string | false {
  let st: fs.Stats;
  try {
    st = fs.statSync(KVM_DEVICE);
  } catch (e) {
    return `no /dev/kvm on this machine: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
  // A plain file of that name (left by some tool) opens read-write but is no KVM.
  if (!st.isCharacterDevice()) return 'no /dev/kvm on this machine: /dev/kvm is not a character device';
  try {
    fs.closeSync(fs.openSync(KVM_DEVICE, fs.constants.O_RDWR));
  } catch (e) {
    return `no usable /dev/kvm on this machine: cannot open it read-write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  return false;
}

export const kvmSkip: string | false = whyNoKvm();
