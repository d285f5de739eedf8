/*
 * guest.h: the runtime shared by every tsvmm test guest (see entry.S and lib.c).
 *
 * Guests are freestanding x86-64 ELF images with a PVH entry note. entry.S switches to
 * 64-bit long mode and drops to CPL3 before any C runs, because on the test hosts CPL0 code
 * is emulated ~1000x slower than CPL3 code (see shared/guide/HOST.md). So guest_main() runs
 * at CPL3; it can still do port I/O (IOPL=3, and an all-zero TSS I/O bitmap, which is what
 * this host honours) and MMIO (every page of the first 4 GiB is identity mapped with the U bit). Work that needs CPL0 (hlt, lidt,
 * ...) goes through cpl0_call(), which enters CPL0 through a `ud2` that the #UD handler
 * recognises (the only way in that works on both ordinary KVM and this host; see entry.S).
 *
 * Specs: Xen PVH (xen/include/public/arch-x86/hvm/start_info.h), ACPI 6.5 chapter 5
 * (RSDP, XSDT, MADT), Intel SDM vol. 3 (IDT, TSS, APIC), PC16550D data sheet (UART).
 */
#ifndef TSVMM_GUEST_H
#define TSVMM_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef int bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* ---- Platform (must agree with src/boot/layout.ts) ---- */
#define COM1_PORT 0x3f8
#define DEBUG_EXIT_PORT 0xf4 /* 32-bit write of N ends the VM with status N (QEMU: 2N+1) */
#define POST_PORT 0x80
#define I8042_DATA_PORT 0x60
#define I8042_COMMAND_PORT 0x64
#define LAPIC_DEFAULT_GPA 0xfee00000u
#define IOAPIC_DEFAULT_GPA 0xfec00000u

/* Exit status used when a guest takes an unexpected CPU exception (see guest_exception). */
#define GUEST_EXIT_EXCEPTION 0x7f

/* ---- IDT vectors this runtime uses ---- */
#define IRQ_VECTOR_BASE 0x20   /* vectors 0x20..0x2f count interrupts in irq_count[] */
#define IRQ_VECTOR_COUNT 16
#define SPURIOUS_VECTOR 0xff   /* LAPIC spurious vector: no EOI */

/* Base of the local APIC (LAPIC_DEFAULT_GPA unless a guest sets it from the MADT); also where
 * entry.S's interrupt stubs write APIC_EOI. */
extern volatile u64 lapic_gpa;

/* ---- Local APIC registers (offsets from lapic_gpa; names as in Linux apicdef.h, SDM vol. 3A ch. 11) ---- */
#define APIC_ID 0x20 /* bits 31:24 */
#define APIC_TASKPRI 0x80
#define APIC_EOI 0xb0
#define APIC_SPIV 0xf0
#define APIC_SPIV_APIC_ENABLED 0x100
#define APIC_ICR 0x300  /* low half; writing it sends the IPI */
#define APIC_ICR2 0x310 /* destination in bits 31:24 */
#define APIC_ICR_BUSY 0x1000 /* delivery status: send pending */
#define APIC_INT_ASSERT 0x4000
#define APIC_DM_INIT 0x500
#define APIC_DM_STARTUP 0x600
#define APIC_LVTT 0x320
#define APIC_LVT_MASKED 0x10000
#define APIC_LVT_TIMER_PERIODIC 0x20000
#define APIC_TMICT 0x380
#define APIC_TDCR 0x3e0
#define APIC_TDR_DIV_1 0xb

/* ---- Port I/O and MMIO ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u64 gpa) { return *(volatile u32 *)gpa; }
static inline void mmio_write32(u64 gpa, u32 v) { *(volatile u32 *)gpa = v; }
static inline u32 lapic_read(u32 reg) { return mmio_read32(lapic_gpa + reg); }
static inline void lapic_write(u32 reg, u32 v) { mmio_write32(lapic_gpa + reg, v); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline u64 rdtsc(void) {
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static inline void cpuid(u32 leaf, u32 subleaf, u32 *a, u32 *b, u32 *c, u32 *d) {
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(subleaf));
}

/* ---- CPL0 calls (entry.S) ---- */
typedef u64 (*cpl0_fn)(u64, u64, u64, u64);
/* Runs fn(a, b, c, d) at CPL0 with interrupts off and returns its result (entry.S). Also works
 * at CPL0 (the #UD is then taken without a privilege change; this host's emulator delivers it). */
u64 cpl0_call(cpl0_fn fn, u64 a, u64 b, u64 c, u64 d);
/* CPL0 helpers in entry.S (call them through cpl0_call). */
u64 cpl0_halt_forever(u64, u64, u64, u64);
/* sti; hlt until *count >= target or *watch >= watch_target (both read with interrupts off). */
u64 cpl0_halt_until(u64 count_ptr, u64 target, u64 watch_ptr, u64 watch_target);

/* Interrupt counters for vectors IRQ_VECTOR_BASE.. (entry.S increments them). */
extern volatile u64 irq_count[IRQ_VECTOR_COUNT];
/* How each counted vector is acknowledged: IRQ_EOI_LAPIC (default) or IRQ_EOI_PIC. */
#define IRQ_EOI_LAPIC 0
#define IRQ_EOI_PIC 1
#define IRQ_EOI_NONE 2
extern volatile u8 irq_eoi_mode[IRQ_VECTOR_COUNT];

/* ---- PVH start_info (Xen public/arch-x86/hvm/start_info.h) ---- */
#define XEN_HVM_START_MAGIC_VALUE 0x336ec578u
struct hvm_start_info {
	u32 magic;          /*  0 */
	u32 version;        /*  4 */
	u32 flags;          /*  8 */
	u32 nr_modules;     /* 12 */
	u64 modlist_paddr;  /* 16 */
	u64 cmdline_paddr;  /* 24 */
	u64 rsdp_paddr;     /* 32, version >= 1 */
	u64 memmap_paddr;   /* 40, version >= 1 (struct hvm_memmap_table_entry: addr, size, type, reserved) */
	u32 memmap_entries; /* 48, version >= 1 */
	u32 reserved;       /* 52 */
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
/* EBX at the PVH entry (saved by entry.S). */
extern u32 pvh_start_info_gpa;
/* The start_info, or NULL if EBX was 0 or the magic is wrong. */
const struct hvm_start_info *start_info(void);
/* The kernel command line, or "" if none. */
const char *cmdline(void);
/* Finds `key=VALUE` (decimal or 0x hex) among the space-separated words of the command line. */
bool cmdline_u64(const char *key, u64 *out);

/* Runs fn(a, b, 0, 0) at CPL0 or CPL3: `cpl=0` or `cpl=3` on the command line, else default_cpl.
 * For loops dominated by port I/O exits, which on this host cost ~27 us from CPL3 (kvm_pvm's
 * #GP + I/O bitmap path) but ~8 us from emulated CPL0 (QEMU, measured in one run); on ordinary
 * KVM the two are the same. */
u64 run_at_cpl(u64 default_cpl, cpl0_fn fn, u64 a, u64 b);

/* ---- Serial (COM1, 16550) ---- */
void serial_putc(char c);
void print(const char *s);
void print_dec(u64 v);
void print_hex(u64 v); /* 0x-prefixed, no padding */
/* Fast path for bulk output: after one UART_LSR_THRE poll, writes up to the FIFO depth. */
void serial_write_burst(const char *s, u64 len);

/* ---- Ending the VM ---- */
/* Writes status to the debug-exit port; if that returns (no such device), halts forever. */
__attribute__((noreturn)) void guest_exit(u32 status);
/* The guest's program, run at CPL3; its return value is the exit status. */
int guest_main(void);

/* ---- Time (TSC) ---- */
u64 tsc_khz(void); /* best guess from CPUID; 4 GHz when CPUID does not say */
void delay_us(u64 us);

/* ---- ACPI (ACPI 6.5 chapter 5) ---- */
struct acpi_sdt_header {
	char signature[4];
	u32 length;
	u8 revision;
	u8 checksum;
	char oem_id[6];
	char oem_table_id[8];
	u32 oem_revision;
	u32 creator_id;
	u32 creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_sdt_header) == 36, "ACPI table header layout");
/* Physical address of the RSDP: start_info rsdp_paddr, else the EBDA and 0xE0000-0xFFFFF scans. 0 if none. */
u64 acpi_find_rsdp(void);
/* The table with this signature from the XSDT (or RSDT), checksum verified; NULL if none. */
const struct acpi_sdt_header *acpi_find_table(const char signature[4]);

#define MADT_MAX_CPUS 256
#define MADT_MAX_IOAPICS 8
#define MADT_MAX_OVERRIDES 16
/* MADT flags: PCAT_COMPAT means a dual 8259 is present too. */
#define MADT_PCAT_COMPAT 1u
/* Processor Local APIC flags. */
#define MADT_LAPIC_ENABLED 1u
#define MADT_LAPIC_ONLINE_CAPABLE 2u
/* MPS INTI flags (polarity bits 1:0, trigger mode bits 3:2). */
#define MPS_INTI_POLARITY_MASK 0x3u
#define MPS_INTI_POLARITY_ACTIVE_LOW 0x3u
#define MPS_INTI_TRIGGER_MASK 0xcu
#define MPS_INTI_TRIGGER_LEVEL 0xcu

struct madt_info {
	u64 lapic_gpa;
	u32 flags;
	u32 cpu_count;
	struct { u8 apic_id; u8 uid; u32 flags; } cpus[MADT_MAX_CPUS];
	u32 ioapic_count;
	struct { u8 id; u32 gpa; u32 gsi_base; } ioapics[MADT_MAX_IOAPICS];
	u32 override_count;
	struct { u8 bus; u8 source; u32 gsi; u16 flags; } overrides[MADT_MAX_OVERRIDES];
};
/* Parses the MADT ("APIC"); false if there is none. */
bool acpi_read_madt(struct madt_info *out);

/* ---- Other CPUs (smp.c, ap64.S) ---- */
/* Starts the MADT's other enabled CPUs one by one (at most max), each running fn(index) at CPL3
 * in 64-bit mode on its own stacks, index 1, 2, ... in start order (the BSP is 0). fn must not
 * return. Returns how many started. Uses guest-physical 0x9000 (trampoline) and 4..8 MiB. */
u32 smp_start_aps(void (*fn)(u32 index), u32 max);

/* ---- IDT (entry.S owns the table; these fill entries) ---- */
/* Points vector at handler with the given DPL (interrupt gate, kernel CS). */
void idt_set_gate(u8 vector, void (*handler)(void), u8 dpl);
/* Loads an IDT with limit 0 (every vector then faults); used by bad-insn. */
u64 cpl0_load_empty_idt(u64, u64, u64, u64);

/* ---- Small libc-alikes (gcc may emit calls to these) ---- */
void *memcpy(void *dst, const void *src, u64 n);
void *memset(void *dst, int c, u64 n);
int memcmp(const void *a, const void *b, u64 n);
u64 strlen(const char *s);

#endif
