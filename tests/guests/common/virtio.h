/*
 * virtio.h: what the test guests' virtio drivers share whatever the transport (virtio-mmio.c,
 * virtio-pci.c): status bits, feature bits, device IDs and the split virtqueue, filled and polled
 * by virtq.c. Specs: VIRTIO 1.2, 2.1 Device Status Field, 2.7 Split Virtqueues.
 * Each transport's header defines struct virtio_dev and the same functions over it (virtio_init,
 * vq_kick, vq_transfer, virtio_ack_interrupt, virtio_config_read32/64), so one test program
 * (virtio-checks.c) runs over either.
 */
#ifndef TSVMM_VIRTIO_H
#define TSVMM_VIRTIO_H

#include "guest.h"

/* ---- 2.1 Device Status Field ---- */
#define VIRTIO_CONFIG_S_ACKNOWLEDGE 1u
#define VIRTIO_CONFIG_S_DRIVER 2u
#define VIRTIO_CONFIG_S_DRIVER_OK 4u
#define VIRTIO_CONFIG_S_FEATURES_OK 8u
#define VIRTIO_CONFIG_S_NEEDS_RESET 0x40u
#define VIRTIO_CONFIG_S_FAILED 0x80u

/* ---- feature bits, device IDs ---- */
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define FEATURE(bit) (1ul << (bit))

/* ---- 2.7 split virtqueue ---- */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1
/* One chain in flight per queue: this many descriptors are plenty (and QueueNumMax is larger). */
#define VQ_SIZE 8

struct virtq_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};
struct virtq_avail {
	u16 flags;
	u16 idx;
	u16 ring[VQ_SIZE];
	u16 used_event;
};
struct virtq_used_elem {
	u32 id;
	u32 len;
};
struct virtq_used {
	u16 flags;
	u16 idx;
	struct virtq_used_elem ring[VQ_SIZE];
	u16 avail_event;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");

/* A queue's rings, with the 2.7 alignments (descriptor table 16, avail 2, used 4). Guest RAM. */
struct vq {
	struct virtq_desc desc[VQ_SIZE] __attribute__((aligned(16)));
	struct virtq_avail avail __attribute__((aligned(16)));
	struct virtq_used used __attribute__((aligned(16)));
	u16 index;     /* queue number on the device */
	u16 last_used; /* used->idx already consumed */
};

/* One buffer of a chain: `device_writes` for buffers the device fills. */
struct vq_buf {
	void *addr;
	u32 len;
	bool device_writes;
};

/* Puts one chain (bufs[0..n-1], readable ones first) on the queue as descriptors 0..n-1. */
void vq_submit(struct vq *q, const struct vq_buf *bufs, u32 n);
/* Polls the used ring until the chain comes back (true, *len = bytes written) or timeout_us passes. */
bool vq_wait(struct vq *q, u32 *len, u64 timeout_us);
const char *virtio_device_name(u32 device_id);
/* Sets up a queue's rings in memory (zeroed, interrupts suppressed) before its addresses are given to the device. */
void vq_reset(struct vq *q, u16 index);

#endif
