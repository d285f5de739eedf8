import assert from 'node:assert/strict';
import test from 'node:test';
import { IrqchipError } from './irqchip-error.js';
import * as p from './pic8259.js';

function pics() {
  const intr: boolean[] = [];
  const pair = new p.PicPair((level) => intr.push(level));
  const out = (port: number, v: number) => {
    if (port === 0x20 || port === 0x21) pair.master.write(port - 0x20, Uint8Array.of(v));
    else if (port === 0xa0 || port === 0xa1) pair.slave.write(port - 0xa0, Uint8Array.of(v));
    else pair.elcr.write(port - 0x4d0, Uint8Array.of(v));
  };
  const inb = (port: number) => {
    const d = new Uint8Array(1);
    if (port === 0x20 || port === 0x21) pair.master.read(port - 0x20, d);
    else if (port === 0xa0 || port === 0xa1) pair.slave.read(port - 0xa0, d);
    else pair.elcr.read(port - 0x4d0, d);
    return d[0]!;
  };
  return { pair, intr, out, inb };
}

/** arch/x86/kernel/i8259.c init_8259A(auto_eoi=0), then unmask_8259A_irq for the given lines. */
function linuxInit(t: ReturnType<typeof pics>, unmasked: number[] = [], base = 0x30) {
  const { out } = t;
  out(0x21, 0xff); // mask all of 8259A-1
  out(0x20, 0x11); // ICW1: select 8259A-1 init
  out(0x21, base); // ICW2: ISA_IRQ_VECTOR(0)
  out(0x21, 1 << p.PIC_CASCADE_IR); // ICW3: slave on IR2
  out(0x21, 0x01); // ICW4: MASTER_ICW4_DEFAULT (8086 mode, normal EOI)
  out(0xa0, 0x11);
  out(0xa1, base + 8); // ICW2: ISA_IRQ_VECTOR(8)
  out(0xa1, p.PIC_CASCADE_IR); // ICW3: slave ID
  out(0xa1, 0x01);
  let master = 0xff & ~(1 << p.PIC_CASCADE_IR);
  let slave = 0xff;
  for (const line of unmasked) {
    if (line < 8) master &= ~(1 << line);
    else slave &= ~(1 << (line - 8));
  }
  out(0xa1, slave); // restore cached_slave_mask
  out(0x21, master);
}

/** Linux's mask_and_ack_8259A: specific EOI to the slave (when a slave line) and to the master. */
function linuxEoi(t: ReturnType<typeof pics>, line: number) {
  if (line & 8) {
    t.out(0xa0, 0x60 + (line & 7));
    t.out(0x20, 0x60 + p.PIC_CASCADE_IR);
  } else {
    t.out(0x20, 0x60 + line);
  }
}

test('Linux probe_8259A: the mask reads back', () => {
  const t = pics();
  t.out(0x21, 0xff);
  assert.equal(t.inb(0x21), 0xff);
  t.out(0xa1, 0x5a);
  assert.equal(t.inb(0xa1), 0x5a);
});

test('Linux init_8259A, timer IRQ0: raise -> INTR -> INTA vector 0x30 -> EOI', () => {
  const t = pics();
  linuxInit(t, [0]);
  assert.equal(t.inb(0x21), 0xfa, 'master mask: all but IRQ0 and the cascade');
  assert.equal(t.inb(0xa1), 0xff);
  assert.equal(t.pair.hasInterrupt(), false);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.hasInterrupt(), true);
  assert.deepEqual(t.intr, [true]);
  assert.equal(t.pair.acknowledge(), 0x30);
  assert.equal(t.pair.hasInterrupt(), false, 'an edge request is consumed by INTA');
  assert.deepEqual(t.intr, [true, false]);
  t.out(0x20, 0x0b); // OCW3: read ISR
  assert.equal(t.inb(0x20), 0x01, 'IRQ0 in service');
  t.pair.setIrq(0, 0);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.hasInterrupt(), false, 'same line blocked while in service');
  linuxEoi(t, 0);
  assert.equal(t.inb(0x20), 0x00, 'ISR empty after specific EOI');
  assert.equal(t.pair.hasInterrupt(), true, 'the request latched meanwhile comes through');
  assert.equal(t.pair.acknowledge(), 0x30);
});

test('the classic 0x20/0x28 bases of simple guests, and a non-specific EOI', () => {
  const t = pics();
  linuxInit(t, [1, 12], 0x20);
  t.pair.setIrq(12, 1);
  assert.equal(t.pair.acknowledge(), 0x2c);
  t.out(0xa0, 0x20); // non-specific EOI to the slave
  t.out(0x20, 0x20); // and to the master
  t.out(0x20, 0x0b);
  t.out(0xa0, 0x0b);
  assert.equal(t.inb(0x20) | t.inb(0xa0), 0);
});

test('masked lines stay in IRR and are delivered when unmasked', () => {
  const t = pics();
  linuxInit(t, []);
  t.pair.setIrq(4, 1);
  assert.equal(t.pair.hasInterrupt(), false);
  t.out(0x20, 0x0a); // OCW3: read IRR
  assert.equal(t.inb(0x20), 0x10, 'IRR has IRQ4 even though masked');
  t.out(0x21, 0xeb); // unmask 4
  assert.equal(t.pair.hasInterrupt(), true);
  assert.equal(t.pair.acknowledge(), 0x34);
});

test('priority: lower line first; a higher line nests over a lower one in service, not the reverse', () => {
  const t = pics();
  linuxInit(t, [1, 3, 4]);
  t.pair.setIrq(4, 1);
  t.pair.setIrq(3, 1);
  assert.equal(t.pair.acknowledge(), 0x33, 'IRQ3 beats IRQ4');
  assert.equal(t.pair.hasInterrupt(), false, 'IRQ4 waits: IRQ3 is in service');
  t.pair.setIrq(1, 1);
  assert.equal(t.pair.hasInterrupt(), true, 'IRQ1 nests over IRQ3');
  assert.equal(t.pair.acknowledge(), 0x31);
  t.out(0x20, 0x0b);
  assert.equal(t.inb(0x20), 0x0a, 'ISR: 1 and 3');
  t.out(0x20, 0x20); // non-specific EOI ends the highest in service: IRQ1
  assert.equal(t.inb(0x20), 0x08);
  assert.equal(t.pair.hasInterrupt(), false);
  t.out(0x20, 0x20);
  assert.equal(t.pair.acknowledge(), 0x34);
});

test('cascade: a slave line reaches the CPU through master IR2 with the slave vector', () => {
  const t = pics();
  linuxInit(t, [8, 14]);
  t.pair.setIrq(14, 1);
  assert.equal(t.pair.hasInterrupt(), true);
  assert.equal(t.pair.acknowledge(), 0x3e);
  t.out(0x20, 0x0b);
  t.out(0xa0, 0x0b);
  assert.equal(t.inb(0x20), 0x04, 'master: cascade in service');
  assert.equal(t.inb(0xa0), 0x40, 'slave: IRQ14 in service');
  t.pair.setIrq(8, 1);
  assert.equal(t.pair.hasInterrupt(), false, 'master IR2 still in service blocks the slave (fully nested)');
  linuxEoi(t, 14);
  assert.equal(t.pair.hasInterrupt(), true);
  assert.equal(t.pair.acknowledge(), 0x38);
});

test('cascade priority: slave lines rank at the master IR2 slot, between IRQ1 and IRQ3', () => {
  const t = pics();
  linuxInit(t, [1, 3, 9]);
  t.pair.setIrq(3, 1);
  t.pair.setIrq(9, 1);
  t.pair.setIrq(1, 1);
  assert.equal(t.pair.acknowledge(), 0x31);
  linuxEoi(t, 1);
  assert.equal(t.pair.acknowledge(), 0x39);
  linuxEoi(t, 9);
  assert.equal(t.pair.acknowledge(), 0x33);
});

test('ELCR level-triggered line: stays requested while asserted, clears when the device drops it', () => {
  const t = pics();
  linuxInit(t, [10, 11]);
  t.out(0x4d1, 0xff); // every slave line level; 8 and 13 cannot be
  assert.equal(t.inb(0x4d1), 0xde);
  t.out(0x4d0, 0xff);
  assert.equal(t.inb(0x4d0), 0xf8, 'IRQ0-2 are always edge');
  t.pair.setIrq(11, 1);
  assert.equal(t.pair.acknowledge(), 0x3b);
  linuxEoi(t, 11);
  assert.equal(t.pair.hasInterrupt(), true, 'still asserted: requested again after EOI');
  assert.equal(t.pair.acknowledge(), 0x3b);
  t.pair.setIrq(11, 0);
  linuxEoi(t, 11);
  assert.equal(t.pair.hasInterrupt(), false, 'deasserted: gone');
  t.out(0xa0, 0x0a);
  assert.equal(t.inb(0xa0), 0, 'slave IRR empty');
});

test('edge line: a level held high gives one interrupt, not one per INTA', () => {
  const t = pics();
  linuxInit(t, [4]);
  t.pair.setIrq(4, 1);
  assert.equal(t.pair.acknowledge(), 0x34);
  linuxEoi(t, 4);
  t.pair.setIrq(4, 1);
  assert.equal(t.pair.hasInterrupt(), false);
});

test('auto-EOI: the line never stays in service', () => {
  const t = pics();
  t.out(0x20, 0x11);
  t.out(0x21, 0x08);
  t.out(0x21, 0x04);
  t.out(0x21, p.PIC_ICW4_8086 | p.PIC_ICW4_AEOI);
  t.out(0x21, 0xfe);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.acknowledge(), 0x08);
  t.out(0x20, 0x0b);
  assert.equal(t.inb(0x20), 0, 'ISR empty without an EOI');
  t.pair.setIrq(0, 0);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.acknowledge(), 0x08);
});

test('spurious: INTA with the request withdrawn answers IR7 without setting ISR', () => {
  const t = pics();
  linuxInit(t, [3, 10]);
  t.out(0x4d1, 0x04); // IRQ10 level
  t.pair.setIrq(3, 1);
  t.out(0x21, 0xff); // masked between INTR and INTA
  assert.equal(t.pair.acknowledge(), 0x37, 'master spurious IRQ7');
  t.out(0x20, 0x0b);
  assert.equal(t.inb(0x20), 0);
  // Slave: its request goes away after it signalled the master. Master IR2 is edge-latched, so
  // the master still chooses the cascade and the slave answers its IR7: spurious IRQ15, with
  // the master's IR2 in service (Linux's handler EOIs the master for exactly this case).
  t.out(0x21, 0xfb);
  t.pair.setIrq(10, 1);
  assert.equal(t.pair.hasInterrupt(), true);
  t.out(0xa1, 0xff);
  assert.equal(t.pair.acknowledge(), 0x3f, 'slave spurious IRQ15');
  t.out(0xa0, 0x0b);
  assert.equal(t.inb(0xa0), 0, 'slave ISR not set');
  assert.equal(t.inb(0x20), 0x04, 'master IR2 in service');
});

test('rotate on non-specific EOI makes the serviced line lowest priority', () => {
  const t = pics();
  linuxInit(t, [0, 1, 3]);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.acknowledge(), 0x30);
  t.out(0x20, 0xa0); // OCW2: rotate on non-specific EOI
  t.pair.setIrq(1, 1);
  t.pair.setIrq(0, 0);
  t.pair.setIrq(0, 1);
  t.pair.setIrq(3, 1);
  assert.equal(t.pair.acknowledge(), 0x31, 'IRQ0 is now lowest, IRQ1 highest');
  t.out(0x20, 0xa0);
  assert.equal(t.pair.acknowledge(), 0x33, 'then 3 (1 rotated to lowest)');
  t.out(0x20, 0xa0);
  assert.equal(t.pair.acknowledge(), 0x30);
});

test('set priority (OCW2 0xc0+n) makes line n the lowest', () => {
  const t = pics();
  linuxInit(t, [1, 3, 5]);
  t.out(0x20, 0xc0 | 3);
  t.pair.setIrq(1, 1);
  t.pair.setIrq(3, 1);
  t.pair.setIrq(5, 1);
  assert.equal(t.pair.acknowledge(), 0x35, '4 is now highest, so 5 first');
  t.out(0x20, 0x65); // specific EOI 5
  assert.equal(t.pair.acknowledge(), 0x31);
});

test('poll command: the read is the INTA, bit 7 says there was a request', () => {
  const t = pics();
  linuxInit(t, [6]);
  t.out(0x20, 0x0c); // OCW3: poll
  assert.equal(t.inb(0x20), 0x00, 'no request');
  t.pair.setIrq(6, 1);
  t.out(0x20, 0x0c);
  assert.equal(t.inb(0x20), 0x86);
  assert.equal(t.pair.hasInterrupt(), false);
  t.out(0x20, 0x0b);
  assert.equal(t.inb(0x20), 0x40, 'polled line in service');
  assert.equal(t.inb(0x20), 0x40, 'ISR select persists; poll was one-shot');
});

test('special mask mode: masking the in-service line lets lower lines through', () => {
  const t = pics();
  linuxInit(t, [3, 5]);
  t.pair.setIrq(3, 1);
  assert.equal(t.pair.acknowledge(), 0x33);
  t.pair.setIrq(5, 1);
  assert.equal(t.pair.hasInterrupt(), false);
  t.out(0x20, 0x68); // OCW3: set special mask
  t.out(0x21, 0xdb); // mask 3 as well, keep 5
  assert.equal(t.pair.hasInterrupt(), true);
  assert.equal(t.pair.acknowledge(), 0x35);
});

test('ICW1 resets the mask and in-service state and restarts the ICW sequence', () => {
  const t = pics();
  linuxInit(t, [2, 0]);
  t.pair.setIrq(0, 1);
  t.pair.acknowledge();
  t.out(0x20, 0x11);
  assert.equal(t.inb(0x21), 0, 'IMR cleared by ICW1');
  t.out(0x21, 0x40);
  t.out(0x21, 0x04);
  t.out(0x21, 0x01);
  t.out(0x20, 0x0b);
  assert.equal(t.inb(0x20), 0, 'ISR cleared');
  t.out(0x21, 0x3c); // now OCW1
  assert.equal(t.inb(0x21), 0x3c);
  t.pair.setIrq(0, 0);
  t.pair.setIrq(0, 1);
  assert.equal(t.pair.acknowledge(), 0x40, 'new base');
});

test('ICW1 without IC4 skips ICW4; single mode skips ICW3', () => {
  const t = pics();
  t.out(0x20, 0x10 | p.PIC_ICW1_SNGL); // single, no ICW4
  t.out(0x21, 0x50);
  t.out(0x21, 0xfd); // already OCW1
  assert.equal(t.inb(0x21), 0xfd);
  t.pair.setIrq(1, 1);
  assert.equal(t.pair.acknowledge(), 0x51);
});

test('the VMM naming a line that does not exist is an IrqchipError', () => {
  const t = pics();
  assert.throws(() => t.pair.setIrq(16, 1), (e: unknown) => e instanceof IrqchipError && e.kind === 'bad-pin');
  assert.throws(() => t.pair.setIrq(2, 1), IrqchipError);
});
