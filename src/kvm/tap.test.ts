// The TAP backend on this host: the ABI numbers against what gcc computes from <linux/if_tun.h>,
// name checks, and (where TAP devices may be created) opening, flags, and every error the kernel
// gives, including those a user without CAP_NET_ADMIN gets (run as uid 65534 in a child).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { IFNAMSIZ, ifreq } from './abi.js';
import { IFF_NO_PI, IFF_TAP, TUNSETIFF, TapDevice, TapError, tapNameProblem } from './tap.js';

// Root, and TUNSETIFF works: the same probe as tests/tap-available.ts (src/ does not import tests/).
function probe(): string | false {
  try {
    TapDevice.open(`tsvq${process.pid}`).close();
    return false;
  } catch (e) {
    if (!(e instanceof TapError)) throw e;
    return `needs a TAP device, and this machine does not allow one: ${e.message}`;
  }
}
const tapSkip = probe();
const NOBODY = 65534;
const nobodySkip = tapSkip || (process.getuid?.() !== 0 ? 'needs root, to run a child as uid 65534' : false);

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

const exists = (name: string) => fs.existsSync(`/sys/class/net/${name}`);

test('TUNSETIFF, struct ifreq and the IFF_ flags equal what gcc computes from <linux/if_tun.h> and <net/if.h>', () => {
  // printf("%#lx", TUNSETIFF), sizeof(struct ifreq), offsetof(struct ifreq, ifr_flags) on x86-64.
  assert.equal(TUNSETIFF.toString(16), '400454ca');
  assert.equal(ifreq.sizeBytes, 40);
  assert.equal(ifreq.at.ifr_flags, 16);
  assert.equal(IFNAMSIZ, 16);
  assert.equal(IFF_TAP, 0x2);
  assert.equal(IFF_NO_PI, 0x1000);
});

test('interface names: 1 to 15 bytes, none of / : % or spaces', () => {
  assert.equal(tapNameProblem('tap0'), null);
  assert.equal(tapNameProblem('a'.repeat(15)), null);
  assert.match(tapNameProblem('a'.repeat(16))!, /16 bytes; interface names are at most 15 \(IFNAMSIZ 16/);
  assert.equal(tapNameProblem(''), 'is empty');
  for (const bad of ['tap/0', 'tap:0', 'tap%d', 'tap 0', '..', 'tapé']) assert.ok(tapNameProblem(bad), bad);
  assert.throws(() => TapDevice.open('tap%d'), (e: Error) => e instanceof TapError && e.kind === 'name');
});

test('a missing /dev/net/tun is one line naming the device and the fix', () => {
  assert.throws(() => TapDevice.open('tsvx0', '/nonexistent/net/tun'), (e: Error) => e instanceof TapError && e.kind === 'no-tun'
    && e.message === '/nonexistent/net/tun is missing (ENOENT): this host has no TUN/TAP driver; load it (modprobe tun), or pass the device into the container');
});

test('open: the interface appears under the name asked for, as a TAP without packet info, non-blocking and close-on-exec; close removes it', { skip: tapSkip }, () => {
  const name = `tsvo${process.pid}`;
  const tap = TapDevice.open(name);
  try {
    assert.equal(tap.name, name);
    assert.ok(exists(name));
    // /sys/class/net/NAME/tun_flags: what TUNSETIFF set (IFF_TAP | IFF_NO_PI, no IFF_VNET_HDR).
    assert.equal(Number(fs.readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8')), IFF_TAP | IFF_NO_PI);
    assert.deepEqual(tap.fdFlags(), { nonBlocking: true, closeOnExec: true });
    // A second attach without IFF_MULTI_QUEUE: EBUSY.
    assert.throws(() => TapDevice.open(name), (e: Error) => e instanceof TapError && e.kind === 'busy' && /TAP device tsvo\d+ is already attached/.test(e.message));
    // The interface is down: the kernel refuses the frame (EIO), which is dropped and counted.
    assert.equal(tap.send(new Uint8Array(60)), false);
    assert.equal(tap.stats.txErrors, 1);
    assert.equal(tap.stats.lastErrno, 5);
  } finally {
    tap.close();
    tap.close(); // once only
  }
  assert.equal(exists(name), false, 'a non-persistent TAP goes with its fd');
});

test('an interface that is not a TAP (the loopback) is refused with EINVAL, named', { skip: tapSkip }, () => {
  assert.throws(() => TapDevice.open('lo'), (e: Error) => e instanceof TapError && e.kind === 'name'
    && e.message === "lo is an existing network interface that is not a TAP device (a TUN, a bridge, a NIC); give a TAP device's name or a new one");
});

test('root attaches to a TAP made for another user (CAP_NET_ADMIN overrides the owner); the TAP stays after close', { skip: tapSkip }, () => {
  const name = `tsvu${process.pid}`;
  ip('tuntap', 'add', name, 'mode', 'tap', 'user', String(NOBODY));
  try {
    assert.equal(fs.readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim(), String(NOBODY));
    TapDevice.open(name).close();
    assert.ok(exists(name), 'persistent');
  } finally {
    ip('tuntap', 'del', name, 'mode', 'tap');
  }
});

test('without CAP_NET_ADMIN (uid 65534): no permission on /dev/net/tun, TAPs of other users, creating a TAP', { skip: nobodySkip }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-tun-'));
  fs.chmodSync(dir, 0o755);
  // A private node for the same device, mode 0666 (as distributions ship /dev/net/tun), so the
  // child gets past open() to TUNSETIFF without changing the host's /dev/net/tun.
  const node = path.join(dir, 'tun');
  const mk = spawnSync('mknod', ['-m', '0666', node, 'c', '10', '200']);
  const mine = `tsvm${process.pid}`;
  const root = `tsvr${process.pid}`;
  const fresh = `tsvf${process.pid}`;
  ip('tuntap', 'add', mine, 'mode', 'tap', 'user', String(NOBODY));
  ip('tuntap', 'add', root, 'mode', 'tap', 'user', '0');
  try {
    const tapModule = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tap.js');
    const script = `import { TapDevice } from ${JSON.stringify(tapModule)};
      for (const [name, dev] of JSON.parse(process.argv[1])) {
        try { TapDevice.open(name, dev).close(); console.log('ok'); } catch (e) { console.log(e.kind + ': ' + e.message); }
      }`;
    const cases: Array<[string, string]> = [[mine, '/dev/net/tun']];
    if (mk.status === 0) cases.push([mine, node], [root, node], [fresh, node]);
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(cases)], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const devMode = fs.statSync('/dev/net/tun').mode & 0o777;
    if ((devMode & 0o006) !== 0o006) {
      assert.equal(lines[0], 'permission: cannot open /dev/net/tun (EACCES): it needs read and write permission; run tsvmm as a user who has it (it is usually mode 0666, or root only in containers)');
    }
    if (mk.status !== 0) return; // no mknod here: the TUNSETIFF cases cannot be reached as uid 65534
    assert.equal(lines[1], 'ok', 'the owner attaches without CAP_NET_ADMIN');
    assert.equal(lines[2], `permission: TAP device ${root} belongs to user 0 and attaching to it without CAP_NET_ADMIN is not allowed; recreate it for this user (ip tuntap del ${root} mode tap; ip tuntap add ${root} mode tap user $USER) or run with CAP_NET_ADMIN`);
    assert.equal(lines[3], `permission: TAP device ${fresh} does not exist and creating it needs CAP_NET_ADMIN; run as root, or have it made for you first: ip tuntap add ${fresh} mode tap user $USER`);
  } finally {
    ip('tuntap', 'del', mine, 'mode', 'tap');
    ip('tuntap', 'del', root, 'mode', 'tap');
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(exists(fresh), false);
});
