// virtio-net over real TAP devices on this host, at layer 2 only, no KVM: two TAPs on a Linux
// bridge this test creates, IPv6 off on all three so the kernel sends nothing of its own, and no
// IP address anywhere. Frames carry the IEEE 802 local experimental ethertype 0x88b5, so the host
// stack drops them after the bridge: nothing leaves the bridge, and both TAPs and the bridge are
// removed afterwards. What it shows: frames written by the backend reach the kernel and come back
// out of the other TAP through the fd's poll and non-blocking reads, whole and in order, and a
// guest driver's transmit on one virtio-net device lands in the receive buffers of the other.
import assert from 'node:assert/strict';
import test from 'node:test';
import { TapDevice } from '../src/kvm/tap.js';
import { MmioHarness } from '../src/virtio/guest-driver.js';
import { VIRTIO_NET_HDR_V1, VIRTIO_NET_RECEIVEQ, VIRTIO_NET_TRANSMITQ, VirtioNet, parseMac } from '../src/virtio/net.js';
import { ETHERTYPE_LOCAL_EXPERIMENTAL, isTestFrame, makePrivateBridge, removeBridge } from './private-bridge.js';
import { tapSkip } from './tap-available.js';

const HDR = VIRTIO_NET_HDR_V1.sizeBytes;


function ethFrame(dst: Uint8Array, src: Uint8Array, payloadBytes: number, seed: number): Uint8Array {
  const f = new Uint8Array(14 + payloadBytes);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = ETHERTYPE_LOCAL_EXPERIMENTAL >> 8;
  f[13] = ETHERTYPE_LOCAL_EXPERIMENTAL & 0xff;
  for (let i = 14; i < f.length; i++) f[i] = (i * 13 + seed) & 0xff;
  return f;
}

const ours = isTestFrame;

async function until(what: string, done: () => boolean, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!done()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Two TAPs (through our backend) on a bridge of their own, up, with no IPv6 and no addresses. */
function bridgedPair(): { a: TapDevice; b: TapDevice; cleanup(): void } {
  const br = `tsvbr${process.pid}`;
  const a = TapDevice.open(`tsva${process.pid}`);
  let b: TapDevice | null = null;
  const cleanup = () => {
    a.close();
    b?.close();
    removeBridge(br);
  };
  try {
    b = TapDevice.open(`tsvb${process.pid}`);
    makePrivateBridge(br, [a.name, b.name]);
    return { a, b, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

test('TAP backend: frames written to one TAP come out of the other through the bridge, whole and in order', { skip: tapSkip }, async () => {
  const { a, b, cleanup } = bridgedPair();
  try {
    const got: Uint8Array[] = [];
    b.setReceiver((f) => { if (ours(f)) got.push(f.slice()); });
    const dst = parseMac('02:74:73:00:00:02')!;
    const src = parseMac('02:74:73:00:00:01')!;
    const frames = [ethFrame(dst, src, 46, 1), ethFrame(dst, src, 1486, 2), ethFrame(dst, src, 100, 3)];
    // The last one from inside a larger buffer (a view at an offset, as guest RAM views are).
    const backing = new Uint8Array(frames[2]!.length + 7);
    backing.set(frames[2]!, 7);
    assert.equal(a.send(frames[0]!), true);
    assert.equal(a.send(frames[1]!), true);
    assert.equal(a.send(backing.subarray(7)), true);
    await until('3 frames on the other TAP', () => got.length >= 3);
    assert.deepEqual(got, frames);
    assert.equal(a.stats.txFrames, 3);
    assert.ok(b.stats.rxFrames >= 3);
    assert.equal(b.stats.rxErrors, 0);
  } finally {
    cleanup();
  }
});

test('virtio-net over TAP: guest A transmits, guest B receives the frame after a zeroed header, and back', { skip: tapSkip }, async () => {
  const { a, b, cleanup } = bridgedPair();
  try {
    const macA = parseMac('02:74:73:76:6d:0a')!;
    const macB = parseMac('02:74:73:76:6d:0b')!;
    const devA = new VirtioNet({ backend: a, mac: macA, queueSize: 16 });
    const devB = new VirtioNet({ backend: b, mac: macB, queueSize: 16 });
    const hA = new MmioHarness(devA);
    const hB = new MmioHarness(devB);
    const [rxA, txA] = hA.bringUp();
    const [rxB, txB] = hB.bringUp();
    const postRx = (h: MmioHarness, rx: typeof rxA, n: number) => Array.from({ length: n }, () => {
      const buf = h.buffer(HDR + 1514);
      rx!.add([], [buf]);
      return buf;
    });
    const bufsA = postRx(hA, rxA, 8);
    const bufsB = postRx(hB, rxB, 8);
    hA.driver.notify(VIRTIO_NET_RECEIVEQ);
    hB.driver.notify(VIRTIO_NET_RECEIVEQ);

    const frameAB = ethFrame(macB, macA, 200, 7);
    txA!.add([hA.bytes(new Uint8Array(HDR)), hA.bytes(frameAB)], []);
    hA.driver.notify(VIRTIO_NET_TRANSMITQ);
    assert.equal(devA.stats.txFrames, 1);
    // Guest B's used ring: skip anything that is not ours (nothing else should come, but the
    // bridge is the kernel's).
    const receive = async (h: MmioHarness, rx: typeof rxA, bufs: ReturnType<typeof postRx>): Promise<Uint8Array> => {
      for (;;) {
        let used: { id: number; len: number } | null = null;
        await until('a used receive buffer', () => (used = rx!.getBuf()) !== null);
        const u = used as unknown as { id: number; len: number };
        const bytes = h.read(bufs[u.id]!).subarray(0, u.len);
        if (ours(bytes.subarray(HDR))) return bytes;
      }
    };
    const atB = await receive(hB, rxB, bufsB);
    assert.deepEqual([...atB.subarray(0, HDR)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert.deepEqual(atB.subarray(HDR), frameAB);
    assert.equal(hB.irqAsserted, true);

    const frameBA = ethFrame(macA, macB, 1500, 9); // 1514 bytes: a full 1500-byte MTU frame
    const whole = new Uint8Array(HDR + frameBA.length);
    whole.set(frameBA, HDR);
    txB!.add([hB.bytes(whole)], []);
    hB.driver.notify(VIRTIO_NET_TRANSMITQ);
    const atA = await receive(hA, rxA, bufsA);
    assert.deepEqual(atA.subarray(HDR), frameBA);
    assert.deepEqual(hA.memory.outside, []);
    assert.deepEqual(hB.memory.outside, []);
  } finally {
    cleanup();
  }
});
