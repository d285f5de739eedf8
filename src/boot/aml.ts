// A small AML encoder: the ACPI Machine Language terms tsvmm's DSDT needs, and resource templates.
// Spec: ACPI 6.5 §20.2 "AML Grammar Definition" (NameOp, ScopeOp, DeviceOp, PkgLength, data objects)
// and §6.4 "Resource Data Types for ACPI" (small/large resource descriptors, End Tag).
// Each function returns the bytes of one term; nesting is by passing those bytes in.

import { concatBytes } from './struct.js';

// §20.2.x opcodes, named as in the grammar.
export const ZeroOp = 0x00;
export const OneOp = 0x01;
export const NameOp = 0x08;
export const BytePrefix = 0x0a;
export const WordPrefix = 0x0b;
export const DWordPrefix = 0x0c;
export const StringPrefix = 0x0d;
export const QWordPrefix = 0x0e;
export const ScopeOp = 0x10;
export const BufferOp = 0x11;
export const PackageOp = 0x12;
export const DualNamePrefix = 0x2e;
export const MultiNamePrefix = 0x2f;
export const ExtOpPrefix = 0x5b;
export const DeviceOp = 0x82; // after ExtOpPrefix
export const RootChar = 0x5c; // '\'
export const ParentPrefixChar = 0x5e; // '^'
export const OnesOp = 0xff;

const PKG_LENGTH_MAX = (1 << 28) - 1;

/**
 * PkgLength for a package whose contents after the PkgLength are `bodyLength` bytes. The encoded
 * length counts the PkgLength bytes themselves. One byte holds up to 63; longer lengths take 1-3
 * more bytes: the lead byte's bits 7:6 count them, its bits 3:0 are the low nibble, and each
 * following byte holds the next 8 bits.
 */
export function pkgLength(bodyLength: number): Uint8Array {
  for (let extra = 0; extra <= 3; extra++) {
    const total = bodyLength + 1 + extra;
    const capacity = extra === 0 ? 0x3f : (1 << (4 + 8 * extra)) - 1;
    if (total <= capacity) {
      if (extra === 0) return Uint8Array.of(total);
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) out[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new RangeError(`AML package of ${bodyLength} bytes exceeds PkgLength's ${PKG_LENGTH_MAX}`);
}

/** NameSeg: 4 characters [A-Z_][A-Z0-9_]*, padded with '_' ("_SB" is "_SB_"). */
function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new RangeError(`"${seg}" is not an ACPI NameSeg`);
  const padded = seg.padEnd(4, '_');
  return Array.from(padded, (c) => c.charCodeAt(0));
}

/** NameString from ASL path syntax: optional '\' or '^'s, then NameSegs separated by '.'. */
export function nameString(path: string): Uint8Array {
  const prefix: number[] = [];
  let rest = path;
  if (rest.startsWith('\\')) {
    prefix.push(RootChar);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith('^')) {
      prefix.push(ParentPrefixChar);
      rest = rest.slice(1);
    }
  }
  const segs = rest === '' ? [] : rest.split('.');
  const body: number[] = [];
  if (segs.length === 0) body.push(ZeroOp); // NullName
  else if (segs.length === 1) body.push(...nameSeg(segs[0]));
  else if (segs.length === 2) body.push(DualNamePrefix, ...nameSeg(segs[0]), ...nameSeg(segs[1]));
  else if (segs.length <= 255) body.push(MultiNamePrefix, segs.length, ...segs.flatMap(nameSeg));
  else throw new RangeError(`AML name path "${path}" has more than 255 segments`);
  return Uint8Array.from([...prefix, ...body]);
}

/** An Integer data object, in the shortest form (as iasl emits it): Zero/One/Ones or a prefixed constant. */
export function integer(value: number | bigint): Uint8Array {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${value} is not a 64-bit unsigned AML integer`);
  if (v === 0n) return Uint8Array.of(ZeroOp);
  if (v === 1n) return Uint8Array.of(OneOp);
  if (v === 0xffff_ffff_ffff_ffffn) return Uint8Array.of(OnesOp);
  const [prefix, bytes] = v <= 0xffn ? [BytePrefix, 1] : v <= 0xffffn ? [WordPrefix, 2] : v <= 0xffff_ffffn ? [DWordPrefix, 4] : [QWordPrefix, 8];
  const out = new Uint8Array(1 + bytes);
  out[0] = prefix;
  for (let i = 0; i < bytes; i++) out[1 + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** A String data object: ASCII, NUL-terminated. */
export function string(text: string): Uint8Array {
  if (!/^[\x01-\x7f]*$/.test(text)) throw new RangeError(`AML strings are ASCII without NUL: "${text}"`);
  return Uint8Array.from([StringPrefix, ...Array.from(text, (c) => c.charCodeAt(0)), 0]);
}

/**
 * EISAID("PNP0501") as the 32-bit integer ACPI stores: three letters of 5 bits (A = 1) and four hex
 * digits, big-endian, then read as a little-endian DWORD.
 */
export function eisaId(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`"${id}" is not an EISA id like PNP0501`);
  const letters = [0, 1, 2].map((i) => id.charCodeAt(i) - 0x40);
  const vendor = (letters[0] << 10) | (letters[1] << 5) | letters[2];
  const product = parseInt(id.slice(3), 16);
  const bigEndian = [vendor >> 8, vendor & 0xff, product >> 8, product & 0xff];
  return (bigEndian[0] | (bigEndian[1] << 8) | (bigEndian[2] << 16) | (bigEndian[3] << 24)) >>> 0;
}

/** Name (path, value) */
export function name(path: string, value: Uint8Array): Uint8Array {
  return concatBytes([Uint8Array.of(NameOp), nameString(path), value]);
}

/** Scope (path) { terms } */
export function scope(path: string, ...terms: Uint8Array[]): Uint8Array {
  const body = concatBytes([nameString(path), ...terms]);
  return concatBytes([Uint8Array.of(ScopeOp), pkgLength(body.length), body]);
}

/** Device (path) { terms } */
export function device(path: string, ...terms: Uint8Array[]): Uint8Array {
  const body = concatBytes([nameString(path), ...terms]);
  return concatBytes([Uint8Array.of(ExtOpPrefix, DeviceOp), pkgLength(body.length), body]);
}

/** Package () { elements } with NumElements = elements.length. */
export function pkg(...elements: Uint8Array[]): Uint8Array {
  if (elements.length > 255) throw new RangeError('AML Package() holds at most 255 elements');
  const body = concatBytes([Uint8Array.of(elements.length), ...elements]);
  return concatBytes([Uint8Array.of(PackageOp), pkgLength(body.length), body]);
}

/** Buffer () { bytes } with BufferSize = bytes.length. */
export function buffer(bytes: Uint8Array): Uint8Array {
  const body = concatBytes([integer(bytes.length), bytes]);
  return concatBytes([Uint8Array.of(BufferOp), pkgLength(body.length), body]);
}

// ---- §6.4 resource descriptors ----

/** Small End Tag: type 0x0F, length 1 → 0x79, then a checksum byte. */
const END_TAG = 0x79;

/**
 * ResourceTemplate () { descriptors }: a Buffer of the descriptors and an End Tag whose checksum
 * makes the whole template sum to 0 mod 256 (§6.4.2.9). iasl writes 0 there instead ("treat as
 * valid"); both are correct, this one lets a consumer check it.
 */
export function resourceTemplate(...descriptors: Uint8Array[]): Uint8Array {
  const items = concatBytes([...descriptors, Uint8Array.of(END_TAG, 0)]);
  let sum = 0;
  for (const b of items) sum += b;
  items[items.length - 1] = (256 - (sum & 0xff)) & 0xff;
  return buffer(items);
}

function u16le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff];
}

function u32le(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

/** IO (Decode16, min, max, alignment, length): I/O Port Descriptor, small item 0x08 → 0x47, §6.4.2.5. */
export function ioPort(minPort: number, maxPort: number, alignment: number, lengthBytes: number): Uint8Array {
  const IO_DECODE_16 = 1;
  return Uint8Array.from([0x47, IO_DECODE_16, ...u16le(minPort), ...u16le(maxPort), alignment, lengthBytes]);
}

/** IRQNoFlags () { irqs }: IRQ Descriptor without the flags byte (edge, active high), small item 0x04 length 2 → 0x22, §6.4.2.1. */
export function irqNoFlags(...irqs: number[]): Uint8Array {
  let mask = 0;
  for (const irq of irqs) {
    if (!Number.isInteger(irq) || irq < 0 || irq > 15) throw new RangeError(`ISA IRQ ${irq} is not 0-15`);
    mask |= 1 << irq;
  }
  return Uint8Array.from([0x22, ...u16le(mask)]);
}

/** Memory32Fixed (ReadWrite|ReadOnly, base, length): large item 0x06 → 0x86, §6.4.3.4. */
export function memory32Fixed(base: number, lengthBytes: number, writable = true): Uint8Array {
  return Uint8Array.from([0x86, ...u16le(9), writable ? 1 : 0, ...u32le(base), ...u32le(lengthBytes)]);
}

export interface InterruptOptions {
  /** Edge (default) or Level. */
  readonly trigger?: 'edge' | 'level';
  /** ActiveHigh (default) or ActiveLow. */
  readonly polarity?: 'high' | 'low';
  readonly shared?: boolean;
}

/** Interrupt (ResourceConsumer, trigger, polarity, sharing) { gsis }: Extended Interrupt Descriptor, large item 0x09 → 0x89, §6.4.3.6. */
export function extendedInterrupt(gsis: readonly number[], options: InterruptOptions = {}): Uint8Array {
  if (gsis.length === 0 || gsis.length > 255) throw new RangeError('Interrupt() lists 1 to 255 interrupts');
  const CONSUMER = 1 << 0;
  const EDGE = 1 << 1;
  const ACTIVE_LOW = 1 << 2;
  const SHARED = 1 << 3;
  const flags =
    CONSUMER | ((options.trigger ?? 'edge') === 'edge' ? EDGE : 0) | (options.polarity === 'low' ? ACTIVE_LOW : 0) | (options.shared ? SHARED : 0);
  return Uint8Array.from([0x89, ...u16le(2 + 4 * gsis.length), flags, gsis.length, ...gsis.flatMap(u32le)]);
}

// ---- §6.4.3.5 Address Space Resource Descriptors (what a host bridge's _CRS is made of) ----

/** General Flags: bit 0 consumer (1) / producer (0), bit 1 SubDecode, bit 2 MinFixed, bit 3 MaxFixed. */
const ADDRESS_PRODUCER_MIN_MAX_FIXED = 0b1100;
const ADDRESS_TYPE_MEMORY = 0;
const ADDRESS_TYPE_IO = 1;
const ADDRESS_TYPE_BUS = 2;
/** I/O type-specific flags: ISA ranges bits 1:0 = 3 (EntireRange), TypeStatic, DenseTranslation. */
const IO_ENTIRE_RANGE = 0b11;
/** Memory type-specific flags: bit 0 ReadWrite, bits 2:1 NonCacheable (0) / Cacheable (1), AddressRangeMemory, TypeStatic. */
const MEMORY_READ_WRITE = 0b1;
const MEMORY_CACHEABLE = 0b01 << 1;

function u64le(value: number | bigint): number[] {
  const v = BigInt(value);
  return Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
}

function checkRange(what: string, min: number, lengthBytes: number, limit: number): void {
  if (!Number.isInteger(min) || !Number.isInteger(lengthBytes) || min < 0 || lengthBytes < 1 || min + lengthBytes > limit) {
    throw new RangeError(`${what} 0x${min.toString(16)}+0x${lengthBytes.toString(16)} must be non-empty and end by 0x${limit.toString(16)}`);
  }
}

/**
 * WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, count): the
 * buses below a host bridge. Word Address Space Descriptor, large item 0x08 → 0x88, §6.4.3.5.3.
 */
export function wordBusNumber(minBus: number, maxBus: number): Uint8Array {
  checkRange('bus range', minBus, maxBus - minBus + 1, 0x100);
  return Uint8Array.from([0x88, ...u16le(13), ADDRESS_TYPE_BUS, ADDRESS_PRODUCER_MIN_MAX_FIXED, 0,
    ...u16le(0), ...u16le(minBus), ...u16le(maxBus), ...u16le(0), ...u16le(maxBus - minBus + 1)]);
}

/** WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length): an I/O window. */
export function wordIo(minPort: number, lengthBytes: number): Uint8Array {
  checkRange('I/O window', minPort, lengthBytes, 0x10000);
  return Uint8Array.from([0x88, ...u16le(13), ADDRESS_TYPE_IO, ADDRESS_PRODUCER_MIN_MAX_FIXED, IO_ENTIRE_RANGE,
    ...u16le(0), ...u16le(minPort), ...u16le(minPort + lengthBytes - 1), ...u16le(0), ...u16le(lengthBytes)]);
}

/**
 * DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable|Cacheable, ReadWrite,
 * 0, min, max, 0, length): a 32-bit MMIO window. DWord Address Space Descriptor, large item 0x07 → 0x87, §6.4.3.5.2.
 */
export function dwordMemory(minGpa: number, lengthBytes: number, options: { cacheable?: boolean } = {}): Uint8Array {
  checkRange('32-bit memory window', minGpa, lengthBytes, 0x1_0000_0000);
  return Uint8Array.from([0x87, ...u16le(23), ADDRESS_TYPE_MEMORY, ADDRESS_PRODUCER_MIN_MAX_FIXED, MEMORY_READ_WRITE | (options.cacheable ? MEMORY_CACHEABLE : 0),
    ...u32le(0), ...u32le(minGpa), ...u32le(minGpa + lengthBytes - 1), ...u32le(0), ...u32le(lengthBytes)]);
}

/** QWordMemory (same arguments as DWordMemory): a 64-bit MMIO window. Large item 0x0A → 0x8A, §6.4.3.5.1. */
export function qwordMemory(minGpa: number, lengthBytes: number, options: { cacheable?: boolean } = {}): Uint8Array {
  checkRange('64-bit memory window', minGpa, lengthBytes, Number.MAX_SAFE_INTEGER);
  return Uint8Array.from([0x8a, ...u16le(43), ADDRESS_TYPE_MEMORY, ADDRESS_PRODUCER_MIN_MAX_FIXED, MEMORY_READ_WRITE | (options.cacheable ? MEMORY_CACHEABLE : 0),
    ...u64le(0), ...u64le(minGpa), ...u64le(BigInt(minGpa) + BigInt(lengthBytes) - 1n), ...u64le(0), ...u64le(lengthBytes)]);
}
