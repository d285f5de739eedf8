// Puts virtio devices on the machine: one virtio-mmio slot each (a fixed register window and
// IOAPIC GSI from src/boot/layout.ts), described to the guest by the DSDT's LNRO0005 entries.
// Spec: VIRTIO 1.2, 4.2 Virtio Over MMIO; KVM api.rst 4.59 KVM_IOEVENTFD and 4.75 KVM_IRQFD.
//
// Register accesses reach the transport as MMIO exits through the machine's bus, like any device.
// QueueNotify writes do not: each (slot, queue) has an ioeventfd on the QueueNotify register with
// datamatch = the queue index, so the write is taken in the kernel with no userspace exit and the
// device is notified on the event loop. Interrupts leave through an irqfd on the slot's GSI.
// What this does not do: hot-plug, MSI, more than VIRTIO_MMIO_SLOTS devices; virtio-pci is
// virtio-pci-devices.ts (VirtioSlotConfig.transport 'pci').
import type { VirtioMmioAcpiDevice } from '../boot/acpi.js';
import * as layout from '../boot/layout.js';
import type { Bus, BusDevice } from '../bus/bus.js';
import type { HvVm } from '../hypervisor/types.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_SIZE_BYTES, VirtioMmio } from '../virtio/mmio.js';
import type { VirtioDevice } from '../virtio/virtio.js';
import type { VirtioError } from '../virtio/virtio-error.js';

/** A device to put in the next free slot, with what the VMM must release when the machine goes. */
export interface VirtioSlotConfig {
  readonly device: VirtioDevice;
  /** For logs and stats: "block disk.img", "rng", "console /run/vm.sock". */
  readonly label: string;
  /** Stops the device's host side (closes a disk image, a listening socket). The machine calls it once, at shutdown, after detaching the slot. */
  readonly close?: () => void;
  /** virtio-mmio (the default: a fixed slot) or virtio-pci (virtio-pci-devices.ts). */
  readonly transport?: 'mmio' | 'pci';
}

/** Where slot `index` lives: its register window and its GSI (IOAPIC pin). */
export function virtioSlot(index: number): { gpa: number; sizeBytes: number; gsi: number } {
  if (!Number.isInteger(index) || index < 0 || index >= layout.VIRTIO_MMIO_SLOTS) {
    throw new RangeError(`virtio-mmio slot ${index}: the machine has slots 0 to ${layout.VIRTIO_MMIO_SLOTS - 1}`);
  }
  return {
    gpa: layout.VIRTIO_MMIO_BASE_GPA + index * layout.VIRTIO_MMIO_STRIDE_BYTES,
    sizeBytes: VIRTIO_MMIO_SIZE_BYTES,
    gsi: layout.VIRTIO_MMIO_FIRST_IRQ + index,
  };
}

/**
 * The DSDT entries for `count` devices in slots 0..count-1. Edge-triggered, active high: see
 * VirtioSlot's constructor for why the line is pulsed rather than held.
 */
export function virtioAcpiDevices(count: number): VirtioMmioAcpiDevice[] {
  return Array.from({ length: count }, (_, i) => {
    const s = virtioSlot(i);
    return { gpa: s.gpa, sizeBytes: s.sizeBytes, irq: s.gsi, trigger: 'edge' as const };
  });
}

/** A device in its slot: the transport on the bus, its doorbells and its interrupt line. */
export class VirtioSlot implements BusDevice {
  readonly gpa: number;
  readonly gsi: number;
  readonly transport: VirtioMmio;
  /** QueueNotify writes that came as MMIO exits (the ioeventfd did not take them): 0 when all is well. */
  notifyExits = 0;
  /** QueueNotify writes the ioeventfds took in the kernel, as counted by their eventfds. */
  notifyEvents = 0n;
  /** Interrupts sent (irqfd signals). */
  interrupts = 0;
  /** The last driver error (the device then shows DEVICE_NEEDS_RESET), for diagnostics. */
  lastError: VirtioError | null = null;
  private readonly removers: Array<() => void> = [];
  private detached = false;

  constructor(readonly index: number, readonly config: VirtioSlotConfig, vm: HvVm, memory: GuestMemory, bus: Bus, interruptLine?: InterruptLineFactory) {
    const where = virtioSlot(index);
    this.gpa = where.gpa;
    this.gsi = where.gsi;
    // The interrupt is a pulse per new InterruptStatus bit, and the DSDT says "edge". A level line
    // would need KVM_IRQFD_FLAG_RESAMPLE: a plain irqfd only pulses the pin, and an IOAPIC pin the
    // guest programmed as level ignores pulses while Remote IRR is set, so one would be lost. With
    // edge, a pulse that arrives while the handler runs sets the LAPIC's IRR and the handler runs
    // again; Linux's vm_interrupt (drivers/virtio/virtio_mmio.c) reads InterruptStatus each time,
    // so extra or merged pulses lose nothing. No resample fd means no main-thread work per EOI.
    const irqfd = interruptLine ? interruptLine(this.gsi) : vm.addIrqFd(this.gsi);
    this.removers.push(() => irqfd.remove());
    this.transport = new VirtioMmio(config.device, {
      memory,
      irq: { trigger: 'edge', pulse: () => { this.interrupts++; irqfd.trigger(); } },
      onError: (e) => { this.lastError = e; },
    });
    try {
      config.device.queueMaxSizes.forEach((_, queue) => {
        const doorbell = vm.addIoEventFd('mmio', this.gpa + VIRTIO_MMIO_QUEUE_NOTIFY, 4, queue, (count) => {
          this.notifyEvents += count;
          // However many writes came, one notify drains the queue.
          this.transport.notifyQueue(queue);
        });
        this.removers.push(() => doorbell.remove());
      });
      bus.insert(this.gpa, where.sizeBytes, `virtio-mmio slot ${index} (${config.label})`, this);
    } catch (e) {
      this.removeEventFds();
      throw e;
    }
  }

  read(offset: number, data: Uint8Array): void {
    this.transport.read(offset, data);
  }

  write(offset: number, data: Uint8Array): void {
    // A QueueNotify seen here was not taken by an ioeventfd: a queue index with none (ignored by
    // the transport), or an access of another size.
    if (offset === VIRTIO_MMIO_QUEUE_NOTIFY) this.notifyExits++;
    this.transport.write(offset, data);
  }

  private removeEventFds(): void {
    for (const remove of this.removers.splice(0)) {
      try { remove(); } catch { /* the VM is going away */ }
    }
  }

  /**
   * Takes the device off the machine: resets the transport, so the device drops its rings and no
   * later host input or completion touches guest RAM, then removes the eventfds. The host side
   * (config.close) is the caller's to close.
   */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    try { this.transport.reset(); } finally {
      this.removeEventFds();
    }
  }
}

/** Puts each device in the next slot, in order; refuses more than the machine has. On failure, nothing stays attached. */
/**
 * A device interrupt line other than an irqfd: with the VMM's own interrupt controllers KVM has no
 * irqfd (it needs KVM's in-kernel irqchip), so the machine pulses its IOAPIC pin directly.
 */
export type InterruptLineFactory = (gsi: number) => { trigger(): void; remove(): void };

export function attachVirtioDevices(configs: readonly VirtioSlotConfig[], vm: HvVm, memory: GuestMemory, bus: Bus, interruptLine?: InterruptLineFactory): VirtioSlot[] {
  if (configs.length > layout.VIRTIO_MMIO_SLOTS) {
    throw new RangeError(`${configs.length} virtio devices: the machine has ${layout.VIRTIO_MMIO_SLOTS} virtio-mmio slots`);
  }
  const slots: VirtioSlot[] = [];
  try {
    configs.forEach((c, i) => slots.push(new VirtioSlot(i, c, vm, memory, bus, interruptLine)));
  } catch (e) {
    for (const s of slots) s.detach();
    throw e;
  }
  return slots;
}
