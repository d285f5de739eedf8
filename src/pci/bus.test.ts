import assert from 'node:assert/strict';
import test from 'node:test';
import { Bus } from '../bus/bus.js';
import {
  PCI_CONFIG_IO_SIZE_BYTES, PCI_ECAM_BUS_BYTES, PciBarRouter, PciBus, PciConfigIo, PciEcam, pciAddressLabel,
} from './bus.js';
import { PCI_COMMAND_MEMORY, PciConfigSpace, type PciBarSpec, type PciFunction } from './config-space.js';
import { PciError } from './pci-error.js';
import { Conf1Access, EcamAccess, probeFunction } from './guest-probe.js';

const ECAM_GPA = 0xe000_0000;

/** A function whose BAR handlers log accesses and answer with the BAR index in every byte. */
class TestFunction implements PciFunction {
  readonly config: PciConfigSpace;
  readonly log: string[] = [];
  constructor(name: string, bars: Array<Omit<PciBarSpec, 'handler'>>) {
    this.config = new PciConfigSpace({ name, vendorId: 0x1234, deviceId: 0x0001, classCode: 0xff0000, interruptPin: 1 }, {
      bars: bars.map((b) => ({
        ...b,
        handler: {
          read: (o: number, d: Uint8Array) => { this.log.push(`r${b.index}@${o.toString(16)}`); d.fill(0xb0 + b.index); },
          write: (o: number, d: Uint8Array) => { this.log.push(`w${b.index}@${o.toString(16)}=${d[0]}`); },
        },
      })),
    });
    // A scratch capability so there is something writable to compare.
    this.config.addCapability(0x09, new Uint8Array(16), new Uint8Array(16).fill(0xff));
  }
  configRead(offset: number, data: Uint8Array): void { this.config.read(offset, data); }
  configWrite(offset: number, data: Uint8Array): void { this.config.write(offset, data); }
}

function rig() {
  const bus = new PciBus();
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  const conf1 = new PciConfigIo(bus);
  const ecam = new PciEcam(bus, 2);
  pio.insert(0xcf8, PCI_CONFIG_IO_SIZE_BYTES, 'pci-conf1', conf1);
  mmio.insert(ECAM_GPA, ecam.sizeBytes, 'pci-ecam', ecam);
  const fn = new TestFunction('test', [{ index: 0, kind: 'mem32', sizeBytes: 0x1000 }, { index: 2, kind: 'mem64', sizeBytes: 0x10000 }]);
  const slot = bus.attach(fn, 3);
  return { bus, pio, mmio, conf1, ecam, fn, slot, cf8: new Conf1Access(pio), mm: new EcamAccess(mmio, ECAM_GPA) };
}

function pioRead(pio: Bus, port: number, len: number): number {
  const d = new Uint8Array(len);
  assert.ok(pio.access(port, false, d));
  return d.reduceRight((v, b) => v * 256 + b, 0);
}

function pioWrite(pio: Bus, port: number, len: number, value: number): void {
  const d = new Uint8Array(len);
  for (let i = 0; i < len; i++) d[i] = (value >>> (8 * i)) & 0xff;
  assert.ok(pio.access(port, true, d));
}

test("pci_check_type1(): a byte write to 0xCFB leaves CONFIG_ADDRESS alone, and 0x80000000 reads back", () => {
  const { pio, conf1 } = rig();
  pioWrite(pio, 0xcfb, 1, 0x01);
  const tmp = pioRead(pio, 0xcf8, 4);
  pioWrite(pio, 0xcf8, 4, 0x8000_0000);
  assert.equal(pioRead(pio, 0xcf8, 4), 0x8000_0000);
  pioWrite(pio, 0xcf8, 4, tmp);
  assert.equal(conf1.configAddress, 0);
  pioWrite(pio, 0xcf8, 4, 0xffff_ffff);
  assert.equal(pioRead(pio, 0xcf8, 4), 0x80ff_fffc, 'reserved bits 30:24 and 1:0 read zero');
  assert.equal(pioRead(pio, 0xcf8, 2), 0xffff, 'CONFIG_ADDRESS answers only 32-bit reads');
});

test('host bridge at 00.0: class 0x0600, header type 0, no BARs; empty slots and other buses read all ones', () => {
  const { cf8, mm, bus } = rig();
  for (const cfg of [cf8, mm]) {
    const host = probeFunction(cfg, 0)!;
    assert.equal(host.classCode, 0x060000);
    assert.equal(host.headerType, 0);
    assert.deepEqual(host.bars, []);
    assert.equal(cfg.read(5, 0, 4), 0xffff_ffff);
    assert.equal(probeFunction(cfg, 5), null);
  }
  const d = new Uint8Array(4);
  bus.configRead(1, 3, 0, 0, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff], 'bus 1');
  bus.configRead(0, 3, 1, 0, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff], 'function 1');
  assert.deepEqual(bus.list().map((e) => e.slot), [0, 3]);
});

test('CONFIG_DATA at 0xCFC-0xCFF answers bytes, words and dwords exactly as ECAM does, at every offset', () => {
  const { cf8, mm, slot } = rig();
  for (let offset = 0; offset < 256; offset++) {
    for (const len of [1, 2, 4] as const) {
      if (offset % len !== 0) continue;
      assert.equal(cf8.read(slot, offset, len), mm.read(slot, offset, len), `offset 0x${offset.toString(16)} len ${len}`);
    }
  }
  // Writes through one mechanism are seen through the other, at each size and byte lane.
  const cap = 0x40 + 4;
  cf8.write(slot, cap, 4, 0x11223344);
  assert.equal(mm.read(slot, cap, 4), 0x11223344);
  mm.write(slot, cap + 1, 1, 0xaa);
  mm.write(slot, cap + 2, 2, 0xbbcc);
  assert.equal(cf8.read(slot, cap, 4), 0xbbccaa44);
  assert.equal(cf8.read(slot, cap + 3, 1), 0xbb);
  assert.equal(cf8.read(slot, cap + 2, 2), 0xbbcc);
});

test('CONFIG_DATA: nothing with the enable bit clear, nothing across the dword; ECAM: misaligned and out-of-window refused', () => {
  const { pio, ecam, slot } = rig();
  pioWrite(pio, 0xcf8, 4, (slot << 11) | 0); // enable clear
  assert.equal(pioRead(pio, 0xcfc, 4), 0xffff_ffff);
  pioWrite(pio, 0xcf8, 4, 0x8000_0000 | (slot << 11));
  assert.equal(pioRead(pio, 0xcfc, 4), 0x0001_1234);
  assert.equal(pioRead(pio, 0xcfe, 2), 0x0001);
  assert.equal(pioRead(pio, 0xcfd, 4), 0xffff_ffff, 'a dword at 0xCFD would cross into the next register');
  const d = new Uint8Array(2);
  ecam.read((slot << 15) + 1, d);
  assert.deepEqual([...d], [0xff, 0xff], 'misaligned');
  ecam.read(ecam.sizeBytes, d);
  assert.deepEqual([...d], [0xff, 0xff]);
  assert.equal(ecam.sizeBytes, 2 * PCI_ECAM_BUS_BYTES);
  // Register offsets past 0xff through ECAM: zero for a present function.
  const e = new Uint8Array(4).fill(0x55);
  ecam.read((slot << 15) + 0x100, e);
  assert.deepEqual([...e], [0, 0, 0, 0]);
});

test('probe through 0xCF8 sizes every BAR and finds the capability, as Linux would', () => {
  const { cf8, slot } = rig();
  const p = probeFunction(cf8, slot)!;
  assert.deepEqual(p.bars.map((b) => [b.index, b.kind, b.sizeBytes, b.address]), [[0, 'mem32', 0x1000, 0], [2, 'mem64', 0x10000, 0]]);
  assert.deepEqual(p.capabilities, [[0x09, 0x40]]);
});

test('assignBars: firmware-style, largest first and naturally aligned, decoding enabled, barMoved told', () => {
  const moves: string[] = [];
  const bus = new PciBus({ barMoved: (bar, o, n) => moves.push(`${bar.label} ${o === null ? '-' : o.toString(16)} ${n === null ? '-' : n.toString(16)}`) });
  const a = new TestFunction('a', [{ index: 0, kind: 'mem32', sizeBytes: 0x1000 }, { index: 1, kind: 'mem32', sizeBytes: 0x4000 }]);
  const b = new TestFunction('b', [{ index: 0, kind: 'mem64', sizeBytes: 0x8000 }]);
  bus.attach(a);
  bus.attach(b);
  assert.equal(pciAddressLabel(2), '00:02.0');
  bus.assignBars({ mmio32: { base: 0xc000_0800, sizeBytes: 0x20000 } });
  assert.deepEqual(moves, ['00:01.0 BAR 0 - c0014000', '00:01.0 BAR 1 - c0010000', '00:02.0 BAR 0 - c0008000'], 'told when decoding is enabled, in slot order');
  assert.equal(b.config.bars[0]!.gpa, 0xc000_8000, 'largest first, aligned up from the window base');
  assert.equal(a.config.bars[1]!.gpa, 0xc001_0000);
  assert.equal(a.config.bars[0]!.gpa, 0xc001_4000);
  assert.ok(a.config.command & PCI_COMMAND_MEMORY);
  // With a 64-bit window, 64-bit BARs go there.
  const bus2 = new PciBus();
  const c = new TestFunction('c', [{ index: 0, kind: 'mem64', sizeBytes: 0x8000 }, { index: 2, kind: 'mem32', sizeBytes: 0x1000 }]);
  bus2.attach(c, 7);
  bus2.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x1000 }, mmio64: { base: 0x40_0000_0000, sizeBytes: 0x1_0000_0000 } });
  assert.equal(c.config.bars[0]!.gpa, 0x40_0000_0000);
  assert.equal(c.config.bars[1]!.gpa, 0xc000_0000);
});

test('assignBars again (a firmware reboot) moves a 64-bit BAR without ever decoding at a half-written address', () => {
  const moves: Array<[number | null, number | null]> = [];
  const bus = new PciBus({ barMoved: (_bar, o, n) => moves.push([o, n]) });
  const fn = new TestFunction('a', [{ index: 0, kind: 'mem64', sizeBytes: 0x1000 }]);
  bus.attach(fn);
  bus.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x1000 }, mmio64: { base: 0x1_0000_0000, sizeBytes: 0x1000 } });
  bus.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x1000 }, mmio64: { base: 0x2_8000_0000, sizeBytes: 0x1000 } });
  assert.deepEqual(moves, [[null, 0x1_0000_0000], [0x1_0000_0000, null], [null, 0x2_8000_0000]]);
});

test('assignBars refuses a window that is too small, and I/O BARs without an I/O window', () => {
  const bus = new PciBus();
  bus.attach(new TestFunction('a', [{ index: 0, kind: 'mem32', sizeBytes: 0x10000 }]));
  assert.throws(() => bus.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x8000 } }),
    (e: unknown) => e instanceof PciError && e.kind === 'window-full' && /00:01.0 BAR 0 \(65536 bytes\) does not fit in the 32-bit MMIO window 0xc0000000\+0x8000/.test(e.message));
  const io = new PciBus();
  io.attach(new TestFunction('b', [{ index: 0, kind: 'io', sizeBytes: 0x20 }]));
  assert.throws(() => io.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x8000 } }), /no I\/O window/);
  io.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x8000 }, io: { base: 0xc000, sizeBytes: 0x1000 } });
  assert.equal(io.function(1)!.config.bars[0]!.gpa, 0xc000);
});

test('attach: slot 0 is the host bridge, slots are 1-31 and taken once', () => {
  const bus = new PciBus();
  const f = () => new TestFunction('x', []);
  const refuses = (slot: number, message: RegExp) =>
    assert.throws(() => bus.attach(f(), slot), (e: unknown) => e instanceof PciError && e.kind === 'bad-slot' && message.test(e.message));
  refuses(0, /0 is the host bridge/);
  refuses(32, /not one of 1-31/);
  bus.attach(f(), 31);
  refuses(31, /slot 31 is taken by x/);
  for (let i = 1; i < 31; i++) bus.attach(f());
  assert.throws(() => bus.attach(f()), /none free/);
});

test('PciBarRouter: accesses reach the BAR decoding there, at its offset; moves are followed; the rest reads all ones', () => {
  const router = new PciBarRouter({ base: 0xc000_0000, sizeBytes: 0x100000 });
  const bus = new PciBus({ barMoved: router.barMoved });
  const fn = new TestFunction('t', [{ index: 0, kind: 'mem32', sizeBytes: 0x1000 }, { index: 1, kind: 'io', sizeBytes: 0x10 }]);
  bus.attach(fn);
  bus.assignBars({ mmio32: { base: 0xc000_0000, sizeBytes: 0x100000 }, io: { base: 0x1000, sizeBytes: 0x100 } });
  const d = new Uint8Array(4);
  router.read(0x10, d);
  assert.deepEqual([...d], [0xb0, 0xb0, 0xb0, 0xb0]);
  router.write(0xffc, Uint8Array.of(7, 0, 0, 0));
  router.read(0x1000, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff], 'past the BAR');
  router.read(0xffe, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff], 'an access straddling the BAR end is not passed on');
  assert.deepEqual(fn.log, ['r0@10', 'w0@ffc=7']);
  // The guest moves the BAR.
  const w = Uint8Array.of(0x00, 0x50, 0x00, 0xc0);
  fn.configWrite(0x10, w);
  router.read(0x5004, d);
  assert.deepEqual([...d], [0xb0, 0xb0, 0xb0, 0xb0]);
  router.read(0x10, d);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff], 'the old place is empty');
  assert.equal(router.find(0xc000_5000)?.bar.index, 0);
  assert.equal(router.find(0x1000), undefined, 'I/O BARs are not on an MMIO router');
});
