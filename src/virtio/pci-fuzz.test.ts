// Deterministic fuzzing of virtio-pci behind the PCI bus: seeded random configuration writes
// (through 0xCF8/0xCFC and ECAM, at every size, biased to the header, BARs and capabilities),
// random BAR register accesses (common configuration, ISR, notify, MSI-X table and PBA, device
// configuration), random ring contents and notifications, and now and then a clean Linux-style
// bring-up with a request that must complete. A fixed number of steps per device. After every
// step it checks that:
//  - no exception leaves the bus interfaces (driver faults come out only as VirtioErrors);
//  - no access outside guest RAM was even attempted (recording GuestMemory, RAM with a hole);
//  - every MSI message was sent with MSI-X enabled, the function unmasked, and matches an
//    unmasked table entry; INTx is never asserted while MSI-X is enabled;
//  - the read-only identity (IDs, class, header type, BAR type bits, capability chain) is unchanged, an absent slot still
//    reads all ones, and a decoding BAR inside the window is found there by the router;
//  - in clean bring-ups, the request completes with the right length and no error is reported.
import assert from 'node:assert/strict';
import test from 'node:test';
import { PCI_COMMAND, PCI_COMMAND_MEMORY } from '../pci/config-space.js';
import {
  PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL,
} from '../pci/msix.js';
import { VIRTIO_BLK_T_IN, VirtioBlock } from './block.js';
import { VirtioConsole } from './console.js';
import { Prng } from './guest-driver.js';
import { HARNESS_BAR_WINDOW, HARNESS_ECAM_GPA, PciHarness } from './pci-guest-driver.js';
import { VIRTIO_PCI_COMMON_CFG, VIRTIO_PCI_MSIX_TABLE_OFFSET, type CommonCfgField } from './pci.js';
import { VirtioRng } from './rng.js';
import type { VirtioDevice } from './virtio.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './virtqueue.js';

const STEPS_PER_DEVICE = 15_000;
const CLEAN_EVERY = 150;
const FRESH_EVERY = 1500;
const RAM = [{ gpa: 0, sizeBytes: 0x40000 }, { gpa: 0x50000, sizeBytes: 0x4000 }];


const COMMON_FIELDS: readonly CommonCfgField[] = [
  'device_feature_select', 'device_feature', 'guest_feature_select', 'guest_feature', 'msix_config', 'num_queues',
  'device_status', 'config_generation', 'queue_select', 'queue_size', 'queue_msix_vector', 'queue_enable',
  'queue_notify_off', 'queue_desc_lo', 'queue_desc_hi', 'queue_avail_lo', 'queue_avail_hi', 'queue_used_lo',
  'queue_used_hi', 'queue_notify_data', 'queue_reset',
];

interface Profile {
  readonly name: string;
  readonly seed: number;
  make(): VirtioDevice;
  /** A request a clean driver makes on queue 0, and its expected used length. */
  request(h: PciHarness): { out: Array<{ gpa: number; len: number }>; inBufs: Array<{ gpa: number; len: number }>; usedLen: number };
}

const PROFILES: readonly Profile[] = [
  {
    name: 'virtio-rng', seed: 0x5eed_0001,
    make: () => new VirtioRng({ source: (b) => b.fill(0x42) }),
    request: (h) => ({ out: [], inBufs: [h.buffer(32)], usedLen: 32 }),
  },
  {
    name: 'virtio-blk', seed: 0x5eed_0002,
    make: () => {
      const bytes = new Uint8Array(16 * 512);
      return new VirtioBlock({
        backend: {
          sizeBytes: bytes.length,
          readv: (o, bufs) => { let at = o; for (const b of bufs) { b.set(bytes.subarray(at, at + b.length)); at += b.length; } },
          writev: (o, bufs) => { let at = o; for (const b of bufs) { bytes.set(b, at); at += b.length; } },
        },
      });
    },
    request: (h) => {
      const hdr = new Uint8Array(16);
      new DataView(hdr.buffer).setUint32(0, VIRTIO_BLK_T_IN, true);
      return { out: [h.bytes(hdr)], inBufs: [h.buffer(512), h.buffer(1, 0xff)], usedLen: 513 };
    },
  },
  {
    name: 'virtio-console', seed: 0x5eed_0003,
    make: () => new VirtioConsole({ output: () => {} }),
    // Queue 0 is receiveq: a posted buffer stays until input arrives; the clean check uses
    // transmitq through its own path below.
    request: (h) => ({ out: [], inBufs: [h.buffer(16)], usedLen: -1 }),
  },
];

function fuzz(profile: Profile): Map<string, number> {
  const rng = new Prng(profile.seed);
  const stats = new Map<string, number>();
  const count = (k: string) => stats.set(k, (stats.get(k) ?? 0) + 1);
  let step = 0;
  const where = () => `${profile.name} seed 0x${profile.seed.toString(16)} step ${step}`;
  let h = new PciHarness(profile.make(), { ram: RAM });
  const t = () => h.transport;
  /** IDs, header type, BAR type and size bits, and the capability chain (IDs and next pointers). */
  const identity = () => {
    const c = t().config;
    const chain: number[] = [];
    for (let pos = c.u8(0x34), ttl = 48; pos !== 0 && ttl > 0; pos = c.u8(pos + 1), ttl--) chain.push(pos, c.u8(pos));
    return [c.u32(0), c.u32(0x08), c.u8(0x0e), c.u32(0x10) & 0x7fff, c.u32(0x2c), c.u8(0x3d), ...chain];
  };
  let expectedIdentity = identity();
  let totalErrors = 0;

  const install = () => {
    h.onMsi = (lo, hi, data) => {
      const m = t().msix;
      assert.ok(m.enabled && !m.functionMasked, `${where()}: MSI sent with MSI-X ${m.enabled ? 'function-masked' : 'disabled'}`);
      let found = false;
      for (let v = 0; v < m.vectors && !found; v++) {
        const s = m.vectorState(v);
        found = !s.masked && s.addressLo === lo && s.addressHi === hi && s.data === data;
      }
      assert.ok(found, `${where()}: MSI 0x${hi.toString(16)}:${lo.toString(16)}=${data} matches no unmasked vector`);
      count('msi');
    };
  };
  install();

  const guarded = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      assert.fail(`${where()}: ${what} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
  };

  const bus32 = (space: 'pio' | 'mmio', addr: number, len: number, isWrite: boolean, value = 0) => {
    const d = new Uint8Array(len);
    for (let i = 0; i < len; i++) d[i] = (value >>> (8 * i)) & 0xff;
    (space === 'pio' ? h.pio : h.mmio).access(addr, isWrite, d);
  };

  const configOffset = () => {
    const caps = t().capabilityOffsets;
    const hot = [0x04, 0x06, 0x0c, 0x10, 0x14, 0x18, 0x30, 0x3c, caps.msix, caps.msix + 2, caps.pciCfg + 4, caps.pciCfg + 8, caps.pciCfg + 12, caps.pciCfg + 16, caps.common, caps.notify];
    return rng.chance(0.6) ? rng.pick(hot) + rng.int(4) : rng.int(rng.chance(0.9) ? 256 : 4096);
  };

  const barOffset = () => {
    switch (rng.int(6)) {
      case 0: {
        // device_status 0 resets everything; keep it rarer so hostile steps reach a running device.
        const f = rng.pick(COMMON_FIELDS);
        return VIRTIO_PCI_COMMON_CFG.offsetOf(f === 'device_status' && rng.chance(0.8) ? 'queue_select' : f);
      }
      case 1: return 0x1000 + rng.int(8);
      case 2: return 0x2000 + rng.int(64);
      case 3: return 0x3000 + 4 * rng.int(4);
      case 4: return VIRTIO_PCI_MSIX_TABLE_OFFSET + rng.int(4 * PCI_MSIX_ENTRY_SIZE);
      default: return rng.int(0x8000);
    }
  };

  /** A clean Linux bring-up and one request that must complete. */
  const cleanRound = () => {
    count('clean');
    const errorsBefore = h.errors.length;
    guarded('firmware re-assignment', () => {
      // As if the guest were rebooted by firmware: MSI-X off, BARs placed, decoding on.
      h.driver.cfg.write(h.slot, t().capabilityOffsets.msix + 2, 2, 0);
      h.pciBus.assignBars({ mmio32: HARNESS_BAR_WINDOW });
    });
    // The clean driver's own helpers throw only for driver-side checks; none may trigger here.
    const rings = h.bringUp();
    const ring = rings[0]!;
    if (profile.name === 'virtio-console') {
      const tx = rings[1]!;
      tx.add([h.bytes(Uint8Array.of(1, 2, 3))], []);
      guarded('notify', () => h.driver.notifyQueue(1));
      assert.equal(tx.getBuf()?.len, 0, `${where()}: transmit completes with nothing written`);
    } else {
      const r = profile.request(h);
      ring.add(r.out, r.inBufs);
      const before = h.msi.length;
      guarded('notify', () => h.driver.notifyQueue(0));
      assert.equal(ring.getBuf()?.len, r.usedLen, `${where()}: clean request`);
      assert.equal(h.msi.length, before + 1, `${where()}: one interrupt for the clean request`);
    }
    assert.deepEqual(h.errors.slice(errorsBefore).map((e) => e.message), [], `${where()}: clean round reported errors`);
  };

  for (step = 0; step < STEPS_PER_DEVICE; step++) {
    if (step % CLEAN_EVERY === 0) {
      // A clean bring-up from whatever state the hostile steps left; a fresh machine now and then
      // (the driver's allocator is a bump allocator).
      if (step % FRESH_EVERY === 0 && step > 0) {
        totalErrors += h.errors.length;
        h = new PciHarness(profile.make(), { ram: RAM });
        install();
        expectedIdentity = identity();
      }
      cleanRound();
    }
    const action = rng.int(100);
    if (action < 25) {
      const len = rng.pick([1, 2, 4] as const);
      const offset = configOffset() & ~(len - 1);
      const value = rng.value(len);
      const viaEcam = rng.chance(0.5);
      const slot = rng.chance(0.9) ? h.slot : rng.int(32);
      guarded('config write', () => {
        if (viaEcam) bus32('mmio', HARNESS_ECAM_GPA + (slot << 15) + offset, len, true, value);
        else {
          bus32('pio', 0xcf8, 4, true, (0x8000_0000 | (slot << 11) | (offset & 0xfc)) >>> 0);
          bus32('pio', 0xcfc + (offset & 3), len, true, value);
        }
      });
      count('config write');
    } else if (action < 32) {
      // Raw port traffic: odd sizes at 0xCF8-0xCFF.
      const port = 0xcf8 + rng.int(8);
      const len = rng.pick([1, 2, 4]);
      guarded('port access', () => bus32('pio', port, len, rng.chance(0.5), rng.u32()));
      count('port access');
    } else if (action < 40) {
      guarded('config read', () => {
        const d = new Uint8Array(rng.pick([1, 2, 4]));
        t().configRead(configOffset() & ~(d.length - 1), d);
      });
    } else if (action < 80) {
      const len = rng.pick([1, 2, 4, 4, 4, 8]);
      const offset = barOffset();
      const isWrite = rng.chance(0.7);
      const value = rng.value(Math.min(len, 4));
      guarded('BAR access', () => {
        const d = new Uint8Array(len);
        for (let i = 0; i < Math.min(len, 4); i++) d[i] = (value >>> (8 * i)) & 0xff;
        const gpa = t().bar.gpa;
        // Through the bus when the BAR decodes in the window, else straight at the handler.
        if (gpa !== null && gpa >= HARNESS_BAR_WINDOW.base && gpa < HARNESS_BAR_WINDOW.base + HARNESS_BAR_WINDOW.sizeBytes) h.mmio.access(gpa + offset, isWrite, d);
        else if (isWrite) t().barWrite(offset, d);
        else t().barRead(offset, d);
      });
      count(isWrite ? 'BAR write' : 'BAR read');
    } else if (action < 92) {
      // Hostile ring contents on an active queue, then a doorbell.
      const q = t().queues[rng.int(t().queues.length)]!;
      if (q.isActive) {
        const dm = h.memory.unrecorded();
        const wild = () => rng.pick([rng.int(0x40000), 0x40000 + rng.int(0x10000), 0x50000 + rng.int(0x4000), rng.u32(), 0x3fff8]);
        const i = rng.int(q.size);
        guarded('ring write', () => {
          const d = q.descTableGpa + 16 * i;
          if (dm.contains(d, 16)) {
            dm.writeU64(d, BigInt(wild()));
            dm.writeU32(d + 8, rng.pick([0, 1, 16, 512, rng.u32()]));
            dm.writeU16(d + 12, rng.int(8) & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT));
            dm.writeU16(d + 14, rng.int(q.size + 2));
          }
          if (dm.contains(q.availRingGpa, 4 + 2 * q.size)) {
            const idx = dm.readU16(q.availRingGpa + 2);
            dm.writeU16(q.availRingGpa + 4 + 2 * (idx % q.size), rng.chance(0.9) ? i : rng.int(0x10000));
            dm.writeU16(q.availRingGpa + 2, (idx + (rng.chance(0.95) ? 1 : rng.int(0x10000))) & 0xffff);
          }
        });
      }
      guarded('notify', () => t().notifyQueue(q.index));
      count('hostile notify');
    } else if (action < 96) {
      // MSI-X mask games from the guest.
      const v = rng.int(t().msix.vectors + 1);
      guarded('vector mask', () => t().msix.tableWrite(v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, Uint8Array.of(rng.chance(0.5) ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0, 0, 0, 0)));
      count('mask');
    } else {
      // Host events and disabling decoding.
      guarded('host', () => {
        const dev = t().device;
        if (dev instanceof VirtioConsole) dev.resize(rng.int(300), rng.int(100));
        if (rng.chance(0.3)) t().configWrite(PCI_COMMAND, Uint8Array.of(rng.chance(0.5) ? PCI_COMMAND_MEMORY : 0, 0));
      });
      count('host');
    }

    assert.deepEqual(h.memory.outside, [], `${where()}: the device tried to access memory outside guest RAM`);
    if (t().msix.enabled) assert.equal(t().config.intxAsserted, false, `${where()}: INTx asserted with MSI-X enabled`);
    assert.deepEqual(identity(), expectedIdentity, `${where()}: read-only identity changed`);
    const absent = new Uint8Array(4);
    h.pciBus.configRead(0, 30, 0, 0, absent);
    assert.deepEqual([...absent], [0xff, 0xff, 0xff, 0xff], `${where()}: empty slot`);
    const gpa = t().bar.gpa;
    if (gpa !== null && gpa >= HARNESS_BAR_WINDOW.base && gpa + t().bar.sizeBytes <= HARNESS_BAR_WINDOW.base + HARNESS_BAR_WINDOW.sizeBytes) {
      assert.equal(h.router.find(gpa)?.bar, t().bar, `${where()}: decoding BAR not routed`);
    }
    for (const e of h.errors) assert.doesNotMatch(e.message, /\n/, 'one-line messages');
  }
  stats.set('errors reported', totalErrors + h.errors.length);
  return stats;
}

for (const profile of PROFILES) {
  test(`${profile.name} over virtio-pci survives ${STEPS_PER_DEVICE} hostile steps (seed 0x${profile.seed.toString(16)})`, () => {
    const stats = fuzz(profile);
    if (process.env.FUZZ_STATS) console.log(profile.name, Object.fromEntries(stats));
    // The fuzz must actually reach the interesting paths, or it proves nothing.
    for (const k of ['clean', 'config write', 'BAR write', 'BAR read', 'hostile notify', 'msi', 'errors reported']) {
      assert.ok((stats.get(k) ?? 0) > 0, `${profile.name}: no "${k}" steps`);
    }
  });
}
