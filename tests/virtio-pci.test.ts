// virtio-pci devices on the machine, on real KVM, driven by the `virtio-pci` test guest
// (tests/guests/virtio-pci.c, the same checks as the virtio-mmio guest): the guest finds the
// host bridge through the MCFG, the devices on bus 0 with the BARs the VMM assigned, reads and
// writes blocks that reach the host file, takes rng bytes, and completes one request by MSI-X
// (an irqfd on a GSI routed to the vector's message, or the userspace APIC bus) and one by INTx (a level line on the slot's pin);
// every doorbell goes through an ioeventfd. The same guest passes against QEMU's virtio-pci
// devices (virtio-pci-qemu, command in virtio-pci.c), which is how its driver was checked on a
// machine without KVM.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import * as layout from '../src/boot/layout.js';
import { canPunchHoles, punchHole } from '../src/hypervisor/kvm/backend.js';
import { VIRTIO_PCI_COMMON_CFG } from '../src/virtio/pci.js';
import { parseDiskSpec, prepareVirtio } from '../src/vmm/virtio-options.js';
import { guestPath } from './guests/index.js';
import { kvmSkip, scaled } from './kvm-available.js';
import { cliPath } from './repo.js';
import { runGuestFile, type GuestRun } from './run-guest.js';
import { GUEST_PATTERN_BYTES, GUEST_PATTERN_SECTOR, HOST_PATTERN_SECTOR, SECTOR, guestHeaderDefines, guestPattern, makeDisk as makeDiskIn } from './virtio-guest-disk.js';


const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-virtio-pci-'));

const makeDisk = (name: string) => makeDiskIn(tmp, name);

test('the test guest\'s common configuration offsets are the transport\'s (virtio-pci.h against src/virtio/pci.ts)', () => {
  const define = guestHeaderDefines('virtio-pci.h');
  const fields: Array<[string, Parameters<typeof VIRTIO_PCI_COMMON_CFG.offsetOf>[0]]> = [
    ['DFSELECT', 'device_feature_select'], ['DF', 'device_feature'], ['GFSELECT', 'guest_feature_select'], ['GF', 'guest_feature'],
    ['MSIX', 'msix_config'], ['NUMQ', 'num_queues'], ['STATUS', 'device_status'], ['Q_SELECT', 'queue_select'], ['Q_SIZE', 'queue_size'],
    ['Q_MSIX', 'queue_msix_vector'], ['Q_ENABLE', 'queue_enable'], ['Q_NOFF', 'queue_notify_off'], ['Q_DESCLO', 'queue_desc_lo'],
    ['Q_DESCHI', 'queue_desc_hi'], ['Q_AVAILLO', 'queue_avail_lo'], ['Q_AVAILHI', 'queue_avail_hi'], ['Q_USEDLO', 'queue_used_lo'], ['Q_USEDHI', 'queue_used_hi'],
  ];
  for (const [c, ts] of fields) assert.equal(define(`VIRTIO_PCI_COMMON_${c}`), VIRTIO_PCI_COMMON_CFG.offsetOf(ts), c);
});

interface PciRun { run: GuestRun; rwDisk: Buffer; roDisk: Buffer }
let shared: Promise<PciRun> | null = null;

/** One boot: a writable disk (slot 1), a read-only disk (slot 2) and an rng (slot 3), all over PCI, as the CLI builds them. */
function bootPciGuest(): Promise<PciRun> {
  shared ??= (async () => {
    const rwPath = makeDisk('rw.img');
    const roPath = makeDisk('ro.img');
    const virtio = prepareVirtio({ disks: [parseDiskSpec(rwPath), parseDiskSpec(`${roPath},readonly`)], rng: true, consoleSocket: null, transport: 'pci', holes: { canPunchHoles, punchHole } });
    const run = await runGuestFile(guestPath('virtio-pci'), { timeoutMs: 120000, virtio: virtio.configs });
    return { run, rwDisk: fs.readFileSync(rwPath), roDisk: fs.readFileSync(roPath) };
  })();
  return shared;
}

test('virtio-pci guest: config space through the MCFG\'s ECAM, each device in its slot with its INTA# pin, every check passes', { skip: kvmSkip }, async () => {
  const { run } = await bootPciGuest();
  assert.equal(run.status, 0, run.serial);
  assert.match(run.serial, new RegExp(`^pci: config via ecam 0x${layout.PCI_ECAM_GPA.toString(16)}$`, 'm'));
  assert.match(run.serial, /^pci slot 1: block \(id 2\) gsi 23, common cfg at 0xc[0-9a-f]{7}$/m);
  assert.match(run.serial, /^pci slot 2: block \(id 2\) gsi 22, common cfg at 0xc[0-9a-f]{7}$/m);
  assert.match(run.serial, /^pci slot 3: rng \(id 4\) gsi 21, common cfg at 0xc[0-9a-f]{7}$/m);
  assert.match(run.serial, /^virtio-pci: 3 devices, 0 errors$/m);
  assert.deepEqual(run.virtioPci.map((d) => [d.slot, d.gsi]), [[1, 23], [2, 22], [3, 21]]);
  // Every configuration and BAR access was claimed (absent functions answer through the ECAM).
  const pciUnclaimed = [...run.unclaimed.keys()].filter((k) => k.startsWith('mmio 0x') && Number(k.slice(5)) >= layout.PCI_MMIO32_BASE_GPA && Number(k.slice(5)) < layout.PCI_ECAM_GPA + layout.PCI_ECAM_SIZE_BYTES);
  assert.deepEqual(pciUnclaimed, []);
});

test('virtio-pci block: the host pattern read, the guest pattern written to the file; the read-only disk refuses', { skip: kvmSkip }, async () => {
  const { run, rwDisk, roDisk } = await bootPciGuest();
  assert.match(run.serial, /^blk0: capacity 128 sectors, ro 0, flush 1$/m);
  assert.match(run.serial, /^blk0: id tsvmm-disk0$/m);
  assert.match(run.serial, /^blk0: host pattern at sector 16 ok$/m);
  assert.match(run.serial, /^blk0: readback ok$/m);
  assert.match(run.serial, /^blk1: write sectors 8-9 status 1$/m);
  // DISCARD and WRITE_ZEROES over PCI too (tests/virtio.test.ts checks the holes they punch).
  assert.match(run.serial, /^blk0: write-zeroes sectors 40-47 \(unmap\) status 0, reads zeros$/m);
  assert.ok(rwDisk.subarray(40 * SECTOR, 48 * SECTOR).every((b) => b === 0));
  const written = rwDisk.subarray(GUEST_PATTERN_SECTOR * SECTOR, GUEST_PATTERN_SECTOR * SECTOR + GUEST_PATTERN_BYTES);
  assert.deepEqual([...written], Array.from({ length: GUEST_PATTERN_BYTES }, (_, i) => guestPattern(i)));
  assert.ok(roDisk.subarray(0, HOST_PATTERN_SECTOR * SECTOR).every((b) => b === 0));
});

test('virtio-pci rng: bytes, one request by MSI-X (through its vector\'s irqfd) and one by INTx on GSI 21', { skip: kvmSkip }, async () => {
  const { run } = await bootPciGuest();
  assert.match(run.serial, /^rng: 128 bytes, varied$/m);
  assert.match(run.serial, /^rng: interrupt by msi-x vector 0 \(0x22\)$/m);
  assert.match(run.serial, /^rng: interrupt by intx on gsi 21, ISR 0x1$/m);
  const rng = run.virtioPci[2]!;
  assert.ok(rng.interrupts >= 2);
  // The guest saw vector 0's message (0x22 above) arrive through KVM's routing of the irqfd's GSI:
  // no message took the KVM_SIGNAL_MSI ioctl.
  assert.ok(rng.msiByIrqfd >= 1, `MSI-X messages by irqfd: ${rng.msiByIrqfd}`);
  assert.equal(rng.msiBySignal, 0);
  assert.equal(rng.msiRoutesMade, 1, 'one GSI route for the one vector used');
});

test('virtio-pci doorbells: every notification through an ioeventfd at the BAR the VMM assigned, none as an MMIO exit', { skip: kvmSkip }, async () => {
  const { run } = await bootPciGuest();
  for (const d of run.virtioPci) {
    assert.equal(d.notifyExits, 0, `${d.label}: doorbell exits`);
    assert.ok(d.notifyEvents > 0n, `${d.label}: doorbells counted by the ioeventfd`);
  }
});

test('virtio-pci with --irqchip userspace: MSI-X reaches the VMM\'s APIC bus, INTx its IOAPIC', { skip: kvmSkip }, async () => {
  const virtio = prepareVirtio({ disks: [], rng: true, consoleSocket: null, transport: 'pci' });
  const run = await runGuestFile(guestPath('virtio-pci'), { timeoutMs: 120000, virtio: virtio.configs, irqchip: 'userspace' });
  assert.equal(run.status, 0, run.serial);
  assert.match(run.serial, /^rng: interrupt by msi-x vector 0 \(0x22\)$/m);
  assert.match(run.serial, /^rng: interrupt by intx on gsi 23, ISR 0x1$/m);
  assert.match(run.serial, /^virtio-pci: 1 devices, 0 errors$/m);
  // No KVM irqchip, so no GSI routes: every message went to our own APIC bus.
  assert.equal(run.virtioPci[0]!.msiByIrqfd, 0);
  assert.ok(run.virtioPci[0]!.msiBySignal >= 1);
});

test('tsvmm run --virtio-transport pci --stats: the guest passes and the stats name each PCI function', { skip: kvmSkip }, () => {
  const disk = makeDisk('cli.img');
  const r = spawnSync(process.execPath, [cliPath, 'run', '--kernel', guestPath('virtio-pci'), '--disk', disk, '--rng', '--virtio-transport', 'pci', '--stats'], { encoding: 'utf8', timeout: scaled(120000) });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /^virtio-pci: 2 devices, 0 errors$/m);
  assert.match(r.stderr, /^virtio-pci 00:01\.0 \(block .*cli\.img\): queue notifies [1-9]\d* via ioeventfd, 0 via MMIO exits; \d+ interrupts \(MSI-X: \d+ by irqfd, 0 direct\)$/m);
  assert.match(r.stderr, /^virtio-pci 00:02\.0 \(rng\): queue notifies [1-9]\d* via ioeventfd, 0 via MMIO exits; [1-9]\d* interrupts \(MSI-X: [1-9]\d* by irqfd, 0 direct\)$/m);
});

test('mmio and pci side by side: the virtio-mmio guest sees only its devices when the others are on PCI', { skip: kvmSkip }, async () => {
  const mmio = prepareVirtio({ disks: [], rng: true, consoleSocket: null });
  const pci = prepareVirtio({ disks: [], rng: true, consoleSocket: null, transport: 'pci' });
  const run = await runGuestFile(guestPath('virtio'), { timeoutMs: 120000, virtio: [...mmio.configs, ...pci.configs], cmdline: '' });
  assert.equal(run.status, 0, run.serial);
  assert.match(run.serial, /^slot 0: rng \(id 4\) gsi 16$/m);
  assert.match(run.serial, /^virtio: 1 devices, 0 errors$/m);
  assert.equal(run.virtioPci.length, 1);
});
