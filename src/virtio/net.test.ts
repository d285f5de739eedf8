import assert from 'node:assert/strict';
import test from 'node:test';
import { MmioHarness } from './guest-driver.js';
import { VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING } from './mmio.js';
import {
  ETH_HLEN, VIRTIO_NET_CONFIG, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_V1,
  VIRTIO_NET_RECEIVEQ, VIRTIO_NET_S_LINK_UP, VIRTIO_NET_TRANSMITQ, VirtioNet, formatMac, formatNetStats, parseMac, type NetBackend,
} from './net.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_NET, featureBit } from './virtio.js';

const HDR = VIRTIO_NET_HDR_V1.sizeBytes;
const MAC = parseMac('02:74:73:76:6d:00')!;

/** A backend that records what the guest sent and lets the test inject frames. */
class FakeBackend implements NetBackend {
  readonly sent: Uint8Array[] = [];
  accept = true;
  receiver: ((frame: Uint8Array) => void) | null = null;
  send(frame: Uint8Array): boolean {
    if (!this.accept) return false;
    this.sent.push(frame.slice());
    return true;
  }
  setReceiver(r: ((frame: Uint8Array) => void) | null): void {
    this.receiver = r;
  }
  inject(frame: Uint8Array): void {
    this.receiver?.(frame);
  }
}

function frame(len: number, seed = 1): Uint8Array {
  const f = Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0); // broadcast destination
  f[12] = 0x88; f[13] = 0xb5; // IEEE 802 local experimental ethertype
  return f;
}

function netBench(options: { mtu?: number; maxPendingRxFrames?: number } = {}) {
  const backend = new FakeBackend();
  const dev = new VirtioNet({ backend, mac: MAC, queueSize: 16, ...options });
  const h = new MmioHarness(dev);
  return { dev, h, backend };
}

test('virtio-net identifies as device 1 with two queues, MAC and STATUS (and MTU when asked), link up', () => {
  const { h, dev } = netBench();
  assert.equal(h.driver.read32(0x008), VIRTIO_ID_NET);
  assert.equal(dev.deviceFeatures, featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS));
  const mac = Array.from({ length: 6 }, (_, i) => h.driver.readConfig(VIRTIO_NET_CONFIG.offsetOf('mac') + i, 1));
  assert.deepEqual(mac, [...MAC]);
  assert.equal(h.driver.readConfig(VIRTIO_NET_CONFIG.offsetOf('status'), 2), VIRTIO_NET_S_LINK_UP);
  assert.equal(h.bringUp().length, 2);
  const withMtu = netBench({ mtu: 1400 });
  assert.ok(withMtu.dev.deviceFeatures & featureBit(VIRTIO_NET_F_MTU));
  assert.equal(withMtu.h.driver.readConfig(VIRTIO_NET_CONFIG.offsetOf('mtu'), 2), 1400);
  assert.throws(() => new VirtioNet({ backend: new FakeBackend(), mac: parseMac('01:00:5e:00:00:01')! }), /not a 6-byte unicast/);
  assert.equal(formatMac(MAC), '02:74:73:76:6d:00');
  assert.equal(parseMac('02:74:73:76:6d'), null);
});

test('transmit: frames reach the backend intact, header skipped, split or whole, used length 0, interrupt', () => {
  const { h, backend, dev } = netBench();
  const rings = h.bringUp();
  const tx = rings[VIRTIO_NET_TRANSMITQ]!;
  const a = frame(60, 1);
  const b = frame(1514, 2);
  // Linux with VERSION_1 pushes the header in front of the data: one buffer.
  const whole = new Uint8Array(HDR + a.length);
  whole[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM: ignored, CSUM was not offered
  whole.set(a, HDR);
  tx.add([h.bytes(whole)], []);
  // Header, then the frame in three pieces.
  tx.add([h.bytes(new Uint8Array(HDR)), h.bytes(b.subarray(0, 100)), h.bytes(b.subarray(100, 1000)), h.bytes(b.subarray(1000))], []);
  assert.equal(tx.kickPrepare(), true);
  h.driver.notify(VIRTIO_NET_TRANSMITQ);
  assert.deepEqual(backend.sent, [a, b]);
  assert.deepEqual(tx.getBuf(), { id: 0, len: 0 });
  assert.equal(tx.getBuf()?.len, 0);
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_VRING);
  assert.equal(dev.stats.txFrames, 2);
  assert.equal(dev.stats.txBytes, 60 + 1514);
  assert.deepEqual(h.memory.outside, []);
});

test('transmit: runts and oversize frames are dropped and counted; a full host queue is counted; the device goes on', () => {
  const { h, backend, dev } = netBench({ mtu: 1500 });
  const rings = h.bringUp();
  const tx = rings[VIRTIO_NET_TRANSMITQ]!;
  tx.add([h.bytes(new Uint8Array(HDR + ETH_HLEN - 1))], []);
  tx.add([h.bytes(new Uint8Array(HDR + 1500 + 18 + 1))], []);
  h.driver.notify(VIRTIO_NET_TRANSMITQ);
  assert.equal(dev.stats.txDroppedMalformed, 2);
  backend.accept = false;
  tx.add([h.bytes(new Uint8Array(HDR)), h.bytes(frame(64))], []);
  h.driver.notify(VIRTIO_NET_TRANSMITQ);
  assert.equal(dev.stats.txDroppedByHost, 1);
  assert.equal(backend.sent.length, 0);
  assert.equal(tx.getBuf()?.len, 0);
  assert.equal(h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
});

test('receive: frames land in posted buffers after a zeroed header with num_buffers = 1', () => {
  const { h, backend, dev } = netBench();
  const rings = h.bringUp();
  const rx = rings[VIRTIO_NET_RECEIVEQ]!;
  const bufA = h.buffer(1526, 0xee);
  const bufB = h.buffer(1526, 0xee);
  rx.add([], [bufA]);
  // Header and data in separate descriptors (what a driver may do): still one chain, one frame.
  const hdrB = h.buffer(HDR, 0xee);
  rx.add([], [hdrB, bufB]);
  h.driver.notify(VIRTIO_NET_RECEIVEQ);
  const a = frame(60, 3);
  const b = frame(1514, 4);
  backend.inject(a);
  assert.equal(h.irqAsserted, true);
  backend.inject(b);
  assert.deepEqual(rx.getBuf(), { id: 0, len: HDR + 60 });
  const gotA = h.read(bufA);
  const hdr = gotA.subarray(0, HDR);
  assert.equal(VIRTIO_NET_HDR_V1.get(hdr, 0, 'num_buffers'), 1);
  assert.deepEqual([...hdr.subarray(0, VIRTIO_NET_HDR_V1.offsetOf('num_buffers'))], new Array(10).fill(0));
  assert.deepEqual(gotA.subarray(HDR, HDR + 60), a);
  assert.equal(gotA[HDR + 60], 0xee, 'nothing written past the frame');
  assert.equal(rx.getBuf()?.len, HDR + 1514);
  assert.deepEqual([...h.read(hdrB)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.deepEqual(h.read(bufB).subarray(0, 1514), b);
  assert.equal(dev.stats.rxFrames, 2);
  assert.deepEqual(h.memory.outside, []);
});

test('receive: with no buffers frames queue up to the bound, then drop and count; posting buffers drains them', () => {
  const { h, backend, dev } = netBench({ maxPendingRxFrames: 3 });
  const rings = h.bringUp();
  const rx = rings[VIRTIO_NET_RECEIVEQ]!;
  for (let i = 0; i < 5; i++) backend.inject(frame(64, i));
  assert.equal(dev.pendingRxFrames, 3);
  assert.equal(dev.stats.rxDroppedNoBuffer, 2);
  assert.equal(h.irqAsserted, false);
  const bufs = [h.buffer(128), h.buffer(128)];
  for (const b of bufs) rx.add([], [b]);
  assert.equal(rx.kickPrepare(), true, 'the device asked to hear of new receive buffers');
  h.driver.notify(VIRTIO_NET_RECEIVEQ);
  assert.equal(h.irqAsserted, true);
  assert.equal(dev.pendingRxFrames, 1);
  assert.deepEqual(h.read(bufs[0]!).subarray(HDR, HDR + 64), frame(64, 0));
  assert.deepEqual(h.read(bufs[1]!).subarray(HDR, HDR + 64), frame(64, 1));
  assert.equal(rx.getBuf()?.len, HDR + 64);
  assert.equal(rx.getBuf()?.len, HDR + 64);
  // Recovery: one more buffer takes the last queued frame, then new frames go straight in.
  const c = h.buffer(128);
  rx.add([], [c]);
  h.driver.notify(VIRTIO_NET_RECEIVEQ);
  assert.equal(dev.pendingRxFrames, 0);
  assert.deepEqual(h.read(c).subarray(HDR, HDR + 64), frame(64, 2));
  const d = h.buffer(128);
  rx.add([], [d]);
  h.driver.notify(VIRTIO_NET_RECEIVEQ);
  backend.inject(frame(70, 9));
  assert.deepEqual(h.read(d).subarray(HDR, HDR + 70), frame(70, 9));
  assert.equal(dev.stats.rxFrames, 4);
  assert.equal(formatNetStats(dev.stats), 'net: tx 0 frames 0 bytes (dropped: 0 host queue full, 0 malformed); rx 4 frames 262 bytes (dropped: 2 no guest buffer, 0 too big, 0 device not running)');
});

test('receive: a frame too big for the buffer is dropped and the buffer kept for the next one', () => {
  const { h, backend, dev } = netBench();
  const rx = h.bringUp()[VIRTIO_NET_RECEIVEQ]!;
  const small = h.buffer(HDR + 100);
  rx.add([], [small]);
  h.driver.notify(VIRTIO_NET_RECEIVEQ);
  backend.inject(frame(200));
  assert.equal(dev.stats.rxDroppedTooBig, 1);
  assert.equal(rx.getBuf(), null);
  backend.inject(frame(100, 5));
  assert.deepEqual(rx.getBuf(), { id: 0, len: HDR + 100 });
  assert.deepEqual(h.read(small).subarray(HDR), frame(100, 5));
});

test('before DRIVER_OK and after reset, host frames are dropped (inactive), not queued for the next driver', () => {
  const { h, backend, dev } = netBench();
  backend.inject(frame(64));
  assert.equal(dev.stats.rxDroppedInactive, 1);
  h.bringUp();
  backend.inject(frame(64));
  assert.equal(dev.pendingRxFrames, 1);
  h.driver.write32(0x070, 0);
  assert.equal(dev.pendingRxFrames, 0);
  assert.equal(dev.stats.rxDroppedInactive, 2);
});

test('link down: status clears LINK_UP with a config interrupt, and frames are dropped', () => {
  const { h, backend, dev } = netBench();
  h.bringUp();
  const gen = h.driver.read32(VIRTIO_MMIO_CONFIG_GENERATION);
  dev.setLinkUp(false);
  assert.equal(h.driver.readConfig(VIRTIO_NET_CONFIG.offsetOf('status'), 2), 0);
  assert.equal(h.driver.read32(VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
  assert.equal(h.driver.handleInterrupt(), VIRTIO_MMIO_INT_CONFIG);
  backend.inject(frame(64));
  assert.equal(dev.stats.rxDroppedInactive, 1);
});

test('hostile rings: a receive buffer without room for the header, a transmit chain without one, a bad avail idx', () => {
  {
    const { h, backend } = netBench();
    const rx = h.bringUp()[VIRTIO_NET_RECEIVEQ]!;
    rx.add([], [h.buffer(HDR - 1)]);
    backend.inject(frame(64));
    assert.ok(h.driver.status & VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.deepEqual(h.errors.map((e) => e.kind), ['bad-request']);
    assert.match(h.errors[0]!.message, /virtio-net: receive buffer 0 has 11 writable bytes/);
  }
  {
    const { h, backend } = netBench();
    const tx = h.bringUp()[VIRTIO_NET_TRANSMITQ]!;
    tx.add([h.buffer(4)], []);
    h.driver.notify(VIRTIO_NET_TRANSMITQ);
    assert.deepEqual(h.errors.map((e) => e.kind), ['bad-request']);
    assert.equal(backend.sent.length, 0);
    // After a reset the device works again.
    const rings = h.bringUp();
    rings[VIRTIO_NET_TRANSMITQ]!.add([h.bytes(new Uint8Array(HDR + 64))], []);
    h.driver.notify(VIRTIO_NET_TRANSMITQ);
    assert.equal(backend.sent.length, 1);
  }
  {
    const { h, backend } = netBench();
    h.bringUp()[VIRTIO_NET_RECEIVEQ]!.setAvailIdx(100);
    backend.inject(frame(64));
    assert.deepEqual(h.errors.map((e) => e.kind), ['avail-index']);
    assert.deepEqual(h.memory.outside, []);
  }
});
