// The virtio command-line options: disk specs, the checks made before KVM, and what they build.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { VirtioBlock } from '../virtio/block.js';
import { VirtioConsole } from '../virtio/console.js';
import { VirtioRng } from '../virtio/rng.js';
import { CliError } from './options.js';
import { openDisk, parseDiskSpec, parseVirtioTransport, prepareVirtio } from './virtio-options.js';

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
