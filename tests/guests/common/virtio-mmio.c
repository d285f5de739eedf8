/*
 * virtio-mmio.c: the test guests' virtio-mmio driver (see virtio-mmio.h). Initialisation follows
 * VIRTIO 1.2 3.1.1 in the order Linux's drivers/virtio/virtio_mmio.c uses; the ring follows 2.7
 * (descriptors, then the avail entry, then avail->idx; the used ring polled).
 * x86 keeps stores in order and loads in order, so compiler barriers are all the ordering needed.
 */
#include "virtio-mmio.h"

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

bool virtio_setup_ring(const struct virtio_dev *d, u16 index, u16 size, void *desc, void *avail, void *used) {
	virtio_write(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (virtio_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX) < size) {
		fail(d, "a queue is missing or smaller than asked for");
		return false;
	}
	virtio_write(d, VIRTIO_MMIO_QUEUE_NUM, size);
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)(u64)desc);
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)((u64)desc >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)(u64)avail);
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (u32)((u64)avail >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)(u64)used);
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (u32)((u64)used >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return true;
}

bool virtio_negotiate(struct virtio_dev *d, u64 wanted) {
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
	virtio_write(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
	if (!(virtio_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK)) {
		fail(d, "device refused FEATURES_OK");
		return false;
	}
	return true;
}

bool virtio_driver_ok(const struct virtio_dev *d) {
	virtio_write(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
	if (virtio_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET) {
		fail(d, "device needs reset right after DRIVER_OK");
		return false;
	}
	return true;
}

bool virtio_init(struct virtio_dev *d, u64 wanted, struct vq *queues, u32 nq) {
	if (!virtio_negotiate(d, wanted))
		return false;
	for (u32 i = 0; i < nq; i++) {
		struct vq *q = &queues[i];
		vq_reset(q, (u16)i);
		if (!virtio_setup_ring(d, (u16)i, VQ_SIZE, q->desc, &q->avail, &q->used))
			return false;
	}
	return virtio_driver_ok(d);
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
