// Little-endian C struct layouts declared once as tables (offset, type), checked when declared.
// Every boot ABI struct (bootparam.h, start_info.h, ACPI tables) is a `Struct` built here, so
// no other file in src/boot/ writes a bare offset.

export type ScalarType = 'u8' | 'u16' | 'u32' | 'u64';
/** A field is a scalar or an opaque run of bytes (`{ bytes: n }`), at an explicit offset. */
export type FieldType = ScalarType | { readonly bytes: number };
export type FieldSpec = readonly [offset: number, type: FieldType];

const SCALAR_SIZE: Readonly<Record<ScalarType, number>> = { u8: 1, u16: 2, u32: 4, u64: 8 };
const SCALAR_MAX: Readonly<Record<ScalarType, number>> = {
  u8: 0xff,
  u16: 0xffff,
  u32: 0xffff_ffff,
  // u64 values are JS numbers: guest addresses and sizes stay far below 2^53.
  u64: Number.MAX_SAFE_INTEGER,
};

function fieldSize(type: FieldType): number {
  return typeof type === 'string' ? SCALAR_SIZE[type] : type.bytes;
}

export class Struct<K extends string> {
  readonly #fields: Readonly<Record<K, FieldSpec>>;

  /**
   * @param name the C name, for messages
   * @param sizeBytes sizeof() in C; asserted against the fields
   * @param fields name -> [offset, type]; may leave holes (reserved/padding), never overlap
   */
  constructor(
    readonly name: string,
    readonly sizeBytes: number,
    fields: Readonly<Record<K, FieldSpec>>,
  ) {
    this.#fields = fields;
    const spans = (Object.entries(fields) as [string, FieldSpec][])
      .map(([field, [offset, type]]) => ({ field, offset, end: offset + fieldSize(type) }))
      .sort((a, b) => a.offset - b.offset);
    let previous: { field: string; end: number } | undefined;
    for (const span of spans) {
      if (!Number.isInteger(span.offset) || span.offset < 0 || span.end > sizeBytes) {
        throw new Error(`struct ${name}: field ${span.field} [${span.offset}, ${span.end}) is outside sizeof ${sizeBytes}`);
      }
      if (previous && span.offset < previous.end) {
        throw new Error(`struct ${name}: field ${span.field} overlaps ${previous.field}`);
      }
      previous = span;
    }
  }

  offsetOf(field: K): number {
    return this.#fields[field][0];
  }

  sizeOf(field: K): number {
    return fieldSize(this.#fields[field][1]);
  }

  /** Reads a scalar field of the struct that starts at `base` in `bytes`. */
  get(bytes: Uint8Array, base: number, field: K): number {
    const [offset, type] = this.#fields[field];
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = base + offset;
    switch (type) {
      case 'u8':
        return view.getUint8(at);
      case 'u16':
        return view.getUint16(at, true);
      case 'u32':
        return view.getUint32(at, true);
      case 'u64': {
        const value = view.getBigUint64(at, true);
        if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new RangeError(`struct ${this.name}: ${field} = 0x${value.toString(16)} does not fit a JS number`);
        }
        return Number(value);
      }
      default:
        throw new TypeError(`struct ${this.name}: ${field} is a byte array; use bytesOf()`);
    }
  }

  /** Writes a scalar field, refusing values that do not fit (a bug, not a user error). */
  set(bytes: Uint8Array, base: number, field: K, value: number): void {
    const [offset, type] = this.#fields[field];
    if (typeof type !== 'string') {
      throw new TypeError(`struct ${this.name}: ${field} is a byte array; use bytesOf().set()`);
    }
    if (!Number.isInteger(value) || value < 0 || value > SCALAR_MAX[type]) {
      throw new RangeError(`struct ${this.name}: ${field} = ${value} does not fit ${type}`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = base + offset;
    switch (type) {
      case 'u8':
        view.setUint8(at, value);
        break;
      case 'u16':
        view.setUint16(at, value, true);
        break;
      case 'u32':
        view.setUint32(at, value, true);
        break;
      case 'u64':
        view.setBigUint64(at, BigInt(value), true);
        break;
    }
  }

  /** The bytes of one field (a view, not a copy). */
  bytesOf(bytes: Uint8Array, base: number, field: K): Uint8Array {
    const [offset, type] = this.#fields[field];
    return bytes.subarray(base + offset, base + offset + fieldSize(type));
  }

  /** Writes several fields at once; a fresh zeroed struct when `bytes` is omitted. */
  encode(values: Partial<Record<K, number>>, bytes: Uint8Array = new Uint8Array(this.sizeBytes), base = 0): Uint8Array {
    for (const field of Object.keys(values) as K[]) {
      this.set(bytes, base, field, values[field] as number);
    }
    return bytes;
  }
}

export function struct<K extends string>(name: string, sizeBytes: number, fields: Readonly<Record<K, FieldSpec>>): Struct<K> {
  return new Struct(name, sizeBytes, fields);
}

/** Writes ASCII text into a fixed-size field, padded with `pad` (ACPI pads OEM ids with spaces). */
export function setAscii(target: Uint8Array, text: string, pad = 0x20): void {
  if (text.length > target.length || !/^[\x20-\x7e]*$/.test(text)) {
    throw new RangeError(`"${text}" is not printable ASCII of at most ${target.length} characters`);
  }
  target.fill(pad);
  for (let i = 0; i < text.length; i++) target[i] = text.charCodeAt(i);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}

export function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
