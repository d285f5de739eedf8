import assert from 'node:assert/strict';
import test from 'node:test';
import { Bus } from '../bus/bus.js';
import { I8042, I8042_STR_SYSFLAG } from '../devices/i8042.js';
import { NMI_SC_PORT, NMI_SC_SIZE_BYTES } from '../devices/pit8254.js';
import { insertI8042 } from './machine.js';

// Found on KVM: `--irqchip userspace` could not build a machine, because the i8042 took 0x60+5
// and the PIT's NMI_SC port 0x61 overlapped it.
test('i8042 on 0x60 and 0x64 leaves NMI_SC (0x61) free: regression for the userspace irqchip overlap', () => {
  const bus = new Bus('pio');
  let resets = 0;
  insertI8042(bus, new I8042(() => resets++));
  const nmiSc = { read: (_o: number, d: Uint8Array) => { d[0] = 0x20; }, write: () => {} };
  bus.insert(NMI_SC_PORT, NMI_SC_SIZE_BYTES, 'nmi-sc', nmiSc);
  const b = new Uint8Array(1);
  assert.ok(bus.access(0x64, false, b));
  assert.equal(b[0]! & I8042_STR_SYSFLAG, I8042_STR_SYSFLAG, 'status register read through port 0x64');
  assert.ok(bus.access(0x61, false, b));
  assert.equal(b[0], 0x20, 'port 0x61 reaches NMI_SC');
  b[0] = 0xfe;
  assert.ok(bus.access(0x64, true, b));
  assert.equal(resets, 1, 'the reset command written to 0x64 reaches the i8042');
  assert.equal(bus.access(0x62, false, b), false);
});
