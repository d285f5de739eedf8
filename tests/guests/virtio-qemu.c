/*
 * virtio-qemu: the `virtio` guest (virtio.c; same output and status) built for QEMU microvm's
 * virtio-mmio layout instead of tsvmm's: 8 transports from 0xfeb00000, 0x200 apart, transport n
 * on GSI 16 + n (QEMU 7.2 with ioapic2=off). For bench/run.ts's block comparison and for checking
 * the driver against QEMU's devices. QEMU needs -global virtio-mmio.force-legacy=false (its
 * transports are legacy, version 1, by default) and exits with status 2E+1.
 */
#define VIRTIO_MMIO_BASE_GPA 0xfeb00000ul
#define VIRTIO_MMIO_STRIDE_BYTES 0x200ul
#define VIRTIO_MMIO_FIRST_IRQ 16
#include "virtio.c"
