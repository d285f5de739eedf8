// Runs a guest image in-process on real KVM and collects what it did, for integration tests.
import * as fs from 'node:fs';
import { KvmHypervisor } from '../src/hypervisor/kvm/backend.js';
import type { IrqchipMode, VcpuStats } from '../src/hypervisor/types.js';
import { Machine, type MachineResult } from '../src/vmm/machine.js';
import { scaled } from './kvm-available.js';
import type { VirtioSlotConfig } from '../src/vmm/virtio-devices.js';

export interface GuestRun extends MachineResult {
  serial: string;
  unclaimed: Map<string, number>;
  stats: VcpuStats[];
  migrationBlockers: string[];
  /** per virtio slot: QueueNotify writes taken by ioeventfds and those that exited, interrupts sent */
  virtio: Array<{ label: string; notifyEvents: bigint; notifyExits: number; interrupts: number }>;
  /** the same per virtio-pci device, in PCI slot order, with its slot and INTA# pin */
  virtioPci: Array<{ label: string; slot: number; gsi: number; notifyEvents: bigint; notifyExits: number; interrupts: number; msiByIrqfd: number; msiBySignal: number; msiRoutesMade: number }>;
}

export interface RunOptions {
  cpus?: number;
  memoryBytes?: number;
  cmdline?: string;
  /** bound on the whole run; the VM is stopped and the test fails past it */
  timeoutMs?: number;
  /** called once the vCPUs run, with the machine, for tests that poke at it */
  during?: (m: Machine) => Promise<void>;
  regsProbePort?: number;
  kickPeerPort?: number;
  regsProbeVia?: 'cache' | 'ioctl' | 'fpu';
  invtsc?: 'on' | 'off' | 'auto';
  /** virtio devices, in slot order (the machine closes them) */
  virtio?: readonly VirtioSlotConfig[];
  irqchip?: IrqchipMode;
  /** dirty pages from KVM's dirty rings (MachineConfig.dirtyRing) */
  dirtyRing?: boolean;
}

export async function runImage(kernel: Uint8Array, name: string, opts: RunOptions = {}): Promise<GuestRun> {
  let hv: KvmHypervisor;
  try {
    hv = KvmHypervisor.open();
  } catch (e) {
    for (const c of opts.virtio ?? []) c.close?.(); // the machine would have closed them
    throw e;
  }
  const m = new Machine(hv, {
    kernel, kernelName: name, cmdline: opts.cmdline ?? '', cpus: opts.cpus ?? 1,
    memoryBytes: opts.memoryBytes ?? 256 << 20, console: { kind: 'none' }, captureSerial: true,
    regsProbePort: opts.regsProbePort, regsProbeVia: opts.regsProbeVia, invtsc: opts.invtsc, kickPeerPort: opts.kickPeerPort,
    virtio: opts.virtio, irqchip: opts.irqchip, dirtyRing: opts.dirtyRing,
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await m.start();
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${name}: no end within ${scaled(opts.timeoutMs ?? 30000)} ms; serial so far: ${JSON.stringify(m.serialOutput().slice(-400))}`)), scaled(opts.timeoutMs ?? 30000));
    });
    if (opts.during) {
      // A VM that ends while the test still drives it (a guest crash, a vCPU that died) fails the
      // test with its end reason, after a grace for tests that end it themselves and return,
      // instead of leaving the test to poll until its timeout.
      let driving = true;
      const endedEarly = m.wait().then(async (r) => {
        if (driving) await new Promise((res) => setTimeout(res, scaled(2000)).unref());
        // The catch below names the end reason.
        if (driving) throw new Error(`the VM ended (${r.reason}) with the test still driving it`);
      });
      const driven = opts.during(m);
      // Once the race is lost the test has failed; what the abandoned driver does after must not
      // crash the process (an unhandled rejection) or keep it alive (waitFor's timers are unref'd).
      driven.catch(() => {});
      try {
        await Promise.race([driven, timeout, endedEarly]);
      } catch (e) {
        // A test driving a VM that has ended fails on released RAM or vCPUs; say why the VM ended.
        const r = m.endResult;
        if (r) throw new Error(`${name}: the VM ended while the test was driving it (${r.reason}, status ${r.status}${r.fatal ? `: ${r.fatal}` : ''}); serial: ${JSON.stringify(m.serialOutput().slice(-400))}`, { cause: e });
        throw e;
      } finally {
        driving = false;
      }
    }
    const r = await Promise.race([m.wait(), timeout]);
    const virtio = m.virtioSlots.map((v) => ({ label: v.config.label, notifyEvents: v.notifyEvents, notifyExits: v.notifyExits, interrupts: v.interrupts }));
    const virtioPci = (m.virtioPci?.slots ?? []).map((v) => ({ label: v.config.label, slot: v.slot, gsi: v.gsi, notifyEvents: v.notifyEvents, notifyExits: v.notifyExits, interrupts: v.interrupts, msiByIrqfd: v.msiByIrqfd, msiBySignal: v.msiBySignal, msiRoutesMade: v.msiRoutesMade }));
    return { ...r, serial: m.serialOutput(), unclaimed: m.unclaimed, stats: m.vcpus.map((v) => v.stats()), migrationBlockers: [...m.migrationBlockers], virtio, virtioPci };
  } finally {
    clearTimeout(timer);
    await m.shutdown();
    hv.close();
  }
}

export async function runGuestFile(path: string, opts: RunOptions = {}): Promise<GuestRun> {
  return runImage(fs.readFileSync(path), path, opts);
}

/** Polls until `pred` holds, or fails after `ms`. */
export async function waitFor(what: string, pred: () => boolean, ms = 20000): Promise<void> {
  const end = Date.now() + scaled(ms);
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${scaled(ms)} ms waiting for ${what}`);
    // Unref'd: a VM keeps the process alive while it runs; an abandoned wait must not.
    await new Promise((r) => setTimeout(r, 5).unref());
  }
}
