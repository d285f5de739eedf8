import assert from 'node:assert/strict';
import test from 'node:test';
import {
  VIRTIO_CONSOLE_CONFIG, VIRTIO_CONSOLE_F_EMERG_WRITE, VIRTIO_CONSOLE_F_SIZE, VIRTIO_CONSOLE_MAX_PENDING_INPUT_BYTES,
  VIRTIO_CONSOLE_RECEIVEQ, VIRTIO_CONSOLE_TRANSMITQ, VirtioConsole,
} from './console.js';
import { MmioHarness } from './guest-driver.js';
import { VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING } from './mmio.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, featureBit } from './virtio.js';

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

function consoleBench(options: { size?: { cols: number; rows: number } } = {}) {
  const out: string[] = [];
  const dev = new VirtioConsole({ output: (b) => out.push(str(b)), queueSize: 16, ...options });
  const h = new MmioHarness(dev);
  return { dev, h, out };
}

test('features and config: EMERG_WRITE always, SIZE with a size; one port', () => {
  const plain = consoleBench();
  assert.equal(plain.dev.deviceFeatures, featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE));
  const sized = consoleBench({ size: { cols: 132, rows: 43 } });
  assert.equal(sized.dev.deviceFeatures, featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE) | featureBit(VIRTIO_CONSOLE_F_SIZE));
  assert.equal(sized.h.driver.readConfig(VIRTIO_CONSOLE_CONFIG.offsetOf('cols'), 2), 132);
  assert.equal(sized.h.driver.readConfig(VIRTIO_CONSOLE_CONFIG.offsetOf('rows'), 2), 43);
  assert.equal(sized.h.driver.readConfig(VIRTIO_CONSOLE_CONFIG.offsetOf('max_nr_ports'), 4), 1);
});

test('guest output: transmitq buffers go to the callback, come back with length 0, interrupt', () => {
  const { h, out } = consoleBench();
  const rings = h.bringUp();
  const tx = rings[VIRTIO_CONSOLE_TRANSMITQ]!;
  tx.add([h.bytes(text('hello, '))], []);
  tx.add([h.bytes(text('world\n'))], []);
  h.driver.notify(VIRTIO_CONSOLE_TRANSMITQ);
  assert.deepEqual(out, ['hello, ', 'world\n']);
  assert.deepEqual(tx.getBuf(), { id: 0, len: 0 });
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_VRING);
});

test('host input waits for receive buffers, then fills them in order, split as needed', () => {
  const { dev, h } = consoleBench();
  dev.enqueueInput(text('typed early'));
  assert.equal(dev.pendingInputBytes, 11);
  const rings = h.bringUp();
  const rx = rings[VIRTIO_CONSOLE_RECEIVEQ]!;
  assert.equal(dev.pendingInputBytes, 11, 'no buffers posted yet');
  const a = h.buffer(4);
  const b = h.buffer(4);
  rx.add([], [a]);
  rx.add([], [b]);
  h.driver.notify(VIRTIO_CONSOLE_RECEIVEQ);
  assert.equal(h.irqAsserted, true);
  assert.deepEqual(rx.getBuf(), { id: 0, len: 4 });
  assert.deepEqual(rx.getBuf(), { id: 1, len: 4 });
  assert.equal(str(h.read(a)) + str(h.read(b)), 'typed ea');
  assert.equal(dev.pendingInputBytes, 3);
  // The driver posts another buffer (and kicks, since the device asked via avail_event).
  const c = h.buffer(64);
  const headC = rx.add([], [c]);
  assert.equal(rx.kickPrepare(), true);
  h.driver.notify(VIRTIO_CONSOLE_RECEIVEQ);
  assert.deepEqual(rx.getBuf(), { id: headC, len: 3 });
  assert.equal(str(h.read({ gpa: c.gpa, len: 3 })), 'rly');
  // Buffers already posted take input as soon as it comes.
  const d = h.buffer(64);
  const headD = rx.add([], [d]);
  h.driver.handleInterrupt();
  dev.enqueueInput(text('ls\n'));
  assert.equal(h.irqAsserted, true);
  assert.deepEqual(rx.getBuf(), { id: headD, len: 3 });
  assert.deepEqual(h.memory.outside, []);
});

test('resize: new size in config, generation bumped, config interrupt', () => {
  const { dev, h } = consoleBench({ size: { cols: 80, rows: 25 } });
  h.bringUp();
  const gen = h.driver.read32(VIRTIO_MMIO_CONFIG_GENERATION);
  dev.resize(100, 50);
  assert.equal(h.driver.read32(VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_CONFIG);
  assert.equal(h.driver.readConfig(0, 4), 100 | 50 << 16);
});

test('emergency write: a byte written to emerg_wr is output, before any queue exists', () => {
  const { h, out } = consoleBench();
  h.transport.write(VIRTIO_MMIO_CONFIG + VIRTIO_CONSOLE_CONFIG.offsetOf('emerg_wr'), Uint8Array.of(0x21, 0, 0, 0));
  assert.deepEqual(out, ['!']);
});

test('pending input survives a driver reset; past the cap it is dropped and counted', () => {
  const { dev, h } = consoleBench();
  h.bringUp();
  dev.enqueueInput(text('abc'));
  h.driver.write32(0x070, 0);
  assert.equal(dev.pendingInputBytes, 3);
  dev.enqueueInput(new Uint8Array(VIRTIO_CONSOLE_MAX_PENDING_INPUT_BYTES));
  assert.equal(dev.pendingInputBytes, VIRTIO_CONSOLE_MAX_PENDING_INPUT_BYTES);
  assert.equal(dev.droppedInputBytes, 3);
});

test('a hostile receive ring sets DEVICE_NEEDS_RESET instead of throwing', () => {
  const { dev, h } = consoleBench();
  const rings = h.bringUp();
  rings[VIRTIO_CONSOLE_RECEIVEQ]!.setAvailIdx(100);
  dev.enqueueInput(text('x'));
  assert.ok(h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
  assert.deepEqual(h.errors.map((e) => e.kind), ['avail-index']);
});
