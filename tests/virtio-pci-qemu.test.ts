// The virtio-pci test guest's driver against QEMU's own virtio-pci devices, under TCG (software,
// no KVM needed): QEMU microvm's PCIe host (the `virtio-pci-qemu` build: ECAM at 0xe0000000, the
// driver places the BARs) and, firmware in the loop, q35 (MCFG, SeaBIOS's BARs) and pc (ports
// 0xCF8/0xCFC, no MCFG) with the `virtio-pci` build tsvmm boots. This is what checks the guest
// side where there is no /dev/kvm; skipped without qemu-system-x86_64.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { guestPath } from './guests/index.js';

const QEMU = 'qemu-system-x86_64';
const qemuSkip: string | false = spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).status === 0 ? false : `needs ${QEMU} (Debian package qemu-system-x86)`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-vpci-qemu-'));

function disk(name: string): string {
  const p = path.join(tmp, name);
  const b = Buffer.alloc(64 * 1024);
  for (let i = 0; i < 512; i++) b[16 * 512 + i] = (i * 31 + 7) & 0xff;
  fs.writeFileSync(p, b);
  return p;
}

function qemu(machine: string, guest: 'virtio-pci' | 'virtio-pci-qemu') {
  const img = disk(`${machine.replace(/[^a-z0-9]/g, '_')}.img`);
  const r = spawnSync(QEMU, [
    '-M', machine, '-accel', 'tcg', '-cpu', 'max', '-m', '256M', '-nodefaults', '-no-user-config', '-nographic',
    '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
    '-drive', `id=d0,file=${img},format=raw,if=none`, '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on',
    '-device', 'virtio-rng-pci,disable-legacy=on', '-kernel', guestPath(guest),
  ], { encoding: 'latin1', timeout: 120000 });
  const written = fs.readFileSync(img).subarray(8 * 512, 8 * 512 + 1024);
  return { status: r.status, out: r.stdout, written };
}

function assertPasses(r: ReturnType<typeof qemu>, intxGsi: number): void {
  // isa-debug-exit: a guest status of 0 is QEMU's exit status 1.
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /^pci slot \d+: block \(id 2\) gsi \d+, common cfg at 0x/m);
  assert.match(r.out, /^blk0: host pattern at sector 16 ok$/m);
  assert.match(r.out, /^blk0: readback ok$/m);
  assert.match(r.out, /^rng: 128 bytes, varied$/m);
  assert.match(r.out, /^rng: interrupt by msi-x vector 0 \(0x22\)$/m);
  assert.match(r.out, new RegExp(`^rng: interrupt by intx on gsi ${intxGsi}, ISR 0x1$`, 'm'));
  assert.match(r.out, /^virtio-pci: 2 devices, 0 errors$/m);
  assert.deepEqual([...r.written], Array.from({ length: 1024 }, (_, i) => ((i * 7) ^ 0xa5) & 0xff), 'the guest pattern reached the image');
}

test('QEMU microvm,pcie=on: virtio-pci-qemu passes every check against QEMU\'s devices (ECAM, BARs placed by the guest, MSI-X, INTx)', { skip: qemuSkip }, () => {
  const r = qemu('microvm,pcie=on,ioapic2=off', 'virtio-pci-qemu');
  assert.match(r.out, /^pci: config via ecam 0xe0000000$/m);
  assertPasses(r, 14); // the rng in slot 2: GSI 12 + 2
});

test('QEMU q35 (SeaBIOS, MCFG): the virtio-pci build tsvmm boots passes with firmware-assigned BARs', { skip: qemuSkip }, () => {
  const r = qemu('q35', 'virtio-pci');
  assert.match(r.out, /pci: config via ecam 0xb0000000$/m); // after SeaBIOS's "Booting from ROM.." on the same line
  assertPasses(r, 11);
});

test('QEMU pc (SeaBIOS, no MCFG): the virtio-pci build falls back to ports 0xCF8/0xCFC', { skip: qemuSkip }, () => {
  const r = qemu('pc', 'virtio-pci');
  assert.match(r.out, /pci: config via cf8$/m);
  assertPasses(r, 11);
});
