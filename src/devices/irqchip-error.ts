// The one error type of the interrupt-controller models (PIC, IOAPIC, LAPIC, APIC bus). It is
// thrown only for VMM wiring mistakes (a pin that does not exist, a LAPIC ID used twice); guest
// misbehaviour is ignored the way hardware ignores it, so a hostile guest cannot crash the VMM.

export type IrqchipErrorKind = 'bad-pin' | 'bad-config' | 'duplicate-apic-id';

export class IrqchipError extends Error {
  override readonly name = 'IrqchipError';
  constructor(readonly kind: IrqchipErrorKind, message: string) {
    super(message);
  }
}
