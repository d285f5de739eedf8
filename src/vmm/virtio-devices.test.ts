// The machine's virtio wiring without KVM: what it registers with the hypervisor (windows,
// ioeventfds with their address, length and datamatch, interrupt lines), and that the callbacks it
// registers drive the real transports and devices. Whether KVM then takes QueueNotify writes
// without an exit is KVM's behaviour, tested on real KVM in tests/virtio.test.ts.
import assert from 'node:assert/strict';
import test from 'node:test';
import { buildAcpiTables } from '../boot/acpi.js';
import * as layout from '../boot/layout.js';
import { loadGuest } from '../boot/loader.js';
import { Bus } from '../bus/bus.js';
import { buildPvhElf } from '../guest/elf-image.js';
import type { HvVm } from '../hypervisor/types.js';
import { BumpAllocator, MmioDriver, plainGuestMemory, SplitRingDriver } from '../virtio/guest-driver.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY } from '../virtio/mmio.js';
import { VirtioRng } from '../virtio/rng.js';
import { VIRTIO_F_VERSION_1, featureBit } from '../virtio/virtio.js';
import { attachVirtioDevices, virtioAcpiDevices, virtioSlot } from './virtio-devices.js';

interface RecordedIoEventFd { addr: number; len: number; datamatch: number | null; onNotify: (n: bigint) => void; removed: boolean }

/** Records what the wiring registers; it plays no part of KVM's. */
class RecordingVm {
  readonly ioeventfds: RecordedIoEventFd[] = [];
  readonly irqfds: Array<{ gsi: number; triggers: number; removed: boolean }> = [];

  asHvVm(): HvVm {
    return {
      addIoEventFd: (space, addr, len, datamatch, onNotify) => {
        assert.equal(space, 'mmio');
        const e = { addr, len, datamatch, onNotify, removed: false };
        assert.ok(!this.ioeventfds.some((o) => !o.removed && o.addr === addr && o.len === len && o.datamatch === datamatch), 'one ioeventfd per address, length and datamatch');
        this.ioeventfds.push(e);
        return { remove: () => { e.removed = true; } };
      },
      addIrqFd: (gsi) => {
        const f = { gsi, triggers: 0, removed: false };
        this.irqfds.push(f);
        return { trigger: () => { f.triggers++; }, remove: () => { f.removed = true; } };
      },
    } as Partial<HvVm> as HvVm;
  }
}

function setup(configs: Parameters<typeof attachVirtioDevices>[0]) {
  const memory = plainGuestMemory(1 << 20);
  const bus = new Bus('mmio');
  const kvm = new RecordingVm();
  const slots = attachVirtioDevices(configs, kvm.asHvVm(), memory, bus);
  /** A driver for slot `i` whose accesses go the way a vCPU's would. */
  const driver = (i: number) => {
    const base = slots[i]!.gpa;
    return new MmioDriver({
      read: (offset, data) => { if (!bus.access(base + offset, false, data)) data.fill(0xff); },
      write: (offset, data) => { bus.access(base + offset, true, data); },
    });
  };
  return { memory, bus, kvm, slots, driver, alloc: new BumpAllocator(0x1000, 1 << 20) };
}

test('slot layout: one page per slot in the 32-bit MMIO hole below the IOAPIC, GSIs 16-23', () => {
  const first = virtioSlot(0);
  const last = virtioSlot(layout.VIRTIO_MMIO_SLOTS - 1);
  assert.deepEqual(first, { gpa: 0xd000_0000, sizeBytes: 0x200, gsi: 16 });
  assert.deepEqual(last, { gpa: 0xd000_7000, sizeBytes: 0x200, gsi: 23 });
  assert.ok(first.gpa >= layout.MMIO_HOLE_START_GPA && last.gpa + 0x1000 <= layout.IOAPIC_GPA);
  assert.throws(() => virtioSlot(layout.VIRTIO_MMIO_SLOTS), RangeError);
  // Edge: the irqfd pulses the pin (no resample fd), which a level-programmed pin could lose.
  assert.deepEqual(virtioAcpiDevices(1), [{ gpa: 0xd000_0000, sizeBytes: 0x200, irq: 16, trigger: 'edge' }]);
  // Every slot filled is still a valid set of ACPI tables (GSIs free, windows disjoint).
  const tables = buildAcpiTables({ cpus: 2, virtioMmio: virtioAcpiDevices(layout.VIRTIO_MMIO_SLOTS) });
  const dsdt = tables.tables.find((t) => t.signature === 'DSDT')!;
  const text = Buffer.from(tables.bytes.subarray(dsdt.gpa - tables.baseGpa, dsdt.gpa - tables.baseGpa + dsdt.lengthBytes)).toString('latin1');
  assert.equal(text.split('LNRO0005').length - 1, layout.VIRTIO_MMIO_SLOTS);
});

test('no virtio device: the guest sees exactly the tables and memory it saw before virtio existed', () => {
  const kernel = buildPvhElf({ loadGpa: 0x100000, segment: Uint8Array.of(0xf4), entryGpa: 0x100000 });
  const image = { kernel, kernelName: 'k', initrd: null, cmdline: 'x', cpus: 2, memoryBytes: 16 << 20 };
  const a = plainGuestMemory(16 << 20);
  const b = plainGuestMemory(16 << 20);
  loadGuest(a, image);
  loadGuest(b, { ...image, virtioMmio: virtioAcpiDevices(0) });
  assert.deepEqual(a.read(0, 0x200000), b.read(0, 0x200000));
  assert.deepEqual(buildAcpiTables({ cpus: 1 }).bytes, buildAcpiTables({ cpus: 1, virtioMmio: [] }).bytes);
  // And with devices, their LNRO0005 entries reach guest memory.
  const c = plainGuestMemory(16 << 20);
  loadGuest(c, { ...image, virtioMmio: virtioAcpiDevices(2) });
  const acpi = Buffer.from(c.read(layout.ACPI_START_GPA, layout.ACPI_END_GPA - layout.ACPI_START_GPA)).toString('latin1');
  assert.equal(acpi.split('LNRO0005').length - 1, 2);
});

test('each device gets its window on the bus, an irqfd on its GSI and an ioeventfd per queue on QueueNotify', () => {
  const { kvm, slots, bus } = setup([{ device: new VirtioRng(), label: 'rng' }, { device: new VirtioRng(), label: 'rng2' }]);
  assert.deepEqual(kvm.irqfds.map((f) => f.gsi), [16, 17]);
  assert.deepEqual(kvm.ioeventfds.map((e) => [e.addr, e.len, e.datamatch]), [
    [0xd000_0000 + VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0],
    [0xd000_1000 + VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0],
  ]);
  const magic = new Uint8Array(4);
  assert.ok(bus.access(slots[1]!.gpa, false, magic));
  assert.equal(Buffer.from(magic).toString('latin1'), 'virt');
  assert.equal(bus.access(slots[1]!.gpa + 0x1000, false, magic), false, 'the next slot is empty');
});

test('the ioeventfd callback runs the device on its queue and the interrupt line fires; a QueueNotify that exits is counted', () => {
  const { kvm, slots, driver, memory, alloc } = setup([{ device: new VirtioRng({ source: (b) => b.fill(0x5a) }), label: 'rng' }]);
  const d = driver(0);
  assert.notEqual(d.negotiate(featureBit(VIRTIO_F_VERSION_1)), null);
  const ring = new SplitRingDriver(memory, alloc, 8);
  d.setupQueue(0, ring);
  d.driverOk();
  const buf = alloc.alloc(32);
  ring.add([], [{ gpa: buf, len: 32 }]);
  assert.equal(ring.getBuf(), null, 'nothing happens before the notification');
  // What the event loop does when the queue-0 eventfd becomes readable.
  kvm.ioeventfds[0]!.onNotify(1n);
  assert.equal(ring.getBuf()?.len, 32);
  assert.deepEqual([...memory.read(buf, 4)], [0x5a, 0x5a, 0x5a, 0x5a]);
  assert.equal(slots[0]!.notifyExits, 0);
  assert.equal(slots[0]!.notifyEvents, 1n);
  assert.equal(kvm.irqfds[0]!.triggers, 1);
  assert.equal(slots[0]!.interrupts, 1);
  // A QueueNotify write that reaches the VMM (an exit) is counted, and still notifies.
  d.notify(3);
  assert.equal(slots[0]!.notifyExits, 1);
});

test('detach: the transport resets and the eventfds go; the host side is left to the machine', () => {
  let closes = 0;
  const { kvm, slots } = setup([{ device: new VirtioRng(), label: 'rng', close: () => { closes++; } }]);
  slots[0]!.detach();
  slots[0]!.detach();
  assert.equal(closes, 0);
  assert.ok(kvm.irqfds.every((f) => f.removed) && kvm.ioeventfds.every((e) => e.removed));
  assert.equal(slots[0]!.transport.deviceStatus, 0);
});

test('more devices than slots are refused', () => {
  const many = Array.from({ length: layout.VIRTIO_MMIO_SLOTS + 1 }, () => ({ device: new VirtioRng(), label: 'rng' }));
  assert.throws(() => setup(many), /9 virtio devices: the machine has 8 virtio-mmio slots/);
});
