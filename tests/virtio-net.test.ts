// virtio-net on the machine, on real KVM, driven by the `virtio` test guest (tests/guests/virtio.c,
// "net:" lines): the device in slot 0 on TAP device A, assembled as the CLI does (prepareVirtio
// with the KVM backend's TAP opener); the test holds TAP device B; both on a bridge of the test's
// own with IPv6 off and no addresses (layer 2 only, ethertype 0x88b5, nothing leaves the bridge).
// The guest broadcasts a hello; the test answers it with a frame to the guest's MAC; the guest
// checks the receive header and echoes the frame back, which the test reads from TAP B.
// The same guest code is also run against QEMU's virtio-net-device under TCG (no KVM needed), so
// the guest driver itself is known good wherever QEMU is installed.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import test from 'node:test';
import { TapDevice } from '../src/kvm/tap.js';
import { formatMac } from '../src/virtio/net.js';
import { defaultMac, parseNetSpec, prepareVirtio } from '../src/vmm/virtio-options.js';
import { guestPath } from './guests/index.js';
import { kvmSkip } from './kvm-available.js';
import { runGuestFile } from './run-guest.js';
import { ip, isTestFrame, makePrivateBridge, removeBridge } from './private-bridge.js';
import { tapSkip } from './tap-available.js';

const ours = isTestFrame;

test('virtio-net guest: hello out through the TAP, a host frame in with a zeroed header, echoed back', { skip: kvmSkip || tapSkip }, async () => {
  const br = `tsvgb${process.pid}`;
  const nameA = `tsvga${process.pid}`;
  const hostMac = Uint8Array.of(0x02, 0x74, 0x73, 0x00, 0x00, 0x99);
  const guestMac = defaultMac(0);
  const virtio = prepareVirtio({ disks: [], rng: false, consoleSocket: null, nets: [parseNetSpec(`tap=${nameA}`)], openTap: (n) => TapDevice.open(n) });
  const b = TapDevice.open(`tsvgh${process.pid}`);
  const seen: Uint8Array[] = [];
  try {
    makePrivateBridge(br, [nameA, b.name]);
    const answer = new Uint8Array(80);
    answer.set(guestMac, 0);
    answer.set(hostMac, 6);
    answer.set([0x88, 0xb5], 12);
    answer.set(new TextEncoder().encode('tsvmm net answer'), 14);
    b.setReceiver((f) => {
      if (!ours(f)) return;
      seen.push(f.slice());
      if (seen.length === 1) b.send(answer);
    });
    const run = await runGuestFile(guestPath('virtio'), { timeoutMs: 120000, virtio: virtio.configs, cmdline: 'net_wait_ms=60000' });
    assert.equal(run.status, 0, run.serial);
    assert.match(run.serial, /^slot 0: net \(id 1\) gsi 16$/m);
    assert.match(run.serial, new RegExp(`^net: mac ${formatMac(guestMac)}, link up$`, 'm'));
    assert.match(run.serial, /^net: sent hello$/m);
    assert.match(run.serial, /^net: received 80 bytes, header ok, num_buffers 1$/m);
    assert.match(run.serial, /^net: echoed$/m);
    assert.match(run.serial, /^virtio: 1 devices, 0 errors$/m);
    // What the test saw on TAP B: the hello (broadcast from the guest), then the echo of its answer.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(seen.length, 2, `frames seen: ${seen.length}`);
    assert.deepEqual([...seen[0]!.subarray(0, 12)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...guestMac]);
    assert.equal(new TextDecoder().decode(seen[0]!.subarray(14, 29)), 'tsvmm net hello');
    assert.deepEqual(seen[1]!.subarray(0, 12), Uint8Array.from([...hostMac, ...guestMac]));
    assert.deepEqual(seen[1]!.subarray(12), answer.subarray(12));
    assert.equal(run.virtio[0]!.notifyExits, 0, 'every QueueNotify through an ioeventfd');
  } finally {
    b.close();
    for (const c of virtio.configs) c.close?.(); // once only: a no-op when the machine closed it
    removeBridge(br);
  }
});

const qemuSkip = spawnSync('qemu-system-x86_64', ['--version']).status === 0 ? false : 'needs qemu-system-x86_64 (Debian package qemu-system-x86)';

test('the virtio guest\'s net driver against QEMU\'s virtio-net-device (TCG, on a TAP): hello, answer, echo', { skip: tapSkip || qemuSkip }, async () => {
  const br = `tsvqb${process.pid}`;
  const nameA = `tsvqa${process.pid}`;
  const guestMac = defaultMac(0);
  const hostMac = Uint8Array.of(0x02, 0x74, 0x73, 0x00, 0x00, 0x98);
  ip('tuntap', 'add', nameA, 'mode', 'tap'); // QEMU attaches to it (it cannot create one without a script)
  const b = TapDevice.open(`tsvqh${process.pid}`);
  const seen: Uint8Array[] = [];
  try {
    makePrivateBridge(br, [nameA, b.name]);
    const answer = new Uint8Array(80);
    answer.set(guestMac, 0);
    answer.set(hostMac, 6);
    answer.set([0x88, 0xb5], 12);
    b.setReceiver((f) => {
      if (!ours(f)) return;
      seen.push(f.slice());
      if (seen.length === 1) b.send(answer);
    });
    const qemu = spawn('qemu-system-x86_64', [
      '-M', 'microvm,ioapic2=off', '-accel', 'tcg', '-m', '256M', '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio',
      '-global', 'virtio-mmio.force-legacy=false', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
      '-netdev', `tap,id=n0,ifname=${nameA},script=no,downscript=no`, '-device', `virtio-net-device,netdev=n0,mac=${formatMac(guestMac)}`,
      '-kernel', guestPath('virtio-qemu'), '-append', 'net_wait_ms=30000',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let serial = '';
    qemu.stdout.on('data', (d: Buffer) => { serial += d.toString('latin1'); });
    qemu.stderr.on('data', (d: Buffer) => { serial += d.toString('latin1'); });
    const timer = setTimeout(() => qemu.kill(), 90000);
    const code = await new Promise<number | null>((res) => qemu.on('exit', (c) => res(c)));
    clearTimeout(timer);
    assert.equal(code, 1, `QEMU exits with 2E+1, E = the guest's error count: ${serial}`);
    assert.match(serial, /^net: mac 02:74:73:76:6d:00, link up$/m);
    // QEMU 7.2 leaves num_buffers 0 without MRG_RXBUF (5.1.6.4.2 says 1; tsvmm writes 1).
    assert.match(serial, /^net: received 80 bytes, header ok, num_buffers [01]$/m);
    assert.match(serial, /^net: echoed$/m);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(seen.length, 2);
    assert.deepEqual(seen[1]!.subarray(0, 12), Uint8Array.from([...hostMac, ...guestMac]));
  } finally {
    b.close();
    removeBridge(br);
    spawnSync('ip', ['tuntap', 'del', nameA, 'mode', 'tap']);
  }
});
