/*
 * virtio-mmio.c: the test guests' virtio-mmio driver (see virtio-mmio.h). Initialisation follows
 * VIRTIO 1.2 3.1.1 in the order Linux's drivers/virtio/virtio_mmio.c uses; the ring follows 2.7
 * (descriptors, then the avail entry, then avail->idx; the used ring polled).
 * x86 keeps stores in order and loads in order, so compiler barriers are all the ordering needed.
 */
#include "virtio-mmio.h"

#define barrier() __asm__ volatile("" ::: "memory")

bool virtio_probe(u64 base_gpa, u32 gsi, u32 slot, struct virtio_dev *d) {
	d->slot = slot;
	d->base = base_gpa;
	d->gsi = gsi;
	if (virtio_read(d, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC)
		return false; /* empty slot: all-ones (or 0 on other VMMs) */
	u32 version = virtio_read(d, VIRTIO_MMIO_VERSION);
	if (version != 2) {
		print("virtio: slot ");
		print_dec(slot);
		print(" has version ");
		print_dec(version);
		print(", not 2 (modern); skipped\n");
		return false;
	}
	d->device_id = virtio_read(d, VIRTIO_MMIO_DEVICE_ID);
	return d->device_id != 0; /* 0: a placeholder transport with no device */
}

static void fail(const struct virtio_dev *d, const char *why) {
	print("virtio: slot ");
	print_dec(d->slot);
	print(": ");
	print(why);
	print("\n");
	virtio_write(d, VIRTIO_MMIO_STATUS, virtio_read(d, VIRTIO_MMIO_STATUS) | VIRTIO_CONFIG_S_FAILED);
}

static void setup_queue(const struct virtio_dev *d, struct vq *q, u16 index) {
	memset(q, 0, sizeof(*q));
	q->index = index;
	q->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
	virtio_write(d, VIRTIO_MMIO_QUEUE_SEL, index);
	virtio_write(d, VIRTIO_MMIO_QUEUE_NUM, VQ_SIZE);
	u64 desc = (u64)q->desc, avail = (u64)&q->avail, used = (u64)&q->used;
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)desc);
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)(desc >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)avail);
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (u32)(avail >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)used);
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (u32)(used >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
}

bool virtio_init(struct virtio_dev *d, u64 wanted, struct vq *queues, u32 nq) {
	virtio_write(d, VIRTIO_MMIO_STATUS, 0); /* reset */
	virtio_write(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_write(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	u64 offered = (u64)virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	offered |= virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	d->device_features = offered;
	if (!(offered & FEATURE(VIRTIO_F_VERSION_1))) {
		fail(d, "device does not offer VIRTIO_F_VERSION_1");
		return false;
	}
	d->features = offered & (wanted | FEATURE(VIRTIO_F_VERSION_1));
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)(d->features >> 32));
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)d->features);
	u32 status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
	virtio_write(d, VIRTIO_MMIO_STATUS, status);
	if (!(virtio_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK)) {
		fail(d, "device refused FEATURES_OK");
		return false;
	}
	for (u32 i = 0; i < nq; i++) {
		virtio_write(d, VIRTIO_MMIO_QUEUE_SEL, i);
		u32 max = virtio_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
		if (max < VQ_SIZE) {
			fail(d, "a queue is missing or smaller than VQ_SIZE");
			return false;
		}
		setup_queue(d, &queues[i], (u16)i);
	}
	virtio_write(d, VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
	if (virtio_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET) {
		fail(d, "device needs reset right after DRIVER_OK");
		return false;
	}
	return true;
}

void vq_submit(struct vq *q, const struct vq_buf *bufs, u32 n) {
	for (u32 i = 0; i < n; i++) {
		q->desc[i].addr = (u64)bufs[i].addr;
		q->desc[i].len = bufs[i].len;
		q->desc[i].flags = (u16)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		q->desc[i].next = (u16)(i + 1 < n ? i + 1 : 0);
	}
	volatile struct virtq_avail *avail = &q->avail;
	avail->ring[avail->idx % VQ_SIZE] = 0; /* head: descriptor 0 */
	barrier(); /* the entry before the index (2.7.13.2) */
	avail->idx = (u16)(avail->idx + 1);
	barrier(); /* the index before the notify */
}

bool vq_wait(struct vq *q, u32 *len, u64 timeout_us) {
	volatile struct virtq_used *used = &q->used;
	u64 end = rdtsc() + timeout_us * tsc_khz() / 1000;
	while (used->idx == q->last_used) {
		if (rdtsc() > end)
			return false;
		cpu_relax();
	}
	barrier(); /* the index before the entry */
	if (len)
		*len = used->ring[q->last_used % VQ_SIZE].len;
	q->last_used = (u16)(q->last_used + 1);
	return true;
}

bool vq_transfer(const struct virtio_dev *d, struct vq *q, const struct vq_buf *bufs, u32 n, u32 *len, u64 timeout_us) {
	vq_submit(q, bufs, n);
	vq_kick(d, q);
	return vq_wait(q, len, timeout_us);
}

u32 virtio_ack_interrupt(const struct virtio_dev *d) {
	u32 pending = virtio_read(d, VIRTIO_MMIO_INTERRUPT_STATUS);
	if (pending)
		virtio_write(d, VIRTIO_MMIO_INTERRUPT_ACK, pending);
	return pending;
}

u32 virtio_config_read32(const struct virtio_dev *d, u32 offset) {
	return virtio_read(d, VIRTIO_MMIO_CONFIG + offset);
}

u64 virtio_config_read64(const struct virtio_dev *d, u32 offset) {
	/* Two 32-bit halves; a real driver would check ConfigGeneration around them (4.2.3.4). */
	return (u64)virtio_config_read32(d, offset + 4) << 32 | virtio_config_read32(d, offset);
}

const char *virtio_device_name(u32 device_id) {
	switch (device_id) {
	case VIRTIO_ID_NET: return "net";
	case VIRTIO_ID_BLOCK: return "block";
	case VIRTIO_ID_CONSOLE: return "console";
	case VIRTIO_ID_RNG: return "rng";
	default: return "other";
	}
}
