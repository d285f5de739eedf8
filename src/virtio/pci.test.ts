import assert from 'node:assert/strict';
import test from 'node:test';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE } from '../pci/config-space.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VirtioBlock } from './block.js';
import { VirtioConsole } from './console.js';
import { MmioHarness, blkRequestHeader } from './guest-driver.js';
import { PciHarness, msiMessage } from './pci-guest-driver.js';
import {
  VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_BAR_SIZE_BYTES, VIRTIO_PCI_ISR_CONFIG, VIRTIO_PCI_ISR_QUEUE, VirtioPci,
} from './pci.js';
import { VirtioRng } from './rng.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1, featureBit, type VirtioDevice } from './virtio.js';
import { VIRTQ_DESC_F_NEXT } from './virtqueue.js';

// Capability layout numbers typed in from VIRTIO 1.2 4.1.4 (struct virtio_pci_cap: cfg_type at
// +3, bar +4, offset +8, length +12; notify_off_multiplier at +16) and the common configuration
// offsets from 4.1.4.3, not taken from pci.ts's tables.

function counting() {
  let next = 0;
  return (buf: Uint8Array) => { for (let i = 0; i < buf.length; i++) buf[i] = next++ & 0xff; };
}

const SECTOR = 512;

function memDisk(sectors: number) {
  const bytes = new Uint8Array(sectors * SECTOR);
  return {
    bytes,
    sizeBytes: bytes.length,
    readv(offset: number, bufs: readonly Uint8Array[]) { let at = offset; for (const b of bufs) { b.set(bytes.subarray(at, at + b.length)); at += b.length; } },
    writev(offset: number, bufs: readonly Uint8Array[]) { let at = offset; for (const b of bufs) { bytes.set(b, at); at += b.length; } },
  };
}


test('identity: 1af4:1040+type, revision 1, class per type, INTA#, one 64-bit BAR of 32 KiB', () => {
  const cases: Array<[VirtioDevice, number, number]> = [
    [new VirtioRng(), 0x1044, 0xff0000],
    [new VirtioBlock({ backend: memDisk(8) }), 0x1042, 0x010000],
    [new VirtioConsole({ output: () => {} }), 0x1043, 0x078000],
  ];
  for (const [dev, deviceId, classCode] of cases) {
    const info = new PciHarness(dev).driver.info;
    assert.equal(info.vendorId, 0x1af4);
    assert.equal(info.deviceId, deviceId);
    assert.equal(info.revision, 1);
    assert.equal(info.classCode, classCode);
    assert.equal(info.subsystemVendorId, 0x1af4);
    assert.ok(info.subsystemId >= 0x40, 'non-transitional: subsystem ID 0x40 or above');
    assert.equal(info.interruptPin, 1);
    assert.deepEqual(info.bars.map((b) => [b.index, b.kind, b.prefetchable, b.sizeBytes]), [[0, 'mem64', false, VIRTIO_PCI_BAR_SIZE_BYTES]]);
  }
});

test('capabilities as virtio_pci_find_capability walks them: common, notify (multiplier 4), ISR, device, PCI cfg, then MSI-X', () => {
  const h = new PciHarness(new VirtioBlock({ backend: memDisk(8) }));
  const cfg = h.driver.cfg;
  const caps = h.driver.info.capabilities;
  assert.deepEqual(caps.map(([id]) => id), [0x09, 0x09, 0x09, 0x09, 0x09, 0x11]);
  const vendor = caps.filter(([id]) => id === 0x09).map(([, pos]) => ({
    len: cfg.read(h.slot, pos + 2, 1), type: cfg.read(h.slot, pos + 3, 1), bar: cfg.read(h.slot, pos + 4, 1),
    offset: cfg.read(h.slot, pos + 8, 4), length: cfg.read(h.slot, pos + 12, 4),
  }));
  assert.deepEqual(vendor, [
    { len: 16, type: 1, bar: 0, offset: 0x0000, length: 60 },
    { len: 20, type: 2, bar: 0, offset: 0x3000, length: 4 },
    { len: 16, type: 3, bar: 0, offset: 0x1000, length: 1 },
    { len: 16, type: 4, bar: 0, offset: 0x2000, length: h.device.configSizeBytes },
    { len: 20, type: 5, bar: 0, offset: 0, length: 0 },
  ]);
  assert.equal(cfg.read(h.slot, caps[1]![1] + 16, 4), 4, 'notify_off_multiplier');
  h.driver.probe();
  assert.equal(h.driver.msixVectors, 2, 'one per queue and one for configuration');
  assert.equal(h.driver.msixTableGpa, h.transport.bar.gpa! + 0x4000);
  // No device configuration (virtio-rng): no device capability, as QEMU does it.
  const rng = new PciHarness(new VirtioRng());
  assert.equal(rng.transport.capabilityOffsets.device, -1);
  rng.driver.probe();
  assert.equal(rng.driver.device, null);
});

test('common configuration: natural-width accesses only; selectors, queue registers and vectors read back', () => {
  const h = new PciHarness(new VirtioConsole({ output: () => {} }));
  h.driver.probe();
  const d = h.driver;
  assert.equal(d.read('num_queues'), 2);
  assert.equal(busRead(h, d.common.gpa + 18, 4), 0, 'a dword read of the 16-bit num_queues answers 0');
  assert.equal(busRead(h, d.common.gpa + 19, 1), 0, 'half a field: 0');
  d.write('queue_select', 1);
  assert.equal(d.read('queue_size'), 256);
  d.write('queue_size', 64);
  assert.equal(d.read('queue_size'), 64);
  assert.equal(d.read('queue_notify_off'), 1);
  d.write('queue_desc_lo', 0x1234_5000);
  d.write('queue_desc_hi', 0x1);
  assert.deepEqual([d.read('queue_desc_lo'), d.read('queue_desc_hi')], [0x1234_5000, 1]);
  assert.equal(h.transport.queues[1]!.descTableGpa, 0x1_1234_5000);
  d.write('queue_msix_vector', 2);
  assert.equal(d.read('queue_msix_vector'), 2);
  d.write('queue_msix_vector', 3);
  assert.equal(d.read('queue_msix_vector'), VIRTIO_MSI_NO_VECTOR, 'only 3 vectors: the mapping fails');
  assert.equal(d.setConfigVector(7), VIRTIO_MSI_NO_VECTOR);
  d.write('queue_select', 5);
  assert.deepEqual([d.read('queue_size'), d.read('queue_enable'), d.read('queue_msix_vector')], [0, 0, VIRTIO_MSI_NO_VECTOR], 'no queue 5');
  d.write('device_feature_select', 1);
  assert.equal(d.read('device_feature'), Number(featureBit(VIRTIO_F_VERSION_1) >> 32n));
  d.write('device_feature_select', 2);
  assert.equal(d.read('device_feature'), 0);
});

function busRead(h: PciHarness, gpa: number, len: number): number {
  const data = new Uint8Array(len);
  h.mmio.access(gpa, false, data);
  return data.reduceRight((v, b) => v * 256 + b, 0);
}

test('virtio-rng over PCI with MSI-X: the queue vector fires, no ISR bit, no INTx', () => {
  const h = new PciHarness(new VirtioRng({ source: counting() }));
  const [ring] = h.bringUp();
  const a = h.buffer(16);
  ring!.add([], [a]);
  assert.equal(ring!.kickPrepare(), true);
  h.driver.notifyQueue(0);
  assert.deepEqual(h.messages, [[0xfee0_0000, 0, msiMessage(1).data]]);
  assert.deepEqual(h.intx, []);
  assert.equal(h.transport.pendingIsr, 0, '4.1.4.5: the queue bit is set only without MSI-X');
  assert.deepEqual(ring!.getBuf(), { id: 0, len: 16 });
  assert.deepEqual([...h.read(a)], Array.from({ length: 16 }, (_, i) => i));
  assert.equal(h.transport.queueMsixVector(0), 1);
  assert.equal(h.transport.configMsixVector, 0);
  assert.deepEqual(h.memory.outside, []);
  assert.deepEqual(h.errors, []);
});

test('virtio-rng over PCI without MSI-X: ISR queue bit and INTA#; reading ISR clears it and lowers the line', () => {
  const h = new PciHarness(new VirtioRng({ source: counting() }), { msix: false });
  const [ring] = h.bringUp();
  ring!.add([], [h.buffer(8)]);
  h.driver.notifyQueue(0);
  assert.equal(h.intxAsserted, true);
  assert.deepEqual(h.msi, []);
  assert.equal(h.driver.readIsr(), VIRTIO_PCI_ISR_QUEUE);
  assert.equal(h.intxAsserted, false);
  assert.equal(h.driver.readIsr(), 0, 'read clears');
  assert.equal(ring!.getBuf()?.len, 8);
  // COMMAND.INTX_DISABLE holds the line down; the ISR still says why.
  h.driver.cfg.write(h.slot, PCI_COMMAND, 2, h.driver.cfg.read(h.slot, PCI_COMMAND, 2) | PCI_COMMAND_INTX_DISABLE);
  ring!.add([], [h.buffer(8)]);
  h.driver.notifyQueue(0);
  assert.equal(h.intxAsserted, false);
  assert.equal(h.driver.readIsr(), VIRTIO_PCI_ISR_QUEUE);
  assert.deepEqual(h.intx, [1, 0]);
  assert.equal(ring!.getBuf()?.len, 8);
});

for (const mode of ['msix', 'intx'] as const) {
  test(`virtio-blk over PCI (${mode === 'msix' ? 'MSI-X' : 'INTx fallback'}), configuration through ECAM: OUT then IN round trip`, () => {
    const disk = memDisk(64);
    const h = new PciHarness(new VirtioBlock({ backend: disk }), { access: 'ecam', msix: mode === 'msix' });
    const [ring] = h.bringUp();
    assert.equal(h.driver.readConfig(0, 4), 64, 'capacity in sectors, from the device configuration region');
    const interrupted = () => {
      if (mode === 'msix') return h.msi.splice(0).length === 1 && h.intx.length === 0;
      const ok = h.intxAsserted && h.driver.readIsr() === VIRTIO_PCI_ISR_QUEUE && !h.intxAsserted;
      return ok && h.msi.length === 0;
    };
    const data = Uint8Array.from({ length: 2 * SECTOR }, (_, i) => (i * 13) & 0xff);
    const status = h.buffer(1, 0xff);
    ring!.add([h.bytes(blkRequestHeader(VIRTIO_BLK_T_OUT, 3)), h.bytes(data)], [status]);
    h.driver.notifyQueue(0);
    assert.ok(interrupted(), 'one interrupt for the write');
    assert.deepEqual(ring!.getBuf()?.len, 1);
    assert.equal(h.read(status)[0], VIRTIO_BLK_S_OK);
    assert.deepEqual(disk.bytes.subarray(3 * SECTOR, 5 * SECTOR), data);
    const back = h.buffer(2 * SECTOR);
    const status2 = h.buffer(1, 0xff);
    ring!.add([h.bytes(blkRequestHeader(VIRTIO_BLK_T_IN, 3))], [back, status2]);
    h.driver.notifyQueue(0);
    assert.ok(interrupted(), 'one interrupt for the read');
    assert.equal(ring!.getBuf()?.len, 2 * SECTOR + 1);
    assert.deepEqual(h.read(back), data);
    assert.equal(h.read(status2)[0], VIRTIO_BLK_S_OK);
    assert.deepEqual(h.memory.outside, []);
    assert.deepEqual(h.errors, []);
  });
}

test('configuration change: generation bumps, ISR config bit, the config vector (or INTx without MSI-X)', () => {
  const con = new VirtioConsole({ output: () => {}, size: { cols: 80, rows: 25 } });
  const h = new PciHarness(con);
  h.bringUp();
  const gen = h.driver.read('config_generation');
  con.resize(100, 40);
  assert.equal(h.driver.read('config_generation'), (gen + 1) & 0xff);
  assert.deepEqual(h.msi, [msiMessage(0).data]);
  assert.equal(h.driver.readIsr(), VIRTIO_PCI_ISR_CONFIG);
  assert.equal(h.driver.readConfig(0, 2), 100);
  const con2 = new VirtioConsole({ output: () => {}, size: { cols: 80, rows: 25 } });
  const legacy = new PciHarness(con2, { msix: false });
  legacy.bringUp();
  con2.resize(1, 1);
  assert.equal(legacy.intxAsserted, true);
  assert.equal(legacy.driver.readIsr(), VIRTIO_PCI_ISR_CONFIG);
  assert.equal(legacy.intxAsserted, false);
});

test('a looping chain: DEVICE_NEEDS_RESET and a config interrupt; reset clears vectors; the device works again', () => {
  const h = new PciHarness(new VirtioRng({ source: counting() }));
  let [ring] = h.bringUp();
  const b = h.buffer(8);
  ring!.writeDesc(0, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 0 });
  ring!.publish(0);
  h.driver.notifyQueue(0);
  assert.ok(h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.deepEqual(h.msi, [msiMessage(0).data], 'the config vector');
  assert.deepEqual(h.errors.map((e) => e.kind), ['chain-too-long']);
  assert.match(h.errors[0]!.message, /^virtqueue 0: /);
  h.driver.notifyQueue(0);
  assert.equal(h.errors.length, 1, 'notifications ignored until reset');
  h.driver.write('device_status', 0);
  assert.equal(h.driver.status, 0);
  assert.equal(h.transport.queueMsixVector(0), VIRTIO_MSI_NO_VECTOR);
  assert.equal(h.transport.configMsixVector, VIRTIO_MSI_NO_VECTOR);
  [ring] = h.bringUp();
  ring!.add([], [h.buffer(4)]);
  h.driver.notifyQueue(0);
  assert.equal(ring!.getBuf()?.len, 4);
  assert.deepEqual(h.memory.outside, []);
});

test('MSI-X masking at the virtio level: a masked queue vector pends in the PBA and fires on unmask', () => {
  const h = new PciHarness(new VirtioRng({ source: counting() }));
  const [ring] = h.bringUp();
  h.driver.setVectorMask(1, true);
  ring!.add([], [h.buffer(4)]);
  h.driver.notifyQueue(0);
  assert.deepEqual(h.msi, []);
  assert.equal(h.driver.pendingBits(), 0b10);
  h.driver.setVectorMask(1, false);
  assert.deepEqual(h.msi, [msiMessage(1).data]);
  assert.equal(h.driver.pendingBits(), 0);
  h.driver.setFunctionMask(true);
  ring!.getBuf();
  ring!.add([], [h.buffer(4)]);
  h.driver.notifyQueue(0);
  assert.equal(h.msi.length, 1);
  h.driver.setFunctionMask(false);
  assert.equal(h.msi.length, 2);
});

test('a queue with VIRTIO_MSI_NO_VECTOR under MSI-X gets no interrupt at all', () => {
  const h = new PciHarness(new VirtioRng({ source: counting() }));
  const [ring] = h.bringUp();
  h.driver.write('queue_select', 0);
  h.driver.write('queue_msix_vector', VIRTIO_MSI_NO_VECTOR);
  ring!.add([], [h.buffer(4)]);
  h.driver.notifyQueue(0);
  assert.deepEqual([h.msi, h.intx, h.transport.pendingIsr], [[], [], 0]);
  assert.equal(ring!.getBuf()?.len, 4, 'the request still completes');
});

test('notify addresses: per queue, 4 bytes apart, following the BAR; an ioeventfd-style notify reaches the device', () => {
  const h = new PciHarness(new VirtioConsole({ output: () => {} }));
  const base = h.transport.bar.gpa!;
  assert.equal(h.transport.notifyGpa(0), base + 0x3000);
  assert.equal(h.transport.notifyGpa(1), base + 0x3004);
  assert.equal(h.transport.notifyGpa(2), null);
  assert.equal(VirtioPci.notifyOffset(1), 0x3004);
  assert.deepEqual(h.transport.notifyRegion, { gpa: base + 0x3000, sizeBytes: 8, multiplier: 4 });
  h.bringUp();
  // The guest moves the BAR: the notify address moves with it, and the old one is dead.
  const cfg = h.driver.cfg;
  cfg.write(h.slot, 0x10, 4, 0xc100_0000 | 0x4);
  assert.equal(h.transport.notifyGpa(0), 0xc100_3000);
  assert.deepEqual(h.barMoves.at(-1), ['00:01.0 BAR 0', base, 0xc100_0000]);
  cfg.write(h.slot, PCI_COMMAND, 2, 0);
  assert.equal(h.transport.notifyGpa(0), null, 'memory decoding off');
  assert.equal(h.transport.notifyRegion, null);
  // With no BAR decoding, the machine's ioeventfd path still reaches the queue.
  const sent: number[] = [];
  const con = new VirtioConsole({ output: (b) => sent.push(...b) });
  const h2 = new PciHarness(con);
  const [, tx] = h2.bringUp();
  tx!.add([h2.bytes(Uint8Array.of(0x68, 0x69))], []);
  h2.transport.notifyQueue(1);
  assert.deepEqual(sent, [0x68, 0x69]);
});

test('VIRTIO_PCI_CAP_PCI_CFG: BAR accesses through configuration space', () => {
  const h = new PciHarness(new VirtioConsole({ output: () => {} }));
  const pos = h.transport.capabilityOffsets.pciCfg;
  const cfg = h.driver.cfg;
  cfg.write(h.slot, pos + 4, 1, 0); // bar
  cfg.write(h.slot, pos + 8, 4, 18); // offset of num_queues
  cfg.write(h.slot, pos + 12, 4, 2); // length
  assert.equal(cfg.read(h.slot, pos + 16, 4) & 0xffff, 2, 'num_queues read through pci_cfg_data');
  cfg.write(h.slot, pos + 8, 4, 20); // device_status
  cfg.write(h.slot, pos + 12, 4, 1);
  cfg.write(h.slot, pos + 16, 4, 1); // ACKNOWLEDGE
  assert.equal(h.transport.deviceStatus, 1);
  cfg.write(h.slot, pos + 12, 4, 3); // a bad length: nothing happens
  cfg.write(h.slot, pos + 16, 4, 0);
  assert.equal(h.transport.deviceStatus, 1);
  cfg.write(h.slot, pos + 4, 1, 2); // another BAR
  cfg.write(h.slot, pos + 12, 4, 1);
  cfg.write(h.slot, pos + 16, 4, 0);
  assert.equal(h.transport.deviceStatus, 1);
});

test('one device model, either transport: the same rng requests give the same bytes over MMIO and PCI', () => {
  const viaMmio = new MmioHarness(new VirtioRng({ source: counting() }));
  const viaPci = new PciHarness(new VirtioRng({ source: counting() }));
  const out: number[][] = [];
  for (const h of [viaMmio, viaPci]) {
    const [ring] = h.bringUp();
    const b = h.buffer(12);
    ring!.add([], [b]);
    if (h instanceof PciHarness) h.driver.notifyQueue(0);
    else h.driver.notify(0);
    assert.equal(ring!.getBuf()?.len, 12);
    out.push([...h.read(b)]);
  }
  assert.deepEqual(out[0], out[1]);
  assert.equal(viaPci.transport.offeredFeatures, viaMmio.transport.offeredFeatures);
});

test('FEATURES_OK refused without VIRTIO_F_VERSION_1, as over MMIO', () => {
  const h = new PciHarness(new VirtioRng());
  h.driver.probe();
  assert.equal(h.driver.negotiate(0n), null);
  assert.deepEqual(h.errors.map((e) => e.kind), ['features']);
  assert.match(h.errors[0]!.message, /^virtio-pci device 4: .*VIRTIO_F_VERSION_1/);
});
