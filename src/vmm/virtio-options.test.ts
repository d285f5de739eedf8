// The virtio command-line options: disk specs, the checks made before KVM, and what they build.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { VirtioBlock } from '../virtio/block.js';
import { VirtioConsole } from '../virtio/console.js';
import { VirtioNet, formatMac } from '../virtio/net.js';
import { VirtioRng } from '../virtio/rng.js';
import { CliError } from './options.js';
import { defaultMac, openDisk, parseDiskSpec, parseNetSpec, parseVirtioTransport, prepareVirtio, type TapOpener } from './virtio-options.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-vopt-'));
const img = (name: string, bytes = 4096) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Buffer.alloc(bytes));
  return p;
};

test('disk specs: PATH, ,readonly, ,serial=ID; anything else names the option and the choices', () => {
  assert.deepEqual(parseDiskSpec('a.img'), { text: 'a.img', path: 'a.img', readonly: false, serial: null });
  assert.deepEqual(parseDiskSpec('a.img,readonly,serial=boot'), { text: 'a.img,readonly,serial=boot', path: 'a.img', readonly: true, serial: 'boot' });
  assert.throws(() => parseDiskSpec('a.img,ro'), (e: Error) => e instanceof CliError && e.message === '--disk a.img,ro: unknown disk option "ro"; the options are readonly and serial=ID');
  assert.throws(() => parseDiskSpec(''), /no path/);
  assert.throws(() => parseDiskSpec('a.img,serial='), /serial must be/);
  assert.throws(() => parseDiskSpec('a.img,serial=has space'), /serial must be/);
});

test('openDisk: a block device over the file, read-only when asked, with a default serial', () => {
  const rw = openDisk(parseDiskSpec(img('rw.img', 8192)), 3);
  const device = rw.config.device as VirtioBlock;
  assert.ok(device instanceof VirtioBlock);
  assert.equal(device.capacitySectors, 16);
  assert.equal(device.readonly, false);
  assert.match(rw.config.label, /^block .*rw\.img$/);
  rw.config.close!();
  rw.config.close!(); // once only
  const ro = openDisk(parseDiskSpec(`${img('ro.img')},readonly`), 0);
  assert.equal((ro.config.device as VirtioBlock).readonly, true);
  assert.match(ro.config.label, /\(readonly\)$/);
  ro.config.close!();
});

test('prepareVirtio: disks, then rng, then console, in slot order; the socket is only created by listen()', async () => {
  const sock = path.join(tmp, 'v.sock');
  const v = prepareVirtio({ disks: [parseDiskSpec(img('one.img')), parseDiskSpec(img('two.img'))], rng: true, consoleSocket: sock });
  assert.deepEqual(v.configs.map((c) => c.device.constructor), [VirtioBlock, VirtioBlock, VirtioRng, VirtioConsole]);
  assert.equal(fs.existsSync(sock), false);
  await v.listen();
  assert.equal(fs.existsSync(sock), true);
  for (const c of v.configs) c.close?.();
  assert.equal(fs.existsSync(sock), false);
});

test('prepareVirtio: a bad disk after a good one closes the good one and reports the bad one', () => {
  assert.throws(
    () => prepareVirtio({ disks: [parseDiskSpec(img('good.img')), parseDiskSpec(path.join(tmp, 'missing.img'))], rng: false, consoleSocket: null }),
    /--disk .*missing\.img: cannot use it \(no such file\)/,
  );
  assert.throws(() => prepareVirtio({ disks: [], rng: false, consoleSocket: path.join(tmp, 'no', 'dir.sock') }), /does not exist/);
});

test('--virtio-transport: mmio (default) or pci, for every device; anything else is one CliError line', () => {
  assert.equal(parseVirtioTransport(undefined), 'mmio');
  assert.equal(parseVirtioTransport('mmio'), 'mmio');
  assert.equal(parseVirtioTransport('pci'), 'pci');
  assert.throws(() => parseVirtioTransport('PCI'), (e: Error) => e instanceof CliError && /^--virtio-transport "PCI": give mmio .* or pci/.test(e.message));
  const disk = img('transport.img');
  const pci = prepareVirtio({ disks: [parseDiskSpec(disk)], rng: true, consoleSocket: null, transport: 'pci' });
  assert.deepEqual(pci.configs.map((c) => c.transport), ['pci', 'pci']);
  for (const c of pci.configs) c.close?.();
  const mmio = prepareVirtio({ disks: [], rng: true, consoleSocket: null });
  assert.deepEqual(mmio.configs.map((c) => c.transport), [undefined], 'mmio configs are as before');
});

test('net specs: tap=NAME and mac=; anything else names the option and the choices', () => {
  const n = parseNetSpec('tap=tap0,mac=02:AA:bb:cc:dd:ee');
  assert.equal(n.tap, 'tap0');
  assert.equal(formatMac(n.mac!), '02:aa:bb:cc:dd:ee');
  assert.equal(parseNetSpec('tap=tap1').mac, null);
  assert.throws(() => parseNetSpec('tap0'), (e: Error) => e instanceof CliError && e.message === '--net tap0: unknown net option "tap0"; the options are tap=NAME and mac=xx:xx:xx:xx:xx:xx');
  assert.throws(() => parseNetSpec('mac=02:00:00:00:00:01'), /--net mac=02:00:00:00:00:01: no TAP device; give --net tap=NAME \(e\.g\. made with: ip tuntap add NAME mode tap user \$USER\)/);
  assert.throws(() => parseNetSpec('tap=t,mac=02:00:00:00:00'), /mac must be six hex bytes/);
  assert.throws(() => parseNetSpec('tap=t,mac=01:00:5e:00:00:01'), /01:00:5e:00:00:01 is a multicast address; give a unicast MAC/);
  assert.throws(() => parseNetSpec('tap=t,mac=00:00:00:00:00:00'), /not a usable MAC/);
  assert.equal(formatMac(defaultMac(5)), '02:74:73:76:6d:05');
});

/** A TapOpener that records opens and closes, refusing names in `refuse`. */
function fakeTaps(refuse: Record<string, string> = {}) {
  const log: string[] = [];
  const open: TapOpener = (name) => {
    if (refuse[name]) throw new CliError(refuse[name]!);
    log.push(`open ${name}`);
    return { name, send: () => true, setReceiver: () => {}, close: () => log.push(`close ${name}`) };
  };
  return { log, open };
}

test('prepareVirtio: nets go after disks, rng and console, with a default MAC from their slot', () => {
  const taps = fakeTaps();
  const v = prepareVirtio({
    disks: [parseDiskSpec(img('n1.img'))], rng: true, consoleSocket: null,
    nets: [parseNetSpec('tap=t0'), parseNetSpec('tap=t1,mac=02:00:00:00:00:09')], openTap: taps.open,
  });
  assert.deepEqual(v.configs.map((c) => c.device.constructor), [VirtioBlock, VirtioRng, VirtioNet, VirtioNet]);
  assert.deepEqual(v.configs.slice(2).map((c) => c.label), ['net tap t0 02:74:73:76:6d:02', 'net tap t1 02:00:00:00:00:09']);
  for (const c of v.configs) c.close?.();
  assert.deepEqual(taps.log, ['open t0', 'open t1', 'close t0', 'close t1']);
});

test('prepareVirtio: a bad --net closes what was opened; duplicates and slot overflow are refused before any open', () => {
  const taps = fakeTaps({ bad: 'TAP device bad is already attached' });
  assert.throws(
    () => prepareVirtio({ disks: [parseDiskSpec(img('n2.img'))], rng: false, consoleSocket: null, nets: [parseNetSpec('tap=ok'), parseNetSpec('tap=bad')], openTap: taps.open }),
    (e: Error) => e instanceof CliError && e.message === '--net tap=bad: TAP device bad is already attached',
  );
  assert.deepEqual(taps.log, ['open ok', 'close ok']);
  assert.throws(() => prepareVirtio({ disks: [], rng: false, consoleSocket: null, nets: [parseNetSpec('tap=a'), parseNetSpec('tap=a,mac=02:00:00:00:00:01')], openTap: taps.open }),
    /--net tap=a,mac=02:00:00:00:00:01: TAP device a is already given by --net tap=a/);
  assert.throws(() => prepareVirtio({ disks: [], rng: false, consoleSocket: null, nets: [parseNetSpec('tap=a,mac=02:00:00:00:00:01'), parseNetSpec('tap=b,mac=02:00:00:00:00:01')], openTap: taps.open }),
    /--net tap=b,mac=02:00:00:00:00:01: MAC 02:00:00:00:00:01 is already used by net tap a/);
  const nine = Array.from({ length: 9 }, (_, i) => parseNetSpec(`tap=n${i}`));
  assert.throws(() => prepareVirtio({ disks: [], rng: false, consoleSocket: null, nets: nine, openTap: taps.open }), /9 virtio devices .*--net.*8 virtio-mmio slots/);
  assert.deepEqual(taps.log, ['open ok', 'close ok', 'open a', 'close a']);
});
