// Slow group: boots Debian's cloud kernel all the way to user space through the real CLI, with an
// initramfs whose /init (tests/guests/linux/init.c) reports the kernel and CPU count it sees and
// powers off through ACPI (\_S5 written to our PM1a control block). Checks the boot protocol, the
// initrd hand-over, SMP bring-up of both vCPUs by Linux through our MADT, and ACPI power-off.
// Runs on ordinary KVM hosts and in the KVM lab (tests/kvm-lab/run.sh); skipped where the host
// KVM cannot run Linux's kernel code to user space (this project's kvm_pvm hosts, HOST.md).
import assert from 'node:assert/strict';
import test from 'node:test';
import { debianKernelPath } from '../../src/boot/debian-kernel.js';
import { linuxInitrdPath } from '../guests/index.js';
import { kvmSkip, scaled } from '../kvm-available.js';
import { bootLinux, pvmSkip } from './boot-linux.js';

const CPUS = 2;

test('the Debian cloud kernel boots to /init on 2 vCPUs and powers off through ACPI', { timeout: scaled(60_000), skip: kvmSkip || pvmSkip }, async (t) => {
  const kernel = debianKernelPath();
  if (!kernel) { t.skip('no Debian kernel in .cache/kernels; run `npm run fetch-kernel`'); return; }
  // earlyprintk: everything the kernel says reaches the serial port even if it stops early.
  const cmdline = 'earlyprintk=serial console=ttyS0 panic=-1';
  const { status, out, tail } = await bootLinux(kernel, linuxInitrdPath(), cmdline, ['--memory', '512M', '--cpus', String(CPUS)]);
  assert.match(out, /tsvmm-init: hello from \/init\r?\n/, `the kernel ran our /init${tail}`);
  assert.match(out, /tsvmm-init: kernel Linux 6\.1\.\S+-cloud-amd64\r?\n/, `uname from inside${tail}`);
  assert.match(out, new RegExp(`tsvmm-init: cpus ${CPUS}\\r?\\n`), `Linux brought up every vCPU of our MADT${tail}`);
  assert.match(out, /reboot: Power down/, `the kernel powered off${tail}`);
  assert.doesNotMatch(out, /power-off failed|Kernel panic/, `ACPI power-off ended the VM, not a panic and a reset${tail}`);
  assert.equal(status, 0, `tsvmm exits 0 on power-off${tail}`);
});
