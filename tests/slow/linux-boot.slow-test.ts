// Slow group (`npm run test:slow`, run by CI): boots Debian's cloud kernel through the bzImage
// 64-bit boot protocol and checks what it says over our UART against what we gave it. On our
// nested host the kernel runs in KVM's emulator, so this takes minutes and ends when the kernel
// reaches an instruction the host cannot emulate (HOST.md); on an ordinary host it runs until
// it panics for want of a root file system and reboots (panic=-1).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import test from 'node:test';
import { buildAcpiTables } from '../../src/boot/acpi.js';
import { debianKernelPath } from '../../src/boot/debian-kernel.js';
import { buildE820Map, E820_TYPE_RAM, E820_TYPE_RESERVED } from '../../src/boot/e820.js';
import { cliPath } from '../repo.js';
import { kvmSkip } from '../kvm-available.js';

const MEMORY = 512 << 20;
const CPUS = 2;
const MARKER = 'tsvmm_test_marker=4242';
const CMDLINE = `earlyprintk=serial console=ttyS0 panic=-1 ${MARKER}`;
const E820_NAMES: Record<number, string> = { [E820_TYPE_RAM]: 'usable', [E820_TYPE_RESERVED]: 'reserved' };
const hex16 = (n: number) => '0x' + n.toString(16).padStart(16, '0');

test('the Debian cloud kernel boots far enough to report our command line, e820 map and ACPI tables', { timeout: 20 * 60_000, skip: kvmSkip }, async (t) => {
  const kernel = debianKernelPath();
  if (!kernel) { t.skip('no Debian kernel in .cache/kernels; run `npm run fetch-kernel`'); return; }

  const expectedE820 = buildE820Map(MEMORY).map((e) => `BIOS-e820: [mem ${hex16(e.gpa)}-${hex16(e.gpa + e.sizeBytes - 1)}] ${E820_NAMES[e.type]}`);
  const acpi = buildAcpiTables({ cpus: CPUS });
  const expectedAcpi = [`ACPI: RSDP ${hex16(acpi.rsdpGpa).toUpperCase().replace('0X', '0x')}`,
    ...acpi.tables.map((tb) => `ACPI: ${tb.signature === 'FACP' ? 'FACP' : tb.signature} ${hex16(tb.gpa).toUpperCase().replace('0X', '0x')} ${tb.lengthBytes.toString(16).toUpperCase().padStart(6, '0')}`)];
  // The last thing we wait for: every table printed, then Linux's count of CPUs from our MADT.
  const done = (out: string) => expectedAcpi.every((l) => out.includes(l)) && /smpboot: Allowing \d+ CPUs/.test(out);

  const child = spawn(process.execPath, [cliPath, 'run', '--kernel', kernel, '--append', CMDLINE,
    '--memory', `${MEMORY >> 20}M`, '--cpus', String(CPUS)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let stopped = false;
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString('latin1');
    if (!stopped && done(out)) {
      stopped = true;
      child.kill('SIGTERM');
    }
  });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const status = await new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  if (stopped) assert.equal(status, 130, 'tsvmm stops cleanly on SIGTERM');
  t.diagnostic(`tsvmm exit status ${status}; last stderr: ${err.trim().split('\n').slice(0, 8).join(' | ')}`);

  assert.match(out, /Linux version 6\.1\.\S+-cloud-amd64/, 'the banner');
  assert.ok(out.includes(`Command line: ${CMDLINE}`), 'our command line, echoed');
  for (const line of expectedE820) assert.ok(out.includes(line), `e820 line: ${line}`);
  const e820Lines = out.split('\n').filter((l) => l.includes('BIOS-e820:'));
  assert.equal(e820Lines.length, expectedE820.length, 'no e820 entry we did not give');
  for (const line of expectedAcpi) assert.ok(out.includes(line), `ACPI line: ${line}\n${out.split('\n').filter((l) => l.includes('ACPI:')).join('\n')}`);
  assert.match(out, new RegExp(`smpboot: Allowing ${CPUS} CPUs`), 'every vCPU found through the MADT');
  assert.match(out, /IOAPIC\[0\]: apic_id \d+, version \d+, address 0xfec00000, GSI 0-23/);
});
