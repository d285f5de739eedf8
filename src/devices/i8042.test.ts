import assert from 'node:assert/strict';
import test from 'node:test';
import * as k from './i8042.js';

function ctl() {
  let resets = 0;
  const dev = new k.I8042(() => { resets++; });
  const rd = (off: number) => { const d = new Uint8Array(1); dev.read(off, d); return d[0]!; };
  const wr = (off: number, v: number) => dev.write(off, Uint8Array.of(v));
  return { rd, wr, resets: () => resets };
}

test('self test and command byte round trip, as Linux i8042 probes them', () => {
  const { rd, wr } = ctl();
  assert.notEqual(rd(k.I8042_COMMAND_REG), 0xff, 'a controller is present');
  wr(k.I8042_COMMAND_REG, k.I8042_CMD_CTL_TEST);
  assert.ok(rd(k.I8042_COMMAND_REG) & k.I8042_STR_OBF);
  assert.equal(rd(k.I8042_DATA_REG), 0x55);
  wr(k.I8042_COMMAND_REG, k.I8042_CMD_CTL_WCTR);
  wr(k.I8042_DATA_REG, 0x47);
  wr(k.I8042_COMMAND_REG, k.I8042_CMD_CTL_RCTR);
  assert.equal(rd(k.I8042_DATA_REG), 0x47);
  assert.equal(rd(k.I8042_COMMAND_REG) & k.I8042_STR_OBF, 0);
});

test('0xFE pulses reset; output-port bit 0 low resets too', () => {
  const a = ctl();
  a.wr(k.I8042_COMMAND_REG, k.I8042_CMD_PULSE_RESET);
  assert.equal(a.resets(), 1);
  const b = ctl();
  b.wr(k.I8042_COMMAND_REG, k.I8042_CMD_WRITE_OUTPUT);
  b.wr(k.I8042_DATA_REG, 0x02);
  assert.equal(b.resets(), 1);
});
