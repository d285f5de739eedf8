// The messages of the APIC bus (IOAPIC -> LAPICs, LAPIC -> LAPICs) and the encodings they share
// with the IOAPIC redirection entry and the LAPIC's ICR. Spec: Intel SDM vol. 3A ch. 10
// ("Advanced Programmable Interrupt Controller"), 10.6.1 (ICR), 82093AA datasheet 3.2.4;
// names as in Linux arch/x86/include/asm/apicdef.h (`enum apic_delivery_modes`).

/** Delivery modes (the 3-bit field at bits 10:8 of the ICR and of a redirection entry). */
export const APIC_DELIVERY_MODE_FIXED = 0;
export const APIC_DELIVERY_MODE_LOWESTPRIO = 1;
export const APIC_DELIVERY_MODE_SMI = 2;
export const APIC_DELIVERY_MODE_NMI = 4;
export const APIC_DELIVERY_MODE_INIT = 5;
export const APIC_DELIVERY_MODE_STARTUP = 6; // ICR only
export const APIC_DELIVERY_MODE_EXTINT = 7;

/** Destination modes (bit 11). */
export const APIC_DEST_PHYSICAL = 0;
export const APIC_DEST_LOGICAL = 1;
/** Trigger modes (bit 15). */
export const APIC_TRIGGER_EDGE = 0;
export const APIC_TRIGGER_LEVEL = 1;
/** Destination shorthands (ICR bits 19:18). */
export const APIC_SHORTHAND_NONE = 0;
export const APIC_SHORTHAND_SELF = 1;
export const APIC_SHORTHAND_ALL_INCLUDING_SELF = 2;
export const APIC_SHORTHAND_ALL_EXCLUDING_SELF = 3;
/** Physical destination 0xff (and logical 0xff) addresses every LAPIC. */
export const APIC_BROADCAST = 0xff;

/** What an IOAPIC redirection entry sends. */
export interface IoapicMessage {
  /** physical APIC ID (0xff: broadcast) or logical destination set, per `destMode` */
  dest: number;
  destMode: number;
  deliveryMode: number;
  vector: number;
  trigger: number;
}

/** What a LAPIC's ICR write sends (an IPI). */
export interface IpiMessage {
  /** ICR bits 63:56: physical APIC ID or logical destination set; unused with a shorthand */
  destination: number;
  destMode: number;
  shorthand: number;
  deliveryMode: number;
  vector: number;
  /** ICR bit 14: 1 = assert; 0 only matters for the INIT level de-assert, which is ignored */
  level: number;
  trigger: number;
  /** APIC ID of the sender, for the self and all-excluding-self shorthands */
  sourceId: number;
}
