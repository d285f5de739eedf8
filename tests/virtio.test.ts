// virtio-mmio devices on the machine, on real KVM, driven by the `virtio` test guest
// (tests/guests/virtio.c): block reads and writes that reach the host file, a read-only disk that
// refuses writes, flush, rng bytes and an interrupt through irqfd, console bytes both ways through
// the Unix socket, and every QueueNotify taken by an ioeventfd (no userspace MMIO exit).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import test from 'node:test';
import * as layout from '../src/boot/layout.js';
import { canPunchHoles, punchHole } from '../src/hypervisor/kvm/backend.js';
import { parseDiskSpec, prepareVirtio } from '../src/vmm/virtio-options.js';
import { guestPath } from './guests/index.js';
import { kvmSkip, scaled } from './kvm-available.js';
import { cliPath } from './repo.js';
import { runGuestFile, type GuestRun } from './run-guest.js';
import { DISCARD_SECTOR, GUEST_PATTERN_BYTES, GUEST_PATTERN_SECTOR, HOST_PATTERN_SECTOR, SECTOR, UNMAP_SECTORS, WRITE_ZEROES_SECTOR, guestHeaderDefines, guestPattern, makeDisk as makeDiskIn } from './virtio-guest-disk.js';

const GREETING = 'hello from the virtio console\n';
const HOST_LINE = 'ping from host';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-virtio-'));

const makeDisk = (name: string) => makeDiskIn(tmp, name);

test('the slot layout the test guest probes is the machine\'s (virtio-mmio.h against layout.ts)', () => {
  const define = guestHeaderDefines('virtio-mmio.h');
  assert.equal(define('VIRTIO_MMIO_BASE_GPA'), layout.VIRTIO_MMIO_BASE_GPA);
  assert.equal(define('VIRTIO_MMIO_STRIDE_BYTES'), layout.VIRTIO_MMIO_STRIDE_BYTES);
  assert.equal(define('VIRTIO_MMIO_SLOTS'), layout.VIRTIO_MMIO_SLOTS);
  assert.equal(define('VIRTIO_MMIO_FIRST_IRQ'), layout.VIRTIO_MMIO_FIRST_IRQ);
});

interface VirtioRun {
  run: GuestRun;
  socketBytes: string;
  rwDisk: Buffer;
  roDisk: Buffer;
  /** The writable image's stat before and after the run, and whether its file system punches holes. */
  rwBefore: fs.Stats;
  rwAfter: fs.Stats;
  holes: boolean;
}

let shared: Promise<VirtioRun> | null = null;

/**
 * One boot of the virtio guest with, in slot order: a writable disk, a read-only disk, an rng and
 * a console on a socket, assembled exactly as the CLI does (prepareVirtio). The test's socket
 * client answers the guest's greeting with a line, which the guest echoes back.
 */
function bootVirtioGuest(): Promise<VirtioRun> {
  shared ??= (async () => {
    const rwPath = makeDisk('rw.img');
    const roPath = makeDisk('ro.img');
    const socketPath = path.join(tmp, 'console.sock');
    const virtio = prepareVirtio({ disks: [parseDiskSpec(rwPath), parseDiskSpec(`${roPath},readonly`)], rng: true, consoleSocket: socketPath, holes: { canPunchHoles, punchHole } });
    const rwBefore = fs.statSync(rwPath);
    const probe = fs.openSync(rwPath, 'r+');
    const holes = canPunchHoles(probe, rwBefore.size);
    fs.closeSync(probe);
    await virtio.listen();
    let socketBytes = '';
    let answered = false;
    const client = net.connect(socketPath);
    client.on('data', (d: Buffer) => {
      socketBytes += d.toString('latin1');
      if (!answered && socketBytes.includes(GREETING)) {
        answered = true;
        client.write(`${HOST_LINE}\n`);
      }
    });
    client.on('error', () => {});
    await new Promise<void>((res, rej) => { client.once('connect', res); client.once('error', rej); });
    try {
      const closed = new Promise<void>((res) => client.once('close', () => res()));
      const run = await runGuestFile(guestPath('virtio'), { timeoutMs: 120000, virtio: virtio.configs, cmdline: 'console_wait_ms=60000' });
      // The machine's shutdown ends the client after the last queued bytes (the echo): read them all.
      await Promise.race([closed, new Promise((res) => setTimeout(res, 5000))]);
      return { run, socketBytes, rwDisk: fs.readFileSync(rwPath), roDisk: fs.readFileSync(roPath), rwBefore, rwAfter: fs.statSync(rwPath), holes };
    } finally {
      client.destroy();
    }
  })();
  return shared;
}

test('virtio guest: every device is found in its slot at its GSI, and every check passes', { skip: kvmSkip }, async () => {
  const { run } = await bootVirtioGuest();
  assert.equal(run.status, 0, run.serial);
  assert.match(run.serial, /^slot 0: block \(id 2\) gsi 16$/m);
  assert.match(run.serial, /^slot 1: block \(id 2\) gsi 17$/m);
  assert.match(run.serial, /^slot 2: rng \(id 4\) gsi 18$/m);
  assert.match(run.serial, /^slot 3: console \(id 3\) gsi 19$/m);
  assert.match(run.serial, /^virtio: 4 devices, 0 errors$/m);
  // The empty slots are unclaimed MMIO: each probed once (its magic read all-ones).
  for (let slot = 4; slot < layout.VIRTIO_MMIO_SLOTS; slot++) {
    const gpa = layout.VIRTIO_MMIO_BASE_GPA + slot * layout.VIRTIO_MMIO_STRIDE_BYTES;
    assert.equal(run.unclaimed.get(`mmio 0x${gpa.toString(16)}`), 1, `slot ${slot} probed once`);
  }
});

test('virtio-blk: the guest reads what the test wrote in the host file, and its writes land there', { skip: kvmSkip }, async () => {
  const { run, rwDisk } = await bootVirtioGuest();
  assert.match(run.serial, /^blk0: capacity 128 sectors, ro 0, flush 1$/m);
  assert.match(run.serial, /^blk0: id tsvmm-disk0$/m);
  assert.match(run.serial, /^blk0: host pattern at sector 16 ok$/m);
  assert.match(run.serial, /^blk0: write sectors 8-9 status 0$/m);
  assert.match(run.serial, /^blk0: readback ok$/m);
  const written = rwDisk.subarray(GUEST_PATTERN_SECTOR * SECTOR, GUEST_PATTERN_SECTOR * SECTOR + GUEST_PATTERN_BYTES);
  assert.deepEqual([...written], Array.from({ length: GUEST_PATTERN_BYTES }, (_, i) => guestPattern(i)));
  assert.ok(rwDisk.subarray(GUEST_PATTERN_SECTOR * SECTOR + GUEST_PATTERN_BYTES, HOST_PATTERN_SECTOR * SECTOR).every((b) => b === 0), 'nothing past the written sectors');
});

test('virtio-blk: a read-only disk refuses the write with VIRTIO_BLK_S_IOERR and the file is untouched', { skip: kvmSkip }, async () => {
  const { run, roDisk } = await bootVirtioGuest();
  assert.match(run.serial, /^blk1: capacity 128 sectors, ro 1, flush 1$/m);
  assert.match(run.serial, /^blk1: host pattern at sector 16 ok$/m);
  assert.match(run.serial, /^blk1: write sectors 8-9 status 1$/m);
  assert.doesNotMatch(run.serial, /^blk1: readback/m);
  assert.ok(roDisk.subarray(0, HOST_PATTERN_SECTOR * SECTOR).every((b) => b === 0));
});

test('virtio-blk: DISCARD and WRITE_ZEROES with UNMAP punch holes in the image (zeros, blocks freed, size kept); not offered read-only', { skip: kvmSkip }, async () => {
  const { run, rwDisk, rwBefore, rwAfter, holes } = await bootVirtioGuest();
  const unmapped = rwDisk.subarray(DISCARD_SECTOR * SECTOR, (WRITE_ZEROES_SECTOR + UNMAP_SECTORS) * SECTOR);
  assert.match(run.serial, /^blk0: write-zeroes sectors 40-47 \(unmap\) status 0, reads zeros$/m);
  assert.doesNotMatch(run.serial, /^blk1: (discard|write-zeroes)/m, 'a read-only disk offers neither');
  if (!holes) {
    // This file system punches no holes: no DISCARD, and WRITE_ZEROES wrote zeros.
    assert.doesNotMatch(run.serial, /^blk0: discard/m);
    assert.ok(unmapped.subarray((WRITE_ZEROES_SECTOR - DISCARD_SECTOR) * SECTOR).every((b) => b === 0));
    return;
  }
  assert.match(run.serial, /^blk0: discard sectors 32-39 status 0$/m);
  assert.ok(unmapped.every((b) => b === 0), 'both ranges read as zeros from the host file');
  assert.equal(rwAfter.size, rwBefore.size, 'the image keeps its size');
  // 16 sectors of 512 bytes = st_blocks' unit: the two 4 KiB-aligned ranges are no longer allocated.
  assert.ok(rwAfter.blocks <= rwBefore.blocks - 2 * UNMAP_SECTORS, `allocated 512-byte blocks ${rwBefore.blocks} -> ${rwAfter.blocks}`);
});

test('virtio-blk: flush completes (fdatasync) on both disks', { skip: kvmSkip }, async () => {
  const { run } = await bootVirtioGuest();
  assert.match(run.serial, /^blk0: flush status 0$/m);
  assert.match(run.serial, /^blk1: flush status 0$/m);
});

test('virtio-rng: bytes arrive, and a request completed by interrupt (irqfd on GSI 18)', { skip: kvmSkip }, async () => {
  const { run } = await bootVirtioGuest();
  assert.match(run.serial, /^rng: 128 bytes, varied$/m);
  assert.match(run.serial, /^rng: interrupt on gsi 18, InterruptStatus 0x1$/m);
  assert.ok(run.virtio[2]!.interrupts >= 1);
});

test('virtio-console: bytes both ways through the Unix socket', { skip: kvmSkip }, async () => {
  const { run, socketBytes } = await bootVirtioGuest();
  assert.match(run.serial, /^console: sent greeting$/m);
  assert.match(run.serial, new RegExp(`^console: received "${HOST_LINE}"$`, 'm'));
  assert.equal(socketBytes, `${GREETING}echo: ${HOST_LINE}\n`);
  assert.equal(fs.existsSync(path.join(tmp, 'console.sock')), false, 'the socket is removed when the VM ends');
});

test('QueueNotify: every notification went through an ioeventfd, none through a userspace MMIO exit', { skip: kvmSkip }, async () => {
  const { run } = await bootVirtioGuest();
  assert.equal(run.virtio.length, 4);
  for (const slot of run.virtio) {
    assert.equal(slot.notifyExits, 0, `${slot.label}: QueueNotify exits`);
    assert.ok(slot.notifyEvents > 0n, `${slot.label}: notifications counted by the ioeventfd`);
  }
});

test('tsvmm run --disk --rng --stats: the guest passes and the stats show notifies via ioeventfd only', { skip: kvmSkip }, () => {
  const disk = makeDisk('cli.img');
  const r = spawnSync(process.execPath, [cliPath, 'run', '--kernel', guestPath('virtio'), '--disk', disk, '--rng', '--stats'], { encoding: 'utf8', timeout: scaled(120000) });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /^virtio: 2 devices, 0 errors$/m);
  assert.match(r.stderr, /^virtio slot 0 \(block .*cli\.img\): queue notifies [1-9]\d* via ioeventfd, 0 via MMIO exits; \d+ interrupts$/m);
  assert.match(r.stderr, /^virtio slot 1 \(rng\): queue notifies [1-9]\d* via ioeventfd, 0 via MMIO exits; [1-9]\d* interrupts$/m);
  const written = fs.readFileSync(disk).subarray(GUEST_PATTERN_SECTOR * SECTOR, GUEST_PATTERN_SECTOR * SECTOR + GUEST_PATTERN_BYTES);
  assert.deepEqual([...written], Array.from({ length: GUEST_PATTERN_BYTES }, (_, i) => guestPattern(i)));
});
