/*
 * lib.c: the CPL3 half of the test-guest runtime: IDT set-up, COM1 output, the debug-exit,
 * the PVH start_info and command line, the TSC, and the ACPI RSDP/XSDT/MADT lookup.
 *
 * Specs: PC16550D data sheet (UART registers), Xen start_info.h, ACPI 6.5 sections 5.2.5
 * (RSDP), 5.2.8 (XSDT), 5.2.12 (MADT), Intel SDM vol. 3A 6.14.1 (64-bit IDT gate descriptors).
 * Everything here also runs at CPL0 when guest_exception() reports a fault, so it uses
 * nothing but ports and memory.
 */
#include "guest.h"

/* ---- 16550 UART registers (offsets from COM1_PORT) and bits, named as in Linux serial_reg.h ---- */
#define UART_TX 0   /* THR, write */
#define UART_DLL 0  /* divisor latch low, with UART_LCR_DLAB */
#define UART_IER 1
#define UART_DLM 1
#define UART_IIR 2  /* read */
#define UART_FCR 2  /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LCR_DLAB 0x80
#define UART_LCR_WLEN8 0x03
#define UART_FCR_ENABLE_FIFO 0x01
#define UART_FCR_CLEAR_RCVR 0x02
#define UART_FCR_CLEAR_XMIT 0x04
#define UART_IIR_FIFO_ENABLED 0xc0 /* both bits set: 16550A FIFOs are on */
#define UART_MCR_DTR 0x01
#define UART_MCR_RTS 0x02
#define UART_LSR_THRE 0x20 /* transmit holding register (or, with FIFOs, the whole TX FIFO) empty */
#define UART_LSR_TEMT 0x40 /* transmitter idle */
#define UART_FIFO_DEPTH 16
/* Give up waiting for the UART after this many LSR reads (then write anyway): a missing UART
 * must not hang the guest silently forever. */
#define UART_POLL_LIMIT 1000000

static bool serial_ready;
static u32 serial_fifo_depth = 1;

static void serial_init(void) {
	outb(COM1_PORT + UART_IER, 0); /* polled: no UART interrupts */
	outb(COM1_PORT + UART_LCR, UART_LCR_DLAB);
	outb(COM1_PORT + UART_DLL, 1); /* 115200 baud */
	outb(COM1_PORT + UART_DLM, 0);
	outb(COM1_PORT + UART_LCR, UART_LCR_WLEN8); /* 8N1 */
	outb(COM1_PORT + UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
	outb(COM1_PORT + UART_MCR, UART_MCR_DTR | UART_MCR_RTS); /* no OUT2, no loopback */
	/* Like Linux's 8250 autoconfig: only a UART that reports enabled FIFOs gets bursts. */
	if ((inb(COM1_PORT + UART_IIR) & UART_IIR_FIFO_ENABLED) == UART_IIR_FIFO_ENABLED)
		serial_fifo_depth = UART_FIFO_DEPTH;
	serial_ready = true;
}

static void serial_wait_lsr(u8 bit) {
	for (u32 i = 0; i < UART_POLL_LIMIT; i++)
		if (inb(COM1_PORT + UART_LSR) & bit)
			return;
}

void serial_putc(char c) {
	if (!serial_ready)
		serial_init();
	serial_wait_lsr(UART_LSR_THRE);
	outb(COM1_PORT + UART_TX, (u8)c);
}

void serial_write_burst(const char *s, u64 len) {
	if (!serial_ready)
		serial_init();
	while (len > 0) {
		/* THRE with FIFOs on means the TX FIFO is empty: room for a whole FIFO's worth. */
		serial_wait_lsr(UART_LSR_THRE);
		u64 n = len < serial_fifo_depth ? len : serial_fifo_depth;
		for (u64 i = 0; i < n; i++)
			outb(COM1_PORT + UART_TX, (u8)s[i]);
		s += n;
		len -= n;
	}
}

void print(const char *s) {
	while (*s)
		serial_putc(*s++);
}

void print_dec(u64 v) {
	char buf[21];
	int i = sizeof(buf);
	buf[--i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	print(&buf[i]);
}

void print_hex(u64 v) {
	char buf[19];
	int i = sizeof(buf);
	buf[--i] = 0;
	do {
		buf[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	buf[--i] = 'x';
	buf[--i] = '0';
	print(&buf[i]);
}

/* ---- Ending the VM ---- */

void guest_exit(u32 status) {
	if (serial_ready)
		serial_wait_lsr(UART_LSR_TEMT);
	outl(DEBUG_EXIT_PORT, status);
	/* Still here: no debug-exit device. Halt rather than spin (a halted vCPU costs nothing). */
	cpl0_call(cpl0_halt_forever, 0, 0, 0, 0);
	for (;;)
		;
}

/* Called from entry.S exception_common (at CPL0) for any CPU exception. frame: vector, error
 * code, then the CPU's interrupt frame (RIP, CS, RFLAGS, RSP, SS). */
__attribute__((noreturn)) void guest_exception(const u64 *frame, u64 cr2) {
	static const char *const names[] = {"vector ", " error ", " rip ", " cs ", " rflags ", " rsp ", " ss "};
	print("guest exception: ");
	for (int i = 0; i < 7; i++) {
		print(names[i]);
		if (i == 0)
			print_dec(frame[i]);
		else
			print_hex(frame[i]);
	}
	print(" cr2 ");
	print_hex(cr2);
	print("\n");
	guest_exit(GUEST_EXIT_EXCEPTION);
}

/* ---- IDT ---- */

struct idt_gate {
	u16 offset_low;
	u16 selector;
	u8 ist;
	u8 type_attr;
	u16 offset_mid;
	u32 offset_high;
	u32 reserved;
};
_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate layout");
#define KERNEL_CS 0x08
#define IDT_GATE_PRESENT 0x80
#define IDT_TYPE_INTERRUPT_GATE 0x0e /* clears IF on entry */

extern struct idt_gate idt[256];
extern char exception_stubs[], irq_stubs[];
void irq_ignore(void);
void ud_entry(void);
#define X86_TRAP_UD 6

void idt_set_gate(u8 vector, void (*handler)(void), u8 dpl) {
	u64 off = (u64)handler;
	struct idt_gate *g = &idt[vector];
	g->offset_low = (u16)off;
	g->selector = KERNEL_CS;
	g->ist = 0;
	g->type_attr = (u8)(IDT_GATE_PRESENT | (dpl << 5) | IDT_TYPE_INTERRUPT_GATE);
	g->offset_mid = (u16)(off >> 16);
	g->offset_high = (u32)(off >> 32);
	g->reserved = 0;
}

/* Reached from entry.S user_entry, at CPL3, with .bss zeroed. The IDT was loaded (empty) at
 * CPL0; filling it here costs no emulated instructions. */
void guest_start(void) {
	for (int v = 0; v < 256; v++)
		idt_set_gate((u8)v, irq_ignore, 0);
	for (int v = 0; v < 32; v++)
		idt_set_gate((u8)v, (void (*)(void))(exception_stubs + 16 * v), 0);
	idt_set_gate(X86_TRAP_UD, ud_entry, 0); /* also the cpl0_call gate */
	for (int i = 0; i < IRQ_VECTOR_COUNT; i++)
		idt_set_gate((u8)(IRQ_VECTOR_BASE + i), (void (*)(void))(irq_stubs + 16 * i), 0);
	guest_exit((u32)guest_main());
}

/* ---- PVH start_info and the command line ---- */

const struct hvm_start_info *start_info(void) {
	if (pvh_start_info_gpa == 0)
		return NULL;
	const struct hvm_start_info *si = (const struct hvm_start_info *)(u64)pvh_start_info_gpa;
	return si->magic == XEN_HVM_START_MAGIC_VALUE ? si : NULL;
}

const char *cmdline(void) {
	const struct hvm_start_info *si = start_info();
	if (!si || si->cmdline_paddr == 0)
		return "";
	return (const char *)si->cmdline_paddr;
}

static bool parse_u64(const char *s, u64 *out) {
	u64 v = 0;
	int base = 10, digits = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (;; s++, digits++) {
		char c = *s;
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			break;
		v = v * (u64)base + (u64)d;
	}
	if (digits == 0 || (*s != 0 && *s != ' '))
		return false;
	*out = v;
	return true;
}

bool cmdline_u64(const char *key, u64 *out) {
	u64 klen = strlen(key);
	const char *p = cmdline();
	while (*p) {
		while (*p == ' ')
			p++;
		if (memcmp(p, key, klen) == 0 && p[klen] == '=')
			return parse_u64(p + klen + 1, out);
		while (*p && *p != ' ')
			p++;
	}
	return false;
}

u64 run_at_cpl(u64 default_cpl, cpl0_fn fn, u64 a, u64 b) {
	u64 cpl = default_cpl;
	cmdline_u64("cpl", &cpl);
	return cpl == 0 ? cpl0_call(fn, a, b, 0, 0) : fn(a, b, 0, 0);
}

/* ---- TSC ---- */

static u64 cached_tsc_khz;

u64 tsc_khz(void) {
	u32 a, b, c, d;
	if (cached_tsc_khz)
		return cached_tsc_khz;
	u64 khz = 0;
	/* KVM/VMware hypervisor leaf 0x40000010: EAX = TSC kHz (when the VMM offers it). */
	cpuid(0x40000000, 0, &a, &b, &c, &d);
	if (a >= 0x40000010 && a < 0x40010000) {
		cpuid(0x40000010, 0, &a, &b, &c, &d);
		khz = a;
	}
	cpuid(0, 0, &a, &b, &c, &d);
	u32 max_leaf = a;
	if (!khz && max_leaf >= 0x15) {
		cpuid(0x15, 0, &a, &b, &c, &d); /* TSC/crystal ratio EBX/EAX, crystal Hz in ECX */
		if (a && b && c)
			khz = (u64)c * b / a / 1000;
	}
	if (!khz && max_leaf >= 0x16) {
		cpuid(0x16, 0, &a, &b, &c, &d); /* base frequency, MHz */
		khz = (u64)(a & 0xffff) * 1000;
	}
	/* Unknown: assume a fast TSC, so delays come out too long rather than too short. */
	cached_tsc_khz = khz ? khz : 4000000;
	return cached_tsc_khz;
}

void delay_us(u64 us) {
	u64 end = rdtsc() + us * tsc_khz() / 1000;
	while (rdtsc() < end)
		cpu_relax();
}

/* ---- ACPI ---- */

struct acpi_rsdp {
	char signature[8]; /* "RSD PTR " */
	u8 checksum;       /* over the first 20 bytes */
	char oem_id[6];
	u8 revision;       /* 0: ACPI 1.0 (RSDT only); 2: has the XSDT fields */
	u32 rsdt_address;
	u32 length;
	u64 xsdt_address;
	u8 extended_checksum; /* over `length` bytes */
	u8 reserved[3];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");

#define ACPI_RSDP_V1_SIZE 20
#define BDA_EBDA_SEGMENT_GPA 0x40e
#define BIOS_ROM_SEARCH_GPA 0xe0000
#define BIOS_ROM_SEARCH_SIZE 0x20000

static bool acpi_checksum_ok(const void *p, u64 len) {
	u8 sum = 0;
	for (u64 i = 0; i < len; i++)
		sum = (u8)(sum + ((const u8 *)p)[i]);
	return sum == 0;
}

static u64 rsdp_scan(u64 start_gpa, u64 size) {
	/* ACPI 6.5 5.2.5.1: the RSDP is on a 16-byte boundary. */
	for (u64 gpa = start_gpa; gpa + ACPI_RSDP_V1_SIZE <= start_gpa + size; gpa += 16)
		if (memcmp((const void *)gpa, "RSD PTR ", 8) == 0 && acpi_checksum_ok((const void *)gpa, ACPI_RSDP_V1_SIZE))
			return gpa;
	return 0;
}

u64 acpi_find_rsdp(void) {
	const struct hvm_start_info *si = start_info();
	if (si && si->version >= 1 && si->rsdp_paddr)
		return si->rsdp_paddr;
	/* ACPI 6.5 5.2.5.1: first 1 KiB of the EBDA, then 0xE0000-0xFFFFF. */
	u64 ebda = (u64)*(volatile u16 *)BDA_EBDA_SEGMENT_GPA << 4;
	if (ebda >= 0x80000 && ebda < 0xa0000) {
		u64 gpa = rsdp_scan(ebda, 1024);
		if (gpa)
			return gpa;
	}
	return rsdp_scan(BIOS_ROM_SEARCH_GPA, BIOS_ROM_SEARCH_SIZE);
}

static const struct acpi_sdt_header *acpi_check_table(u64 gpa, const char signature[4]) {
	const struct acpi_sdt_header *h = (const struct acpi_sdt_header *)gpa;
	if (gpa == 0 || memcmp(h->signature, signature, 4) != 0)
		return NULL;
	if (!acpi_checksum_ok(h, h->length)) {
		print("acpi: table ");
		for (int i = 0; i < 4; i++)
			serial_putc(signature[i]);
		print(" at ");
		print_hex(gpa);
		print(" has a bad checksum\n");
		return NULL;
	}
	return h;
}

const struct acpi_sdt_header *acpi_find_table(const char signature[4]) {
	u64 rsdp_gpa = acpi_find_rsdp();
	if (!rsdp_gpa)
		return NULL;
	const struct acpi_rsdp *rsdp = (const struct acpi_rsdp *)rsdp_gpa;
	if (memcmp(rsdp->signature, "RSD PTR ", 8) != 0 || !acpi_checksum_ok(rsdp, ACPI_RSDP_V1_SIZE)) {
		print("acpi: no valid RSDP at ");
		print_hex(rsdp_gpa);
		print("\n");
		return NULL;
	}
	/* Prefer the XSDT (64-bit entries); ACPI 1.0 has only the RSDT (32-bit entries). */
	const struct acpi_sdt_header *root = NULL;
	u64 entry_size = 4;
	if (rsdp->revision >= 2 && rsdp->xsdt_address && acpi_checksum_ok(rsdp, rsdp->length)) {
		root = acpi_check_table(rsdp->xsdt_address, "XSDT");
		entry_size = 8;
	}
	if (!root) {
		root = acpi_check_table(rsdp->rsdt_address, "RSDT");
		entry_size = 4;
	}
	if (!root || root->length < sizeof(*root))
		return NULL;
	const u8 *entries = (const u8 *)root + sizeof(*root);
	u64 count = (root->length - sizeof(*root)) / entry_size;
	for (u64 i = 0; i < count; i++) {
		u64 gpa = 0;
		memcpy(&gpa, entries + i * entry_size, entry_size); /* XSDT entries are not 8-aligned */
		const struct acpi_sdt_header *h = acpi_check_table(gpa, signature);
		if (h)
			return h;
	}
	return NULL;
}

/* MADT interrupt controller structure types (ACPI 6.5 table 5.44). */
#define MADT_TYPE_LOCAL_APIC 0
#define MADT_TYPE_IO_APIC 1
#define MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE 2
#define MADT_TYPE_LOCAL_APIC_ADDRESS_OVERRIDE 5

static u32 rd32(const u8 *p) { u32 v; memcpy(&v, p, 4); return v; }
static u16 rd16(const u8 *p) { u16 v; memcpy(&v, p, 2); return v; }

bool acpi_read_madt(struct madt_info *out) {
	memset(out, 0, sizeof(*out));
	const struct acpi_sdt_header *h = acpi_find_table("APIC");
	if (!h)
		return false;
	const u8 *t = (const u8 *)h;
	out->lapic_gpa = rd32(t + 36); /* Local Interrupt Controller Address */
	out->flags = rd32(t + 40);
	for (u32 off = 44; off + 2 <= h->length;) {
		const u8 *e = t + off;
		u8 type = e[0], len = e[1];
		if (len < 2 || off + len > h->length)
			break;
		if (type == MADT_TYPE_LOCAL_APIC && len >= 8 && out->cpu_count < MADT_MAX_CPUS) {
			out->cpus[out->cpu_count].uid = e[2];
			out->cpus[out->cpu_count].apic_id = e[3];
			out->cpus[out->cpu_count].flags = rd32(e + 4);
			out->cpu_count++;
		} else if (type == MADT_TYPE_IO_APIC && len >= 12 && out->ioapic_count < MADT_MAX_IOAPICS) {
			out->ioapics[out->ioapic_count].id = e[2];
			out->ioapics[out->ioapic_count].gpa = rd32(e + 4);
			out->ioapics[out->ioapic_count].gsi_base = rd32(e + 8);
			out->ioapic_count++;
		} else if (type == MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE && len >= 10 &&
			   out->override_count < MADT_MAX_OVERRIDES) {
			out->overrides[out->override_count].bus = e[2];
			out->overrides[out->override_count].source = e[3];
			out->overrides[out->override_count].gsi = rd32(e + 4);
			out->overrides[out->override_count].flags = rd16(e + 8);
			out->override_count++;
		} else if (type == MADT_TYPE_LOCAL_APIC_ADDRESS_OVERRIDE && len >= 12) {
			memcpy(&out->lapic_gpa, e + 4, 8);
		}
		off += len;
	}
	return true;
}

/* ---- libc-alikes ---- */

void *memcpy(void *dst, const void *src, u64 n) {
	u8 *d = dst;
	const u8 *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, u64 n) {
	u8 *d = dst;
	while (n--)
		*d++ = (u8)c;
	return dst;
}

int memcmp(const void *a, const void *b, u64 n) {
	const u8 *x = a, *y = b;
	for (u64 i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

u64 strlen(const char *s) {
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}
