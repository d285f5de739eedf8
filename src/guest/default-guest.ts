// The guest tsvmm boots when given no kernel: a PVH ELF, generated here at run time, that reports
// what the machine gave it on COM1 and exits through the debug-exit port.
// Spec: PVH boot (xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc); Intel SDM
// Vol. 3 ch. 10 (local APIC, INIT-SIPI-SIPI) and 6 (IDT); 8259A and 8254 data sheets; ACPI 6.5
// §5.2.5 (RSDP), §5.2.7/8 (RSDT/XSDT), §5.2.12 (MADT).
//
// What it prints (each line ends in "\n"):
//   tsvmm default guest
//   vcpus started: N          1 + the APs that ran the trampoline after INIT-SIPI-SIPI
//   memory: M MiB             sum of the RAM (type 1) entries of the PVH memory map, rounded down
//   timer interrupts: T       PIT IRQ0 interrupts taken since the PIT was programmed
//   time from start: X ms     from the first instruction to this line: TSC, calibrated against 50 PIT ticks
// then writes 0 to the debug-exit port (DEFAULT_GUEST_EXIT.ok).
//
// Other exits: DEFAULT_GUEST_EXIT.cpuException after a "cpu exception N" line, and .watchdog after
// a "watchdog: ..." line when the guest is still running 2 s in (in practice: no PIT interrupts).
//
// How it keeps CPL0 work small (CPL0 code is emulated on our hosts, ~0.6 µs an instruction): it
// never spins. Every wait is `hlt` with interrupts on, woken by the 1 kHz PIT tick, and the tick
// handler is twelve instructions. A run is a few thousand instructions (most of them printing)
// plus ~15 per millisecond waited; it waits ~60 ms, or ~110 ms when there is no MADT.
//
// By hand, without tsvmm (QEMU exits with 2N+1 for status N, so 1 means success):
//   node -e "import('./dist/src/guest/default-guest.js').then(m => process.stdout.write(m.buildDefaultGuest()))" > /tmp/default.elf
//   qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 512M -smp 2 -nodefaults \
//     -no-user-config -nographic -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel /tmp/default.elf
//
// It will not: enter long mode or turn on paging (it needs neither), scan memory for the RSDP
// (only rsdp_paddr is used), or use the IOAPIC (the PIT reaches it through the 8259 PIC).
import { COM1_PORT, DEBUG_EXIT_PORT, HIGH_MEMORY_GPA, LAPIC_GPA } from '../boot/layout.js';
import { buildPvhElf } from './elf-image.js';
import {
  AL, AH, AX, CS, DS, DX, EAX, EBP, EBX, ECX, EDI, EDX, ESI, ESP, ES, FS, GS, SS,
  Assembler, byte, dword, mem,
} from './x86asm.js';

/** Exit statuses written to the debug-exit port (QEMU's isa-debug-exit reports 2N+1). */
export const DEFAULT_GUEST_EXIT = {
  ok: 0,
  /** A CPU exception reached the guest's IDT; the line before says which vector. */
  cpuException: 2,
  /** The local APIC watchdog fired: the guest was stuck (usually: no PIT interrupts arrive). */
  watchdog: 3,
} as const;

/** Where the APs' real-mode trampoline is copied: below 1 MiB, 4 KiB aligned, outside what the VMM uses (see layout.ts). */
export const TRAMPOLINE_GPA = 0x3000;
/** The SIPI vector is the trampoline's page number: the AP starts at CS:IP = (vector << 8):0000. */
const SIPI_VECTOR = TRAMPOLINE_GPA >> 12;

// struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), 56 bytes; version 1 added memmap_*.
// Note cmdline_paddr is at 24, not 16 (modlist_paddr is at 16).
export const HVM_START_INFO = {
  magic: 0, // u32, XEN_HVM_START_MAGIC_VALUE
  version: 4, // u32
  flags: 8, // u32
  nr_modules: 12, // u32
  modlist_paddr: 16, // u64
  cmdline_paddr: 24, // u64
  rsdp_paddr: 32, // u64
  memmap_paddr: 40, // u64
  memmap_entries: 48, // u32
  reserved: 52, // u32
} as const;
export const HVM_START_INFO_SIZE = 56;
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
// struct hvm_memmap_table_entry, 24 bytes.
export const HVM_MEMMAP_ENTRY = { addr: 0, size: 8, type: 16, reserved: 20 } as const;
export const HVM_MEMMAP_ENTRY_SIZE = 24;
export const XEN_HVM_MEMMAP_TYPE_RAM = 1;

// ACPI (ACPI 6.5 §5.2): only the fields this guest reads.
const ACPI_RSDP = { signature: 0, revision: 15, rsdt_address: 16, xsdt_address: 24 } as const;
const ACPI_SDT_HEADER = { signature: 0, length: 4 } as const;
const ACPI_SDT_HEADER_SIZE = 36;
/** MADT: the SDT header, then u32 local APIC address and u32 flags, then the entries. */
const ACPI_MADT_ENTRIES_OFFSET = 44;
const ACPI_MADT_ENTRY = { type: 0, length: 1 } as const;
const ACPI_MADT_TYPE_LOCAL_APIC = 0; // flags (u32) at 4
const ACPI_MADT_LOCAL_APIC_FLAGS = 4;
const ACPI_MADT_TYPE_LOCAL_X2APIC = 9; // flags (u32) at 8
const ACPI_MADT_LOCAL_X2APIC_FLAGS = 8;
const ACPI_MADT_ENABLED = 1;
const asciiDword = (s: string): number => (s.charCodeAt(0) | (s.charCodeAt(1) << 8) | (s.charCodeAt(2) << 16) | (s.charCodeAt(3) << 24)) >>> 0;

// Local APIC registers (Linux arch/x86/include/asm/apicdef.h), offsets from LAPIC_GPA.
const APIC_SPIV = 0xf0;
const APIC_SPIV_APIC_ENABLED = 0x100;
const APIC_ICR = 0x300;
const APIC_ICR2 = 0x310;
const APIC_LVTT = 0x320;
const APIC_LVT0 = 0x350;
const APIC_TMICT = 0x380;
const APIC_TDCR = 0x3e0;
const APIC_TDR_DIV_1 = 0xb;
const APIC_DM_EXTINT = 0x700;
const APIC_DEST_ALLBUT = 0xc0000; // destination shorthand: all excluding self
const APIC_INT_ASSERT = 0x4000;
const APIC_DM_INIT = 0x500;
const APIC_DM_STARTUP = 0x600;

// 8259A PIC and 8254 PIT ports and command bytes.
const PIC_MASTER_CMD = 0x20, PIC_MASTER_DATA = 0x21, PIC_SLAVE_CMD = 0xa0, PIC_SLAVE_DATA = 0xa1;
const ICW1_INIT_ICW4 = 0x11; // edge triggered, cascaded, ICW4 follows
const ICW4_8086 = 0x01;
const PIC_EOI = 0x20; // OCW2: non-specific EOI
const PIT_CH0 = 0x40, PIT_MODE = 0x43;
const PIT_CH0_LOHI_MODE2 = 0x34; // channel 0, lobyte then hibyte, mode 2 (rate generator), binary
const PIT_HZ = 1_193_182;
const TICK_HZ = 1000;
const PIT_DIVISOR = Math.round(PIT_HZ / TICK_HZ); // 1193: 1000.15 Hz

// UART 8250 registers (Linux include/uapi/linux/serial_reg.h).
const UART_LSR = 5;
const UART_LSR_THRE = 0x20;

// The guest's own choices.
const CODE_SELECTOR = 0x08, DATA_SELECTOR = 0x10;
const VECTOR_PIC_MASTER = 0x20; // IRQ0-7 -> 0x20-0x27 (above the 32 exception vectors)
const VECTOR_PIC_SLAVE = 0x28;
const VECTOR_WATCHDOG = 0x30;
const VECTOR_SPURIOUS = 0x3f;
const IDT_VECTORS = 0x40;
/** Watchdog: one-shot LAPIC timer, 2e9 bus clocks at divide-by-1 (2 s with KVM's 1 GHz APIC bus). */
const WATCHDOG_COUNT = 2_000_000_000;
const AP_WAIT_MAX_TICKS = 1000; // give up waiting for APs after 1 s (200 ms was once too short in the KVM lab); within the 2 s watchdog
const AP_QUIET_TICKS = 50; // without a MADT: done once the count has not changed for 50 ms
const CALIBRATION_TICKS = 50; // the TSC is measured over 50 PIT periods
/** EFLAGS.IF (SDM vol. 1 3.4.3). */
const EFLAGS_IF = 1 << 9;
const STACK_BYTES = 4096;

/** The AP trampoline: 16-bit real mode, run at CS:IP = 0300:0000 after the SIPI. */
function buildTrampoline(): { bytes: Uint8Array; apCountGpa: number } {
  const a = new Assembler({ bits: 16, originGpa: 0 }); // addresses are offsets in CS = DS = TRAMPOLINE_GPA >> 4
  a.label('ap_entry');
  a.mov(AX, CS);                                  // the SIPI set CS to the trampoline's segment: use it for data too
  a.mov(DS, AX);
  a.lock().inc(dword('ap_count'));                // count this AP in (several APs run this at once)
  a.label('ap_park');
  a.cli();                                        // nothing will wake it: park forever
  a.hlt();
  a.jmp('ap_park');                               // (an NMI or SMI would resume here)
  a.align(4);
  a.label('ap_count').dd(0);
  const bytes = a.link();
  return { bytes, apCountGpa: TRAMPOLINE_GPA + a.addressOf('ap_count') };
}

/** Assembles the guest program, linked to run at `loadGpa` (1 MiB). */
export function assembleDefaultGuest(loadGpa = HIGH_MEMORY_GPA): { program: Uint8Array; entryGpa: number } {
  const trampoline = buildTrampoline();
  const AP_COUNT_GPA = trampoline.apCountGpa;
  const a = new Assembler({ bits: 32, originGpa: loadGpa });
  const lapic = (reg: number) => dword(LAPIC_GPA + reg);
  const outb = (port: number, value: number): void => {
    a.mov(AL, value);
    a.out(port, AL);
  };
  /** "<prefix><u32 from variable><suffix>". */
  const printLine = (prefix: string, variable: string, suffix: string): void => {
    a.mov(ESI, prefix).call('puts');
    a.mov(EAX, dword(variable)).call('put_u32');
    a.mov(ESI, suffix).call('puts');
  };

  // ==== Entry (PVH): 32-bit protected mode, paging off, flat CS/DS/ES/SS, EBX = hvm_start_info ====
  a.label('entry');
  a.rdtsc();                                      // edx:eax = TSC now: "time from start" counts from here
  a.mov(dword('tsc_entry'), EAX);
  a.mov(dword('tsc_entry', 4), EDX);
  a.mov(dword('start_info'), EBX);

  // Our own GDT, so the IDT's selector (0x08) means what we think whatever GDT the loader left.
  a.lgdt(mem('gdtr'));
  a.jmpFar(CODE_SELECTOR, 'flat');                // reload CS from the new GDT
  a.label('flat');
  a.mov(EAX, DATA_SELECTOR);
  a.mov(DS, EAX).mov(ES, EAX).mov(FS, EAX).mov(GS, EAX).mov(SS, EAX);
  a.mov(ESP, 'stack_top');
  a.lidt(mem('idtr'));                            // exceptions now print a line and exit instead of triple-faulting

  a.mov(ESI, 'str_banner').call('puts');

  // ==== Memory: add up the RAM entries of the PVH memory map (64-bit sum in ebp:edi) ====
  a.xor(EDI, EDI);
  a.xor(EBP, EBP);
  a.mov(EBX, dword('start_info'));
  a.cmp(dword(EBX, HVM_START_INFO.magic), XEN_HVM_START_MAGIC_VALUE);
  a.jne('mem_done');                              // no start info: report 0 MiB (and no ACPI below)
  a.cmp(dword(EBX, HVM_START_INFO.version), 1);
  a.jb('mem_done');                               // version 0 has no memmap fields
  a.cmp(dword(EBX, HVM_START_INFO.memmap_paddr + 4), 0);
  a.jne('mem_done');                              // above 4 GiB: out of reach without paging
  a.mov(ESI, dword(EBX, HVM_START_INFO.memmap_paddr));
  a.test(ESI, ESI);
  a.jz('mem_done');                               // 0 means "not present"
  a.mov(ECX, dword(EBX, HVM_START_INFO.memmap_entries));
  a.test(ECX, ECX);
  a.jz('mem_done');                               // (dec/jnz would otherwise loop 2^32 times)
  a.label('mem_entry');
  a.cmp(dword(ESI, HVM_MEMMAP_ENTRY.type), XEN_HVM_MEMMAP_TYPE_RAM);
  a.jne('mem_next');
  a.add(EDI, dword(ESI, HVM_MEMMAP_ENTRY.size));  // ebp:edi += size
  a.adc(EBP, dword(ESI, HVM_MEMMAP_ENTRY.size + 4));
  a.label('mem_next');
  a.add(ESI, HVM_MEMMAP_ENTRY_SIZE);
  a.dec(ECX);
  a.jnz('mem_entry');
  a.label('mem_done');
  a.shr(EDI, 20);                                 // MiB = (ebp:edi) >> 20
  a.shl(EBP, 12);
  a.or(EDI, EBP);
  a.mov(dword('mem_mib'), EDI);

  // ==== ACPI: count enabled CPUs in the MADT, so the AP wait below knows when it is done ====
  a.mov(EBX, dword('start_info'));
  a.cmp(dword(EBX, HVM_START_INFO.magic), XEN_HVM_START_MAGIC_VALUE);
  a.jne('acpi_done');
  a.cmp(dword(EBX, HVM_START_INFO.rsdp_paddr + 4), 0);
  a.jne('acpi_done');
  a.mov(ESI, dword(EBX, HVM_START_INFO.rsdp_paddr));
  a.test(ESI, ESI);
  a.jz('acpi_done');
  a.cmp(dword(ESI, ACPI_RSDP.signature), asciiDword('RSD '));
  a.jne('acpi_done');
  a.cmp(dword(ESI, ACPI_RSDP.signature + 4), asciiDword('PTR '));
  a.jne('acpi_done');
  a.mov(EDI, dword(ESI, ACPI_RSDP.rsdt_address)); // edi = root table, edx = its entry size
  a.mov(EDX, 4);
  a.cmp(byte(ESI, ACPI_RSDP.revision), 2);
  a.jb('acpi_root');                              // ACPI 1.0: RSDT only
  a.cmp(dword(ESI, ACPI_RSDP.xsdt_address + 4), 0);
  a.jne('acpi_root');                             // XSDT above 4 GiB: fall back to the RSDT
  a.mov(EAX, dword(ESI, ACPI_RSDP.xsdt_address));
  a.test(EAX, EAX);
  a.jz('acpi_root');
  a.mov(EDI, EAX);                                // ACPI 2.0+: prefer the XSDT (64-bit entries)
  a.mov(EDX, 8);
  a.label('acpi_root');
  a.test(EDI, EDI);
  a.jz('acpi_done');
  a.mov(ECX, dword(EDI, ACPI_SDT_HEADER.length));
  a.add(ECX, EDI);                                // ecx = end of the root table
  a.add(EDI, ACPI_SDT_HEADER_SIZE);               // edi = first entry
  a.label('acpi_find_madt');
  a.cmp(EDI, ECX);
  a.jae('acpi_done');
  a.mov(ESI, dword(EDI));                         // a table's address (low half for the XSDT)
  a.add(EDI, EDX);
  a.cmp(dword(ESI, ACPI_SDT_HEADER.signature), asciiDword('APIC'));
  a.jne('acpi_find_madt');
  a.mov(ECX, dword(ESI, ACPI_SDT_HEADER.length));
  a.add(ECX, ESI);                                // ecx = end of the MADT
  a.add(ESI, ACPI_MADT_ENTRIES_OFFSET);           // esi = first MADT entry
  a.xor(EBX, EBX);                                // ebx = enabled CPUs
  a.label('madt_entry');
  a.cmp(ESI, ECX);
  a.jae('madt_done');
  a.movzx(EAX, byte(ESI, ACPI_MADT_ENTRY.length));
  a.cmp(EAX, 2);
  a.jb('madt_done');                              // a zero length would loop forever: stop
  a.cmp(byte(ESI, ACPI_MADT_ENTRY.type), ACPI_MADT_TYPE_LOCAL_APIC);
  a.jne('madt_not_lapic');
  a.test(byte(ESI, ACPI_MADT_LOCAL_APIC_FLAGS), ACPI_MADT_ENABLED);
  a.jz('madt_next');
  a.inc(EBX);
  a.jmp('madt_next');
  a.label('madt_not_lapic');
  a.cmp(byte(ESI, ACPI_MADT_ENTRY.type), ACPI_MADT_TYPE_LOCAL_X2APIC);
  a.jne('madt_next');
  a.test(byte(ESI, ACPI_MADT_LOCAL_X2APIC_FLAGS), ACPI_MADT_ENABLED);
  a.jz('madt_next');
  a.inc(EBX);
  a.label('madt_next');
  a.add(ESI, EAX);
  a.jmp('madt_entry');
  a.label('madt_done');
  a.mov(dword('madt_cpus'), EBX);
  a.label('acpi_done');

  // ==== Interrupts: LAPIC, 8259 PIC, 8254 PIT at 1 kHz ====
  // The LAPIC must be software-enabled before its LVT entries can be unmasked. LINT0 in ExtINT
  // mode is how the 8259's INTR reaches this CPU while the LAPIC is on (KVM drops PIC interrupts
  // otherwise); firmware usually sets it, a bare VMM may not.
  a.mov(lapic(APIC_SPIV), APIC_SPIV_APIC_ENABLED | VECTOR_SPURIOUS);
  a.mov(lapic(APIC_LVT0), APIC_DM_EXTINT);
  // Watchdog: a one-shot LAPIC timer that ends the guest if it is still running 2 s from now.
  a.mov(lapic(APIC_TDCR), APIC_TDR_DIV_1);
  a.mov(lapic(APIC_LVTT), VECTOR_WATCHDOG);       // one-shot (bits 17-18 = 0), unmasked
  a.mov(lapic(APIC_TMICT), WATCHDOG_COUNT);
  // 8259: ICW1-ICW4 remap IRQ0-7 to 0x20-0x27 and IRQ8-15 to 0x28-0x2f, then unmask IRQ0 only.
  outb(PIC_MASTER_CMD, ICW1_INIT_ICW4);
  outb(PIC_MASTER_DATA, VECTOR_PIC_MASTER);       // ICW2: vector base
  outb(PIC_MASTER_DATA, 1 << 2);                  // ICW3: a slave on IRQ2
  outb(PIC_MASTER_DATA, ICW4_8086);               // ICW4: 8086 mode, normal EOI
  outb(PIC_SLAVE_CMD, ICW1_INIT_ICW4);
  outb(PIC_SLAVE_DATA, VECTOR_PIC_SLAVE);
  outb(PIC_SLAVE_DATA, 2);                        // ICW3: the slave's cascade identity
  outb(PIC_SLAVE_DATA, ICW4_8086);
  outb(PIC_MASTER_DATA, 0xfe);                    // OCW1: mask all but IRQ0
  outb(PIC_SLAVE_DATA, 0xff);
  // 8254: channel 0, mode 2, divisor 1193 -> IRQ0 every 1 ms.
  outb(PIT_MODE, PIT_CH0_LOHI_MODE2);
  outb(PIT_CH0, PIT_DIVISOR & 0xff);
  outb(PIT_CH0, PIT_DIVISOR >> 8);
  a.sti();                                        // from here on, every hlt wakes at least once a millisecond

  // ==== APs: copy the trampoline below 1 MiB, then INIT, SIPI, SIPI to all but ourselves ====
  a.cld();
  a.mov(ESI, 'trampoline');
  a.mov(EDI, TRAMPOLINE_GPA);
  a.mov(ECX, trampoline.bytes.length);
  a.rep().movsb();
  a.mov(lapic(APIC_ICR2), 0);                     // destination field unused with a shorthand
  a.mov(lapic(APIC_ICR), APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_INIT);
  a.mov(ECX, 2).call('sleep_ticks');              // >= 1 ms (the MP spec asks 10 ms of real hardware; KVM needs none)
  a.mov(lapic(APIC_ICR), APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_STARTUP | SIPI_VECTOR);
  a.mov(ECX, 2).call('sleep_ticks');              // >= 200 µs between the SIPIs
  a.mov(lapic(APIC_ICR), APIC_DEST_ALLBUT | APIC_INT_ASSERT | APIC_DM_STARTUP | SIPI_VECTOR);
  // Wait until the APs the MADT lists have all counted in; without a MADT, until the count has
  // not moved for AP_QUIET_TICKS; in any case for at most AP_WAIT_MAX_TICKS.
  a.mov(EAX, dword('ticks'));
  a.mov(EBX, EAX);
  a.add(EBX, AP_WAIT_MAX_TICKS);                  // ebx = deadline
  a.mov(EBP, EAX);                                // ebp = tick of the last change
  a.xor(EDI, EDI);                                // edi = the count at that change
  a.label('ap_wait');
  a.hlt();
  a.mov(EAX, dword(AP_COUNT_GPA));                // eax = APs so far (kept to ap_done)
  a.mov(EDX, dword('madt_cpus'));
  a.test(EDX, EDX);
  a.jz('ap_no_madt');
  a.dec(EDX);                                     // APs expected = CPUs - this one
  a.cmp(EAX, EDX);
  a.jae('ap_done');
  a.jmp('ap_deadline');
  a.label('ap_no_madt');
  a.cmp(EAX, EDI);
  a.je('ap_unchanged');
  a.mov(EDI, EAX);
  a.mov(EBP, dword('ticks'));
  a.jmp('ap_deadline');
  a.label('ap_unchanged');
  a.mov(EDX, dword('ticks'));
  a.sub(EDX, EBP);
  a.cmp(EDX, AP_QUIET_TICKS);
  a.jae('ap_done');
  a.label('ap_deadline');
  a.cmp(dword('ticks'), EBX);
  a.jb('ap_wait');
  a.label('ap_done');
  a.inc(EAX);                                     // + this CPU
  a.mov(dword('vcpus'), EAX);
  printLine('str_vcpus', 'vcpus', 'str_newline');
  printLine('str_memory', 'mem_mib', 'str_mib');

  // ==== Timer: measure the TSC over CALIBRATION_TICKS PIT periods, from one tick to another ====
  a.mov(EAX, dword('ticks'));
  a.label('tick_edge');
  a.hlt();
  a.cmp(dword('ticks'), EAX);
  a.je('tick_edge');                              // woken by something else: wait for the tick itself
  a.rdtsc();
  a.mov(ESI, EAX);                                // edi:esi = TSC at the first tick
  a.mov(EDI, EDX);
  a.mov(ECX, CALIBRATION_TICKS).call('sleep_ticks');
  a.rdtsc();
  a.sub(EAX, ESI);                                // edx:eax = TSC cycles in CALIBRATION_TICKS ms
  a.sbb(EDX, EDI);
  a.mov(ECX, CALIBRATION_TICKS);
  a.div(ECX);                                     // eax = TSC cycles per ms (< 2^32 below 4 THz)
  a.mov(dword('tsc_per_ms'), EAX);
  printLine('str_timer', 'ticks', 'str_newline');

  // ==== Time from start: (TSC now - TSC at entry) / (cycles per ms) ====
  a.rdtsc();
  a.sub(EAX, dword('tsc_entry'));
  a.sbb(EDX, dword('tsc_entry', 4));
  a.mov(ECX, dword('tsc_per_ms'));
  a.test(ECX, ECX);
  a.jz('time_from_ticks');                        // the TSC does not move: fall back to PIT ticks
  a.cmp(EDX, ECX);
  a.jae('time_from_ticks');                       // the quotient would overflow (#DE)
  a.div(ECX);
  a.jmp('time_print');
  a.label('time_from_ticks');
  a.mov(EAX, dword('ticks'));
  a.label('time_print');
  a.mov(dword('elapsed_ms'), EAX);
  printLine('str_time', 'elapsed_ms', 'str_ms');

  a.mov(EAX, DEFAULT_GUEST_EXIT.ok);
  a.label('exit');                                // eax = status
  a.out(DEBUG_EXIT_PORT, EAX);                    // 32-bit write: the VM ends with status eax
  a.label('halt_forever');                        // (only if there is no debug-exit port)
  a.cli();
  a.hlt();
  a.jmp('halt_forever');

  // ==== Subroutines ====
  // sleep_ticks: wait until ecx more PIT ticks have passed (the first may come at once). Clobbers ecx.
  a.label('sleep_ticks');
  a.add(ECX, dword('ticks'));
  a.label('sleep_wait');
  a.hlt();
  a.cmp(dword('ticks'), ECX);
  a.jb('sleep_wait');
  a.ret();

  // puts: print the NUL-terminated string at esi. Clobbers eax, edx, esi.
  a.label('puts');
  a.mov(AL, byte(ESI));
  a.test(AL, AL);
  a.jz('puts_done');
  a.call('putc');
  a.inc(ESI);
  a.jmp('puts');
  a.label('puts_done');
  a.ret();

  // putc: send al to COM1 once its transmit holding register is empty. Clobbers eax, edx.
  a.label('putc');
  a.mov(AH, AL);
  a.mov(EDX, COM1_PORT + UART_LSR);
  a.label('putc_wait');
  a.in(AL, DX);
  a.test(AL, UART_LSR_THRE);
  a.jz('putc_wait');
  a.mov(AL, AH);
  a.mov(EDX, COM1_PORT);
  a.out(DX, AL);
  a.ret();

  // put_u32: print eax in decimal. Digits come out of div last-first, so they go through the stack.
  // Clobbers eax, edx.
  a.label('put_u32');
  a.push(ECX);
  a.push(ESI);
  a.mov(ECX, 10);
  a.xor(ESI, ESI);                                // esi = digits pushed
  a.label('put_u32_divide');
  a.xor(EDX, EDX);
  a.div(ECX);                                     // eax = eax / 10, edx = the digit
  a.push(EDX);
  a.inc(ESI);
  a.test(EAX, EAX);
  a.jnz('put_u32_divide');
  a.label('put_u32_emit');
  a.pop(EAX);
  a.add(AL, 0x30);                                // '0'
  a.call('putc');
  a.dec(ESI);
  a.jnz('put_u32_emit');
  a.pop(ESI);
  a.pop(ECX);
  a.ret();

  // ==== Interrupt handlers ====
  // PIT tick (IRQ0). Only the boot CPU takes interrupts.
  a.label('irq_pit');
  a.push(EAX);
  a.inc(dword('ticks'));
  a.mov(AL, PIC_EOI);
  a.out(PIC_MASTER_CMD, AL);
  a.pop(EAX);
  // Falls through.

  // return_from_interrupt: what `iret` does between CPL0 code, without `iret`. KVM's instruction
  // emulator, which runs all CPL0 code on our hosts, implements iret only in real mode: in
  // protected mode the vCPU dies with an emulation failure. The interrupt frame is
  // [esp] = EIP, [esp+4] = CS (unchanged, same privilege), [esp+8] = EFLAGS; turn it into
  // EFLAGS, EIP, then popfd (the arithmetic flags) and ret. IF must come on only with the ret, as
  // iret does it: a popfd that set IF would let the next interrupt in with the frame's EIP still
  // on the stack, and a guest slower than its timer (ticks waiting after each EOI) would nest one
  // level per tick until the stack ran into the code (seen in the KVM lab with tsvmm's own PIT).
  // An interrupt came in with IF set, so: popfd with IF clear, then sti, whose one-instruction
  // shadow covers the ret.
  a.label('return_from_interrupt');
  a.push(EAX);                                    // [eax, EIP, CS, EFLAGS]
  a.mov(EAX, dword(ESP, 12));                     // eax = EFLAGS
  a.xchg(EAX, dword(ESP, 4));                     // [eax, EFLAGS, CS, EFLAGS], eax = EIP
  a.mov(dword(ESP, 8), EAX);                      // [eax, EFLAGS, EIP, EFLAGS]
  a.pop(EAX);                                     // [EFLAGS, EIP, EFLAGS]
  a.and(dword(ESP, 0), ~EFLAGS_IF);               // IF stays off through the popfd
  a.popf();                                       // [EIP, EFLAGS]
  a.sti();                                        // IF on after the next instruction
  a.ret(4);                                       // to EIP, dropping the last slot

  // Watchdog (LAPIC timer): report and exit; never returns.
  a.label('irq_watchdog');
  a.mov(ESI, 'str_watchdog').call('puts');
  a.mov(EAX, dword('ticks')).call('put_u32');
  a.mov(ESI, 'str_newline').call('puts');
  a.mov(EAX, DEFAULT_GUEST_EXIT.watchdog);
  a.jmp('exit');

  // Unexpected PIC/LAPIC vectors (spurious IRQ7/15, spurious LAPIC): nothing to acknowledge.
  a.label('irq_ignore');
  a.jmp('return_from_interrupt');

  // CPU exceptions: each stub pushes its vector and joins the common path, which reports it and exits.
  for (let v = 0; v < 32; v++) {
    a.label(`exception_${v}`);
    a.push(v);
    a.jmp('exception_common');
  }
  a.label('exception_common');
  a.mov(ESI, 'str_exception').call('puts');
  a.pop(EAX).call('put_u32');                     // the vector
  a.mov(ESI, 'str_newline').call('puts');
  a.mov(EAX, DEFAULT_GUEST_EXIT.cpuException);
  a.jmp('exit');

  // ==== Data ====
  // GDT: null, flat 4 GiB 32-bit code (0x08), flat 4 GiB data (0x10).
  a.align(8);
  a.label('gdt');
  a.dq(0n, 0x00cf_9a00_0000_ffffn, 0x00cf_9200_0000_ffffn);
  a.label('gdtr').dw(3 * 8 - 1).dd('gdt');
  // IDT: 32-bit interrupt gates (type 0xE, DPL 0, present) for vectors 0x00-0x3f.
  a.align(8);
  a.label('idt');
  for (let v = 0; v < IDT_VECTORS; v++) {
    const handler =
      v < 32 ? `exception_${v}` : v === VECTOR_PIC_MASTER ? 'irq_pit' : v === VECTOR_WATCHDOG ? 'irq_watchdog' : 'irq_ignore';
    a.dwAddressLow(handler).dw(CODE_SELECTOR).db(0, 0x8e).dwAddressHigh(handler);
  }
  a.label('idtr').dw(IDT_VECTORS * 8 - 1).dd('idt');

  a.align(8);
  a.label('tsc_entry').dq(0n);
  a.label('start_info').dd(0);
  a.label('ticks').dd(0);                         // PIT interrupts so far (written by irq_pit only)
  a.label('madt_cpus').dd(0);                     // enabled CPUs in the MADT; 0 = no MADT found
  a.label('vcpus').dd(0);
  a.label('mem_mib').dd(0);
  a.label('tsc_per_ms').dd(0);
  a.label('elapsed_ms').dd(0);

  a.label('str_banner').asciz('tsvmm default guest\n');
  a.label('str_vcpus').asciz('vcpus started: ');
  a.label('str_memory').asciz('memory: ');
  a.label('str_mib').asciz(' MiB\n');
  a.label('str_timer').asciz('timer interrupts: ');
  a.label('str_time').asciz('time from start: ');
  a.label('str_ms').asciz(' ms\n');
  a.label('str_newline').asciz('\n');
  a.label('str_exception').asciz('\ncpu exception ');
  a.label('str_watchdog').asciz('\nwatchdog: no progress for 2 s; timer interrupts so far: ');

  a.label('trampoline').embed(trampoline.bytes);

  a.align(16);
  a.space(STACK_BYTES);                           // in the file, so loaders need not zero a BSS
  a.label('stack_top');

  const program = a.link();
  return { program, entryGpa: a.addressOf('entry') };
}

/** The default guest as a PVH ELF image: one segment at 1 MiB. */
export function buildDefaultGuest(): Uint8Array {
  const { program, entryGpa } = assembleDefaultGuest(HIGH_MEMORY_GPA);
  return buildPvhElf({ loadGpa: HIGH_MEMORY_GPA, segment: program, entryGpa });
}
