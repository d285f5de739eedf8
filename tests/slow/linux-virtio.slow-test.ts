// Slow group: Linux's own virtio drivers against tsvmm's devices. Debian's cloud kernel loads its
// virtio modules (fetched with the kernel, packed into the initramfs next to our /init) and finds
// a virtio block disk, an rng and a console, over virtio-mmio (described to Linux by our DSDT,
// LNRO0005) and over virtio-pci (PCI host bridge, ECAM, MSI-X). /init (tests/guests/linux/init.c)
// reads the disk's sector 0 that the host wrote, writes a mark that the host then finds in the
// file after an fsync, discards a range (BLKDISCARD: the host file gets a hole there), reads
// /dev/hwrng and writes to /dev/hvc0, which arrives on the console socket.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { debianKernelPath, debianModulesDir } from '../../src/boot/debian-kernel.js';
import { canPunchHoles } from '../../src/hypervisor/kvm/backend.js';
import { linuxProgramPath } from '../guests/index.js';
import { buildInitramfs, S_IFDIR, S_IFREG } from '../guests/initramfs.js';
import { kvmSkip, scaled } from '../kvm-available.js';
import { bootLinux, pvmSkip } from './boot-linux.js';

const SECTOR0 = 'tsvmm disk for Linux\'s virtio_blk';
// tests/guests/linux/init.c: WRITE_OFFSET, WRITE_MARK, HVC_MARK, DISCARD_OFFSET, DISCARD_BYTES
const WRITE_OFFSET = 4096;
const DISCARD_OFFSET = 65536;
const DISCARD_BYTES = 65536;
const WRITE_MARK = 'tsvmm-init: written by Linux\'s virtio_blk\n';
const HVC_MARK = 'tsvmm-init: hello through hvc0\n';

/** Collects everything the console socket gives, once it appears (the VMM creates it at start). */
function collectConsole(socketPath: string): { text: () => string; close: () => void } {
  let text = '';
  let socket: net.Socket | null = null;
  let closed = false;
  const attach = () => {
    if (closed) return;
    if (!existsSync(socketPath)) { setTimeout(attach, 20); return; }
    socket = net.connect(socketPath);
    socket.on('data', (d: Buffer) => { text += d.toString('latin1'); });
    socket.on('error', () => undefined); // the VMM closing it at power-off is expected
  };
  attach();
  return { text: () => text, close: () => { closed = true; socket?.destroy(); } };
}

for (const transport of ['mmio', 'pci'] as const) {
  test(`Linux's virtio drivers use tsvmm's block, rng and console devices over virtio-${transport}`,
    { timeout: scaled(90_000), skip: kvmSkip || pvmSkip }, async (t) => {
      const kernel = debianKernelPath();
      if (!kernel) { t.skip('no Debian kernel in .cache/kernels; run `npm run fetch-kernel`'); return; }
      const modules = debianModulesDir(kernel);
      if (!existsSync(modules)) { t.skip(`no virtio modules in ${modules}; run \`npm run fetch-kernel\``); return; }
      const dir = mkdtempSync(join(tmpdir(), 'tsvmm-linux-virtio-'));
      const console = collectConsole(join(dir, 'console.sock'));
      try {
        const initrd = join(dir, 'initrd.cpio');
        writeFileSync(initrd, buildInitramfs([
          { name: 'init', mode: S_IFREG | 0o755, data: readFileSync(linuxProgramPath('init')) },
          { name: 'sys', mode: S_IFDIR | 0o755 },
          { name: 'proc', mode: S_IFDIR | 0o755 },
          { name: 'lib', mode: S_IFDIR | 0o755 },
          { name: 'lib/modules', mode: S_IFDIR | 0o755 },
          ...readdirSync(modules).sort().map((m) => ({ name: `lib/modules/${m}`, mode: S_IFREG | 0o644, data: readFileSync(join(modules, m)) })),
        ]));
        const disk = join(dir, 'disk.img');
        const image = Buffer.alloc(1 << 20);
        image.write(`${SECTOR0}\n`, 0, 'latin1');
        image.fill(0xee, DISCARD_OFFSET, DISCARD_OFFSET + DISCARD_BYTES);
        writeFileSync(disk, image);
        const blocksBefore = statSync(disk).blocks;
        const probe = openSync(disk, 'r+');
        const holes = canPunchHoles(probe, image.length);
        closeSync(probe);
        const { status, out, tail } = await bootLinux(kernel, initrd, 'earlyprintk=serial console=ttyS0 panic=-1', [
          '--memory', '512M', '--virtio-transport', transport, '--disk', disk, '--rng', '--console-socket', join(dir, 'console.sock'),
        ]);
        for (const m of ['virtio.ko', 'virtio_ring.ko', `virtio_${transport}.ko`, 'virtio_blk.ko', 'virtio-rng.ko', 'virtio_console.ko']) {
          assert.match(out, new RegExp(`tsvmm-init: module ${m.replace('.', '\\.')} 0\\r?\\n`), `/init loaded ${m}${tail}`);
        }
        // The disk is where the transport puts it: under our DSDT's LNRO0005 device, or on PCI bus 0.
        const bus = transport === 'mmio' ? /tsvmm-init: vda device \S*\/platform\/LNRO0005:\d+\/virtio\d+\/block\/vda\r?\n/
          : /tsvmm-init: vda device \S*\/pci0000:00\/0000:00:[0-9a-f]{2}\.0\/virtio\d+\/block\/vda\r?\n/;
        assert.match(out, bus, `/sys/block/vda is on the ${transport} transport${tail}`);
        // Over PCI the driver takes MSI-X vectors (each an irqfd on a GSI KVM routes to its message), not INTx.
        if (transport === 'pci') assert.match(out, /tsvmm-init: irq .*PCI-MSI.*virtio\d+-(config|requests?|input)/, `virtio-pci uses MSI-X${tail}`);
        else assert.match(out, /tsvmm-init: irq .*IO-APIC.*virtio\d+/, `virtio-mmio interrupts are IO-APIC lines${tail}`);
        assert.match(out, new RegExp(`tsvmm-init: vda sector0 ${SECTOR0}\\r?\\n`), `virtio_blk read what the host wrote${tail}`);
        assert.match(out, new RegExp(`tsvmm-init: vda wrote ${WRITE_MARK.length} fsync 0\\r?\\n`), `virtio_blk wrote and flushed${tail}`);
        assert.equal(readFileSync(disk).subarray(WRITE_OFFSET, WRITE_OFFSET + WRITE_MARK.length).toString('latin1'), WRITE_MARK,
          `the mark Linux wrote is in the host file${tail}`);
        // DISCARD punched a hole (the CLI's disks free blocks where the file system can): zeros, blocks freed.
        if (holes) {
          assert.match(out, /tsvmm-init: vda discard 0\r?\n/, `virtio_blk sent BLKDISCARD as DISCARD${tail}`);
          assert.ok(readFileSync(disk).subarray(DISCARD_OFFSET, DISCARD_OFFSET + DISCARD_BYTES).every((b) => b === 0), `the discarded range reads as zeros in the host file${tail}`);
          assert.ok(statSync(disk).blocks <= blocksBefore - DISCARD_BYTES / 512, `the discarded range's blocks were freed (${blocksBefore} -> ${statSync(disk).blocks} 512-byte blocks)${tail}`);
        } else {
          // No holes on this file system: DISCARD is not offered, and Linux refuses BLKDISCARD (EOPNOTSUPP).
          assert.match(out, /tsvmm-init: vda discard -95\r?\n/, `no DISCARD without hole punching${tail}`);
        }
        assert.match(out, /tsvmm-init: hwrng 16 bytes\r?\n/, `virtio-rng gave /dev/hwrng its bytes${tail}`);
        assert.match(out, new RegExp(`tsvmm-init: hvc0 ${HVC_MARK.length}\\r?\\n`), `virtio_console took the write${tail}`);
        // The tty turns "\n" into "\r\n" (ONLCR).
        assert.ok(console.text().includes(HVC_MARK.replace('\n', '\r\n')), `the console socket got /dev/hvc0's bytes (got ${JSON.stringify(console.text().slice(-200))})${tail}`);
        assert.match(out, /reboot: Power down/, `the kernel powered off${tail}`);
        assert.equal(status, 0, `tsvmm exits 0 on power-off${tail}`);
      } finally {
        console.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
