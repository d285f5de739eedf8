// Whether this machine lets the tests create TAP devices (/dev/net/tun present and TUNSETIFF
// allowed: root or CAP_NET_ADMIN). Tests that need one pass `{ skip: tapSkip }` and are reported as
// skipped with the reason elsewhere. The probe TAP is not persistent: it vanishes on close.
import { TapDevice, TapError } from '../src/kvm/tap.js';

function probe(): string | false {
  try {
    TapDevice.open(`tsvp${process.pid}`).close();
    return false;
  } catch (e) {
    if (!(e instanceof TapError)) throw e;
    return `needs a TAP device, and this machine does not allow one: ${e.message}`;
  }
}

/** false when TAP devices can be created here; otherwise why the TAP tests are skipped */
export const tapSkip: string | false = probe();
