import assert from 'node:assert/strict';
import test from 'node:test';
import { ApicBus } from './apic-bus.js';
import * as am from './apic-message.js';
import * as io from './ioapic.js';
import { IrqchipError } from './irqchip-error.js';
import * as a from './lapic.js';
import { PicPair } from './pic8259.js';

interface Cpu {
  l: a.Lapic;
  events: string[];
  rd(off: number): number;
  wr(off: number, v: number): void;
}

/** `n` vCPUs on one APIC bus with an IOAPIC, wired as the VMM would wire them. */
function machine(n: number) {
  const bus = new ApicBus();
  const ioapic = new io.Ioapic((m) => bus.deliver(m));
  const cpus: Cpu[] = [];
  for (let id = 0; id < n; id++) {
    const events: string[] = [];
    const l = new a.Lapic({
      nowNs: () => 0n,
      sendIpi: (m) => bus.sendIpi(m),
      onEoi: (v) => ioapic.eoi(v),
      onNmi: () => events.push('nmi'),
      onInit: () => events.push('init'),
      onStartup: (v) => events.push(`sipi 0x${v.toString(16)}`),
    }, { apicId: id, bsp: id === 0, tscHz: 1_000_000_000n });
    bus.add(l);
    const rd = (off: number) => { const d = new Uint8Array(4); l.read(off, d); return new DataView(d.buffer).getUint32(0, true); };
    const wr = (off: number, v: number) => { const d = new Uint8Array(4); new DataView(d.buffer).setUint32(0, v >>> 0, true); l.write(off, d); };
    // Linux flat logical mode: LDR bit = CPU number.
    wr(a.APIC_DFR, a.APIC_DFR_FLAT);
    wr(a.APIC_LDR, (1 << id) << 24);
    wr(a.APIC_SPIV, a.APIC_SPIV_APIC_ENABLED | 0xff);
    cpus.push({ l, events, rd, wr });
  }
  const ioWrite = (reg: number, v: number) => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, reg, true);
    ioapic.write(io.IOAPIC_REG_SELECT, d);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    ioapic.write(io.IOAPIC_REG_WINDOW, d);
  };
  return { bus, ioapic, cpus, ioWrite };
}

/** Vectors pending in each CPU's IRR, as a compact picture. */
function pending(cpus: Cpu[], vector: number): boolean[] {
  return cpus.map((c) => (c.rd(a.APIC_IRR + 0x10 * (vector >> 5)) & (1 << (vector & 31))) !== 0);
}

/** Linux's __default_send_IPI_dest_field: ICR2 then ICR. */
function sendIpi(c: Cpu, dest: number, icr: number) {
  c.wr(a.APIC_ICR2, dest << 24);
  c.wr(a.APIC_ICR, icr);
}

test('physical fixed IPI reaches only the addressed APIC', () => {
  const { cpus } = machine(3);
  sendIpi(cpus[0]!, 2, a.APIC_INT_ASSERT | 0xfb);
  assert.deepEqual(pending(cpus, 0xfb), [false, false, true]);
});

test('physical broadcast 0xff reaches every APIC, the sender too', () => {
  const { cpus } = machine(3);
  sendIpi(cpus[1]!, 0xff, a.APIC_INT_ASSERT | 0xfb);
  assert.deepEqual(pending(cpus, 0xfb), [true, true, true]);
});

test('shorthands: self, all-including-self, all-excluding-self (Linux send_IPI_allbutself)', () => {
  const self = machine(3);
  self.cpus[1]!.wr(a.APIC_ICR, a.APIC_DEST_SELF | 0xf0);
  assert.deepEqual(pending(self.cpus, 0xf0), [false, true, false]);
  const all = machine(3);
  all.cpus[1]!.wr(a.APIC_ICR, a.APIC_DEST_ALLINC | 0xf0);
  assert.deepEqual(pending(all.cpus, 0xf0), [true, true, true]);
  const but = machine(3);
  sendIpi(but.cpus[1]!, 1, a.APIC_DEST_ALLBUT | 0xf0); // the destination field is ignored
  assert.deepEqual(pending(but.cpus, 0xf0), [true, false, true]);
});

test('logical flat: the destination is a bitmap of LDRs', () => {
  const { cpus } = machine(4);
  sendIpi(cpus[0]!, 0b1010, a.APIC_DEST_LOGICAL | 0x40);
  assert.deepEqual(pending(cpus, 0x40), [false, true, false, true]);
});

test('logical cluster: high nibble picks the cluster, low nibble the members', () => {
  const { cpus } = machine(4);
  const ldrs = [0x11, 0x12, 0x21, 0x22];
  cpus.forEach((c, i) => { c.wr(a.APIC_DFR, a.APIC_DFR_CLUSTER); c.wr(a.APIC_LDR, ldrs[i]! << 24); });
  sendIpi(cpus[0]!, 0x23, a.APIC_DEST_LOGICAL | 0x50);
  assert.deepEqual(pending(cpus, 0x50), [false, false, true, true]);
  sendIpi(cpus[0]!, 0x12, a.APIC_DEST_LOGICAL | 0x51);
  assert.deepEqual(pending(cpus, 0x51), [false, true, false, false]);
});

test('lowest priority: exactly one of the addressed APICs, the one with the lowest priority', () => {
  const { cpus } = machine(3);
  cpus[0]!.wr(a.APIC_TASKPRI, 0x40);
  cpus[1]!.wr(a.APIC_TASKPRI, 0x20);
  cpus[2]!.wr(a.APIC_TASKPRI, 0x10);
  sendIpi(cpus[0]!, 0b011, a.APIC_DEST_LOGICAL | a.APIC_DM_LOWEST | 0x60);
  assert.deepEqual(pending(cpus, 0x60), [false, true, false], 'CPU 2 is lowest but not addressed');
  sendIpi(cpus[0]!, 0xff, a.APIC_DEST_LOGICAL | a.APIC_DM_LOWEST | 0x61);
  assert.deepEqual(pending(cpus, 0x61), [false, false, true]);
});

test('a software-disabled APIC drops fixed IPIs but takes NMI', () => {
  const { cpus } = machine(2);
  cpus[1]!.wr(a.APIC_SPIV, 0xff);
  sendIpi(cpus[0]!, 1, a.APIC_INT_ASSERT | 0x70);
  assert.deepEqual(pending(cpus, 0x70), [false, false]);
  sendIpi(cpus[0]!, 1, a.APIC_INT_ASSERT | a.APIC_DM_NMI);
  assert.deepEqual(cpus[1]!.events, ['nmi']);
});

test('AP bring-up as Linux does it: INIT assert, INIT de-assert, SIPI, SIPI', () => {
  const { cpus } = machine(2);
  const bsp = cpus[0]!;
  const ap = cpus[1]!;
  // arch/x86/kernel/smpboot.c wakeup_secondary_cpu_via_init
  sendIpi(bsp, 1, a.APIC_INT_LEVELTRIG | a.APIC_INT_ASSERT | a.APIC_DM_INIT);
  sendIpi(bsp, 1, a.APIC_INT_LEVELTRIG | a.APIC_DM_INIT);
  sendIpi(bsp, 1, a.APIC_DM_STARTUP | 0x9a);
  sendIpi(bsp, 1, a.APIC_DM_STARTUP | 0x9a);
  assert.deepEqual(ap.events, ['init', 'sipi 0x9a']);
  assert.deepEqual(bsp.events, [], 'the BSP saw nothing');
});

test('IOAPIC level interrupt to a LAPIC: delivered once, EOI broadcast clears remote IRR, redelivered while asserted', () => {
  const { ioapic, cpus, ioWrite } = machine(2);
  // Pin 10 -> vector 0x61 on APIC 1, level, active low (a PCI INTx), as Linux programs it.
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 21, 1 << 24);
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 20, 0x61 | io.IO_APIC_REDIR_LEVEL_TRIGGER | io.IO_APIC_REDIR_POLARITY_LOW);
  ioapic.setIrq(10, 1);
  const cpu = cpus[1]!;
  assert.equal(cpu.l.acknowledge(), 0x61);
  assert.equal(cpu.rd(a.APIC_TMR + 0x30), 1 << 1, 'TMR marks it level');
  assert.equal(ioapic.redirectionEntry(10)[0] & io.IO_APIC_REDIR_REMOTE_IRR, io.IO_APIC_REDIR_REMOTE_IRR);
  cpu.wr(a.APIC_EOI, 0); // device still asserting
  assert.equal(ioapic.redirectionEntry(10)[0] & io.IO_APIC_REDIR_REMOTE_IRR, io.IO_APIC_REDIR_REMOTE_IRR, 'redelivered at once');
  assert.equal(cpu.l.acknowledge(), 0x61);
  ioapic.setIrq(10, 0);
  cpu.wr(a.APIC_EOI, 0);
  assert.equal(ioapic.redirectionEntry(10)[0] & io.IO_APIC_REDIR_REMOTE_IRR, 0);
  assert.equal(cpu.l.hasPendingInterrupt(), false);
  assert.deepEqual(pending(cpus, 0x61), [false, false]);
});

test('IOAPIC edge interrupt in logical lowest-priority mode reaches one CPU', () => {
  const { ioapic, cpus, ioWrite } = machine(2);
  cpus[0]!.wr(a.APIC_TASKPRI, 0x30);
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 9, 0x03 << 24);
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 8, 0x34 | io.IO_APIC_REDIR_DEST_LOGICAL | (am.APIC_DELIVERY_MODE_LOWESTPRIO << 8));
  ioapic.setIrq(4, 1);
  assert.deepEqual(pending(cpus, 0x34), [false, true]);
});

test('an IOAPIC NMI message reaches the LAPIC as an event', () => {
  const { ioapic, cpus, ioWrite } = machine(2);
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 3, 0);
  ioWrite(io.IOAPIC_REG_REDTBL_BASE + 2, am.APIC_DELIVERY_MODE_NMI << 8);
  ioapic.setIrq(1, 1);
  assert.deepEqual(cpus[0]!.events, ['nmi']);
});

test('an IPI whose receiver sends another IPI from its callback is delivered in full', () => {
  // Re-entrancy: the bus's scratch target list must not be clobbered mid-delivery.
  const bus = new ApicBus();
  const got: string[] = [];
  const mk = (id: number) => new a.Lapic({
    nowNs: () => 0n,
    sendIpi: (m) => bus.sendIpi(m),
    onNmi: () => { got.push(`nmi ${id}`); if (id === 0) bus.sendIpi({ destination: 2, destMode: 0, shorthand: 0, deliveryMode: am.APIC_DELIVERY_MODE_NMI, vector: 0, level: 1, trigger: 0, sourceId: 0 }); },
  }, { apicId: id, bsp: id === 0, tscHz: 1n });
  for (let id = 0; id < 3; id++) bus.add(mk(id));
  bus.sendIpi({ destination: 0xff, destMode: 0, shorthand: 0, deliveryMode: am.APIC_DELIVERY_MODE_NMI, vector: 0, level: 1, trigger: 0, sourceId: 1 });
  assert.deepEqual(got, ['nmi 0', 'nmi 2', 'nmi 1', 'nmi 2']);
});

test('two LAPICs with one APIC ID is a wiring mistake', () => {
  const bus = new ApicBus();
  bus.add(new a.Lapic({ nowNs: () => 0n }, { apicId: 1, bsp: true, tscHz: 1n }));
  assert.throws(() => bus.add(new a.Lapic({ nowNs: () => 0n }, { apicId: 1, bsp: false, tscHz: 1n })),
    (e: unknown) => e instanceof IrqchipError && e.kind === 'duplicate-apic-id');
});

test('the 8259 reaches the BSP through virtual-wire LINT0 (what the VMM injects), and stops once LINT0 is masked', () => {
  const { cpus } = machine(2);
  const intr: boolean[] = [];
  const pic = new PicPair((level) => intr.push(level));
  const out = (port: number, v: number) => (port < 0xa0 ? pic.master : pic.slave).write(port & 1, Uint8Array.of(v));
  for (const [port, v] of [[0x20, 0x11], [0x21, 0x30], [0x21, 4], [0x21, 1], [0xa0, 0x11], [0xa1, 0x38], [0xa1, 2], [0xa1, 1], [0x21, 0xfa], [0xa1, 0xff]] as const) out(port, v);
  const bsp = cpus[0]!;
  const ap = cpus[1]!;
  bsp.l.acceptInterrupt(0x41, am.APIC_TRIGGER_EDGE);
  pic.setIrq(0, 1);
  assert.deepEqual(intr, [true], 'INTR raised: the VMM would kick the BSP');
  assert.equal(ap.l.hasInjectableInterrupt(pic), false, 'an AP has LINT0 masked');
  assert.equal(bsp.l.takeInjectableInterrupt(pic), 0x30, 'PIC (ExtINT) first');
  assert.deepEqual(intr, [true, false]);
  assert.equal(bsp.l.takeInjectableInterrupt(pic), 0x41);
  out(0x20, 0x60); // EOI IRQ0
  bsp.wr(a.APIC_LVT0, a.APIC_LVT_MASKED | a.APIC_DM_EXTINT); // Linux after switching to the IOAPIC
  pic.setIrq(0, 0);
  pic.setIrq(0, 1);
  assert.equal(pic.hasInterrupt(), true);
  assert.equal(bsp.l.hasInjectableInterrupt(pic), false);
});
