/*
 * virtio-mmio.h: a minimal virtio-mmio driver for the test guests (virtio-mmio.c): probe a slot,
 * negotiate features, set up split virtqueues in guest RAM, submit one chain at a time, notify,
 * and poll the used ring. Runs at CPL3 (MMIO and RAM are mapped with the U bit).
 *
 * Specs: VIRTIO 1.2, 2.7 Split Virtqueues, 3.1 Device Initialization, 4.2 Virtio Over MMIO
 * (register names as in Linux include/uapi/linux/virtio_mmio.h), 5.2/5.3/5.4 (block, console, rng).
 *
 * How the guest finds devices: tsvmm's slots are fixed (src/boot/layout.ts, the README's machine
 * table), so the guest probes every slot address instead of parsing the DSDT's LNRO0005 entries.
 * An empty slot is unclaimed MMIO and reads all-ones; a slot whose magic is not "virt", or whose
 * device ID is 0 (a placeholder), has no device.
 */
#ifndef TSVMM_VIRTIO_MMIO_H
#define TSVMM_VIRTIO_MMIO_H

#include "guest.h"

/* ---- tsvmm's slots (must agree with src/boot/layout.ts; tests/virtio.test.ts checks) ---- */
/* (A guest may define them first to drive another VMM's layout: virtio-qemu.c uses QEMU microvm's
 * 0xfeb00000 / 0x200 / 16. The driver itself takes each slot's address from its caller.) */
#ifndef VIRTIO_MMIO_BASE_GPA
#define VIRTIO_MMIO_BASE_GPA 0xd0000000ul
#endif
#ifndef VIRTIO_MMIO_STRIDE_BYTES
#define VIRTIO_MMIO_STRIDE_BYTES 0x1000ul
#endif
#define VIRTIO_MMIO_SLOTS 8
#ifndef VIRTIO_MMIO_FIRST_IRQ
#define VIRTIO_MMIO_FIRST_IRQ 16
#endif

/* ---- 4.2.2 MMIO Device Register Layout ---- */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG 0x100
#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_INT_VRING 1u
#define VIRTIO_MMIO_INT_CONFIG 2u

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

struct virtio_dev {
	u64 base;            /* register window */
	u32 slot;
	u32 device_id;
	u32 gsi;
	u64 device_features; /* offered */
	u64 features;        /* accepted */
};

/* One buffer of a chain: `device_writes` for buffers the device fills. */
struct vq_buf {
	void *addr;
	u32 len;
	bool device_writes;
};

static inline u32 virtio_read(const struct virtio_dev *d, u32 reg) { return mmio_read32(d->base + reg); }
static inline void virtio_write(const struct virtio_dev *d, u32 reg, u32 v) { mmio_write32(d->base + reg, v); }

/* The slot's window and GSI in the layout above. */
static inline u64 virtio_slot_gpa(u32 slot) { return VIRTIO_MMIO_BASE_GPA + slot * VIRTIO_MMIO_STRIDE_BYTES; }
static inline u32 virtio_slot_gsi(u32 slot) { return VIRTIO_MMIO_FIRST_IRQ + slot; }
/* Reads the identity of the window at `base_gpa`; false (with only base, gsi and slot set) if no device is there. */
bool virtio_probe(u64 base_gpa, u32 gsi, u32 slot, struct virtio_dev *d);
/* Reset, ACKNOWLEDGE, DRIVER, features (VIRTIO_F_VERSION_1 must be offered; only `wanted` bits
 * the device offers are accepted), FEATURES_OK checked, queues 0..nq-1 set up on `queues`,
 * DRIVER_OK. Interrupts are suppressed on every queue (VIRTQ_AVAIL_F_NO_INTERRUPT) until a caller
 * clears the flag. Prints the reason and returns false on failure. */
bool virtio_init(struct virtio_dev *d, u64 wanted, struct vq *queues, u32 nq);
/* Puts one chain (bufs[0..n-1], readable ones first) on the queue as descriptors 0..n-1. */
void vq_submit(struct vq *q, const struct vq_buf *bufs, u32 n);
/* QueueNotify: tsvmm takes this write with an ioeventfd (no exit to the VMM's userspace). */
static inline void vq_kick(const struct virtio_dev *d, const struct vq *q) { virtio_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, q->index); }
/* Polls the used ring until the chain comes back (true, *len = bytes written) or timeout_us passes. */
bool vq_wait(struct vq *q, u32 *len, u64 timeout_us);
/* Submit, kick, wait. */
bool vq_transfer(const struct virtio_dev *d, struct vq *q, const struct vq_buf *bufs, u32 n, u32 *len, u64 timeout_us);
/* Reads InterruptStatus and acknowledges those bits; returns them. */
u32 virtio_ack_interrupt(const struct virtio_dev *d);
/* Device config space. */
u32 virtio_config_read32(const struct virtio_dev *d, u32 offset);
u64 virtio_config_read64(const struct virtio_dev *d, u32 offset);
const char *virtio_device_name(u32 device_id);

#endif
