// Runs the real CLI on Debian's cloud kernel with an initramfs, for the slow Linux tests: the
// serial output, stderr and exit status, and a tail of both for assertion messages.
import { spawn } from 'node:child_process';
import { isKvmPvm } from '../kvm-available.js';
import { cliPath } from '../repo.js';

/** Why the Linux tests skip on this project's kvm_pvm hosts, or false. */
export const pvmSkip: string | false = isKvmPvm
  ? 'this host\'s KVM is kvm_pvm, which cannot run the kernel\'s own code far enough (HOST.md); run it in the KVM lab: npm run test:kvm-lab'
  : false;

export interface LinuxRun {
  status: number | null;
  /** serial output (latin1) */
  out: string;
  err: string;
  /** the last serial output and stderr, for assertion messages */
  tail: string;
}

/** `tsvmm run --kernel KERNEL --initrd INITRD --append CMDLINE ...extra`, to its exit. */
export async function bootLinux(kernel: string, initrd: string, cmdline: string, extra: readonly string[]): Promise<LinuxRun> {
  const child = spawn(process.execPath, [cliPath, 'run', '--kernel', kernel, '--initrd', initrd, '--append', cmdline, ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString('latin1'); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const status = await new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { status, out, err, tail: `\n--- last serial output ---\n${out.slice(-3000)}\n--- stderr ---\n${err}` };
}
