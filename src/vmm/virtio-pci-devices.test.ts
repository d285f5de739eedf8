// The machine's virtio-pci wiring without KVM: where the host bridge, ECAM and BAR window sit
// (disjoint from everything else in layout.ts, never RAM), what the guest's boot tables say with
// and without PCI, where BARs land, and what is registered with the hypervisor (ioeventfds with
// address, length and datamatch) as the guest moves a BAR. The recording VM only records; whether
// KVM then takes the doorbell without an exit is KVM's behaviour, tested in tests/virtio-pci.test.ts.
import assert from 'node:assert/strict';
import test from 'node:test';
import { buildAcpiTables } from '../boot/acpi.js';
import { buildE820Map, E820_TYPE_RESERVED } from '../boot/e820.js';
import * as layout from '../boot/layout.js';
import { loadGuest } from '../boot/loader.js';
import { Bus } from '../bus/bus.js';
import { buildPvhElf } from '../guest/elf-image.js';
import type { HvMsiRoute, HvVm } from '../hypervisor/types.js';
import { PCI_BASE_ADDRESS_0, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MEMORY } from '../pci/config-space.js';
import { PCI_MSIX_ENTRY_DATA, PCI_MSIX_ENTRY_SIZE, PCI_MSIX_FLAGS } from '../pci/msix.js';
import { Conf1Access, EcamAccess, busWrite } from '../pci/guest-probe.js';
import { BumpAllocator, plainGuestMemory, SplitRingDriver } from '../virtio/guest-driver.js';
import { VirtioPciDriver, msiMessage } from '../virtio/pci-guest-driver.js';
import { VIRTIO_PCI_BAR_SIZE_BYTES, VIRTIO_PCI_NOTIFY_OFFSET } from '../virtio/pci.js';
import { VirtioRng } from '../virtio/rng.js';
import { VIRTIO_F_VERSION_1, featureBit } from '../virtio/virtio.js';
import { virtioAcpiDevices } from './virtio-devices.js';
import { attachVirtioPci, PCI_MMIO32_WINDOW, pciIntxGsi, VirtioPciHost } from './virtio-pci-devices.js';

interface RecordedIoEventFd { addr: number; len: number; datamatch: number | null; onNotify: (n: bigint) => void; removed: boolean }

/** Records what the wiring registers; it plays no part of KVM's. */
class RecordingVm {
  readonly ioeventfds: RecordedIoEventFd[] = [];
  live(): Array<[number, number, number | null]> {
    return this.ioeventfds.filter((e) => !e.removed).map((e) => [e.addr, e.len, e.datamatch]);
  }
  asHvVm(): HvVm {
    return {
      addIoEventFd: (space, addr, len, datamatch, onNotify) => {
        assert.equal(space, 'mmio');
        const e = { addr, len, datamatch, onNotify, removed: false };
        this.ioeventfds.push(e);
        return { remove: () => { assert.equal(e.removed, false, 'removed once'); e.removed = true; } };
      },
    } as Partial<HvVm> as HvVm;
  }
}

function setup(devices = 1, msiRoute?: (lo: number, hi: number, data: number) => HvMsiRoute) {
  const memory = plainGuestMemory(1 << 20);
  const pioBus = new Bus('pio');
  const mmioBus = new Bus('mmio');
  const kvm = new RecordingVm();
  const msis: Array<[number, number, number]> = [];
  const lines: Array<[number, 0 | 1]> = [];
  const configs = Array.from({ length: devices }, (_, i) => ({ device: new VirtioRng({ source: (b: Uint8Array) => b.fill(0x5a) }), label: `rng${i}`, transport: 'pci' as const }));
  const host = attachVirtioPci(configs, {
    vm: kvm.asHvVm(), memory, pioBus, mmioBus,
    signalMsi: (lo, hi, data) => msis.push([lo, hi, data]),
    irqLine: (gsi, level) => lines.push([gsi, level]),
    ...(msiRoute ? { msiRoute } : {}),
  })!;
  return { memory, pioBus, mmioBus, kvm, host, msis, lines, cfg: new Conf1Access(pioBus), alloc: new BumpAllocator(0x1000, 1 << 20) };
}

const span = (name: string, gpa: number, sizeBytes: number) => ({ name, gpa, end: gpa + sizeBytes });

test('layout: ECAM, the BAR window, virtio-mmio, IOAPIC, LAPIC and KVM\'s pages are disjoint, and the window is never RAM', () => {
  const spans = [
    span('ecam', layout.PCI_ECAM_GPA, layout.PCI_ECAM_SIZE_BYTES),
    span('bar window', layout.PCI_MMIO32_BASE_GPA, layout.PCI_MMIO32_SIZE_BYTES),
    span('virtio-mmio', layout.VIRTIO_MMIO_BASE_GPA, layout.VIRTIO_MMIO_SLOTS * layout.VIRTIO_MMIO_STRIDE_BYTES),
    span('ioapic', layout.IOAPIC_GPA, 0x1000),
    span('lapic', layout.LAPIC_GPA, 0x1000),
    span('kvm identity map + tss', layout.KVM_IDENTITY_MAP_GPA, 4 * 0x1000),
  ];
  for (const a of spans) for (const b of spans) {
    if (a !== b) assert.ok(a.end <= b.gpa || b.end <= a.gpa, `${a.name} overlaps ${b.name}`);
  }
  for (const s of spans) assert.ok(s.gpa >= layout.MMIO_HOLE_START_GPA && s.end <= 2 ** 32, `${s.name} in the 32-bit hole`);
  // Whatever the RAM size, no RAM region touches the window or the ECAM.
  for (const mem of [16 << 20, 3 * 2 ** 30, 3 * 2 ** 30 + 4096, 8 * 2 ** 30]) {
    for (const r of layout.ramRegions(mem)) {
      for (const s of spans.slice(0, 2)) assert.ok(r.gpa + r.sizeBytes <= s.gpa || s.end <= r.gpa, `RAM of ${mem} bytes overlaps ${s.name}`);
    }
  }
  assert.equal(layout.PCI_ECAM_GPA % (1 << 20), 0, 'ECAM 1 MiB aligned');
  assert.deepEqual(PCI_MMIO32_WINDOW, { base: 0xc000_0000, sizeBytes: 0x1000_0000 });
});

test('INTA# pins: slot s on GSI 24 - s, meeting the virtio-mmio pins (16 + n) only beyond 8 devices in all', () => {
  assert.deepEqual([1, 2, 8].map(pciIntxGsi), [23, 22, 16]);
  assert.throws(() => pciIntxGsi(0), RangeError);
  assert.throws(() => pciIntxGsi(9), RangeError);
  for (let mmio = 0; mmio <= layout.VIRTIO_MMIO_SLOTS; mmio++) {
    const pci = layout.VIRTIO_MMIO_SLOTS - mmio;
    const mmioGsis = virtioAcpiDevices(mmio).map((d) => d.irq);
    const pciGsis = Array.from({ length: pci }, (_, i) => pciIntxGsi(i + 1));
    assert.ok(pciGsis.every((g) => !mmioGsis.includes(g)), `${mmio} mmio + ${pci} pci devices share no pin`);
  }
});

test('no PCI device: e820, ACPI and guest memory are byte-identical to a machine without PCI', () => {
  assert.deepEqual(buildE820Map(512 << 20, []), buildE820Map(512 << 20));
  const kernel = buildPvhElf({ loadGpa: 0x100000, segment: Uint8Array.of(0xf4), entryGpa: 0x100000 });
  const image = { kernel, kernelName: 'k', initrd: null, cmdline: 'x', cpus: 2, memoryBytes: 16 << 20 };
  const a = plainGuestMemory(16 << 20);
  const b = plainGuestMemory(16 << 20);
  const la = loadGuest(a, image);
  const lb = loadGuest(b, { ...image, pci: undefined });
  assert.deepEqual(a.read(0, 0x200000), b.read(0, 0x200000));
  assert.deepEqual(la.e820, lb.e820);
  // attachVirtioPci makes nothing for mmio-only configs: the machine then has no PCI at all.
  const pioBus = new Bus('pio');
  assert.equal(attachVirtioPci([{ device: new VirtioRng(), label: 'rng' }, { device: new VirtioRng(), label: 'rng', transport: 'mmio' }], {
    vm: new RecordingVm().asHvVm(), memory: a, pioBus, mmioBus: new Bus('mmio'), signalMsi: () => {}, irqLine: () => {},
  }), null);
  const probe = new Uint8Array(4);
  assert.equal(pioBus.access(layout.PCI_CONFIG_PORT, false, probe), false, 'no CF8 without PCI');
});

test('with PCI: e820 reserves the ECAM, the MCFG points at it, the DSDT has the root bridge, its reservation and the _PRT pins', () => {
  const { host } = setup(2);
  const kernel = buildPvhElf({ loadGpa: 0x100000, segment: Uint8Array.of(0xf4), entryGpa: 0x100000 });
  const mem = plainGuestMemory(16 << 20);
  const g = loadGuest(mem, { kernel, kernelName: 'k', initrd: null, cmdline: '', cpus: 1, memoryBytes: 16 << 20, pci: host.acpi });
  assert.deepEqual(g.e820.filter((e) => e.gpa === layout.PCI_ECAM_GPA), [{ gpa: layout.PCI_ECAM_GPA, sizeBytes: 1 << 20, type: E820_TYPE_RESERVED }]);
  for (let i = 1; i < g.e820.length; i++) assert.ok(g.e820[i - 1]!.gpa + g.e820[i - 1]!.sizeBytes <= g.e820[i]!.gpa, 'sorted, disjoint');
  assert.deepEqual(g.e820.filter((e) => e.gpa !== layout.PCI_ECAM_GPA), buildE820Map(16 << 20), 'the rest as without PCI');
  assert.deepEqual(host.acpi, { ecamGpa: 0xe000_0000, mmio32: { base: 0xc000_0000, sizeBytes: 0x1000_0000 }, intx: [{ slot: 1, gsi: 23 }, { slot: 2, gsi: 22 }] });
  const tables = buildAcpiTables({ cpus: 1, pci: host.acpi });
  const mcfg = tables.tables.find((t) => t.signature === 'MCFG')!;
  const bytes = mem.read(mcfg.gpa, mcfg.lengthBytes);
  assert.equal(new DataView(bytes.buffer, bytes.byteOffset).getUint32(44, true), layout.PCI_ECAM_GPA, 'MCFG allocation base');
  const dsdt = tables.tables.find((t) => t.signature === 'DSDT')!;
  const text = Buffer.from(mem.read(dsdt.gpa, dsdt.lengthBytes)).toString('latin1');
  assert.ok(text.includes('PCI0') && text.includes('PRES'), 'PNP0A08 root and the PNP0C02 reservation');
});

test('BARs: firmware-style assignment inside the window, decoding on, one ioeventfd per queue at its doorbell (2 bytes, no datamatch)', () => {
  const { host, kvm, cfg } = setup(2);
  const bars = host.slots.map((s) => s.bar.gpa!);
  for (const gpa of bars) {
    assert.ok(gpa >= PCI_MMIO32_WINDOW.base && gpa + VIRTIO_PCI_BAR_SIZE_BYTES <= PCI_MMIO32_WINDOW.base + PCI_MMIO32_WINDOW.sizeBytes);
    assert.equal(gpa % VIRTIO_PCI_BAR_SIZE_BYTES, 0, 'naturally aligned');
  }
  assert.notEqual(bars[0], bars[1]);
  // What the guest reads through CF8/CFC is what was assigned.
  for (const s of host.slots) {
    assert.equal((cfg.read(s.slot, PCI_BASE_ADDRESS_0, 4) & ~0xf) >>> 0, s.bar.gpa);
    assert.ok(cfg.read(s.slot, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY);
  }
  assert.deepEqual(kvm.live(), bars.map((gpa) => [gpa + VIRTIO_PCI_NOTIFY_OFFSET, 2, null]));
});

test('ioeventfds follow the BAR: decoding off removes them, a new address re-registers them there', () => {
  const { host, kvm, cfg, mmioBus } = setup(1);
  const s = host.slots[0]!;
  const first = s.bar.gpa!;
  const cmd = cfg.read(1, PCI_COMMAND, 2);
  cfg.write(1, PCI_COMMAND, 2, cmd & ~PCI_COMMAND_MEMORY);
  assert.deepEqual(kvm.live(), [], 'none while the BAR does not decode');
  const moved = PCI_MMIO32_WINDOW.base + 0x10_0000;
  cfg.write(1, PCI_BASE_ADDRESS_0, 4, moved);
  cfg.write(1, PCI_BASE_ADDRESS_0 + 4, 4, 0);
  assert.deepEqual(kvm.live(), [], 'still off');
  cfg.write(1, PCI_COMMAND, 2, cmd);
  assert.equal(s.bar.gpa, moved);
  assert.deepEqual(kvm.live(), [[moved + VIRTIO_PCI_NOTIFY_OFFSET, 2, null]]);
  assert.equal(kvm.ioeventfds.length, 2);
  assert.ok(kvm.ioeventfds[0]!.removed && kvm.ioeventfds[0]!.addr === first + VIRTIO_PCI_NOTIFY_OFFSET);
  // The router follows too: the common configuration answers at the new address only.
  const d = new Uint8Array(2);
  assert.ok(mmioBus.access(moved + 18, false, d)); // num_queues
  assert.equal(d[0], 1);
  mmioBus.access(first + 18, false, d);
  assert.deepEqual([...d], [0xff, 0xff], 'nothing at the old address');
  host.detach();
  assert.deepEqual(kvm.live(), [], 'detach removes them');
});

/** The function in slot 1 driven over ECAM: MSI-X on, queue 0 on vector 0, DRIVER_OK. */
function msixDriver(mmioBus: Bus, memory: ReturnType<typeof plainGuestMemory>, alloc: BumpAllocator): { d: VirtioPciDriver; ring: SplitRingDriver } {
  const d = new VirtioPciDriver(new EcamAccess(mmioBus, layout.PCI_ECAM_GPA), mmioBus, 1);
  d.probe();
  assert.notEqual(d.negotiate(featureBit(VIRTIO_F_VERSION_1)), null);
  d.enableMsix();
  const ring = new SplitRingDriver(memory, alloc, 8);
  d.setupQueue(0, ring, 0);
  d.enableQueue(0);
  d.driverOk();
  return { d, ring };
}

test('a request end to end: the ioeventfd callback runs the device, the MSI-X message goes to signalMsi; with MSI-X off, INTA# on GSI 23', () => {
  const { host, kvm, pioBus, mmioBus, memory, alloc, msis, lines } = setup(1);
  const s = host.slots[0]!;
  const { d, ring } = msixDriver(mmioBus, memory, alloc);
  const buf = alloc.alloc(16);
  ring.add([], [{ gpa: buf, len: 16 }]);
  kvm.ioeventfds[0]!.onNotify(1n); // what the event loop does when the doorbell's eventfd fires
  assert.equal(ring.getBuf()?.len, 16);
  assert.deepEqual([...memory.read(buf, 2)], [0x5a, 0x5a]);
  const m = msiMessage(0);
  assert.deepEqual(msis, [[m.addressLo, m.addressHi, m.data]]);
  assert.equal(s.notifyEvents, 1n);
  assert.equal(s.notifyExits, 0);
  // A doorbell write that exits (no ioeventfd took it) still notifies, and is counted.
  ring.add([], [{ gpa: buf, len: 16 }]);
  d.notifyQueue(0);
  assert.equal(s.notifyExits, 1);
  assert.equal(ring.getBuf()?.len, 16);

  // INTx: a fresh driver that turns MSI-X off and INTx back on (through CF8: the same function).
  const c = new VirtioPciDriver(new Conf1Access(pioBus), mmioBus, 1);
  c.probe();
  c.cfg.write(1, c.msixCap + PCI_MSIX_FLAGS, 2, 0);
  c.cfg.write(1, PCI_COMMAND, 2, c.cfg.read(1, PCI_COMMAND, 2) & ~PCI_COMMAND_INTX_DISABLE);
  assert.notEqual(c.negotiate(featureBit(VIRTIO_F_VERSION_1)), null);
  const ring2 = new SplitRingDriver(memory, alloc, 8);
  c.setupQueue(0, ring2);
  c.enableQueue(0);
  c.driverOk();
  ring2.add([], [{ gpa: buf, len: 8 }]);
  c.notifyQueue(0);
  assert.deepEqual(lines, [[23, 1]], 'asserted on the slot\'s pin');
  assert.equal(c.readIsr() & 1, 1);
  assert.deepEqual(lines, [[23, 1], [23, 0]], 'the ISR read de-asserts it');
  assert.equal(msis.length, 2, 'no message with MSI-X off');
});

test('more virtio-pci devices than slots are refused', () => {
  assert.throws(() => new VirtioPciHost(Array.from({ length: 9 }, () => ({ device: new VirtioRng(), label: 'rng', transport: 'pci' as const })), {
    vm: new RecordingVm().asHvVm(), memory: plainGuestMemory(4096), pioBus: new Bus('pio'), mmioBus: new Bus('mmio'), signalMsi: () => {}, irqLine: () => {},
  }), /9 virtio-pci devices/);
});

/** Records the routes the slot asks for: what it made, re-routed, triggered and removed. */
class RecordingRoutes {
  readonly log: string[] = [];
  failNext = false;
  private nextGsi = 24;
  readonly make = (lo: number, hi: number, data: number): HvMsiRoute => {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('no GSI left');
    }
    const gsi = this.nextGsi++;
    this.log.push(`route ${gsi} ${lo.toString(16)}:${hi}:${data.toString(16)}`);
    return {
      gsi,
      trigger: () => this.log.push(`trigger ${gsi}`),
      update: (l, h, d) => this.log.push(`update ${gsi} ${l.toString(16)}:${h}:${d.toString(16)}`),
      remove: () => this.log.push(`remove ${gsi}`),
    };
  };
}

test('MSI-X by irqfd: a vector is routed when it first fires, re-routed only after the guest reprograms it, removed on detach; a route refused falls back to signalMsi', (t) => {
  const routes = new RecordingRoutes();
  const { host, kvm, mmioBus, memory, alloc, msis } = setup(1, routes.make);
  const s = host.slots[0]!;
  const { d, ring } = msixDriver(mmioBus, memory, alloc);
  const buf = alloc.alloc(16);
  const request = () => {
    ring.add([], [{ gpa: buf, len: 16 }]);
    kvm.ioeventfds[0]!.onNotify(1n);
    assert.equal(ring.getBuf()?.len, 16);
  };
  assert.deepEqual(routes.log, [], 'no route before the vector fires');
  request();
  request();
  const m = msiMessage(0);
  assert.deepEqual(routes.log, [`route 24 ${m.addressLo.toString(16)}:0:${m.data.toString(16)}`, 'trigger 24', 'trigger 24']);
  assert.deepEqual(msis, [], 'no KVM_SIGNAL_MSI while the route works');
  // The guest moves vector 0 to another IDT vector (as Linux does when it changes affinity).
  busWrite(mmioBus, d.msixTableGpa + 0 * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_DATA, 4, 0x41);
  assert.equal(routes.log.length, 3, 'nothing re-routed until the vector fires');
  request();
  assert.deepEqual(routes.log.slice(3), [`update 24 ${m.addressLo.toString(16)}:0:41`, 'trigger 24']);
  assert.deepEqual([s.msiByIrqfd, s.msiBySignal, s.msiRoutesMade, s.msiReroutes], [3, 0, 1, 1]);

  // Vector 1 (the config vector in Linux's layout) cannot get a route: it uses signalMsi from then on.
  t.mock.method(process.stderr, 'write', () => true);
  d.write('queue_select', 0);
  d.write('queue_msix_vector', 1);
  assert.equal(d.read('queue_msix_vector'), 1);
  routes.failNext = true;
  request();
  request();
  assert.deepEqual(msis, [[msiMessage(1).addressLo, 0, msiMessage(1).data], [msiMessage(1).addressLo, 0, msiMessage(1).data]]);
  assert.equal(routes.log.length, 5, 'no second attempt for the refused vector');
  assert.deepEqual([s.msiByIrqfd, s.msiBySignal], [3, 2]);

  host.detach();
  assert.deepEqual(routes.log.slice(5), ['remove 24']);
});
