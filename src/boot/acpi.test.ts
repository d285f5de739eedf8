import { createHash } from 'node:crypto';
import test from 'node:test';
import assert from 'node:assert/strict';
import { buildAcpiTables, type AcpiTables, type PciHostBridgeAcpi } from './acpi.js';
import { BootError } from './boot-error.js';
import { ACPI_END_GPA, ACPI_START_GPA } from './layout.js';

// The walker below reads the tables with offsets typed in from the ACPI 6.5 spec (§5.2), not from
// acpi.ts's struct tables, and follows the pointers the way an OS does: RSDP -> XSDT -> FADT ->
// FACS/DSDT, XSDT -> MADT.

class Memory {
  readonly #tables: AcpiTables;
  readonly #view: DataView;
  constructor(tables: AcpiTables) {
    this.#tables = tables;
    this.#view = new DataView(tables.bytes.buffer, tables.bytes.byteOffset, tables.bytes.byteLength);
  }
  #at(gpa: number, size: number): number {
    const offset = gpa - this.#tables.baseGpa;
    assert.ok(offset >= 0 && offset + size <= this.#tables.bytes.length, `GPA 0x${gpa.toString(16)} (+${size}) is inside the ACPI block`);
    return offset;
  }
  u8 = (gpa: number) => this.#view.getUint8(this.#at(gpa, 1));
  u16 = (gpa: number) => this.#view.getUint16(this.#at(gpa, 2), true);
  u32 = (gpa: number) => this.#view.getUint32(this.#at(gpa, 4), true);
  u64 = (gpa: number) => Number(this.#view.getBigUint64(this.#at(gpa, 8), true));
  ascii = (gpa: number, length: number) => String.fromCharCode(...this.bytes(gpa, length));
  bytes = (gpa: number, length: number) => this.#tables.bytes.subarray(this.#at(gpa, length), this.#at(gpa, length) + length);
  sum = (gpa: number, length: number) => this.bytes(gpa, length).reduce((a, b) => a + b, 0) & 0xff;
}

/** Checks an SDT header at `gpa` (signature, length, checksum) and returns its length. */
function checkSdt(mem: Memory, gpa: number, signature: string, revision: number): number {
  assert.equal(mem.ascii(gpa, 4), signature);
  const length = mem.u32(gpa + 4);
  assert.equal(mem.u8(gpa + 8), revision, `${signature} revision`);
  assert.equal(mem.sum(gpa, length), 0, `${signature} checksum`);
  assert.equal(mem.ascii(gpa + 10, 6), 'TSVMM ', `${signature} OEMID`);
  return length;
}

interface Walked {
  xsdt: number;
  fadt: number;
  madt: number;
  dsdt: number;
  facs: number;
}

function walk(tables: AcpiTables, expectTables = ['APIC', 'FACP']): { mem: Memory; at: Walked; bySignature: Map<string, number> } {
  const mem = new Memory(tables);
  const rsdp = tables.rsdpGpa;
  assert.equal(rsdp % 16, 0, 'RSDP on a 16-byte boundary');
  assert.ok(rsdp >= 0xe0000 && rsdp < 0x100000, 'RSDP in the BIOS area Linux scans');
  assert.equal(mem.ascii(rsdp, 8), 'RSD PTR ');
  assert.equal(mem.sum(rsdp, 20), 0, 'RSDP checksum (first 20 bytes)');
  assert.equal(mem.u8(rsdp + 15), 2, 'RSDP revision');
  assert.equal(mem.u32(rsdp + 20), 36, 'RSDP length');
  assert.equal(mem.sum(rsdp, 36), 0, 'RSDP extended checksum');

  const xsdt = mem.u64(rsdp + 24);
  const xsdtLength = checkSdt(mem, xsdt, 'XSDT', 1);
  const entries = (xsdtLength - 36) / 8;
  const bySignature = new Map<string, number>();
  for (let i = 0; i < entries; i++) {
    const gpa = mem.u64(xsdt + 36 + 8 * i);
    bySignature.set(mem.ascii(gpa, 4), gpa);
  }
  assert.deepEqual([...bySignature.keys()].sort(), expectTables);
  const fadt = bySignature.get('FACP') as number;
  const madt = bySignature.get('APIC') as number;
  assert.equal(checkSdt(mem, fadt, 'FACP', 6), 276);
  const dsdt = mem.u64(fadt + 140); // X_DSDT
  assert.equal(mem.u32(fadt + 40), dsdt, 'DSDT and X_DSDT agree');
  const facs = mem.u32(fadt + 36); // FIRMWARE_CTRL
  assert.equal(mem.u64(fadt + 132), 0, 'X_FIRMWARE_CTRL zero when FIRMWARE_CTRL is used');
  checkSdt(mem, dsdt, 'DSDT', 2);
  checkSdt(mem, madt, 'APIC', 5);
  assert.equal(mem.ascii(facs, 4), 'FACS');
  assert.equal(mem.u32(facs + 4), 64);
  assert.equal(facs % 64, 0, 'FACS 64-byte aligned');
  return { mem, at: { xsdt, fadt, madt, dsdt, facs }, bySignature };
}

test('every table is reachable from the RSDP, checksummed, inside ACPI_START_GPA..ACPI_END_GPA, without overlaps', () => {
  for (const cpus of [1, 2, 7, 254]) {
    const tables = buildAcpiTables({ cpus, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 5 }] });
    assert.equal(tables.baseGpa, ACPI_START_GPA);
    assert.ok(tables.baseGpa + tables.bytes.length <= ACPI_END_GPA);
    const { at } = walk(tables);
    const spans = tables.tables.map((t) => [t.gpa, t.gpa + t.lengthBytes]).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i - 1][1] <= spans[i][0], 'tables do not overlap');
    assert.deepEqual(
      new Set(tables.tables.map((t) => t.gpa)),
      new Set([at.facs, at.xsdt, at.fadt, at.madt, at.dsdt]),
      'the reported table list is what the pointers lead to',
    );
  }
});

test('FADT: PM1a event/control and PM timer ports, SCI 9, not hardware-reduced, no SMI', () => {
  const { mem, at } = walk(buildAcpiTables({ cpus: 2 }));
  const f = at.fadt;
  assert.equal(mem.u16(f + 46), 9, 'SCI_INT');
  assert.equal(mem.u32(f + 48), 0, 'SMI_CMD: ACPI mode always on');
  assert.equal(mem.u32(f + 56), 0x600, 'PM1a_EVT_BLK');
  assert.equal(mem.u32(f + 64), 0x604, 'PM1a_CNT_BLK');
  assert.equal(mem.u32(f + 76), 0x608, 'PM_TMR_BLK');
  assert.equal(mem.u32(f + 80), 0, 'GPE0_BLK');
  assert.deepEqual([mem.u8(f + 88), mem.u8(f + 89), mem.u8(f + 91)], [4, 2, 4], 'PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN');
  const flags = mem.u32(f + 112);
  assert.equal(flags & (1 << 20), 0, 'HW_REDUCED_ACPI clear: Linux uses the PM timer');
  assert.equal(flags & (1 << 8), 0, 'TMR_VAL_EXT clear: 24-bit timer');
  assert.equal(flags & (1 << 10), 0, 'no RESET_REG (reset goes through the i8042)');
  const bootArch = mem.u16(f + 109);
  assert.equal(bootArch & 0b10, 0b10, 'IAPC_BOOT_ARCH: 8042 present');
  assert.equal(bootArch & 0b100000, 0b100000, 'IAPC_BOOT_ARCH: no CMOS RTC by default');
  assert.equal(mem.u8(f + 131), 3, 'FADT minor version');
  // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK: SystemIO GAS of the same ports and widths.
  for (const [gas, port, bits] of [[148, 0x600, 32], [172, 0x604, 16], [208, 0x608, 32]]) {
    assert.deepEqual([mem.u8(f + gas), mem.u8(f + gas + 1), mem.u8(f + gas + 2), mem.u64(f + gas + 4)], [1, bits, 0, port]);
  }
  const withRtc = walk(buildAcpiTables({ cpus: 1, cmosRtc: true }));
  assert.equal(withRtc.mem.u16(withRtc.at.fadt + 109) & 0b100000, 0);
});

test('MADT: one enabled LAPIC per vCPU, IOAPIC id N at 0xfec00000, overrides for IRQ0 and the SCI, PCAT_COMPAT', () => {
  const cpus = 4;
  const { mem, at } = walk(buildAcpiTables({ cpus }));
  const m = at.madt;
  assert.equal(mem.u32(m + 36), 0xfee00000, 'Local Interrupt Controller Address');
  assert.equal(mem.u32(m + 40) & 1, 1, 'PCAT_COMPAT');
  const end = m + mem.u32(m + 4);
  const lapics: [number, number, number][] = [];
  const ioapics: [number, number, number][] = [];
  const overrides: [number, number, number, number][] = [];
  const nmis: [number, number, number][] = [];
  for (let p = m + 44; p < end; p += mem.u8(p + 1)) {
    const type = mem.u8(p);
    const length = mem.u8(p + 1);
    if (type === 0) {
      assert.equal(length, 8);
      lapics.push([mem.u8(p + 2), mem.u8(p + 3), mem.u32(p + 4)]);
    } else if (type === 1) {
      assert.equal(length, 12);
      ioapics.push([mem.u8(p + 2), mem.u32(p + 4), mem.u32(p + 8)]);
    } else if (type === 2) {
      assert.equal(length, 10);
      overrides.push([mem.u8(p + 2), mem.u8(p + 3), mem.u32(p + 4), mem.u16(p + 8)]);
    } else if (type === 4) {
      assert.equal(length, 6);
      nmis.push([mem.u8(p + 2), mem.u16(p + 3), mem.u8(p + 5)]);
    } else {
      assert.fail(`unexpected MADT entry type ${type}`);
    }
  }
  assert.deepEqual(lapics, [[0, 0, 1], [1, 1, 1], [2, 2, 1], [3, 3, 1]], '[UID, APIC id, Enabled]');
  assert.deepEqual(ioapics, [[cpus, 0xfec00000, 0]], '[id, address, GSI base]');
  assert.deepEqual(overrides, [[0, 0, 2, 0], [0, 9, 9, 0b1101]], '[bus ISA, IRQ, GSI, flags]: IRQ9 level (11) active-high (01)');
  assert.deepEqual(nmis, [[0xff, 0, 1]], 'LINT1 is NMI on all CPUs');
});

test('DSDT AML is what iasl compiles from the equivalent ASL', () => {
  const tables = buildAcpiTables({
    cpus: 1,
    virtioMmio: [
      { gpa: 0xd0000000, sizeBytes: 0x1000, irq: 5 },
      { gpa: 0xd0001000, sizeBytes: 0x1000, irq: 6, trigger: 'level' },
    ],
  });
  const { mem, at } = walk(tables);
  const length = mem.u32(at.dsdt + 4);
  const body = mem.bytes(at.dsdt + 36, length - 36).slice();
  // iasl -on of:
  //   Name (\_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
  //   Scope (\_SB) {
  //     Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero)
  //       Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, ) IRQNoFlags () {4} }) }
  //     Device (V000) { Name (_HID, "LNRO0005") Name (_UID, Zero)
  //       Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000, )
  //         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {5} }) }
  //     Device (V001) { ... 0xD0001000 ... Interrupt (ResourceConsumer, Level, ...) {6} } }
  const iasl =
    '085c5f53355f1207040a05000000104c0a5c5f53425f5b822b434f4d31085f4849440c41d00501085f55494400085f43525311100a0d4701f803f803000822100079' +
    '005b823a56303030085f4849440d4c4e524f3030303500085f55494400085f435253111a0a1786090001000000d00010000089060003010500000079005b823a56' +
    '303031085f4849440d4c4e524f3030303500085f55494401085f435253111a0a1786090001001000d0001000008906000101060000007900';
  const expected = Uint8Array.from(iasl.match(/../g) ?? [], (b) => parseInt(b, 16));
  // iasl leaves End Tag checksums 0; ours make each template sum to 0. Those 3 bytes differ, nothing else.
  const differences: number[] = [];
  for (let i = 0; i < Math.max(body.length, expected.length); i++) if (body[i] !== expected[i]) differences.push(i);
  assert.equal(body.length, expected.length);
  assert.deepEqual(differences.map((i) => expected[i - 1]), [0x79, 0x79, 0x79], 'only End Tag checksum bytes differ');
});

test('impossible machines are refused with BootError', () => {
  const refuses = (input: Parameters<typeof buildAcpiTables>[0], kind: string, message: RegExp) =>
    assert.throws(() => buildAcpiTables(input), (e: unknown) => e instanceof BootError && e.kind === kind && message.test(e.message));
  refuses({ cpus: 0 }, 'bad-config', /0 vCPUs: .* 1 to 254/);
  refuses({ cpus: 255 }, 'bad-config', /255 vCPUs/);
  refuses({ cpus: 1, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 4 }] }, 'bad-config', /IRQ 4 is already used by COM1/);
  refuses({ cpus: 1, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 24 }] }, 'bad-config', /IOAPIC pin 1-23/);
  refuses(
    { cpus: 1, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 5 }, { gpa: 0xd0000800, sizeBytes: 0x1000, irq: 6 }] },
    'bad-config',
    /overlaps virtio-mmio device 0/,
  );
  refuses(
    { cpus: 1, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 5 }, { gpa: 0xd0001000, sizeBytes: 0x1000, irq: 5 }] },
    'bad-config',
    /IRQ 5 is already used by virtio-mmio device 0/,
  );
  refuses({ cpus: 1, baseGpa: 0xd0000 }, 'bad-config', /0xe0000-0xfffff/);
  refuses({ cpus: 64, baseGpa: 0xfff00 }, 'does-not-fit', /more than the 256 from 0xfff00/);
});

const PCI: PciHostBridgeAcpi = {
  ecamGpa: 0xe000_0000,
  mmio32: { base: 0xc000_0000, sizeBytes: 0x1000_0000 },
  mmio64: { base: 0x40_0000_0000, sizeBytes: 0x10_0000_0000 },
  io: { base: 0xc000, sizeBytes: 0x1000 },
  intx: [{ slot: 1, gsi: 16 }, { slot: 2, gsi: 17 }],
};

test('without PCI the tables are byte-identical to before; with PCI the XSDT gains an MCFG', () => {
  // SHA-256 of the output of acpi.ts before PCI existed (commit e88ab05), for these inputs.
  const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  const before: Array<[Parameters<typeof buildAcpiTables>[0], string]> = [
    [{ cpus: 1 }, 'a7c082345f703716ab461d80c1198a1e20afce36d006a957760f1b44b3ba183c'],
    [{ cpus: 2 }, '2a3b7bd8e716a6d880f4064d7e3174abe463b703eb4af90f9b6b20de5a5237ca'],
    [{ cpus: 7, cmosRtc: true, virtioMmio: [{ gpa: 0xd0000000, sizeBytes: 0x1000, irq: 5 }, { gpa: 0xd0001000, sizeBytes: 0x1000, irq: 6, trigger: 'level' }] },
      '839f48e9233f1cda99091ad69ca00dd9267e1f569efd51c4d284a86cbf0af8b2'],
    [{ cpus: 254 }, '430912f8c1e8f79b102491cc2d99493d9683939609a5f95aa4b7e16aeadf43ea'],
  ];
  for (const [input, hash] of before) assert.equal(sha(buildAcpiTables(input).bytes), hash, JSON.stringify(input));
  const plain = buildAcpiTables({ cpus: 2 });
  assert.deepEqual(plain.tables.map((t) => t.signature), ['FACS', 'XSDT', 'FACP', 'APIC', 'DSDT']);
  const withPci = buildAcpiTables({ cpus: 2, pci: PCI });
  const { at, bySignature } = walk(withPci, ['APIC', 'FACP', 'MCFG']);
  assert.deepEqual(withPci.tables.map((t) => t.signature), ['FACS', 'XSDT', 'FACP', 'APIC', 'MCFG', 'DSDT']);
  // Everything before the XSDT is unchanged; the FADT and MADT bodies are the same tables.
  const t = (tables: typeof plain, sig: string) => tables.tables.find((x) => x.signature === sig)!;
  const body = (tables: typeof plain, sig: string) => tables.bytes.subarray(t(tables, sig).gpa - tables.baseGpa, t(tables, sig).gpa - tables.baseGpa + t(tables, sig).lengthBytes);
  assert.deepEqual(body(withPci, 'APIC'), body(plain, 'APIC'));
  assert.ok(bySignature.has('MCFG'));
  assert.ok(at.dsdt > bySignature.get('MCFG')!);
});

test('MCFG: 44-byte head with 8 reserved bytes, one 16-byte allocation (ECAM base, segment 0, buses 0..N-1)', () => {
  const tables = buildAcpiTables({ cpus: 1, pci: { ...PCI, busCount: 4 } });
  const { mem, bySignature } = walk(tables, ['APIC', 'FACP', 'MCFG']);
  const m = bySignature.get('MCFG')!;
  assert.equal(checkSdt(mem, m, 'MCFG', 1), 60);
  assert.deepEqual([...mem.bytes(m + 36, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(mem.u64(m + 44), 0xe000_0000, 'BaseAddress');
  assert.equal(mem.u16(m + 52), 0, 'PCI segment group');
  assert.deepEqual([mem.u8(m + 54), mem.u8(m + 55)], [0, 3], 'start and end bus');
  assert.equal(mem.u32(m + 56), 0);
});

test('DSDT with PCI0 (PNP0A08/PNP0A03, _SEG, _BBN, _CRS, _PRT) and the ECAM reservation is what iasl compiles', () => {
  const tables = buildAcpiTables({ cpus: 1, pci: PCI });
  const { mem, at } = walk(tables, ['APIC', 'FACP', 'MCFG']);
  const length = mem.u32(at.dsdt + 4);
  const body = mem.bytes(at.dsdt + 36, length - 36).slice();
  // iasl -on (20200925) of:
  //   Name (\_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
  //   Scope (\_SB) {
  //     Device (COM1) { ... as above ... }
  //     Device (PCI0) {
  //       Name (_HID, EisaId ("PNP0A08")) Name (_CID, EisaId ("PNP0A03")) Name (_SEG, Zero) Name (_BBN, Zero) Name (_UID, Zero)
  //       Name (_CRS, ResourceTemplate () {
  //         WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, 0x0000, 0x0000, 0x0000, 0x0001,,, )
  //         IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08, )
  //         WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, 0xC000, 0xCFFF, 0x0000, 0x1000,,, , TypeStatic, DenseTranslation)
  //         DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, 0xC0000000, 0xCFFFFFFF, 0x00000000, 0x10000000,,, , AddressRangeMemory, TypeStatic)
  //         QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x0, 0x0000004000000000, 0x0000004FFFFFFFFF, 0x0, 0x0000001000000000,,, , AddressRangeMemory, TypeStatic) })
  //       Name (_PRT, Package () { Package () { 0x0001FFFF, Zero, Zero, 0x10 }, Package () { 0x0002FFFF, Zero, Zero, 0x11 } }) }
  //     Device (PRES) { Name (_HID, EisaId ("PNP0C02")) Name (_UID, One)
  //       Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000, ) }) } }
  const iasl =
    '085c5f53355f1207040a05000000104c125c5f53425f5b822b434f4d31085f4849440c41d00501085f55494400085f43525311100a0d4701f803f80300082210007900' +
    '5b82480c50434930085f4849440c41d00a08085f4349440c41d00a03085f53454700085f42424e00085f55494400085f4352531146070a72880d00020c0000000000' +
    '0000000001004701f80cf80c0108880d00010c03000000c0ffcf00000010871700000c0100000000000000c0ffffffcf00000000000000108a2b00000c010000000000' +
    '0000000000000040000000ffffffff4f000000000000000000000000000000100000007900085f505254121a02120b040cffff010000000a10120b040cffff0200' +
    '00000a115b822c50524553085f4849440c41d00c02085f55494401085f43525311110a0e86090001000000e0000010007900';
  const expected = Uint8Array.from(iasl.match(/../g) ?? [], (b) => parseInt(b, 16));
  assert.equal(body.length, expected.length);
  const differences: number[] = [];
  for (let i = 0; i < body.length; i++) if (body[i] !== expected[i]) differences.push(i);
  assert.deepEqual(differences.map((i) => expected[i - 1]), [0x79, 0x79, 0x79], 'only End Tag checksum bytes differ');
});

test('PCI configurations that cannot work are refused with BootError', () => {
  const refuses = (pci: PciHostBridgeAcpi, message: RegExp, virtioMmio = [] as { gpa: number; sizeBytes: number; irq: number }[]) =>
    assert.throws(() => buildAcpiTables({ cpus: 1, pci, virtioMmio }), (e: unknown) => e instanceof BootError && e.kind === 'bad-config' && message.test(e.message));
  refuses({ ...PCI, ecamGpa: 0xe008_0000 }, /1 MiB aligned/);
  refuses({ ...PCI, busCount: 0 }, /1 to 256/);
  refuses({ ...PCI, mmio32: { base: 0xdff0_0000, sizeBytes: 0x20_0000 } }, /32-bit MMIO window .* overlaps the ECAM window/);
  refuses({ ...PCI, mmio64: { base: 0x8000_0000, sizeBytes: 0x1000 } }, /above 4 GiB/);
  refuses({ ...PCI, io: { base: 0xc00, sizeBytes: 0x200 } }, /clear of ports 0xcf8-0xcff/);
  refuses({ ...PCI, intx: [{ slot: 1, gsi: 4 }] }, /GSI 4 is already used by COM1/);
  refuses({ ...PCI, intx: [{ slot: 1, gsi: 5 }] }, /GSI 5 is already used by virtio-mmio device 0/, [{ gpa: 0xd000_0000, sizeBytes: 0x1000, irq: 5 }]);
  refuses({ ...PCI, intx: [{ slot: 1, gsi: 16 }, { slot: 1, gsi: 17 }] }, /listed once/);
  refuses({ ...PCI, intx: [{ slot: 0, gsi: 16 }] }, /slot must be 1-31/);
  refuses({ ...PCI, mmio32: { base: 0xcfff_f000, sizeBytes: 0x10_0000 } }, /virtio-mmio device 0 at 0xd0000000\+0x1000 overlaps the 32-bit MMIO window/, [{ gpa: 0xd000_0000, sizeBytes: 0x1000, irq: 5 }]);
});
