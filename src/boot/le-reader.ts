// Test support: reads little-endian fields at offsets typed in from the specs, independently of
// the struct tables under test (so a typo in a table shows up as a mismatch).

export function leReader(bytes: Uint8Array) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    u8: (offset: number) => dv.getUint8(offset),
    u16: (offset: number) => dv.getUint16(offset, true),
    u32: (offset: number) => dv.getUint32(offset, true),
    u64: (offset: number) => Number(dv.getBigUint64(offset, true)),
    ascii: (offset: number, length: number) => String.fromCharCode(...bytes.subarray(offset, offset + length)),
  };
}
