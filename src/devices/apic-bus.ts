// The APIC bus: routes IPIs (from LAPIC ICR writes) and IOAPIC messages to the LAPICs they
// address. Spec: Intel SDM vol. 3A 10.6.2 (destination modes: physical, logical flat/cluster,
// shorthands, broadcast) and 10.6.2.4 (lowest-priority delivery); KVM arch/x86/kvm/lapic.c
// (kvm_apic_match_dest) where the SDM leaves details open.
//
// Lowest-priority delivery picks the addressed, software-enabled LAPIC with the lowest
// arbitration priority, ties going to the first one added (no focus processor, no round robin).
import {
  APIC_BROADCAST, APIC_DELIVERY_MODE_LOWESTPRIO, APIC_DEST_LOGICAL, APIC_SHORTHAND_ALL_EXCLUDING_SELF,
  APIC_SHORTHAND_ALL_INCLUDING_SELF, APIC_SHORTHAND_NONE, APIC_SHORTHAND_SELF, type IoapicMessage, type IpiMessage,
} from './apic-message.js';
import { IrqchipError } from './irqchip-error.js';
import type { Lapic } from './lapic.js';

export class ApicBus {
  private readonly lapics: Lapic[] = [];
  /**
   * Scratch target lists, one per nesting level (a receiver's callbacks may send through this bus
   * again before the outer delivery finishes), reused so a message allocates nothing.
   */
  private readonly targetLists: Lapic[][] = [];
  private depth = 0;

  /** Adds a vCPU's LAPIC. IDs are read live at each delivery (xAPIC IDs are guest-writable). */
  add(lapic: Lapic): void {
    if (this.lapics.some((l) => l.apicId === lapic.apicId)) {
      throw new IrqchipError('duplicate-apic-id', `APIC bus: a LAPIC with APIC ID ${lapic.apicId} is already attached; give each vCPU its own ID`);
    }
    this.lapics.push(lapic);
  }

  /** An ICR write of LAPIC `msg.sourceId` (wire this to each LapicHost.sendIpi). */
  sendIpi(msg: Readonly<IpiMessage>): void {
    const t = this.beginTargets();
    for (const l of this.lapics) {
      switch (msg.shorthand) {
        case APIC_SHORTHAND_NONE:
          if (this.addressed(l, msg.destination, msg.destMode)) t.push(l);
          break;
        case APIC_SHORTHAND_SELF:
          if (l.apicId === msg.sourceId) t.push(l);
          break;
        case APIC_SHORTHAND_ALL_INCLUDING_SELF:
          t.push(l);
          break;
        case APIC_SHORTHAND_ALL_EXCLUDING_SELF:
          if (l.apicId !== msg.sourceId) t.push(l);
          break;
        default:
          break;
      }
    }
    this.dispatch(t, msg.deliveryMode, msg.vector, msg.trigger, msg.level, msg.shorthand === APIC_SHORTHAND_NONE);
  }

  /** A message from an IOAPIC redirection entry (wire this to the Ioapic's deliver callback). */
  deliver(msg: Readonly<IoapicMessage>): void {
    const t = this.beginTargets();
    for (const l of this.lapics) if (this.addressed(l, msg.dest, msg.destMode)) t.push(l);
    this.dispatch(t, msg.deliveryMode, msg.vector, msg.trigger, 1, true);
  }

  private beginTargets(): Lapic[] {
    let t = this.targetLists[this.depth];
    if (!t) this.targetLists.push((t = []));
    t.length = 0;
    return t;
  }

  /** Does `mda` in `destMode` address this LAPIC? (SDM 10.6.2.1-2; a disabled APIC hears nothing) */
  private addressed(l: Lapic, mda: number, destMode: number): boolean {
    if (!l.hardwareEnabled) return false;
    if (destMode !== APIC_DEST_LOGICAL) return mda === APIC_BROADCAST || l.apicId === mda;
    const ldr = l.logicalId;
    if (l.flatModel) return (ldr & mda) !== 0;
    // Cluster model: high nibble selects the cluster, low nibble up to four APICs in it.
    return (ldr >> 4) === (mda >> 4) && (ldr & mda & 0xf) !== 0;
  }

  private dispatch(t: Lapic[], deliveryMode: number, vector: number, trigger: number, level: number, mayArbitrate: boolean): void {
    if (t.length === 0) return;
    this.depth++;
    try {
      if (deliveryMode === APIC_DELIVERY_MODE_LOWESTPRIO && mayArbitrate) {
        let best: Lapic | undefined;
        for (const l of t) {
          if (!l.softwareEnabled) continue;
          if (!best || l.arbitrationPriority() < best.arbitrationPriority()) best = l;
        }
        best?.receive(deliveryMode, vector, trigger, level);
      } else {
        for (const l of t) l.receive(deliveryMode, vector, trigger, level);
      }
    } finally {
      this.depth--;
    }
  }
}
