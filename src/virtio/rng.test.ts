import assert from 'node:assert/strict';
import test from 'node:test';
import { MmioHarness } from './guest-driver.js';
import { VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING } from './mmio.js';
import { VirtioRng } from './rng.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_RNG } from './virtio.js';
import { VIRTQ_DESC_F_NEXT } from './virtqueue.js';

/** An entropy source that counts 0, 1, 2, ... so the test can see exactly what was handed out. */
function counting() {
  let next = 0;
  return (buf: Uint8Array) => {
    for (let i = 0; i < buf.length; i++) buf[i] = next++ & 0xff;
  };
}

test('virtio-rng identifies as device 4 with one queue and no config', () => {
  const h = new MmioHarness(new VirtioRng());
  assert.equal(h.driver.read32(0x008), VIRTIO_ID_RNG);
  assert.equal(h.driver.readConfig(0, 4), 0);
  assert.equal(h.bringUp().length, 1);
});

test('round trip through virtio-mmio: writable buffers come back full, used length says how much, interrupt raised', () => {
  const h = new MmioHarness(new VirtioRng({ source: counting() }));
  const [ring] = h.bringUp();
  const a = h.buffer(16);
  const b = h.buffer(7);
  ring!.add([], [a]);
  ring!.add([], [b]);
  assert.equal(ring!.kickPrepare(), true);
  h.driver.notify(0);
  assert.equal(h.irqAsserted, true);
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_VRING);
  assert.equal(h.irqAsserted, false);
  assert.deepEqual(ring!.getBuf(), { id: 0, len: 16 });
  assert.deepEqual(ring!.getBuf()?.len, 7);
  assert.deepEqual([...h.read(a)], Array.from({ length: 16 }, (_, i) => i));
  assert.deepEqual([...h.read(b)], Array.from({ length: 7 }, (_, i) => 16 + i));
  assert.deepEqual(h.memory.outside, []);
});

test('a request of several writable buffers (an indirect table) fills them all; readable ones are ignored', () => {
  const rng = new VirtioRng({ source: counting() });
  const h = new MmioHarness(rng);
  const [ring] = h.bringUp();
  const junk = h.buffer(8, 0x55);
  const parts = [h.buffer(3), h.buffer(5)];
  ring!.add([junk], parts);
  h.driver.notify(0);
  assert.equal(ring!.getBuf()?.len, 8);
  assert.deepEqual([...h.read(parts[1]!)], [3, 4, 5, 6, 7]);
  assert.deepEqual([...h.read(junk)], new Array(8).fill(0x55));
  assert.equal(rng.bytesServed, 8);
});

test('one request gets at most maxBytesPerRequest bytes', () => {
  const h = new MmioHarness(new VirtioRng({ source: counting(), maxBytesPerRequest: 100 }));
  const [ring] = h.bringUp();
  const big = h.buffer(256);
  ring!.add([], [big]);
  h.driver.notify(0);
  assert.equal(ring!.getBuf()?.len, 100);
  assert.equal(h.read(big)[100], 0, 'past the limit untouched');
});

test('the default source is node:crypto', () => {
  const h = new MmioHarness(new VirtioRng());
  const [ring] = h.bringUp();
  const b = h.buffer(64);
  ring!.add([], [b]);
  h.driver.notify(0);
  assert.equal(ring!.getBuf()?.len, 64);
  assert.ok(h.read(b).some((x) => x !== 0));
});

test('a looping chain: DEVICE_NEEDS_RESET and a config interrupt; after reset the device works again', () => {
  const h = new MmioHarness(new VirtioRng({ source: counting() }));
  let [ring] = h.bringUp();
  const b = h.buffer(8);
  ring!.writeDesc(0, { addr: b.gpa, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 0 });
  ring!.publish(0);
  h.driver.notify(0);
  assert.ok(h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_CONFIG);
  assert.deepEqual(h.errors.map((e) => e.kind), ['chain-too-long']);
  [ring] = h.bringUp();
  ring!.add([], [h.buffer(4)]);
  h.driver.notify(0);
  assert.equal(ring!.getBuf()?.len, 4);
  assert.deepEqual(h.memory.outside, []);
});
