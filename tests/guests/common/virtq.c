/*
 * virtq.c: the split virtqueue as the test guests drive it (see virtio.h), the same over every
 * transport: descriptors, then the avail entry, then avail->idx (2.7.13); the used ring polled.
 * x86 keeps stores in order and loads in order, so compiler barriers are all the ordering needed.
 */
#include "virtio.h"

#define barrier() __asm__ volatile("" ::: "memory")

void vq_reset(struct vq *q, u16 index) {
	memset(q, 0, sizeof(*q));
	q->index = index;
	q->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
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

const char *virtio_device_name(u32 device_id) {
	switch (device_id) {
	case VIRTIO_ID_NET: return "net";
	case VIRTIO_ID_BLOCK: return "block";
	case VIRTIO_ID_CONSOLE: return "console";
	case VIRTIO_ID_RNG: return "rng";
	default: return "other";
	}
}
