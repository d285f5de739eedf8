import assert from 'node:assert/strict';
import test from 'node:test';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BumpAllocator, MmioDriver, RecordingGuestMemory, SplitRingDriver } from './guest-driver.js';
import * as m from './mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit,
  readConfigBytes, type VirtioDevice, type VirtioInterrupt,
} from './virtio.js';
import { VirtioError } from './virtio-error.js';
import { DescriptorChain, type Virtqueue } from './virtqueue.js';

const RAM_BYTES = 1 << 20;
const ECHO_DEVICE_ID = 0x7e;
const ECHO_F_SHOUT = 0;

/** A test device: copies each chain's readable bytes into its writable ones. Queue 1 is spare. */
class EchoDevice implements VirtioDevice {
  readonly deviceType = ECHO_DEVICE_ID;
  readonly deviceFeatures = featureBit(ECHO_F_SHOUT);
  readonly queueMaxSizes = [16, 8];
  readonly configSizeBytes = 8;
  readonly config = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  readonly log: string[] = [];
  interrupt: VirtioInterrupt | null = null;
  private queues: readonly Virtqueue[] = [];
  private memory: GuestMemory | null = null;
  private readonly chain = new DescriptorChain();

  readConfig(offset: number, data: Uint8Array): void { readConfigBytes(this.config, offset, data); }
  writeConfig(offset: number, data: Uint8Array): void { this.config.set(data, offset); }
  activate(queues: readonly Virtqueue[], memory: GuestMemory, interrupt: VirtioInterrupt, features: bigint): void {
    this.log.push(`activate 0x${features.toString(16)}`);
    this.queues = queues;
    this.memory = memory;
    this.interrupt = interrupt;
  }
  reset(): void { this.log.push('reset'); this.interrupt = null; }
  notify(queueIndex: number): void {
    this.log.push(`notify ${queueIndex}`);
    const q = this.queues[queueIndex]!;
    const mem = this.memory!;
    try {
      while (q.popInto(mem, this.chain)) {
        const bytes = new Uint8Array(this.chain.readableBytes);
        this.chain.readInto(0, bytes);
        q.pushUsed(mem, this.chain.head, this.chain.writeFrom(0, bytes));
      }
      if (q.needsNotification(mem)) this.interrupt!.usedBuffer(queueIndex);
    } catch (e) {
      if (!(e instanceof VirtioError)) throw e;
      this.interrupt!.needsReset(e);
    }
  }
}

function setup(irqMode: 'level' | 'edge' = 'level') {
  const memory = new RecordingGuestMemory([{ gpa: 0, sizeBytes: RAM_BYTES }]);
  const alloc = new BumpAllocator(0x1000, RAM_BYTES);
  const device = new EchoDevice();
  const irq: number[] = [];
  const errors: VirtioError[] = [];
  const transport = new m.VirtioMmio(device, {
    memory,
    irq: irqMode === 'level' ? { trigger: 'level', setLevel: (l) => irq.push(l) } : { trigger: 'edge', pulse: () => irq.push(1) },
    onError: (e) => errors.push(e),
  });
  const driver = new MmioDriver(transport);
  return { memory, alloc, device, transport, driver, irq, errors };
}

const WANTED = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(ECHO_F_SHOUT);

/** Probe, negotiate, set up queue 0, DRIVER_OK: the whole Linux bring-up. */
function bringUp(s: ReturnType<typeof setup>, ringOptions: { eventIdx?: boolean; size?: number } = {}) {
  const features = s.driver.negotiate(WANTED);
  assert.notEqual(features, null);
  const ring = new SplitRingDriver(s.memory, s.alloc, ringOptions.size ?? 16, { eventIdx: ringOptions.eventIdx ?? true });
  s.driver.setupQueue(0, ring);
  s.driver.driverOk();
  return ring;
}

test('identity registers: magic "virt", version 2, device and vendor IDs', () => {
  const { driver } = setup();
  assert.equal(driver.read32(m.VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
  assert.equal(driver.read32(m.VIRTIO_MMIO_VERSION), 2);
  assert.equal(driver.read32(m.VIRTIO_MMIO_DEVICE_ID), ECHO_DEVICE_ID);
  assert.equal(driver.read32(m.VIRTIO_MMIO_VENDOR_ID), m.VIRTIO_MMIO_VENDOR_TSVMM);
  assert.equal(driver.read32(m.VIRTIO_MMIO_SHM_LEN_LOW), 0xffff_ffff, 'no shared memory regions');
  assert.equal(driver.read32(0x0f0), 0, 'reserved registers read zero');
  assert.equal(driver.read32(m.VIRTIO_MMIO_QUEUE_DESC_LOW), 0, 'write-only registers read zero');
});

test('feature negotiation the Linux way: device bits, ring bits and VERSION_1 offered; the accepted set kept', () => {
  const s = setup();
  assert.equal(s.driver.deviceFeatures(), WANTED);
  s.driver.write32(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_DEVICE_FEATURES), 0, 'words past 63 are zero');
  const wanted = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX);
  assert.equal(s.driver.negotiate(wanted), wanted);
  assert.equal(s.transport.negotiatedFeatures, wanted);
  assert.equal(s.driver.status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  // Driver features are frozen once FEATURES_OK is accepted.
  s.driver.write32(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  s.driver.write32(m.VIRTIO_MMIO_DRIVER_FEATURES, 0);
  assert.equal(s.transport.negotiatedFeatures, wanted);
  assert.deepEqual(s.errors, []);
});

test('FEATURES_OK is refused without VIRTIO_F_VERSION_1 (no legacy drivers)', () => {
  const s = setup();
  assert.equal(s.driver.negotiate(featureBit(ECHO_F_SHOUT)), null);
  assert.equal(s.driver.status & VIRTIO_CONFIG_S_FEATURES_OK, 0);
  assert.deepEqual(s.errors.map((e) => e.kind), ['features']);
  assert.match(s.errors[0]!.message, /VIRTIO_F_VERSION_1/);
});

test('FEATURES_OK is refused when the driver accepts a feature the device did not offer', () => {
  const s = setup();
  assert.equal(s.driver.negotiate(0n, { acceptExactly: featureBit(VIRTIO_F_VERSION_1) | featureBit(7) }), null);
  assert.deepEqual(s.errors.map((e) => e.kind), ['features']);
  s.driver.driverOk();
  assert.equal(s.driver.status & VIRTIO_CONFIG_S_DRIVER_OK, 0, 'DRIVER_OK needs FEATURES_OK');
  assert.deepEqual(s.device.log, ['reset'], 'never activated');
});

test('a request round trip: notify, used ring, level interrupt, acknowledge lowers the line', () => {
  const s = setup();
  const ring = bringUp(s);
  assert.deepEqual(s.device.log, ['reset', `activate 0x${WANTED.toString(16)}`]);
  const src = s.alloc.alloc(5);
  const dst = s.alloc.alloc(5);
  s.memory.write(src, new TextEncoder().encode('hello'));
  ring.add([{ gpa: src, len: 5 }], [{ gpa: dst, len: 5 }]);
  assert.equal(ring.kickPrepare(), true);
  s.driver.notify(0);
  assert.deepEqual(s.irq, [1]);
  assert.equal(s.driver.handleInterrupt(), m.VIRTIO_MMIO_INT_VRING);
  assert.deepEqual(s.irq, [1, 0]);
  const used = ring.getBuf()!;
  assert.equal(used.len, 5);
  assert.equal(new TextDecoder().decode(s.memory.read(dst, 5)), 'hello');
  assert.deepEqual(s.memory.outside, []);
});

test('edge-triggered interrupt: one pulse per interrupt', () => {
  const s = setup('edge');
  const ring = bringUp(s);
  const b = s.alloc.alloc(4);
  for (let i = 0; i < 3; i++) {
    ring.add([{ gpa: b, len: 4 }], [{ gpa: b + 4, len: 4 }]);
    s.driver.notify(0);
    ring.getBuf();
  }
  assert.deepEqual(s.irq, [1, 1, 1]);
  assert.equal(s.transport.pendingInterrupts, m.VIRTIO_MMIO_INT_VRING);
});

test('queue registers: QueueNumMax per queue, 0 past the last; QueueReady reads back; no changes while ready', () => {
  const s = setup();
  s.driver.negotiate(WANTED);
  const w = (off: number, v: number) => s.driver.write32(off, v);
  w(m.VIRTIO_MMIO_QUEUE_SEL, 1);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
  w(m.VIRTIO_MMIO_QUEUE_SEL, 2);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  w(m.VIRTIO_MMIO_QUEUE_READY, 1);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_READY), 0, 'a missing queue never becomes ready');
  w(m.VIRTIO_MMIO_QUEUE_SEL, 0);
  w(m.VIRTIO_MMIO_QUEUE_NUM, 8);
  w(m.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x2000);
  w(m.VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
  w(m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2080);
  w(m.VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
  w(m.VIRTIO_MMIO_QUEUE_READY, 1);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_READY), 1);
  w(m.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
  w(m.VIRTIO_MMIO_QUEUE_NUM, 4);
  const q = s.transport.queues[0]!;
  assert.equal(q.descTableGpa, 0x2000, 'ignored while ready');
  assert.equal(q.size, 8);
  assert.equal(q.availRingGpa, 0x2080);
  assert.equal(q.usedRingGpa, 0x3000);
  w(m.VIRTIO_MMIO_QUEUE_READY, 0);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_READY), 0, 'Linux checks this reads back 0 on del_vq');
});

test('a bad queue at DRIVER_OK: DEVICE_NEEDS_RESET, a config interrupt, no activation; reset recovers', () => {
  const s = setup();
  s.driver.negotiate(WANTED);
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_SEL, 0);
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_NUM, 12); // not a power of two
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x2000);
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2100);
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_READY, 1);
  s.driver.driverOk();
  assert.ok(s.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(s.driver.handleInterrupt(), m.VIRTIO_MMIO_INT_CONFIG);
  assert.deepEqual(s.errors.map((e) => e.kind), ['queue-size']);
  assert.deepEqual(s.device.log, ['reset']);
  s.driver.notify(0);
  assert.deepEqual(s.device.log, ['reset'], 'notify ignored');
  // Writing 0 resets, and a proper bring-up works.
  s.driver.write32(m.VIRTIO_MMIO_STATUS, 0);
  assert.equal(s.driver.status, 0);
  bringUp(s);
  assert.equal(s.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
});

test('a device that needs reset: status bit, config interrupt, notifications ignored until reset', () => {
  const s = setup();
  const ring = bringUp(s);
  ring.writeDesc(0, { addr: RAM_BYTES, len: 16, flags: 0 }); // a buffer outside RAM
  ring.publish(0);
  s.driver.notify(0);
  assert.ok(s.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(s.transport.pendingInterrupts, m.VIRTIO_MMIO_INT_CONFIG);
  assert.deepEqual(s.errors.map((e) => e.kind), ['buffer-out-of-ram']);
  s.driver.write32(m.VIRTIO_MMIO_STATUS, s.driver.status | VIRTIO_CONFIG_S_NEEDS_RESET);
  s.driver.notify(0);
  assert.equal(s.device.log.filter((l) => l.startsWith('notify')).length, 1);
  assert.deepEqual(s.memory.outside, []);
});

test('writing 0 to Status resets device, queues, features and the interrupt line', () => {
  const s = setup();
  const ring = bringUp(s);
  ring.add([{ gpa: s.alloc.alloc(4), len: 4 }], []);
  s.driver.notify(0);
  assert.deepEqual(s.irq, [1]);
  const stale = s.device.interrupt!;
  s.driver.write32(m.VIRTIO_MMIO_STATUS, 0);
  assert.deepEqual(s.irq, [1, 0]);
  assert.equal(s.transport.pendingInterrupts, 0);
  assert.equal(s.transport.negotiatedFeatures, 0n);
  assert.equal(s.device.log.at(-1), 'reset');
  s.driver.write32(m.VIRTIO_MMIO_QUEUE_SEL, 0);
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_QUEUE_READY), 0);
  // An interrupt object from before the reset is dead.
  stale.usedBuffer(0);
  stale.needsReset(new VirtioError('bad-request', 'late'));
  assert.equal(s.transport.pendingInterrupts, 0);
  assert.equal(s.driver.status, 0);
});

test('config space at 0x100: 8/16/32-bit accesses, zeros past its end; ConfigGeneration counts changes', () => {
  const s = setup();
  assert.equal(s.driver.readConfig(0, 1), 1);
  assert.equal(s.driver.readConfig(2, 2), 0x0403);
  assert.equal(s.driver.readConfig(4, 4), 0x08070605);
  assert.equal(s.driver.readConfig(6, 4), 0, 'straddles the end');
  s.transport.write(m.VIRTIO_MMIO_CONFIG + 1, Uint8Array.of(0xee));
  assert.equal(s.device.config[1], 0xee);
  bringUp(s);
  const gen = s.driver.read32(m.VIRTIO_MMIO_CONFIG_GENERATION);
  s.device.interrupt!.configChanged();
  assert.equal(s.driver.read32(m.VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
  assert.equal(s.driver.handleInterrupt(), m.VIRTIO_MMIO_INT_CONFIG);
});

test('registers take only aligned 32-bit accesses; others read zero and write nothing', () => {
  const s = setup();
  const d = new Uint8Array(2);
  s.transport.read(m.VIRTIO_MMIO_MAGIC_VALUE, d);
  assert.deepEqual([...d], [0, 0]);
  s.transport.write(m.VIRTIO_MMIO_STATUS, Uint8Array.of(1, 0));
  assert.equal(s.driver.status, 0);
  const q = new Uint8Array(8).fill(0xff);
  s.transport.read(m.VIRTIO_MMIO_VERSION, q);
  assert.deepEqual([...q], [0, 0, 0, 0, 0, 0, 0, 0]);
  s.transport.read(m.VIRTIO_MMIO_VERSION + 1, new Uint8Array(4));
});

test('notifications before DRIVER_OK, or for queues that are missing or not ready, are ignored', () => {
  const s = setup();
  s.driver.negotiate(WANTED);
  s.driver.notify(0);
  const ring = new SplitRingDriver(s.memory, s.alloc, 16);
  s.driver.setupQueue(0, ring);
  s.driver.notify(0);
  s.driver.driverOk();
  s.driver.notify(1);
  s.driver.notify(7);
  s.driver.notify(0xffff_ffff);
  assert.deepEqual(s.device.log.filter((l) => l.startsWith('notify')), []);
  s.driver.notify(0);
  assert.deepEqual(s.device.log.filter((l) => l.startsWith('notify')), ['notify 0']);
});

test('a queue made ready after DRIVER_OK starts at once', () => {
  const s = setup();
  bringUp(s);
  const ring1 = new SplitRingDriver(s.memory, s.alloc, 8);
  s.driver.setupQueue(1, ring1);
  assert.equal(s.transport.queues[1]!.isActive, true);
  const b = s.alloc.alloc(2);
  ring1.add([{ gpa: b, len: 1 }], [{ gpa: b + 1, len: 1 }]);
  s.driver.notify(1);
  assert.equal(ring1.getBuf()?.len, 1);
});

test('status bits only accumulate until reset; the driver cannot set NEEDS_RESET', () => {
  const s = setup();
  s.driver.write32(m.VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  s.driver.write32(m.VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(s.driver.status, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  s.driver.write32(m.VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_FEATURES_OK);
  assert.equal(s.driver.status & VIRTIO_CONFIG_S_FEATURES_OK, 0, 'no VERSION_1 accepted yet');
});

test('notifyQueue (an ioeventfd took the QueueNotify write) acts like the register write, with the same checks', () => {
  const s = setup('edge');
  s.transport.notifyQueue(0);
  assert.deepEqual(s.device.log, [], 'ignored before DRIVER_OK');
  const ring = bringUp(s);
  const b = s.alloc.alloc(4);
  ring.add([{ gpa: b, len: 4 }], [{ gpa: b + 4, len: 4 }]);
  s.transport.notifyQueue(0);
  s.transport.notifyQueue(5); // no such queue
  assert.deepEqual(s.device.log.slice(2), ['notify 0']);
  assert.equal(ring.getBuf()?.len, 4);
  assert.deepEqual(s.irq, [1]);
});
