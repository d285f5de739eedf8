/*
 * virtio: drives every virtio-mmio device in tsvmm's fixed slots (common/virtio-mmio.c), at CPL3.
 *
 * Probes slots 0-7 and prints, for each device found,
 *   "slot S: DEVICE (id D) gsi G\n"                          DEVICE: net, block, console, rng, other
 * then exercises each (K counts block devices from 0, in slot order):
 *   block   "blkK: capacity C sectors, ro R, flush F\n"   (features: VERSION_1, and FLUSH, RO, DISCARD,
 *                                                          WRITE_ZEROES if offered)
 *           "blkK: id ID\n"                               (GET_ID)
 *           "blkK: host pattern at sector 16 ok\n"        (or "... mismatch at byte N: 0xNN")
 *               the host wrote byte i of sector 16 as (i * 31 + 7) & 0xff
 *           "blkK: write sectors 8-9 status S\n"          S = 0 (OK); on a ro disk S must be 1 (IOERR)
 *               bytes i = 0..1023 written as ((i * 7) ^ 0xa5) & 0xff
 *           "blkK: readback ok\n"                         (writable disks: sectors 8-9 read back)
 *           "blkK: discard sectors 32-39 status S\n"      (when DISCARD was negotiated; S = 0)
 *           "blkK: write-zeroes sectors 40-47 (unmap) status S, reads zeros\n"  (when WRITE_ZEROES
 *               was negotiated: the UNMAP flag set, then the 8 sectors read back as zeros)
 *           "blkK: flush status 0\n"                      (when FLUSH was negotiated)
 *   rng     "rng: 128 bytes, varied\n"                    (two 64-byte reads, neither constant, different)
 *           "rng: interrupt on gsi G, InterruptStatus 0x1\n"  (a third read waited for with `sti; hlt`,
 *               the IOAPIC pin programmed edge/active-high as the DSDT says, a LAPIC watchdog)
 *   console "console: sent greeting\n"  after sending "hello from the virtio console\n"
 *           "console: received \"LINE\"\n"  after a line from the host (within console_wait_ms=N,
 *               default 20000), then sends "echo: LINE\n" back
 *   net     "net: mac M, link up\n"      (VIRTIO_NET_F_MAC and STATUS negotiated, no offloads)
 *           "net: sent hello\n"          after a 60-byte broadcast frame from M, ethertype 0x88b5,
 *               payload "tsvmm net hello"
 *           "net: received N bytes, header ok, num_buffers B\n"  the first frame of ethertype 0x88b5
 *               from the host (within net_wait_ms=N, default 20000), header bytes 0-9 zero (no
 *               offloads); B should be 1 (tsvmm), QEMU 7.2 leaves 0;
 *               then sends it back with source and destination swapped: "net: echoed\n"
 * and finally "virtio: N devices, E errors\n". Exit status: E (0 when every check passed).
 *
 * Benchmark modes (bench/run.ts `block`) do only this instead, on the first block device; on any
 * failure they print "bench: ..." saying what and exit 1, else exit 0:
 *   bench_seq_mib=S [bench_req_kib=R] [bench_qd=Q] [bench_rand=N] [bench_seed=X]
 *       (either of bench_seq_mib, bench_rand starts it; defaults R=128, Q=8, N=0, X=1; S=0 skips)
 *       with one 128-entry queue and Q requests in flight (1 <= Q <= 42, Q * R <= 16 MiB), polled:
 *         seqwrite  S MiB from sector 0 in R KiB requests   (every 512-byte sector written starts
 *         seqread   the same S MiB, read back and checked    with its number ^ 0x6d6d767374000000)
 *         randwrite N 4 KiB writes at 4 KiB-aligned LCG offsets over the whole disk (same stamps)
 *         randread  N 4 KiB reads likewise (checked where this boot's seqwrite wrote)
 *       each "bench: NAME bytes=B reqs=N req_bytes=R qd=Q tsc=T khz=K\n" (T: TSC ticks for the
 *       phase; K: tsc_khz(), 4000000 when CPUID does not say), then
 *       "bench: done, read back checked up to sector E\n".
 *   bench_notify=N  (N <= 4096) N 4 KiB reads one at a time, each timed from just before its
 *       QueueNotify to when the host's device callback changes the u64 at guest-physical 0xf00000
 *       (bench/run.ts wraps tsvmm's device to do that; other VMMs time out), and to its used entry:
 *       "bench: notify n=N callback_tsc_median=A callback_tsc_p99=B roundtrip_tsc_median=C khz=K\n".
 *   bench_blk=N  N 4 KiB reads one at a time, untimed: "bench: N block reads\n".
 * The benchmark's data buffers are at 16..32 MiB.
 *
 * CPL0 work: only the interrupt wait (~20 emulated instructions); all polling is at CPL3.
 *
 * The same program built for QEMU microvm's virtio-mmio layout is `virtio-qemu` (virtio-qemu.c):
 *   qemu-system-x86_64 -M microvm,ioapic2=off -m 256M -nodefaults -no-user-config -nographic
 *   -serial stdio -global virtio-mmio.force-legacy=false -device isa-debug-exit,iobase=0xf4,iosize=4
 *   -drive id=d0,file=disk.img,format=raw,if=none -device virtio-blk-device,drive=d0
 *   -device virtio-rng-device -kernel .cache/guests/virtio-qemu.elf      (exits with status 2E+1)
 * (QEMU fills its transports from the last one down, so the devices show up in slots 7, 6, ...)
 */
#include "common/guest.h"
#include "common/virtio-mmio.h"

/* I/O APIC (82093AA data sheet) at its default address (tsvmm's MADT says the same). */
#define IOAPIC_IOREGSEL 0x00
#define IOAPIC_IOWIN 0x10
#define IOAPIC_REDTBL(n) (0x10 + 2 * (n))
#define IOAPIC_REDIR_MASKED (1u << 16)

#define VIRTIO_VECTOR (IRQ_VECTOR_BASE + 2)
#define WATCHDOG_VECTOR (IRQ_VECTOR_BASE + 3)
#define VIRTIO_SLOT_IRQ (VIRTIO_VECTOR - IRQ_VECTOR_BASE)
#define WATCHDOG_SLOT_IRQ (WATCHDOG_VECTOR - IRQ_VECTOR_BASE)
#define LAPIC_WATCHDOG_COUNT 500000000u /* ~0.5 s on KVM's 1 GHz APIC bus clock, divide by 1 */

#include "virtio-checks.c"

static u32 ioapic_read(u32 reg) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	return mmio_read32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN);
}

static void ioapic_write(u32 reg, u32 v) {
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOREGSEL, reg);
	mmio_write32(IOAPIC_DEFAULT_GPA + IOAPIC_IOWIN, v);
}

/* One rng request completed by interrupt: the irqfd path, end to end. */
static void rng_interrupt(const struct virtio_dev *d) {
	lapic_write(APIC_SPIV, APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR);
	lapic_write(APIC_TASKPRI, 0);
	lapic_write(APIC_TDCR, APIC_TDR_DIV_1);
	irq_eoi_mode[VIRTIO_SLOT_IRQ] = IRQ_EOI_LAPIC;
	irq_eoi_mode[WATCHDOG_SLOT_IRQ] = IRQ_EOI_LAPIC;
	u32 saved = ioapic_read(IOAPIC_REDTBL(d->gsi));
	/* Edge, active high, fixed delivery to this CPU: what the DSDT's Interrupt descriptor says. */
	ioapic_write(IOAPIC_REDTBL(d->gsi) + 1, (lapic_read(APIC_ID) >> 24) << 24);
	ioapic_write(IOAPIC_REDTBL(d->gsi), VIRTIO_VECTOR);
	virtio_ack_interrupt(d); /* start from a clean InterruptStatus */
	irq_count[VIRTIO_SLOT_IRQ] = 0;
	irq_count[WATCHDOG_SLOT_IRQ] = 0;

	rng_vq.avail.flags = 0; /* this time, interrupt when the buffer is used */
	struct vq_buf b = {rng_buf[0], 16, true};
	vq_submit(&rng_vq, &b, 1);
	vq_kick(d, &rng_vq);
	lapic_write(APIC_LVTT, WATCHDOG_VECTOR); /* one-shot */
	lapic_write(APIC_TMICT, LAPIC_WATCHDOG_COUNT);
	cpl0_call(cpl0_halt_until, (u64)&irq_count[VIRTIO_SLOT_IRQ], 1, (u64)&irq_count[WATCHDOG_SLOT_IRQ], 1);
	lapic_write(APIC_TMICT, 0);
	u64 interrupts = irq_count[VIRTIO_SLOT_IRQ];
	u32 status = virtio_ack_interrupt(d);
	bool used = vq_wait(&rng_vq, NULL, REQUEST_TIMEOUT_US);
	rng_vq.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	ioapic_write(IOAPIC_REDTBL(d->gsi), saved | IOAPIC_REDIR_MASKED);

	if (interrupts == 0) {
		print("rng: no interrupt on gsi ");
		print_dec(d->gsi);
		print(" within the watchdog\n");
		errors++;
		return;
	}
	print("rng: interrupt on gsi ");
	print_dec(d->gsi);
	print(", InterruptStatus ");
	print_hex(status);
	print("\n");
	if (!(status & VIRTIO_MMIO_INT_VRING) || !used)
		error("rng: the interrupt came without a used buffer");
}

/* ---- block throughput benchmark (bench_seq_mib / bench_rand): Q requests in flight ---- */

/* Request k of a phase owns descriptors 3s..3s+2 of slot s (header, data, status), fixed for the
 * whole run; only the avail entries, the headers and the data change. Q <= BENCH_MAX_QD. */
#define BENCH_QUEUE_SIZE 128
#define BENCH_MAX_QD (BENCH_QUEUE_SIZE / 3)
#define BENCH_BUF_GPA 0x1000000ul   /* 16 MiB: slot s's data at BENCH_BUF_GPA + s * request bytes */
#define BENCH_BUF_BYTES 0x1000000ul /* so Q * R <= 16 MiB (the guest needs 32 MiB of RAM) */
/* Each 512-byte sector written starts with its sector number ^ this ("tsvmm" in ASCII). */
#define BENCH_SECTOR_MAGIC 0x6d6d767374000000ul
#define BENCH_RAND_BYTES 4096

static struct {
	struct virtq_desc desc[BENCH_QUEUE_SIZE] __attribute__((aligned(16)));
	struct {
		u16 flags;
		u16 idx;
		u16 ring[BENCH_QUEUE_SIZE];
		u16 used_event;
	} avail __attribute__((aligned(16)));
	struct {
		u16 flags;
		u16 idx;
		struct virtq_used_elem ring[BENCH_QUEUE_SIZE];
		u16 avail_event;
	} used __attribute__((aligned(16)));
} bq __attribute__((aligned(4096)));
static struct virtio_blk_outhdr bench_hdr[BENCH_MAX_QD];
static u8 bench_status[BENCH_MAX_QD];
static u16 bench_last_used;
static u64 bench_capacity;      /* sectors */
static u64 bench_written_end;   /* sectors [0, this) hold the stamp pattern (this boot's seqwrite) */
static u64 lcg_state;

#define mfence() __asm__ volatile("mfence" ::: "memory")

/* Knuth's MMIX LCG; the high bits are the good ones. */
static u64 lcg_next(void) {
	lcg_state = lcg_state * 6364136223846793005ul + 1442695040888963407ul;
	return lcg_state >> 24;
}

static u8 *bench_buf(u32 slot, u32 bytes) { return (u8 *)(BENCH_BUF_GPA + (u64)slot * bytes); }

static bool bench_setup(struct virtio_dev *d, u32 qd) {
	/* FLUSH as Linux does: without it the cache must be writethrough (5.2.5), so QEMU syncs
	 * after every write. The benchmark never flushes: both VMMs write to the page cache. */
	if (!virtio_negotiate(d, FEATURE(VIRTIO_BLK_F_FLUSH)))
		return false;
	memset(&bq, 0, sizeof(bq));
	bq.avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT; /* polled */
	bench_last_used = 0;
	for (u32 s = 0; s < qd; s++) {
		struct virtq_desc *t = &bq.desc[3 * s];
		t[0] = (struct virtq_desc){(u64)&bench_hdr[s], sizeof(bench_hdr[s]), VIRTQ_DESC_F_NEXT, (u16)(3 * s + 1)};
		t[1] = (struct virtq_desc){0, 0, VIRTQ_DESC_F_NEXT, (u16)(3 * s + 2)}; /* address, length, direction per phase */
		t[2] = (struct virtq_desc){(u64)&bench_status[s], 1, VIRTQ_DESC_F_WRITE, 0};
	}
	if (!virtio_setup_ring(d, 0, BENCH_QUEUE_SIZE, bq.desc, &bq.avail, &bq.used))
		return false;
	if (!virtio_driver_ok(d))
		return false;
	bench_capacity = virtio_config_read64(d, 0);
	return true;
}

/* Puts slot s's request for `sector` on the avail ring (the caller kicks). Writes stamp every sector. */
static void bench_submit(u32 s, u32 type, u64 sector, u32 bytes) {
	u8 *buf = bench_buf(s, bytes);
	if (type == VIRTIO_BLK_T_OUT)
		for (u32 i = 0; i < bytes / SECTOR_BYTES; i++)
			*(u64 *)(buf + i * SECTOR_BYTES) = (sector + i) ^ BENCH_SECTOR_MAGIC;
	bench_hdr[s] = (struct virtio_blk_outhdr){type, 0, sector};
	bench_status[s] = NO_STATUS;
	struct virtq_desc *data = &bq.desc[3 * s + 1];
	data->addr = (u64)buf;
	data->len = bytes;
	data->flags = (u16)(VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0));
	volatile u16 *idx = &bq.avail.idx;
	bq.avail.ring[*idx % BENCH_QUEUE_SIZE] = (u16)(3 * s);
	__asm__ volatile("" ::: "memory"); /* the entry before the index (2.7.13.2) */
	*idx = (u16)(*idx + 1);
}

/* QueueNotify unless the device said it does not need one (2.7.13.3: a full barrier first, the
 * index store must be visible before the flags load). */
static void bench_kick(const struct virtio_dev *d) {
	mfence();
	if (!(*(volatile u16 *)&bq.used.flags & VIRTQ_USED_F_NO_NOTIFY))
		virtio_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

/* The sector stamps of a completed read, for sectors this boot wrote. */
static bool bench_check(u32 s, u64 sector, u32 bytes) {
	const u8 *buf = bench_buf(s, bytes);
	for (u32 i = 0; i < bytes / SECTOR_BYTES; i++) {
		if (sector + i >= bench_written_end)
			break;
		u64 got = *(const volatile u64 *)(buf + i * SECTOR_BYTES);
		if (got != ((sector + i) ^ BENCH_SECTOR_MAGIC)) {
			print("bench: read back sector ");
			print_dec(sector + i);
			print(": ");
			print_hex(got);
			print(", expected ");
			print_hex((sector + i) ^ BENCH_SECTOR_MAGIC);
			print("\n");
			return false;
		}
	}
	return true;
}

/*
 * One phase: `count` requests of `bytes`, sequential from sector 0 or 4 KiB-aligned random (LCG),
 * `qd` in flight. Prints "bench: NAME bytes=B reqs=N req_bytes=R qd=Q tsc=T khz=K".
 */
static bool bench_phase(const struct virtio_dev *d, const char *name, u32 type, bool random, u64 count, u32 bytes, u32 qd) {
	u64 step = bytes / SECTOR_BYTES;
	u64 units = bench_capacity / step; /* request-sized units on the disk */
	u64 next = 0, submitted = 0, completed = 0;
	volatile u16 *used_idx = &bq.used.idx;
	u64 t0 = rdtsc();
	for (u32 s = 0; s < qd && submitted < count; s++, submitted++)
		bench_submit(s, type, (random ? lcg_next() % units : next++) * step, bytes);
	bench_kick(d);
	u64 timeout_tsc = REQUEST_TIMEOUT_US * tsc_khz() / 1000, last = t0;
	while (completed < count) {
		u16 seen = *used_idx;
		if (seen == bench_last_used) {
			cpu_relax();
			if (rdtsc() - last > timeout_tsc) {
				print("bench: ");
				print(name);
				print(": no completion within the timeout after ");
				print_dec(completed);
				print(" requests\n");
				return false;
			}
			continue;
		}
		__asm__ volatile("" ::: "memory"); /* the index before the entries */
		bool more = false;
		for (; bench_last_used != seen; bench_last_used++) {
			u32 s = bq.used.ring[bench_last_used % BENCH_QUEUE_SIZE].id / 3;
			if (s >= qd || bench_status[s] != VIRTIO_BLK_S_OK) {
				print("bench: ");
				print(name);
				print(": request failed, status ");
				print_dec(s < qd ? bench_status[s] : NO_STATUS);
				print("\n");
				return false;
			}
			if (type == VIRTIO_BLK_T_IN && !bench_check(s, bench_hdr[s].sector, bytes))
				return false;
			completed++;
			if (submitted < count) {
				bench_submit(s, type, (random ? lcg_next() % units : next++) * step, bytes);
				submitted++;
				more = true;
			}
		}
		if (more)
			bench_kick(d);
		last = rdtsc();
	}
	u64 tsc = rdtsc() - t0;
	if (type == VIRTIO_BLK_T_OUT && !random && count * step > bench_written_end)
		bench_written_end = count * step;
	print("bench: ");
	print(name);
	print(" bytes=");
	print_dec(count * bytes);
	print(" reqs=");
	print_dec(count);
	print(" req_bytes=");
	print_dec(bytes);
	print(" qd=");
	print_dec(qd);
	print(" tsc=");
	print_dec(tsc);
	print(" khz=");
	print_dec(tsc_khz());
	print("\n");
	return true;
}

/* bench_seq_mib=S bench_req_kib=R bench_rand=N bench_qd=Q bench_seed=X: see the header. */
static int bench_throughput(struct virtio_dev *d) {
	u64 mib = 0, req_kib = 128, rand = 0, qd = 8, seed = 1;
	cmdline_u64("bench_seq_mib", &mib);
	cmdline_u64("bench_req_kib", &req_kib);
	cmdline_u64("bench_rand", &rand);
	cmdline_u64("bench_qd", &qd);
	cmdline_u64("bench_seed", &seed);
	u64 bytes = req_kib * 1024;
	if (qd < 1 || qd > BENCH_MAX_QD || req_kib < 1 || qd * bytes > BENCH_BUF_BYTES || qd * BENCH_RAND_BYTES > BENCH_BUF_BYTES) {
		print("bench: need 1 <= bench_qd <= 42 and bench_qd * bench_req_kib <= 16384\n");
		return 1;
	}
	if (!bench_setup(d, (u32)qd))
		return 1;
	if (mib * 2048 > bench_capacity || (mib * 1024) % req_kib != 0 || bench_capacity < 8) {
		print("bench: bench_seq_mib must fit the disk (");
		print_dec(bench_capacity / 2048);
		print(" MiB) and be a multiple of bench_req_kib\n");
		return 1;
	}
	lcg_state = seed;
	u64 seq = mib * 1024 / req_kib;
	if (seq && !bench_phase(d, "seqwrite", VIRTIO_BLK_T_OUT, false, seq, (u32)bytes, (u32)qd))
		return 1;
	if (seq && !bench_phase(d, "seqread", VIRTIO_BLK_T_IN, false, seq, (u32)bytes, (u32)qd))
		return 1;
	if (rand && !bench_phase(d, "randwrite", VIRTIO_BLK_T_OUT, true, rand, BENCH_RAND_BYTES, (u32)qd))
		return 1;
	if (rand && !bench_phase(d, "randread", VIRTIO_BLK_T_IN, true, rand, BENCH_RAND_BYTES, (u32)qd))
		return 1;
	print("bench: done, read back checked up to sector ");
	print_dec(bench_written_end);
	print("\n");
	return 0;
}

/*
 * bench_notify=N: N 4 KiB reads one at a time, each timed from just before its QueueNotify to
 * the moment the host's device callback writes a new value into the u64 at BENCH_STAMP_GPA
 * (bench/run.ts wraps tsvmm's device to do that), then to its used entry. Prints
 * "bench: notify n=N callback_tsc_median=A callback_tsc_p99=B roundtrip_tsc_median=C khz=K".
 */
#define BENCH_STAMP_GPA 0xf00000ul
#define BENCH_NOTIFY_MAX 4096
static u64 notify_tsc[BENCH_NOTIFY_MAX], roundtrip_tsc[BENCH_NOTIFY_MAX];

static void sort_u64(u64 *a, u64 n) { /* insertion sort: n <= 4096 at CPL3 */
	for (u64 i = 1; i < n; i++) {
		u64 v = a[i], j = i;
		for (; j > 0 && a[j - 1] > v; j--)
			a[j] = a[j - 1];
		a[j] = v;
	}
}

static int bench_notify(struct virtio_dev *d, u64 n) {
	if (n < 1 || n > BENCH_NOTIFY_MAX) {
		print("bench: need 1 <= bench_notify <= 4096\n");
		return 1;
	}
	if (!bench_setup(d, 1))
		return 1;
	if (bench_capacity < 8) {
		print("bench: disk smaller than 4 KiB\n");
		return 1;
	}
	volatile u64 *stamp = (volatile u64 *)BENCH_STAMP_GPA;
	u64 timeout_tsc = REQUEST_TIMEOUT_US * tsc_khz() / 1000;
	for (u64 i = 0; i < n; i++) {
		u64 before = *stamp;
		bench_submit(0, VIRTIO_BLK_T_IN, (i * 8) % (bench_capacity / 8 * 8), BENCH_RAND_BYTES);
		mfence();
		u64 t0 = rdtsc();
		virtio_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0); /* always: this is what is timed */
		while (*stamp == before && rdtsc() - t0 < timeout_tsc)
			cpu_relax();
		u64 t1 = rdtsc();
		if (*stamp == before) {
			print("bench: notify: no stamp at 0xf00000 from the host (only tsvmm under bench/run.ts writes one)\n");
			return 1;
		}
		while (*(volatile u16 *)&bq.used.idx == bench_last_used)
			if (rdtsc() - t0 > timeout_tsc) {
				print("bench: notify: request did not complete\n");
				return 1;
			}
		u64 t2 = rdtsc();
		bench_last_used++;
		if (bench_status[0] != VIRTIO_BLK_S_OK) {
			print("bench: notify: request failed\n");
			return 1;
		}
		notify_tsc[i] = t1 - t0;
		roundtrip_tsc[i] = t2 - t0;
	}
	sort_u64(notify_tsc, n);
	sort_u64(roundtrip_tsc, n);
	print("bench: notify n=");
	print_dec(n);
	print(" callback_tsc_median=");
	print_dec(notify_tsc[n / 2]);
	print(" callback_tsc_p99=");
	print_dec(notify_tsc[n * 99 / 100]);
	print(" roundtrip_tsc_median=");
	print_dec(roundtrip_tsc[n / 2]);
	print(" khz=");
	print_dec(tsc_khz());
	print("\n");
	return 0;
}

static struct virtio_dev *first_block(struct virtio_dev *devs, u32 count) {
	for (u32 i = 0; i < count; i++)
		if (devs[i].device_id == VIRTIO_ID_BLOCK)
			return &devs[i];
	print("bench: no block device\n");
	return NULL;
}

int guest_main(void) {
	struct virtio_dev devs[VIRTIO_MMIO_SLOTS];
	u32 count = 0;
	for (u32 slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++) {
		struct virtio_dev *d = &devs[count];
		if (!virtio_probe(virtio_slot_gpa(slot), virtio_slot_gsi(slot), slot, d))
			continue;
		print("slot ");
		print_dec(slot);
		print(": ");
		print(virtio_device_name(d->device_id));
		print(" (id ");
		print_dec(d->device_id);
		print(") gsi ");
		print_dec(d->gsi);
		print("\n");
		count++;
	}
	u64 bench_n;
	bool seq = cmdline_u64("bench_seq_mib", &bench_n), rand = cmdline_u64("bench_rand", &bench_n);
	if (seq || rand || cmdline_u64("bench_notify", &bench_n) || cmdline_u64("bench_blk", &bench_n)) {
		struct virtio_dev *blk = first_block(devs, count);
		if (!blk)
			return 1;
		if (seq || rand)
			return bench_throughput(blk);
		if (cmdline_u64("bench_notify", &bench_n))
			return bench_notify(blk, bench_n);
		return bench_block(blk, bench_n);
	}
	u32 blocks = 0;
	for (u32 i = 0; i < count; i++) {
		struct virtio_dev *d = &devs[i];
		if (d->device_id == VIRTIO_ID_BLOCK)
			exercise_block(d, blocks++);
		else if (d->device_id == VIRTIO_ID_RNG)
			exercise_rng(d);
		else if (d->device_id == VIRTIO_ID_CONSOLE)
			exercise_console(d);
		else if (d->device_id == VIRTIO_ID_NET)
			exercise_net(d);
	}
	print("virtio: ");
	print_dec(count);
	print(" devices, ");
	print_dec(errors);
	print(" errors\n");
	return (int)errors;
}
