// Puts virtio devices on the machine over PCI: a host bridge on bus 0 (configuration mechanism #1
// at 0xCF8, ECAM at PCI_ECAM_GPA), one modern virtio-pci function per device in slots 1, 2, ...,
// BARs placed by the VMM as firmware would in the 32-bit window, and the ACPI description
// (MCFG, PNP0A08 with _CRS and _PRT, PNP0C02). Spec: VIRTIO 1.2, 4.1 Virtio Over PCI Bus; PCI
// Local Bus 3.0; PCI Firmware 3.2 (MCFG); KVM api.rst 4.59 KVM_IOEVENTFD, 4.71 KVM_SIGNAL_MSI.
//
// Doorbells: each queue has its own dword in the notify region (notify_off_multiplier 4), so one
// ioeventfd per queue (length 2, the width Linux's vp_notify writes, no datamatch) takes the write
// in the kernel. They follow the BAR: every move the PCI bus reports removes them and registers
// them at the new address (none while decoding is off). A doorbell write that still exits (another
// width, or a BAR where KVM refused the ioeventfd) reaches the transport through the BAR router
// and is counted.
// Interrupts: with KVM's irqchip each MSI-X vector gets a GSI routed to its message and an irqfd
// (`msiRoute`, as QEMU does for KVM), made when the vector first fires and re-routed when the
// guest has reprogrammed it since; sending is one eventfd write. Masking and pending stay in
// the transport's MSI-X table, which decides whether a message goes at all. Where a route cannot
// be made, and with the userspace irqchip, messages go to `signalMsi` (KVM_SIGNAL_MSI, or the
// userspace APIC bus). With MSI-X off, INTA# is a level line on IOAPIC pin pciIntxGsi(slot),
// driven through `irqLine` (KVM_IRQ_LINE, or the userspace IOAPIC). What this does not do:
// hot-plug, 64-bit BAR windows, I/O BARs.
import type { PciHostBridgeAcpi } from '../boot/acpi.js';
import * as layout from '../boot/layout.js';
import type { Bus, BusDevice } from '../bus/bus.js';
import type { HvMsiRoute, HvVm } from '../hypervisor/types.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { PciBarRouter, PciBus, PciConfigIo, PciEcam, type PciWindow } from '../pci/bus.js';
import type { PciBar } from '../pci/config-space.js';
import { VIRTIO_PCI_NOTIFY_OFFSET, VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, VirtioPci } from '../virtio/pci.js';
import type { VirtioError } from '../virtio/virtio-error.js';
import type { VirtioSlotConfig } from './virtio-devices.js';

/** Where BARs go: the bottom of the 32-bit MMIO hole (never RAM, see layout.ts). */
export const PCI_MMIO32_WINDOW: PciWindow = { base: layout.PCI_MMIO32_BASE_GPA, sizeBytes: layout.PCI_MMIO32_SIZE_BYTES };
/** Virtio-pci doorbells are 16-bit writes of the queue index (VIRTIO 1.2 4.1.5.2; Linux iowrite16). */
export const VIRTIO_PCI_DOORBELL_BYTES = 2;
/** Slots 1..VIRTIO_MMIO_SLOTS: one IOAPIC-only pin each (see pciIntxGsi). */
export const VIRTIO_PCI_MAX_DEVICES = layout.VIRTIO_MMIO_SLOTS;

/** INTA# of PCI slot `slot` (1-based) is IOAPIC pin 24 - slot: 23, 22, ... (layout.ts). */
export function pciIntxGsi(slot: number): number {
  if (!Number.isInteger(slot) || slot < 1 || slot > VIRTIO_PCI_MAX_DEVICES) {
    throw new RangeError(`PCI slot ${slot}: virtio-pci devices use slots 1 to ${VIRTIO_PCI_MAX_DEVICES}`);
  }
  return layout.PCI_INTX_GSI_TOP + 1 - slot;
}

/** What the devices need of the machine. */
export interface VirtioPciWiring {
  readonly vm: HvVm;
  readonly memory: GuestMemory;
  readonly pioBus: Bus;
  readonly mmioBus: Bus;
  /** One MSI-X message: KVM_SIGNAL_MSI, or the userspace irqchip's APIC bus. */
  readonly signalMsi: (addressLo: number, addressHi: number, data: number) => void;
  /** A GSI routed to a message, with an irqfd (HvVm.addMsiRoute); absent with the userspace irqchip. */
  readonly msiRoute?: (addressLo: number, addressHi: number, data: number) => HvMsiRoute;
  /** Drives an IOAPIC pin (Machine.irqLine: in-kernel or userspace irqchip). */
  readonly irqLine: (gsi: number, level: 0 | 1) => void;
}

/** One virtio-pci function in its slot, with its doorbells and interrupt counters. */
export class VirtioPciSlot {
  readonly gsi: number;
  readonly transport: VirtioPci;
  /** Doorbell writes that came as MMIO exits: 0 when every ioeventfd took its write. */
  notifyExits = 0;
  /** Doorbell writes the ioeventfds took in the kernel. */
  notifyEvents = 0n;
  /** MSI-X messages sent plus INTA# assertions. */
  interrupts = 0;
  /** MSI-X messages sent through a vector's irqfd, and through signalMsi (no route). */
  msiByIrqfd = 0;
  msiBySignal = 0;
  /** GSI routes made, and re-routed because the guest reprogrammed a vector. */
  msiRoutesMade = 0;
  msiReroutes = 0;
  /** ioeventfds (re-)registered so far, and those KVM refused (the doorbell then exits). */
  doorbellRegistrations = 0;
  doorbellFailures = 0;
  /** MSI-X messages the hypervisor refused (logged once). */
  msiFailures = 0;
  lastError: VirtioError | null = null;
  private doorbells: Array<{ remove(): void }> = [];
  /** Per MSI-X vector: its route and the message it sends; 'none' once a route could not be made. */
  private readonly routes = new Map<number, { route: HvMsiRoute; lo: number; hi: number; data: number } | 'none'>();
  private detached = false;

  /** `index`: the device's position among virtio-pci devices; it sits in PCI slot index + 1. */
  constructor(readonly index: number, readonly slot: number, readonly config: VirtioSlotConfig, private readonly wiring: VirtioPciWiring) {
    this.gsi = pciIntxGsi(slot);
    const gsi = this.gsi;
    this.transport = new VirtioPci(config.device, {
      memory: wiring.memory,
      signalMsi: (lo, hi, data, vector) => {
        this.interrupts++;
        // From a device completion on the event loop: a refused message must not end the VMM.
        try {
          if (this.sendByIrqfd(lo, hi, data, vector)) return;
          this.msiBySignal++;
          wiring.signalMsi(lo, hi, data);
        } catch (e) {
          if (this.msiFailures++ === 0) process.stderr.write(`tsvmm: ${config.label} (PCI slot ${slot}): MSI-X message not delivered: ${(e as Error).message}\n`);
        }
      },
      intx: (level) => {
        if (level) this.interrupts++;
        wiring.irqLine(gsi, level);
      },
      interruptLine: gsi,
      onError: (e) => { this.lastError = e; },
    });
  }

  /**
   * Sends through the vector's irqfd, routing it first when it has no route yet or the guest
   * changed its message since; false when there is no route to use (then signalMsi sends it).
   */
  private sendByIrqfd(lo: number, hi: number, data: number, vector: number): boolean {
    const make = this.wiring.msiRoute;
    const r = this.routes.get(vector);
    if (make === undefined || r === 'none' || this.detached) return false;
    if (r === undefined) {
      let route: HvMsiRoute;
      try {
        route = make(lo, hi, data);
      } catch (e) {
        // Out of GSIs, or a host without MSI routing: this vector keeps using signalMsi.
        this.routes.set(vector, 'none');
        process.stderr.write(`tsvmm: ${this.config.label} (PCI slot ${this.slot}): MSI-X vector ${vector} gets no irqfd, its messages go through KVM_SIGNAL_MSI: ${(e as Error).message}\n`);
        return false;
      }
      this.routes.set(vector, { route, lo, hi, data });
      this.msiRoutesMade++;
      route.trigger();
    } else {
      if (r.lo !== lo || r.hi !== hi || r.data !== data) {
        r.route.update(lo, hi, data);
        r.lo = lo;
        r.hi = hi;
        r.data = data;
        this.msiReroutes++;
      }
      r.route.trigger();
    }
    this.msiByIrqfd++;
    return true;
  }

  get bar(): PciBar {
    return this.transport.bar;
  }

  /** The BAR now decodes at `gpa` (or nowhere): the doorbells move with it. */
  barMoved(gpa: number | null): void {
    this.removeDoorbells();
    if (gpa === null || this.detached) return;
    this.transport.queues.forEach((_, queue) => {
      try {
        const d = this.wiring.vm.addIoEventFd('mmio', gpa + VirtioPci.notifyOffset(queue), VIRTIO_PCI_DOORBELL_BYTES, null, (count) => {
          this.notifyEvents += count;
          this.transport.notifyQueue(queue);
        });
        this.doorbells.push(d);
        this.doorbellRegistrations++;
      } catch {
        // The guest put two BARs on one address (KVM refuses overlapping ioeventfds): this queue's
        // doorbell exits instead, and the BAR router still delivers it.
        this.doorbellFailures++;
      }
    });
  }

  /** A write inside the BAR reached the VMM: count it when it is a doorbell. */
  noteBarWrite(offset: number): void {
    if (offset >= VIRTIO_PCI_NOTIFY_OFFSET && offset < VIRTIO_PCI_NOTIFY_OFFSET + this.transport.queues.length * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER) this.notifyExits++;
  }

  private removeDoorbells(): void {
    for (const d of this.doorbells.splice(0)) {
      try { d.remove(); } catch { /* the VM is going away */ }
    }
  }

  /** Resets the transport (no later completion touches guest RAM) and removes the doorbells. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    try { this.transport.reset(); } catch { /* INTx de-assert on a closing VM */ } finally {
      this.removeDoorbells();
      for (const r of this.routes.values()) {
        if (r !== 'none') try { r.route.remove(); } catch { /* the VM is going away */ }
      }
      this.routes.clear();
    }
  }
}

/**
 * The PCI host bridge with its virtio-pci devices, on the machine's buses, BARs assigned. Its
 * `acpi` is what the MCFG and DSDT describe.
 */
export class VirtioPciHost {
  readonly bus: PciBus;
  readonly router: PciBarRouter;
  readonly slots: VirtioPciSlot[] = [];
  readonly acpi: PciHostBridgeAcpi;
  private readonly byBar = new Map<PciBar, VirtioPciSlot>();

  constructor(configs: readonly VirtioSlotConfig[], wiring: VirtioPciWiring) {
    if (configs.length > VIRTIO_PCI_MAX_DEVICES) {
      throw new RangeError(`${configs.length} virtio-pci devices: the machine has ${VIRTIO_PCI_MAX_DEVICES} PCI slots for them`);
    }
    this.router = new PciBarRouter(PCI_MMIO32_WINDOW);
    this.bus = new PciBus({
      barMoved: (bar, oldGpa, newGpa) => {
        this.router.barMoved(bar, oldGpa, newGpa);
        this.byBar.get(bar)?.barMoved(newGpa);
      },
    });
    const ecam = new PciEcam(this.bus);
    const router = this.router;
    const byBar = this.byBar;
    // The router, plus counting the doorbell writes that exited (no ioeventfd took them).
    const window: BusDevice = {
      read: (offset, data) => router.read(offset, data),
      write: (offset, data) => {
        const hit = router.find(PCI_MMIO32_WINDOW.base + offset);
        if (hit) byBar.get(hit.bar)?.noteBarWrite(hit.offset);
        router.write(offset, data);
      },
    };
    try {
      configs.forEach((c, i) => {
        const s = new VirtioPciSlot(i, i + 1, c, wiring);
        this.slots.push(s);
        this.byBar.set(s.bar, s);
        this.bus.attach(s.transport, s.slot);
      });
      // Firmware's job: BARs placed and decoding on before the guest runs (the doorbells follow).
      this.bus.assignBars({ mmio32: PCI_MMIO32_WINDOW });
      wiring.pioBus.insert(layout.PCI_CONFIG_PORT, layout.PCI_CONFIG_PORT_COUNT, 'pci config (cf8)', new PciConfigIo(this.bus));
      wiring.mmioBus.insert(layout.PCI_ECAM_GPA, ecam.sizeBytes, 'pci ecam', ecam);
      wiring.mmioBus.insert(PCI_MMIO32_WINDOW.base, PCI_MMIO32_WINDOW.sizeBytes, 'pci bar window', window);
    } catch (e) {
      this.detach();
      throw e;
    }
    this.acpi = {
      ecamGpa: layout.PCI_ECAM_GPA,
      mmio32: PCI_MMIO32_WINDOW,
      intx: this.slots.map((s) => ({ slot: s.slot, gsi: s.gsi })),
    };
  }

  detach(): void {
    for (const s of this.slots) s.detach();
  }
}

/** The PCI host and its devices for the configs that asked for the PCI transport; null for none (no PCI at all). */
export function attachVirtioPci(configs: readonly VirtioSlotConfig[], wiring: VirtioPciWiring): VirtioPciHost | null {
  const pci = configs.filter((c) => c.transport === 'pci');
  return pci.length === 0 ? null : new VirtioPciHost(pci, wiring);
}
