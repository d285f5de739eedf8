// The userspace irqchip's wiring, with recording vCPUs: which vCPU is told an interrupt is
// pending, what the INTA cycle returns, where timer deadlines, INIT and SIPI go, as a PC's
// guest code drives them. The device models have their own tests in src/devices/; what KVM does
// with injected vectors is tested on real KVM in tests/irqchip.test.ts.
import assert from 'node:assert/strict';
import test from 'node:test';
import { Bus } from '../bus/bus.js';
import {
  APIC_DEST_ALLBUT, APIC_DM_INIT, APIC_DM_STARTUP, APIC_EOI, APIC_ICR, APIC_ICR2, APIC_INT_ASSERT, APIC_LVTT, APIC_SPIV,
  APIC_SPIV_APIC_ENABLED, APIC_TDCR, APIC_TMICT,
} from '../devices/lapic.js';
import type { HvVcpu } from '../hypervisor/types.js';
import { UserspaceIrqchip } from './userspace-irqchip.js';

const LAPIC = 0xfee0_0000;

class RecordingVcpu {
  pending = false;
  deadline: bigint | null = null;
  readonly events: string[] = [];
  setInterruptPending(p: boolean) { this.pending = p; }
  setTimerDeadline(d: bigint | null) { this.deadline = d; }
  initIpi() { this.events.push('init'); }
  startupIpi(v: number) { this.events.push(`sipi ${v}`); }
  nmi() { this.events.push('nmi'); }
}

function rig(cpus: number) {
  const clock = { now: 1_000_000n };
  const chip = new UserspaceIrqchip({ cpus, nowNs: () => clock.now });
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  chip.register(pio, mmio);
  const vcpus = Array.from({ length: cpus }, () => new RecordingVcpu());
  chip.attach(vcpus as unknown as HvVcpu[]);
  const out = (port: number, v: number) => pio.access(port, true, Uint8Array.of(v));
  const lapicWrite = (cpu: number, reg: number, v: number) => {
    const d = new Uint8Array(4);
    new DataView(d.buffer).setUint32(0, v >>> 0, true);
    assert.equal(chip.mmio(cpu, LAPIC + reg, true, d), true, `LAPIC write ${reg.toString(16)} claimed`);
  };
  return { clock, chip, vcpus, out, lapicWrite };
}

test('an ISA line through the 8259 pair reaches the BSP as its INTR (LINT0 virtual wire), and INTA gives the PIC vector', () => {
  const { chip, vcpus, out } = rig(2);
  // Linux's init_8259A: ICW1-4 on both chips, vectors 0x30/0x38, all lines unmasked on the master but 2.
  for (const [base, icw2, icw3] of [[0x20, 0x30, 0x04], [0xa0, 0x38, 0x02]] as const) {
    out(base, 0x11); out(base + 1, icw2); out(base + 1, icw3); out(base + 1, 0x01);
  }
  out(0x21, 0x00);
  out(0xa1, 0x00);
  assert.equal(vcpus[0]!.pending, false);
  chip.setIrq(4, 1); // COM1
  assert.equal(vcpus[0]!.pending, true, 'the BSP is told');
  assert.equal(vcpus[1]!.pending, false, 'an AP is not: its LINT0 is masked');
  assert.equal(chip.interruptAck(0), 0x34);
  assert.equal(vcpus[0]!.pending, false, 'in service: nothing more until EOI');
  chip.setIrq(4, 0);
  out(0x20, 0x20); // non-specific EOI
  chip.setIrq(4, 1);
  assert.equal(vcpus[0]!.pending, true);
});

test('the LAPIC timer sets its vCPU\'s deadline; timerDue at it makes the vector injectable', () => {
  const { chip, vcpus, lapicWrite, clock } = rig(2);
  lapicWrite(1, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
  lapicWrite(1, APIC_TDCR, 0xb); // divide by 1
  lapicWrite(1, APIC_LVTT, 0x40); // one-shot, vector 0x40
  lapicWrite(1, APIC_TMICT, 1000); // 1000 bus clocks at 1 GHz = 1 µs
  assert.equal(vcpus[1]!.deadline, clock.now + 1000n);
  assert.equal(vcpus[0]!.deadline, null, 'the BSP has no timer armed');
  chip.timerDue(1);
  assert.equal(vcpus[1]!.pending, false, 'not due yet');
  clock.now += 1000n;
  chip.timerDue(1);
  assert.equal(vcpus[1]!.pending, true);
  assert.equal(vcpus[1]!.deadline, null, 'one-shot: disarmed');
  assert.equal(chip.interruptAck(1), 0x40);
  assert.equal(chip.interruptAck(1), -1, 'nothing else');
  lapicWrite(1, APIC_EOI, 0);
});

test('INIT and STARTUP from the BSP\'s ICR reach every other vCPU', () => {
  const { vcpus, lapicWrite } = rig(3);
  lapicWrite(0, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
  lapicWrite(0, APIC_ICR2, 0);
  lapicWrite(0, APIC_ICR, APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_INIT);
  lapicWrite(0, APIC_ICR, APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_STARTUP | 0x9);
  lapicWrite(0, APIC_ICR, APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_STARTUP | 0x9);
  assert.deepEqual(vcpus[0]!.events, [], 'not the sender');
  assert.deepEqual(vcpus[1]!.events, ['init', 'sipi 9'], 'the second SIPI finds it running');
  assert.deepEqual(vcpus[2]!.events, ['init', 'sipi 9']);
});

test('the LAPIC page answers only for the vCPU that accesses it, and the IOAPIC is on the MMIO bus', () => {
  const { chip } = rig(2);
  const d = new Uint8Array(4);
  assert.equal(chip.mmio(1, LAPIC + 0x20, false, d), true);
  assert.equal(new DataView(d.buffer).getUint32(0, true) >>> 24, 1, 'vCPU 1 reads APIC ID 1');
  assert.equal(chip.mmio(0, LAPIC + 0x20, false, d), true);
  assert.equal(new DataView(d.buffer).getUint32(0, true) >>> 24, 0);
  assert.equal(chip.mmio(0, 0xfed0_0000, false, d), false, 'not the APIC page');
  assert.equal(chip.mmio(5, LAPIC, false, d), false, 'no such vCPU');
});

test('trapped MSRs: IA32_TSC_DEADLINE arms the vCPU\'s deadline on the guest TSC clock; IA32_APIC_BASE reads back; others #GP', () => {
  const { chip, vcpus, lapicWrite, clock } = rig(1);
  // Guest TSC at 2 GHz, reading 5e9 at VMM time 1 ms.
  chip.setTscClock({ tscHz: 2_000_000_000n, tsc: 5_000_000_000n, atNs: 1_000_000n });
  lapicWrite(0, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
  lapicWrite(0, APIC_LVTT, 0x40000 | 0x41); // TSC-deadline mode (bits 18:17 = 10), vector 0x41
  const d = new Uint8Array(8);
  new DataView(d.buffer).setBigUint64(0, 5_000_000_000n + 2_000_000n, true); // 1 ms of guest TSC later
  assert.equal(chip.msr(0, 0x6e0, true, d), true);
  assert.equal(vcpus[0]!.deadline, clock.now + 1_000_000n);
  clock.now += 1_000_000n;
  chip.timerDue(0);
  assert.equal(vcpus[0]!.pending, true);
  assert.equal(chip.interruptAck(0), 0x41);
  assert.equal(chip.msr(0, 0x6e0, false, d), true);
  assert.equal(new DataView(d.buffer).getBigUint64(0, true), 0n, 'the MSR reads 0 once fired');
  assert.equal(chip.msr(0, 0x1b, false, d), true);
  assert.equal(new DataView(d.buffer).getBigUint64(0, true), 0xfee00000n | (1n << 11n) | (1n << 8n), 'base, enabled, BSP');
  new DataView(d.buffer).setBigUint64(0, 0xfee00000n | (1n << 10n) | (1n << 11n), true);
  assert.equal(chip.msr(0, 0x1b, true, d), false, 'x2APIC enable: #GP');
  assert.equal(chip.msr(0, 0x10, false, d), false, 'not ours');
});

test('the PIT\'s next edge is the BSP\'s deadline; at it, IRQ0 reaches the BSP through the 8259 pair (the default guest\'s route)', () => {
  const { chip, vcpus, out, clock } = rig(2);
  for (const [base, icw2, icw3] of [[0x20, 0x20, 0x04], [0xa0, 0x28, 0x02]] as const) {
    out(base, 0x11); out(base + 1, icw2); out(base + 1, icw3); out(base + 1, 0x01);
  }
  out(0x21, 0xfe); // only IRQ0
  out(0xa1, 0xff);
  assert.equal(vcpus[0]!.deadline, null, 'the PIT is idle at power-on');
  out(0x43, 0x34); // channel 0, lobyte/hibyte, mode 2
  out(0x40, 1193 & 0xff);
  out(0x40, 1193 >> 8);
  const first = vcpus[0]!.deadline;
  assert.ok(first !== null && first > clock.now && first - clock.now < 1_100_000n, `first tick about 1 ms away: ${first}`);
  assert.equal(vcpus[1]!.deadline, null, 'the PIT is the BSP\'s');
  clock.now = first;
  chip.timerDue(0);
  assert.equal(vcpus[0]!.pending, true);
  assert.equal(chip.interruptAck(0), 0x20);
  assert.ok(vcpus[0]!.deadline! > first, 'the next tick is armed');
  out(0x20, 0x20);
});

test('signalMsi: an MSI addressed to APIC ID 1 (SDM 10.11 encoding) makes its vector injectable on vCPU 1 only', () => {
  const { chip, vcpus, lapicWrite } = rig(2);
  for (const cpu of [0, 1]) lapicWrite(cpu, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
  // Address: 0xFEE, destination ID 1 in bits 19:12, physical mode; data: fixed delivery, edge, vector 0x45.
  chip.signalMsi(0xfee0_1000, 0, 0x0045);
  assert.equal(vcpus[0]!.pending, false);
  assert.equal(vcpus[1]!.pending, true);
  assert.equal(chip.interruptAck(1), 0x45);
  lapicWrite(1, APIC_EOI, 0);
  // Logical mode (bit 2), flat model: destination set 0b01 is the LAPIC whose LDR has bit 0... none set yet: nobody hears it.
  chip.signalMsi(0xfee0_1004, 0, 0x0046);
  assert.equal(vcpus[0]!.pending || vcpus[1]!.pending, false);
  // Outside the interrupt address range, or above 4 GiB: dropped.
  chip.signalMsi(0xfed0_0000, 0, 0x0047);
  chip.signalMsi(0xfee0_0000, 1, 0x0047);
  assert.equal(vcpus[0]!.pending || vcpus[1]!.pending, false);
  // Physical broadcast (0xff) reaches both.
  chip.signalMsi(0xfee0_0000 | (0xff << 12), 0, 0x0048);
  assert.equal(vcpus[0]!.pending && vcpus[1]!.pending, true);
});
