/*
 * virtio-checks.c: the device checks of the virtio test guests, the same over either transport
 * (included by virtio.c for virtio-mmio and virtio-pci.c for virtio-pci, after the transport's
 * header, which gives struct virtio_dev, virtio_init, vq_transfer, vq_kick, virtio_config_read*).
 * The including program defines rng_interrupt() (how an interrupt reaches the guest differs) and
 * guest_main(). What each check prints is in virtio.c's header comment.
 */
#define VIRTIO_MAX_DEVICES 8

static void rng_interrupt(const struct virtio_dev *d);

/* ---- virtio-blk (5.2) ---- */
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
/* 4 KiB-aligned ranges of 8 sectors, so a hole punched there frees whole file-system blocks. */
#define DISCARD_SECTOR 32
#define WRITE_ZEROES_SECTOR 40
#define UNMAP_SECTORS 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_ID_BYTES 20
#define SECTOR_BYTES 512
#define HOST_PATTERN_SECTOR 16
#define GUEST_PATTERN_SECTOR 8
#define GUEST_PATTERN_BYTES 1024
#define NO_STATUS 0xff

struct virtio_blk_outhdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

/* The payload of DISCARD and WRITE_ZEROES (5.2.6). */
struct virtio_blk_discard_write_zeroes {
	u64 sector;
	u32 num_sectors;
	u32 flags;
};

#define REQUEST_TIMEOUT_US 5000000 /* generous: the VMM's main thread answers, 2 shared cores */

static u32 errors;

static void error(const char *what) {
	print(what);
	print("\n");
	errors++;
}

static void print_prefix(const char *name, u32 k) {
	print(name);
	print_dec(k);
	print(": ");
}

/* ---- block ---- */

/* A queue per disk: a device keeps its rings until reset, so two must never share them. */
static struct vq blk_vqs[VIRTIO_MAX_DEVICES];
static struct vq *blk_vq;
static struct virtio_blk_outhdr blk_hdr;
static u8 blk_data[GUEST_PATTERN_BYTES] __attribute__((aligned(16)));
static u8 blk_status;

/* One request: header, optional data (device-writable for IN and GET_ID), status byte. */
static u8 blk_request(const struct virtio_dev *d, u32 type, u64 sector, u32 data_len) {
	blk_hdr.type = type;
	blk_hdr.reserved = 0;
	blk_hdr.sector = sector;
	blk_status = NO_STATUS;
	struct vq_buf bufs[3];
	u32 n = 0;
	bufs[n++] = (struct vq_buf){&blk_hdr, sizeof(blk_hdr), false};
	if (data_len)
		bufs[n++] = (struct vq_buf){blk_data, data_len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID};
	bufs[n++] = (struct vq_buf){&blk_status, 1, true};
	if (!vq_transfer(d, blk_vq, bufs, n, NULL, REQUEST_TIMEOUT_US))
		return NO_STATUS;
	return *(volatile u8 *)&blk_status;
}

static u8 host_pattern(u32 i) { return (u8)(i * 31 + 7); }
static u8 guest_pattern(u32 i) { return (u8)((i * 7) ^ 0xa5); }

static void exercise_block(struct virtio_dev *d, u32 k) {
	blk_vq = &blk_vqs[k];
	if (!virtio_init(d, FEATURE(VIRTIO_BLK_F_FLUSH) | FEATURE(VIRTIO_BLK_F_RO) | FEATURE(VIRTIO_BLK_F_DISCARD) | FEATURE(VIRTIO_BLK_F_WRITE_ZEROES), blk_vq, 1)) {
		errors++;
		return;
	}
	bool ro = (d->features & FEATURE(VIRTIO_BLK_F_RO)) != 0;
	bool flush = (d->features & FEATURE(VIRTIO_BLK_F_FLUSH)) != 0;
	bool discard = (d->features & FEATURE(VIRTIO_BLK_F_DISCARD)) != 0;
	bool write_zeroes = (d->features & FEATURE(VIRTIO_BLK_F_WRITE_ZEROES)) != 0;
	u64 capacity = virtio_config_read64(d, 0);
	print_prefix("blk", k);
	print("capacity ");
	print_dec(capacity);
	print(" sectors, ro ");
	print_dec(ro);
	print(", flush ");
	print_dec(flush);
	print("\n");
	if (capacity < HOST_PATTERN_SECTOR + 1) {
		error("blk: disk too small for the test (needs 17 sectors)");
		return;
	}

	memset(blk_data, 0, VIRTIO_BLK_ID_BYTES + 1);
	u8 s = blk_request(d, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES);
	print_prefix("blk", k);
	if (s == VIRTIO_BLK_S_OK) {
		print("id ");
		print((const char *)blk_data); /* NUL-padded, and blk_data[20] is 0 */
		print("\n");
	} else {
		print("get-id status ");
		print_dec(s);
		print("\n");
		errors++;
	}

	s = blk_request(d, VIRTIO_BLK_T_IN, HOST_PATTERN_SECTOR, SECTOR_BYTES);
	print_prefix("blk", k);
	if (s != VIRTIO_BLK_S_OK) {
		print("read sector 16 status ");
		print_dec(s);
		print("\n");
		errors++;
	} else {
		u32 bad = SECTOR_BYTES;
		for (u32 i = 0; i < SECTOR_BYTES && bad == SECTOR_BYTES; i++)
			if (blk_data[i] != host_pattern(i))
				bad = i;
		if (bad == SECTOR_BYTES) {
			print("host pattern at sector 16 ok\n");
		} else {
			print("host pattern at sector 16 mismatch at byte ");
			print_dec(bad);
			print(": ");
			print_hex(blk_data[bad]);
			print("\n");
			errors++;
		}
	}

	for (u32 i = 0; i < GUEST_PATTERN_BYTES; i++)
		blk_data[i] = guest_pattern(i);
	s = blk_request(d, VIRTIO_BLK_T_OUT, GUEST_PATTERN_SECTOR, GUEST_PATTERN_BYTES);
	print_prefix("blk", k);
	print("write sectors 8-9 status ");
	print_dec(s);
	print("\n");
	if (s != (ro ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK))
		error(ro ? "blk: a write to a read-only disk did not fail with IOERR" : "blk: write failed");

	if (!ro && s == VIRTIO_BLK_S_OK) {
		memset(blk_data, 0, GUEST_PATTERN_BYTES);
		s = blk_request(d, VIRTIO_BLK_T_IN, GUEST_PATTERN_SECTOR, GUEST_PATTERN_BYTES);
		bool same = s == VIRTIO_BLK_S_OK;
		for (u32 i = 0; i < GUEST_PATTERN_BYTES && same; i++)
			same = blk_data[i] == guest_pattern(i);
		print_prefix("blk", k);
		if (same) {
			print("readback ok\n");
		} else {
			print("readback wrong (status ");
			print_dec(s);
			print(")\n");
			errors++;
		}
	}

	if (discard && !ro) {
		/* What the blocks read as afterwards is the device's business (5.2.6.2); the host checks. */
		*(struct virtio_blk_discard_write_zeroes *)blk_data = (struct virtio_blk_discard_write_zeroes){DISCARD_SECTOR, UNMAP_SECTORS, 0};
		s = blk_request(d, VIRTIO_BLK_T_DISCARD, 0, sizeof(struct virtio_blk_discard_write_zeroes));
		print_prefix("blk", k);
		print("discard sectors 32-39 status ");
		print_dec(s);
		print("\n");
		if (s != VIRTIO_BLK_S_OK)
			errors++;
	}

	if (write_zeroes && !ro) {
		*(struct virtio_blk_discard_write_zeroes *)blk_data = (struct virtio_blk_discard_write_zeroes){WRITE_ZEROES_SECTOR, UNMAP_SECTORS, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP};
		s = blk_request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, sizeof(struct virtio_blk_discard_write_zeroes));
		print_prefix("blk", k);
		print("write-zeroes sectors 40-47 (unmap) status ");
		print_dec(s);
		if (s == VIRTIO_BLK_S_OK) {
			/* These must read as zeros (5.2.6.2), whatever the device did to get there. */
			memset(blk_data, 0xee, GUEST_PATTERN_BYTES);
			u32 nonzero = 0;
			for (u32 at = 0; at < UNMAP_SECTORS * SECTOR_BYTES; at += GUEST_PATTERN_BYTES) {
				if (blk_request(d, VIRTIO_BLK_T_IN, WRITE_ZEROES_SECTOR + at / SECTOR_BYTES, GUEST_PATTERN_BYTES) != VIRTIO_BLK_S_OK) {
					nonzero = GUEST_PATTERN_BYTES;
					break;
				}
				for (u32 i = 0; i < GUEST_PATTERN_BYTES; i++)
					nonzero += blk_data[i] != 0;
			}
			print(nonzero ? ", not zeros\n" : ", reads zeros\n");
			if (nonzero)
				errors++;
		} else {
			print("\n");
			errors++;
		}
	}

	if (flush) {
		s = blk_request(d, VIRTIO_BLK_T_FLUSH, 0, 0);
		print_prefix("blk", k);
		print("flush status ");
		print_dec(s);
		print("\n");
		if (s != VIRTIO_BLK_S_OK)
			errors++;
	}
}

/* ---- rng ---- */

static struct vq rng_vq;
static u8 rng_buf[2][64];

static bool rng_read(const struct virtio_dev *d, u8 *buf, u32 len) {
	struct vq_buf b = {buf, len, true};
	u32 got = 0;
	return vq_transfer(d, &rng_vq, &b, 1, &got, REQUEST_TIMEOUT_US) && got == len;
}

static bool constant(const u8 *b, u32 len) {
	for (u32 i = 1; i < len; i++)
		if (b[i] != b[0])
			return false;
	return true;
}

static void exercise_rng(struct virtio_dev *d) {
	if (!virtio_init(d, 0, &rng_vq, 1)) {
		errors++;
		return;
	}
	if (!rng_read(d, rng_buf[0], 64) || !rng_read(d, rng_buf[1], 64)) {
		error("rng: a request did not complete");
		return;
	}
	if (constant(rng_buf[0], 64) || constant(rng_buf[1], 64) || memcmp(rng_buf[0], rng_buf[1], 64) == 0)
		error("rng: bytes look constant");
	else
		print("rng: 128 bytes, varied\n");
	rng_interrupt(d);
}

/* ---- console (5.3, one port: receiveq 0, transmitq 1) ---- */

static struct vq con_vq[2];
static char con_rx[128];
static char con_tx[160];
static char con_line[128];

static bool con_send(const struct virtio_dev *d, const char *s, u32 len) {
	memcpy(con_tx, s, len);
	struct vq_buf b = {con_tx, len, false};
	return vq_transfer(d, &con_vq[1], &b, 1, NULL, REQUEST_TIMEOUT_US);
}

static void con_post_rx(const struct virtio_dev *d) {
	struct vq_buf b = {con_rx, sizeof(con_rx), true};
	vq_submit(&con_vq[0], &b, 1);
	vq_kick(d, &con_vq[0]);
}

static void exercise_console(struct virtio_dev *d) {
	if (!virtio_init(d, 0, con_vq, 2)) {
		errors++;
		return;
	}
	con_post_rx(d);
	static const char greeting[] = "hello from the virtio console\n";
	if (!con_send(d, greeting, sizeof(greeting) - 1)) {
		error("console: the greeting was not taken");
		return;
	}
	print("console: sent greeting\n");

	u64 wait_ms = 20000;
	cmdline_u64("console_wait_ms", &wait_ms);
	u64 end = rdtsc() + wait_ms * tsc_khz();
	u32 n = 0;
	bool line = false;
	while (!line && rdtsc() < end) {
		u32 got = 0;
		if (!vq_wait(&con_vq[0], &got, 1000))
			continue;
		for (u32 i = 0; i < got && i < sizeof(con_rx) && !line; i++) {
			if (con_rx[i] == '\n')
				line = true;
			else if (n < sizeof(con_line) - 1)
				con_line[n++] = con_rx[i];
		}
		con_post_rx(d);
	}
	con_line[n] = 0;
	if (!line) {
		print("console: no line from the host within ");
		print_dec(wait_ms);
		print(" ms\n");
		errors++;
		return;
	}
	print("console: received \"");
	print(con_line);
	print("\"\n");
	u32 len = 0;
	memcpy(con_tx + 0, "echo: ", 6);
	len = 6;
	memcpy(con_tx + len, con_line, n);
	len += n;
	con_tx[len++] = '\n';
	struct vq_buf b = {con_tx, len, false};
	if (!vq_transfer(d, &con_vq[1], &b, 1, NULL, REQUEST_TIMEOUT_US))
		error("console: the echo was not taken");
}

/* N 4 KiB reads, one in flight, from sectors 0, 8, 16, ... wrapping at the disk's end. */
static int bench_block(struct virtio_dev *d, u64 n) {
	blk_vq = &blk_vqs[0];
	if (!virtio_init(d, 0, blk_vq, 1))
		return 1;
	u64 sectors = virtio_config_read64(d, 0) / 8 * 8;
	if (sectors < 8) {
		print("bench: disk smaller than 4 KiB\n");
		return 1;
	}
	static u8 buf[4096] __attribute__((aligned(4096)));
	struct vq_buf bufs[3] = {{&blk_hdr, sizeof(blk_hdr), false}, {buf, sizeof(buf), true}, {&blk_status, 1, true}};
	blk_hdr.type = VIRTIO_BLK_T_IN;
	for (u64 i = 0; i < n; i++) {
		blk_hdr.sector = (i * 8) % sectors;
		blk_status = NO_STATUS;
		if (!vq_transfer(d, blk_vq, bufs, 3, NULL, REQUEST_TIMEOUT_US) || *(volatile u8 *)&blk_status != VIRTIO_BLK_S_OK) {
			print("bench: read ");
			print_dec(i);
			print(" failed\n");
			return 1;
		}
	}
	print("bench: ");
	print_dec(n);
	print(" block reads\n");
	return 0;
}

/* ---- net (5.1: receiveq 0, transmitq 1; no offloads, so the header carries nothing) ---- */
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define NET_HDR_BYTES 12 /* struct virtio_net_hdr_v1 */
#define NET_FRAME_MAX 1514

static struct vq net_vq[2];
static u8 net_rx[NET_HDR_BYTES + NET_FRAME_MAX];
static u8 net_tx[NET_HDR_BYTES + NET_FRAME_MAX];

static void net_post_rx(const struct virtio_dev *d) {
	struct vq_buf b = {net_rx, sizeof(net_rx), true};
	vq_submit(&net_vq[0], &b, 1);
	vq_kick(d, &net_vq[0]);
}

static bool net_send(const struct virtio_dev *d, u32 frame_len) {
	memset(net_tx, 0, NET_HDR_BYTES);
	struct vq_buf b = {net_tx, NET_HDR_BYTES + frame_len, false};
	return vq_transfer(d, &net_vq[1], &b, 1, NULL, REQUEST_TIMEOUT_US);
}

static void exercise_net(struct virtio_dev *d) {
	if (!virtio_init(d, FEATURE(VIRTIO_NET_F_MAC) | FEATURE(VIRTIO_NET_F_STATUS), net_vq, 2)) {
		errors++;
		return;
	}
	u32 w0 = virtio_config_read32(d, 0), w1 = virtio_config_read32(d, 4);
	u8 mac[6] = {(u8)w0, (u8)(w0 >> 8), (u8)(w0 >> 16), (u8)(w0 >> 24), (u8)w1, (u8)(w1 >> 8)};
	u32 status = w1 >> 16;
	print("net: mac ");
	for (u32 i = 0; i < 6; i++) {
		static const char hex[] = "0123456789abcdef";
		serial_putc(hex[mac[i] >> 4]);
		serial_putc(hex[mac[i] & 15]);
		if (i < 5)
			serial_putc(':');
	}
	print(status & 1 ? ", link up\n" : ", link down\n");
	net_post_rx(d);

	u8 *f = net_tx + NET_HDR_BYTES;
	memset(f, 0, 60);
	memset(f, 0xff, 6);
	memcpy(f + 6, mac, 6);
	f[12] = 0x88;
	f[13] = 0xb5;
	memcpy(f + 14, "tsvmm net hello", 15);
	if (!net_send(d, 60)) {
		error("net: the hello frame was not taken");
		return;
	}
	print("net: sent hello\n");

	u64 wait_ms = 20000;
	cmdline_u64("net_wait_ms", &wait_ms);
	u64 end = rdtsc() + wait_ms * tsc_khz();
	u32 got = 0;
	bool ours = false;
	while (!ours && rdtsc() < end) {
		if (!vq_wait(&net_vq[0], &got, 1000))
			continue;
		ours = got >= NET_HDR_BYTES + 14 && net_rx[NET_HDR_BYTES + 12] == 0x88 && net_rx[NET_HDR_BYTES + 13] == 0xb5;
		if (!ours)
			net_post_rx(d); /* something else on the link: wait for ours */
	}
	if (!ours) {
		print("net: no frame from the host within ");
		print_dec(wait_ms);
		print(" ms\n");
		errors++;
		return;
	}
	/* Bytes 0-9 (flags to csum_offset) must be zero without offloads; num_buffers should be 1
	 * (5.1.6.4.2; tsvmm sets it, QEMU 7.2 leaves 0), so it is printed, not checked. */
	static const u8 zero_hdr[NET_HDR_BYTES - 2];
	print("net: received ");
	print_dec(got - NET_HDR_BYTES);
	if (memcmp(net_rx, zero_hdr, NET_HDR_BYTES - 2) == 0) {
		print(" bytes, header ok, num_buffers ");
		print_dec(net_rx[10] | (u32)net_rx[11] << 8);
		print("\n");
	} else {
		print(" bytes, header not zero:");
		for (u32 i = 0; i < NET_HDR_BYTES; i++) {
			print(" ");
			print_hex(net_rx[i]);
		}
		print("\n");
		errors++;
	}
	u32 len = got - NET_HDR_BYTES;
	memcpy(f, net_rx + NET_HDR_BYTES + 6, 6); /* back to its source */
	memcpy(f + 6, mac, 6);
	memcpy(f + 12, net_rx + NET_HDR_BYTES + 12, len - 12);
	if (!net_send(d, len)) {
		error("net: the echo was not taken");
		return;
	}
	print("net: echoed\n");
}
