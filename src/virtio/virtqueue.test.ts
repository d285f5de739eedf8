import assert from 'node:assert/strict';
import test from 'node:test';
import { BumpAllocator, RecordingGuestMemory, SplitRingDriver, type SplitRingDriverOptions } from './guest-driver.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, featureBit } from './virtio.js';
import { VirtioError, type VirtioErrorKind } from './virtio-error.js';
import {
  DescriptorChain, VIRTQ_AVAIL, VIRTQ_DESC, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_MAX_INDIRECT_DESCRIPTORS, VIRTQ_USED, VIRTQ_USED_ELEM, Virtqueue, virtqAvailRingBytes, virtqDescTableBytes,
  virtqUsedRingBytes, vringNeedEvent,
} from './virtqueue.js';

const RAM_BYTES = 1 << 20;

function setup(options: SplitRingDriverOptions & { size?: number } = {}) {
  const memory = new RecordingGuestMemory([{ gpa: 0, sizeBytes: RAM_BYTES }]);
  const alloc = new BumpAllocator(0x1000, RAM_BYTES);
  const size = options.size ?? 8;
  const ring = new SplitRingDriver(memory, alloc, size, options);
  const q = new Virtqueue(0, size);
  q.descTableGpa = ring.descGpa;
  q.availRingGpa = ring.availGpa;
  q.usedRingGpa = ring.usedGpa;
  q.ready = true;
  let features = 0n;
  if (options.eventIdx) features |= featureBit(VIRTIO_F_EVENT_IDX);
  if (options.indirect) features |= featureBit(VIRTIO_F_INDIRECT_DESC);
  q.activate(memory, features);
  const chain = new DescriptorChain();
  const buffer = (len: number, fill?: number) => {
    const gpa = alloc.alloc(len, 16);
    if (fill !== undefined) memory.fill(gpa, len, fill);
    return { gpa, len };
  };
  return { memory, alloc, ring, q, chain, buffer, features };
}

function popError(s: ReturnType<typeof setup>): VirtioError {
  try {
    s.q.popInto(s.memory, s.chain);
  } catch (e) {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    assert.deepEqual(s.memory.outside, [], 'no access outside guest RAM was even attempted');
    assert.doesNotMatch(e.message, /\n/, 'one-line message');
    return e;
  }
  assert.fail('popInto accepted a hostile chain');
}

test('ring structs match virtio_ring.h and vring_size()', () => {
  assert.equal(VIRTQ_DESC.sizeBytes, 16);
  assert.equal(VIRTQ_USED_ELEM.sizeBytes, 8);
  assert.equal(VIRTQ_AVAIL.offsetOf('idx'), 2);
  assert.equal(VIRTQ_USED.offsetOf('idx'), 2);
  assert.equal(virtqDescTableBytes(256), 4096);
  assert.equal(virtqAvailRingBytes(256), 4 + 512 + 2);
  assert.equal(virtqUsedRingBytes(256), 4 + 2048 + 2);
});

test('vring_need_event: notify exactly when the event index is crossed', () => {
  assert.equal(vringNeedEvent(0, 1, 0), true);
  assert.equal(vringNeedEvent(1, 1, 0), false, 'asked for entry 1, only entry 0 was added');
  assert.equal(vringNeedEvent(5, 10, 3), true);
  assert.equal(vringNeedEvent(10, 10, 3), false);
  assert.equal(vringNeedEvent(0xffff, 2, 0xfffe), true, 'across the u16 wrap');
  assert.equal(vringNeedEvent(3, 2, 0xfffe), false);
});

test('Virtqueue refuses a maximum size that is not a power of two up to 32768', () => {
  assert.throws(() => new Virtqueue(0, 3), RangeError);
  assert.throws(() => new Virtqueue(0, 65536), RangeError);
  assert.doesNotThrow(() => new Virtqueue(0, 32768));
});

test('a chain pops as zero-copy views: readable buffers first, writable after', () => {
  const s = setup();
  const hdr = s.buffer(16, 0xaa);
  const data = s.buffer(100, 0xbb);
  const out = s.buffer(64, 0);
  const status = s.buffer(1, 0);
  const head = s.ring.add([hdr, data], [out, status]);
  assert.equal(s.q.popInto(s.memory, s.chain), true);
  const c = s.chain;
  assert.equal(c.head, head);
  assert.deepEqual(c.readable.map((b) => b.length), [16, 100]);
  assert.deepEqual(c.writable.map((b) => b.length), [64, 1]);
  assert.equal(c.readableBytes, 116);
  assert.equal(c.writableBytes, 65);
  assert.equal(c.readable[1]![0], 0xbb);
  c.writable[0]![3] = 0x42; // a write through the view lands in guest RAM
  assert.equal(s.memory.readU8(out.gpa + 3), 0x42);
  // readInto / writeFrom treat the buffers as one stream
  const across = new Uint8Array(4);
  assert.equal(c.readInto(14, across), 4);
  assert.deepEqual([...across], [0xaa, 0xaa, 0xbb, 0xbb]);
  assert.equal(c.writeFrom(63, Uint8Array.of(1, 2, 3)), 2, 'only two bytes of room left');
  assert.equal(s.memory.readU8(status.gpa), 2);
  const views: Uint8Array[] = [];
  assert.equal(c.readableViews(10, 20, views), 20);
  assert.deepEqual(views.map((v) => v.length), [6, 14]);
  assert.equal(s.q.popInto(s.memory, s.chain), false, 'ring now empty');
  assert.deepEqual(s.memory.outside, []);
});

test('pushUsed hands the chain back: the driver sees id and length', () => {
  const s = setup();
  const head = s.ring.add([s.buffer(8)], [s.buffer(8)]);
  s.q.popInto(s.memory, s.chain);
  assert.equal(s.ring.getBuf(), null, 'nothing used yet');
  s.q.pushUsed(s.memory, s.chain.head, 5);
  assert.deepEqual(s.ring.getBuf(), { id: head, len: 5 });
  assert.equal(s.ring.numFree, 8, 'descriptors went back to the free list');
});

test('indirect descriptors: one ring slot, buffers come from the table', () => {
  const s = setup({ indirect: true });
  const bufs = [s.buffer(16, 1), s.buffer(32, 2)];
  const ins = [s.buffer(512), s.buffer(1)];
  s.ring.add(bufs, ins);
  assert.equal(s.ring.numFree, 7);
  assert.equal(s.q.popInto(s.memory, s.chain), true);
  assert.deepEqual(s.chain.readable.map((b) => b.length), [16, 32]);
  assert.deepEqual(s.chain.writable.map((b) => b.length), [512, 1]);
  assert.equal(s.chain.descriptorCount, 5, 'the indirect descriptor and four in its table');
});

test('a direct chain may end in an indirect descriptor (INDIRECT without NEXT)', () => {
  const s = setup({ indirect: true });
  const table = s.alloc.alloc(32, 16);
  const a = s.buffer(8);
  const b = s.buffer(8);
  const c = s.buffer(8);
  s.ring.writeDesc(0, { addr: a.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  s.ring.writeDesc(1, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
  s.ring.writeDesc(0, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 }, table);
  s.ring.writeDesc(1, { addr: c.gpa, len: 8, flags: VIRTQ_DESC_F_WRITE }, table);
  s.ring.publish(0);
  assert.equal(s.q.popInto(s.memory, s.chain), true);
  assert.equal(s.chain.readable.length, 2);
  assert.equal(s.chain.writable.length, 1);
});

test('zero-length buffers are passed through without touching memory', () => {
  const s = setup();
  s.ring.writeDesc(0, { addr: 0xdead_beef_000, len: 0, flags: 0 });
  s.ring.publish(0);
  assert.equal(s.q.popInto(s.memory, s.chain), true);
  assert.deepEqual(s.chain.readable.map((b) => b.length), [0]);
  assert.deepEqual(s.memory.outside, []);
});

test('ring indices wrap at 2^16 on both sides', () => {
  const s = setup({ size: 4 });
  const b = s.buffer(4);
  for (let i = 0; i < 70_000; i++) {
    const head = s.ring.add([], [b]);
    assert.equal(s.q.popInto(s.memory, s.chain), true);
    assert.equal(s.chain.head, head);
    s.q.pushUsed(s.memory, head, i & 0xff);
    const used = s.ring.getBuf();
    if (used?.len !== (i & 0xff)) assert.fail(`iteration ${i}: used ${JSON.stringify(used)}`);
  }
  assert.equal(s.ring.availIdx, 70_000 & 0xffff);
  assert.equal(s.ring.usedIdx, 70_000 & 0xffff);
});

test('VIRTIO_F_EVENT_IDX: interrupt only when used_event is crossed, kick only when avail_event is', () => {
  const s = setup({ eventIdx: true });
  const b = s.buffer(4);
  // The driver wants an interrupt when used entry 2 is written (virtqueue_enable_cb_delayed-like).
  s.ring.setUsedEvent(2);
  for (let i = 0; i < 3; i++) s.ring.add([], [b]);
  assert.equal(s.ring.kickPrepare(), true, 'avail_event 0 starts out crossed');
  const decisions: boolean[] = [];
  for (let i = 0; i < 3; i++) {
    s.q.popInto(s.memory, s.chain);
    s.q.pushUsed(s.memory, s.chain.head, 0);
    decisions.push(s.q.needsNotification(s.memory));
  }
  assert.deepEqual(decisions, [false, false, true]);
  assert.equal(s.q.needsNotification(s.memory), false, 'nothing new pushed');
  // The device asks to be kicked for the next entry; the driver then kicks once, not twice.
  assert.equal(s.q.enableNotification(s.memory), false);
  s.ring.add([], [b]);
  assert.equal(s.ring.kickPrepare(), true);
  s.ring.add([], [b]);
  assert.equal(s.ring.kickPrepare(), false, 'the device has not caught up: no second kick');
  assert.equal(s.q.enableNotification(s.memory), true, 'buffers arrived: keep draining');
});

test('without EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags decide', () => {
  const s = setup();
  const b = s.buffer(4);
  s.ring.add([], [b]);
  s.q.disableNotification(s.memory);
  assert.equal(s.ring.kickPrepare(), false, 'device said VIRTQ_USED_F_NO_NOTIFY');
  s.q.popInto(s.memory, s.chain);
  s.q.pushUsed(s.memory, s.chain.head, 0);
  s.ring.setNoInterrupt(true);
  assert.equal(s.q.needsNotification(s.memory), false);
  s.ring.add([], [b]);
  assert.equal(s.q.enableNotification(s.memory), true);
  assert.equal(s.ring.kickPrepare(), true);
  s.q.popInto(s.memory, s.chain);
  s.q.pushUsed(s.memory, s.chain.head, 0);
  s.ring.setNoInterrupt(false);
  assert.equal(s.q.needsNotification(s.memory), true);
});

// ---- hostile drivers: each case must come out as one VirtioError kind ----

interface HostileCase {
  name: string;
  kind: VirtioErrorKind;
  options?: SplitRingDriverOptions & { size?: number };
  arrange(s: ReturnType<typeof setup>): void;
}

const hostile: HostileCase[] = [
  {
    name: 'a chain that loops back on itself',
    kind: 'chain-too-long',
    arrange: (s) => {
      const b = s.buffer(8);
      s.ring.writeDesc(0, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
      s.ring.writeDesc(1, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 0 });
      s.ring.publish(0);
    },
  },
  {
    name: 'a descriptor that links to itself',
    kind: 'chain-too-long',
    arrange: (s) => {
      s.ring.writeDesc(3, { addr: s.buffer(8).gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 3 });
      s.ring.publish(3);
    },
  },
  {
    name: 'a chain longer than the queue size (every descriptor, then again)',
    kind: 'chain-too-long',
    options: { size: 4 },
    arrange: (s) => {
      const b = s.buffer(8);
      for (let i = 0; i < 4; i++) s.ring.writeDesc(i, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % 4 });
      s.ring.publish(0);
    },
  },
  {
    name: 'a next index beyond the table',
    kind: 'descriptor-index',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.buffer(8).gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 8 });
      s.ring.publish(0);
    },
  },
  {
    name: 'an avail entry naming a head beyond the table',
    kind: 'descriptor-index',
    arrange: (s) => s.ring.publish(0xffff),
  },
  {
    name: 'a buffer that runs off the end of guest RAM',
    kind: 'buffer-out-of-ram',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: RAM_BYTES - 4, len: 16, flags: 0 });
      s.ring.publish(0);
    },
  },
  {
    name: 'a buffer far beyond guest RAM',
    kind: 'buffer-out-of-ram',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: 0x10_0000_0000, len: 4096, flags: VIRTQ_DESC_F_WRITE });
      s.ring.publish(0);
    },
  },
  {
    name: 'a buffer address above 2^53',
    kind: 'buffer-out-of-ram',
    arrange: (s) => {
      s.memory.writeU64(s.ring.descGpa, 0xffff_ffff_ffff_f000n);
      s.ring.writeDesc(0, { len: 16, flags: 0 });
      s.ring.publish(0);
    },
  },
  {
    name: 'a buffer of 4 GiB - 1',
    kind: 'buffer-out-of-ram',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: 0x2000, len: 0xffff_ffff, flags: VIRTQ_DESC_F_WRITE });
      s.ring.publish(0);
    },
  },
  {
    name: 'a writable buffer over the descriptor table',
    kind: 'buffer-overlaps-ring',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.ring.descGpa + 32, len: 16, flags: VIRTQ_DESC_F_WRITE });
      s.ring.publish(0);
    },
  },
  {
    name: 'a buffer over the avail ring',
    kind: 'buffer-overlaps-ring',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.ring.availGpa - 8, len: 10, flags: 0 });
      s.ring.publish(0);
    },
  },
  {
    name: 'a writable buffer over the used ring',
    kind: 'buffer-overlaps-ring',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.ring.usedGpa + 4, len: 8, flags: VIRTQ_DESC_F_WRITE });
      s.ring.publish(0);
    },
  },
  {
    name: 'a readable descriptor after a writable one',
    kind: 'readable-after-writable',
    arrange: (s) => {
      const b = s.buffer(8);
      s.ring.writeDesc(0, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 });
      s.ring.writeDesc(1, { addr: b.gpa, len: 8, flags: 0 });
      s.ring.publish(0);
    },
  },
  {
    name: 'avail->idx more than the queue size ahead',
    kind: 'avail-index',
    arrange: (s) => s.ring.setAvailIdx(9),
  },
  {
    name: 'avail->idx moved backwards (looks 65535 ahead)',
    kind: 'avail-index',
    arrange: (s) => s.ring.setAvailIdx(0xffff),
  },
  {
    name: 'an indirect descriptor without VIRTIO_F_INDIRECT_DESC',
    kind: 'indirect-not-negotiated',
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.buffer(32).gpa, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect table inside an indirect table',
    kind: 'nested-indirect',
    options: { indirect: true },
    arrange: (s) => {
      const outer = s.buffer(32);
      const inner = s.buffer(32);
      s.ring.writeDesc(0, { addr: inner.gpa, len: 32, flags: VIRTQ_DESC_F_INDIRECT }, outer.gpa);
      s.ring.writeDesc(0, { addr: outer.gpa, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect descriptor with NEXT set',
    kind: 'bad-indirect-table',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.buffer(32).gpa, len: 32, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect table whose length is not a multiple of 16',
    kind: 'bad-indirect-table',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.buffer(32).gpa, len: 24, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an empty indirect table',
    kind: 'bad-indirect-table',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.buffer(32).gpa, len: 0, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect table larger than we walk',
    kind: 'bad-indirect-table',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: 0, len: (VIRTQ_MAX_INDIRECT_DESCRIPTORS + 1) * 16, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect table outside guest RAM',
    kind: 'buffer-out-of-ram',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: RAM_BYTES - 16, len: 64, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'an indirect table over the used ring',
    kind: 'buffer-overlaps-ring',
    options: { indirect: true },
    arrange: (s) => {
      s.ring.writeDesc(0, { addr: s.ring.usedGpa, len: 64, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'a loop inside an indirect table',
    kind: 'chain-too-long',
    options: { indirect: true },
    arrange: (s) => {
      const table = s.buffer(48);
      const b = s.buffer(8);
      for (let i = 0; i < 3; i++) s.ring.writeDesc(i, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % 3 }, table.gpa);
      s.ring.writeDesc(0, { addr: table.gpa, len: 48, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
  {
    name: 'a next index beyond an indirect table',
    kind: 'descriptor-index',
    options: { indirect: true },
    arrange: (s) => {
      const table = s.buffer(32);
      s.ring.writeDesc(0, { addr: s.buffer(8).gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 2 }, table.gpa);
      s.ring.writeDesc(0, { addr: table.gpa, len: 32, flags: VIRTQ_DESC_F_INDIRECT });
      s.ring.publish(0);
    },
  },
];

for (const c of hostile) {
  test(`hostile ring: ${c.name} -> ${c.kind}`, () => {
    const s = setup(c.options);
    c.arrange(s);
    assert.equal(popError(s).kind, c.kind);
  });
}

test('hostile queue configuration is refused at activation', () => {
  const memory = new RecordingGuestMemory([{ gpa: 0, sizeBytes: RAM_BYTES }]);
  const cases: Array<[VirtioErrorKind, Partial<Pick<Virtqueue, 'size' | 'descTableGpa' | 'availRingGpa' | 'usedRingGpa'>>]> = [
    ['queue-size', { size: 0 }],
    ['queue-size', { size: 6 }],
    ['queue-size', { size: 512 }],
    ['ring-alignment', { descTableGpa: 0x1008 }],
    ['ring-alignment', { availRingGpa: 0x3001 }],
    ['ring-alignment', { usedRingGpa: 0x4002 }],
    ['ring-out-of-ram', { usedRingGpa: RAM_BYTES - 8 }],
    ['ring-out-of-ram', { descTableGpa: 2 ** 60 }],
    ['ring-overlap', { availRingGpa: 0x1100 }],
    ['ring-overlap', { usedRingGpa: 0x3000 + 4 }],
  ];
  for (const [kind, fields] of cases) {
    const q = new Virtqueue(0, 256);
    Object.assign(q, { descTableGpa: 0x1000, availRingGpa: 0x3000, usedRingGpa: 0x4000 }, fields);
    assert.throws(() => q.activate(memory, 0n), (e) => e instanceof VirtioError && e.kind === kind, `${kind} ${JSON.stringify(fields)}`);
    assert.equal(q.isActive, false);
    assert.equal(q.popInto(memory, new DescriptorChain()), false, 'an inactive queue pops nothing');
  }
  assert.deepEqual(memory.outside, []);
});

test('guest RAM detached under an active queue: a VirtioError, not a GuestMemoryError', () => {
  const s = setup();
  s.ring.add([s.buffer(8)], []);
  s.memory.detach();
  assert.throws(() => s.q.popInto(s.memory, s.chain), (e) => e instanceof VirtioError && e.kind === 'ring-out-of-ram');
});
