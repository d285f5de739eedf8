#!/usr/bin/env node
// The tsvmm command line: `tsvmm run [--kernel ...]`. User mistakes end in one line and exit 2.
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { BootError } from './boot/boot-error.js';
import { checkGuest } from './boot/loader.js';
import { KvmHypervisor } from './hypervisor/kvm/backend.js';
import { KvmError, TapDevice, TapError, canPunchHoles, punchHole } from './hypervisor/kvm/backend.js';
import { VirtioNet, formatNetStats } from './virtio/net.js';
import { Machine, type MachineConfig } from './vmm/machine.js';
import { CliError, parseCpus, parseMemorySize, readInputFile } from './vmm/options.js';
import { parseDiskSpec, parseNetSpec, parseVirtioTransport, prepareVirtio, type TapOpener } from './vmm/virtio-options.js';

const USAGE = `usage: tsvmm run [--kernel FILE] [--initrd FILE] [--append CMDLINE] [--cpus N] [--memory SIZE] [--console stdout|none|FILE]
                 [--disk PATH[,readonly][,serial=ID]]... [--rng] [--console-socket PATH] [--net tap=NAME[,mac=MAC]]...
                 [--virtio-transport mmio|pci]
                 [--irqchip kernel|userspace]
  with no --kernel, boots the bundled default guest (a platform report)`;

const EXIT_USAGE = 2;

/** --net's TAP devices: a TapError is the user's to fix (one line), anything else is ours. */
const openTap: TapOpener = (name) => {
  try {
    return TapDevice.open(name);
  } catch (e) {
    if (e instanceof TapError) throw new CliError(e.message, { cause: e });
    throw e;
  }
};

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      kernel: { type: 'string' }, initrd: { type: 'string' }, append: { type: 'string' },
      cpus: { type: 'string' }, memory: { type: 'string' }, console: { type: 'string' },
      'log-unclaimed': { type: 'boolean' }, irqchip: { type: 'string' }, stats: { type: 'boolean' }, 'cpu-invtsc': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      disk: { type: 'string', multiple: true }, rng: { type: 'boolean' }, 'console-socket': { type: 'string' },
      'virtio-transport': { type: 'string' },
      net: { type: 'string', multiple: true },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const cpus = parseCpus(values.cpus ?? '1');
  const memoryBytes = parseMemorySize(values.memory ?? '512M');
  let kernel: Uint8Array;
  let kernelName: string;
  let cmdline = values.append ?? '';
  if (values.kernel !== undefined) {
    kernel = readInputFile('--kernel', values.kernel);
    kernelName = `--kernel ${values.kernel}`;
  } else {
    const { buildDefaultGuest } = await import('./guest/default-guest.js');
    kernel = buildDefaultGuest();
    kernelName = 'default guest';
  }
  const initrd = values.initrd !== undefined ? readInputFile('--initrd', values.initrd) : null;
  const consoleArg = values.console ?? 'stdout';
  const consoleTarget: MachineConfig['console'] = consoleArg === 'stdout' ? { kind: 'stdout' }
    : consoleArg === 'none' ? { kind: 'none' } : { kind: 'file', path: consoleArg };

  const irqchip = values.irqchip ?? 'kernel';
  if (irqchip !== 'kernel' && irqchip !== 'userspace') {
    throw new CliError(`--irqchip ${JSON.stringify(irqchip)}: give kernel (KVM's interrupt controllers) or userspace (tsvmm's)`);
  }
  const invtsc = values['cpu-invtsc'] ?? 'auto';
  if (invtsc !== 'on' && invtsc !== 'off' && invtsc !== 'auto') {
    throw new CliError(`--cpu-invtsc ${JSON.stringify(invtsc)}: give on, off or auto`);
  }
  // Every input is checked (and every disk opened) before /dev/kvm, so a mistake is reported the
  // same way on a machine without KVM, and no RAM is mapped for a guest that cannot boot.
  checkGuest({ kernel, kernelName, initrd, cmdline, cpus, memoryBytes });
  const transport = parseVirtioTransport(values['virtio-transport']);
  const virtio = prepareVirtio({
    transport,
    disks: (values.disk ?? []).map(parseDiskSpec),
    rng: values.rng ?? false,
    consoleSocket: values['console-socket'] ?? null,
    nets: (values.net ?? []).map(parseNetSpec),
    openTap,
    holes: { canPunchHoles, punchHole },
  });
  let machine: Machine;
  let handedOver = false;
  try {
    const hv = KvmHypervisor.open(process.env.TSVMM_KVM_DEVICE);
    const maxVcpus = hv.maxVcpus();
    if (cpus > maxVcpus) throw new CliError(`--cpus ${cpus}: this host's KVM allows at most ${maxVcpus} vCPUs; give --cpus 1 to ${maxVcpus}`);
    await virtio.listen();
    handedOver = true; // from here the machine closes the devices, even when it fails to start
    machine = new Machine(hv, {
      kernel, kernelName, initrd, cmdline, cpus, memoryBytes, console: consoleTarget,
      logUnclaimed: values['log-unclaimed'] ?? false, invtsc, irqchip, virtio: virtio.configs,
    });
  } catch (e) {
    // Before they are handed to the machine, the opened disks and the socket are ours to close.
    if (!handedOver) for (const c of virtio.configs) {
      try { c.close?.(); } catch { /* exiting anyway */ }
    }
    throw e;
  }
  const detachStdin = attachStdin(machine);
  // A bug of ours must not leave vCPU threads in KVM_RUN, where they would keep the process alive.
  const onCrash = (e: unknown) => {
    process.stderr.write(`tsvmm: internal error: ${(e as Error)?.message ?? String(e)}\n`);
    if (process.env.TSVMM_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
    void machine.shutdown().finally(() => process.exit(1));
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  // vCPU threads must leave KVM_RUN before the process can exit; repeated signals change nothing.
  let stopping = false;
  const stopOnSignal = () => {
    if (stopping) return;
    stopping = true;
    void machine.shutdown().then(() => process.exit(130));
  };
  process.on('SIGINT', stopOnSignal);
  process.on('SIGTERM', stopOnSignal);
  try {
    const result = await machine.run();
    if (result.fatal) process.stderr.write(`tsvmm: ${result.fatal}\n`);
    if (values.stats) process.stderr.write(formatStats(machine));
    return result.status;
  } finally {
    detachStdin();
    process.removeListener('SIGINT', stopOnSignal);
    process.removeListener('SIGTERM', stopOnSignal);
  }
}

/** Exits and the syscalls spent on them (KVM_RUN included), per exit reason, over all vCPUs. */
function formatStats(machine: Machine): string {
  const total = new Map<string, { exits: number; syscalls: number }>();
  for (const v of machine.vcpus) {
    for (const [reason, s] of Object.entries(v.stats().byReason)) {
      const t = total.get(reason) ?? { exits: 0, syscalls: 0 };
      t.exits += s.exits;
      t.syscalls += s.syscalls;
      total.set(reason, t);
    }
  }
  const lines = ['exit reason          exits   syscalls  syscalls/exit'];
  let exits = 0;
  let syscalls = 0;
  for (const [reason, t] of [...total].sort((a, b) => b[1].exits - a[1].exits)) {
    lines.push(`${reason.padEnd(16)} ${String(t.exits).padStart(9)} ${String(t.syscalls).padStart(10)} ${(t.syscalls / t.exits).toFixed(2).padStart(14)}`);
    exits += t.exits;
    syscalls += t.syscalls;
  }
  lines.push(`syscalls/exit: ${exits ? (syscalls / exits).toFixed(2) : '0'}`);
  for (const s of machine.virtioSlots) {
    lines.push(`virtio slot ${s.index} (${s.config.label}): queue notifies ${s.notifyEvents} via ioeventfd, ${s.notifyExits} via MMIO exits; ${s.interrupts} interrupts`);
    if (s.config.device instanceof VirtioNet) lines.push(`  ${formatNetStats(s.config.device.stats)}`);
  }
  for (const s of machine.virtioPci?.slots ?? []) {
    // "direct": KVM_SIGNAL_MSI, or the userspace irqchip's APIC bus.
    lines.push(`virtio-pci 00:${s.slot.toString(16).padStart(2, '0')}.0 (${s.config.label}): queue notifies ${s.notifyEvents} via ioeventfd, ${s.notifyExits} via MMIO exits; ${s.interrupts} interrupts (MSI-X: ${s.msiByIrqfd} by irqfd, ${s.msiBySignal} direct)`);
  }
  return lines.join('\n') + '\n';
}

/** Interactive terminals type into COM1 (raw mode; Ctrl-A x quits, as in QEMU). */
function attachStdin(machine: Machine): () => void {
  if (!process.stdin.isTTY) return () => {};
  process.stdin.setRawMode(true);
  let ctrlA = false;
  const onData = (chunk: Buffer) => {
    for (const b of chunk) {
      if (ctrlA && (b === 0x78 || b === 0x58)) { void machine.shutdown().then(() => process.exit(0)); return; }
      ctrlA = b === 0x01;
    }
    machine.serial.enqueueInput(chunk);
  };
  process.stdin.on('data', onData);
  return () => {
    process.stdin.off('data', onData);
    process.stdin.setRawMode(false);
    process.stdin.pause();
  };
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  try {
    if (command === 'run') {
      process.exitCode = await run(rest);
    } else if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(USAGE + '\n');
      process.exitCode = command === undefined ? EXIT_USAGE : 0;
    } else {
      throw new CliError(`unknown command "${command}"; the only command is "run" (tsvmm run --help)`);
    }
  } catch (e) {
    process.exitCode = report(e);
  }
}

function report(e: unknown): number {
  const err = e as Error & { code?: string };
  if (e instanceof CliError || e instanceof BootError) {
    process.stderr.write(`tsvmm: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (e instanceof KvmError && (e.kind === 'open' || e.kind === 'capability')) {
    process.stderr.write(`tsvmm: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (err.code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`tsvmm: ${err.message}; see tsvmm run --help\n`);
    return EXIT_USAGE;
  }
  process.stderr.write(`tsvmm: ${err.message}\n`);
  if (process.env.TSVMM_DEBUG) process.stderr.write(`${err.stack}\n`);
  return 1;
}

void main();
