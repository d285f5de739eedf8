import assert from 'node:assert/strict';
import test from 'node:test';
import * as am from './apic-message.js';
import * as io from './ioapic.js';
import { IrqchipError } from './irqchip-error.js';

function ioapic(apicId = 0) {
  const sent: io.IoapicMessage[] = [];
  const dev = new io.Ioapic((m) => sent.push({ ...m }), apicId);
  const writel = (off: number, v: number) => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    dev.write(off, d);
  };
  const readl = (off: number) => {
    const d = new Uint8Array(4);
    dev.read(off, d);
    return new DataView(d.buffer).getUint32(0, true);
  };
  // Linux io_apic_read / io_apic_write: select then window.
  const ioRead = (reg: number) => { writel(io.IOAPIC_REG_SELECT, reg); return readl(io.IOAPIC_REG_WINDOW); };
  const ioWrite = (reg: number, v: number) => { writel(io.IOAPIC_REG_SELECT, reg); writel(io.IOAPIC_REG_WINDOW, v); };
  /** ioapic_write_entry: high dword first, so the entry is never live with a stale destination. */
  const route = (pin: number, low: number, destination: number) => {
    ioWrite(io.IOAPIC_REG_REDTBL_BASE + 2 * pin + 1, destination << 24);
    ioWrite(io.IOAPIC_REG_REDTBL_BASE + 2 * pin, low);
  };
  return { dev, sent, writel, readl, ioRead, ioWrite, route };
}

const LEVEL = io.IO_APIC_REDIR_LEVEL_TRIGGER;
const MASKED = io.IO_APIC_REDIR_MASKED;
const REMOTE_IRR = io.IO_APIC_REDIR_REMOTE_IRR;

test('ID, version (24 pins, 0x20) and arbitration registers', () => {
  const t = ioapic(2);
  assert.equal(t.ioRead(io.IOAPIC_REG_VERSION), 0x0017_0020);
  assert.equal(t.ioRead(io.IOAPIC_REG_ID), 0x0200_0000);
  t.ioWrite(io.IOAPIC_REG_ID, 0xff00_0000);
  assert.equal(t.ioRead(io.IOAPIC_REG_ID), 0x0f00_0000, 'a 4-bit ID');
  assert.equal(t.ioRead(io.IOAPIC_REG_ARB), 0x0f00_0000);
  t.ioWrite(io.IOAPIC_REG_VERSION, 0);
  assert.equal(t.ioRead(io.IOAPIC_REG_VERSION), 0x0017_0020, 'version is read-only');
  t.writel(io.IOAPIC_REG_SELECT, 0x1234);
  assert.equal(t.readl(io.IOAPIC_REG_SELECT), 0x34, 'IOREGSEL is 8 bits');
});

test('every pin is masked at reset and the table holds what Linux writes', () => {
  const t = ioapic();
  for (let pin = 0; pin < io.IOAPIC_NUM_PINS; pin++) {
    assert.equal(t.ioRead(io.IOAPIC_REG_REDTBL_BASE + 2 * pin), MASKED);
  }
  t.route(9, 0x41 | LEVEL | io.IO_APIC_REDIR_POLARITY_LOW | io.IO_APIC_REDIR_DEST_LOGICAL | (am.APIC_DELIVERY_MODE_LOWESTPRIO << 8), 0x03);
  assert.equal(t.ioRead(0x10 + 18), 0x41 | 0x8000 | 0x2000 | 0x800 | 0x100);
  assert.equal(t.ioRead(0x11 + 18), 0x0300_0000);
  assert.equal(t.ioRead(0x10 + 2 * 24), 0, 'beyond the table reads 0');
});

test('edge pin: one fixed message per rising edge to the programmed destination', () => {
  const t = ioapic();
  t.route(4, 0x34, 1); // serial: vector 0x34, fixed, physical, edge, active high -> APIC 1
  t.dev.setIrq(4, 1);
  assert.deepEqual(t.sent, [{ dest: 1, destMode: am.APIC_DEST_PHYSICAL, deliveryMode: am.APIC_DELIVERY_MODE_FIXED, vector: 0x34, trigger: am.APIC_TRIGGER_EDGE }]);
  t.dev.setIrq(4, 1);
  assert.equal(t.sent.length, 1, 'held high: no new edge');
  t.dev.setIrq(4, 0);
  t.dev.setIrq(4, 1);
  assert.equal(t.sent.length, 2);
  assert.equal(t.ioRead(0x10 + 8) & REMOTE_IRR, 0, 'edge pins never set remote IRR');
});

test('masked edge pin: the edge is lost, not held', () => {
  const t = ioapic();
  t.route(4, 0x34 | MASKED, 0);
  t.dev.setIrq(4, 1);
  t.dev.setIrq(4, 0);
  t.route(4, 0x34, 0);
  assert.equal(t.sent.length, 0);
});

test('level pin: remote IRR holds off re-delivery until the EOI; still asserted at EOI fires again', () => {
  const t = ioapic();
  t.route(11, 0x51 | LEVEL, 0);
  t.dev.setIrq(11, 1);
  assert.equal(t.sent.length, 1);
  assert.equal(t.sent[0]!.trigger, am.APIC_TRIGGER_LEVEL);
  assert.equal(t.ioRead(0x10 + 22) & REMOTE_IRR, REMOTE_IRR);
  t.dev.setIrq(11, 1);
  assert.equal(t.sent.length, 1, 'remote IRR set: no second message');
  t.dev.eoi(0x50);
  assert.equal(t.sent.length, 1, 'EOI of another vector does nothing');
  t.dev.eoi(0x51);
  assert.equal(t.sent.length, 2, 'line still asserted: delivered again');
  t.dev.setIrq(11, 0); // the driver's handler quietened the device
  t.dev.eoi(0x51);
  assert.equal(t.sent.length, 2);
  assert.equal(t.ioRead(0x10 + 22) & REMOTE_IRR, 0, 'remote IRR cleared by the EOI');
});

test('the version-0x20 EOI register clears remote IRR like the broadcast', () => {
  const t = ioapic();
  t.route(10, 0x60 | LEVEL, 0);
  t.dev.setIrq(10, 1);
  t.dev.setIrq(10, 0);
  t.writel(io.IOAPIC_REG_EOI, 0x60);
  assert.equal(t.ioRead(0x10 + 20) & REMOTE_IRR, 0);
  t.dev.setIrq(10, 1);
  assert.equal(t.sent.length, 2);
});

test('level pin asserted while masked interrupts when unmasked', () => {
  const t = ioapic();
  t.route(16, 0x70 | LEVEL | MASKED, 0);
  t.dev.setIrq(16, 1);
  assert.equal(t.sent.length, 0);
  t.route(16, 0x70 | LEVEL, 0);
  assert.equal(t.sent.length, 1);
  assert.equal(t.sent[0]!.vector, 0x70);
});

test('remote IRR is read-only, but switching to edge clears it (Linux __eoi_ioapic_pin)', () => {
  const t = ioapic();
  t.route(10, 0x60 | LEVEL, 0);
  t.dev.setIrq(10, 1);
  t.ioWrite(0x10 + 20, 0x60 | LEVEL);
  assert.equal(t.ioRead(0x10 + 20) & REMOTE_IRR, REMOTE_IRR, 'a plain rewrite keeps remote IRR');
  t.dev.setIrq(10, 0);
  t.ioWrite(0x10 + 20, 0x60 | MASKED);
  assert.equal(t.ioRead(0x10 + 20) & REMOTE_IRR, 0);
  t.ioWrite(0x10 + 20, 0x60 | LEVEL);
  t.dev.setIrq(10, 1);
  assert.equal(t.sent.length, 2, 'the pin works again');
});

test('delivery modes and logical destinations reach the message unchanged', () => {
  const t = ioapic();
  t.route(0, am.APIC_DELIVERY_MODE_EXTINT << 8, 0);
  t.route(1, (am.APIC_DELIVERY_MODE_NMI << 8) | io.IO_APIC_REDIR_DEST_LOGICAL, 0x0f);
  t.route(2, 0x30 | (am.APIC_DELIVERY_MODE_LOWESTPRIO << 8) | io.IO_APIC_REDIR_DEST_LOGICAL, 0xff);
  t.dev.setIrq(0, 1);
  t.dev.setIrq(1, 1);
  t.dev.setIrq(2, 1);
  assert.deepEqual(t.sent.map((m) => [m.deliveryMode, m.destMode, m.dest, m.vector]), [
    [am.APIC_DELIVERY_MODE_EXTINT, am.APIC_DEST_PHYSICAL, 0, 0],
    [am.APIC_DELIVERY_MODE_NMI, am.APIC_DEST_LOGICAL, 0x0f, 0],
    [am.APIC_DELIVERY_MODE_LOWESTPRIO, am.APIC_DEST_LOGICAL, 0xff, 0x30],
  ]);
});

test('an EOI that comes back during delivery does not lose the interrupt', () => {
  // A LAPIC that EOIs synchronously (the handler ran before deliver returned) must see the pin
  // re-armed, not a remote IRR set after its EOI.
  let dev!: io.Ioapic;
  let count = 0;
  dev = new io.Ioapic((m) => { count++; if (count === 1) dev.eoi(m.vector); });
  const d = new Uint8Array(4);
  const w = (off: number, v: number) => { new DataView(d.buffer).setUint32(0, v, true); dev.write(off, d); };
  w(io.IOAPIC_REG_SELECT, io.IOAPIC_REG_REDTBL_BASE + 2 * 5);
  w(io.IOAPIC_REG_WINDOW, 0x60 | LEVEL);
  dev.setIrq(5, 1);
  assert.equal(count, 2, 'delivered, EOIed inside deliver, still asserted: delivered again');
  assert.equal(dev.redirectionEntry(5)[0] & REMOTE_IRR, REMOTE_IRR);
});

test('byte access to IOREGSEL, partial read of IOWIN', () => {
  const t = ioapic();
  t.dev.write(io.IOAPIC_REG_SELECT, Uint8Array.of(io.IOAPIC_REG_VERSION));
  const d = new Uint8Array(2);
  t.dev.read(io.IOAPIC_REG_WINDOW + 2, d);
  assert.deepEqual([...d], [0x17, 0x00]);
});

test('the VMM naming a pin that does not exist is an IrqchipError', () => {
  const t = ioapic();
  assert.throws(() => t.dev.setIrq(24, 1), (e: unknown) => e instanceof IrqchipError && e.kind === 'bad-pin');
});
