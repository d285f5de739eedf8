// The virtio command-line options (--disk, --rng, --console-socket, --net) turned into devices for
// the machine's slots, in this order: disks (in the order given), rng, console, nets (in the order
// given), so adding a --net never moves another device. Everything a user can get wrong is checked here, before /dev/kvm is opened, and
// reported as one CliError line naming the input and the fix.
import * as fs from 'node:fs';
import { VIRTIO_MMIO_SLOTS } from '../boot/layout.js';
import { FileBlockBackend, type HolePuncher } from '../virtio/block-file.js';
import { VIRTIO_BLK_ID_BYTES, VirtioBlock } from '../virtio/block.js';
import { VirtioConsole } from '../virtio/console.js';
import { VirtioNet, formatMac, parseMac, type NetBackend } from '../virtio/net.js';
import { VirtioRng } from '../virtio/rng.js';
import { checkConsoleSocketPath, ConsoleSocketServer } from './console-socket.js';
import { CliError } from './options.js';
import type { VirtioSlotConfig } from './virtio-devices.js';

export interface DiskSpec {
  /** The option as given, for messages: `--disk img,readonly`. */
  readonly text: string;
  readonly path: string;
  readonly readonly: boolean;
  /** GET_ID answer; default `tsvmm-disk<N>` (N = the disk's position among --disk options). */
  readonly serial: string | null;
}

const DISK_OPTIONS = 'readonly and serial=ID';

/** `PATH[,readonly][,serial=ID]`. A path cannot contain a comma. */
export function parseDiskSpec(text: string): DiskSpec {
  const [path = '', ...opts] = text.split(',');
  const what = `--disk ${text}`;
  if (path === '') throw new CliError(`${what}: no path; give --disk PATH[,readonly] with a raw disk image`);
  let readonly = false;
  let serial: string | null = null;
  for (const o of opts) {
    if (o === 'readonly') readonly = true;
    else if (o.startsWith('serial=')) {
      serial = o.slice('serial='.length);
      if (serial.length === 0 || serial.length > VIRTIO_BLK_ID_BYTES || !/^[\x21-\x7e]+$/.test(serial)) {
        throw new CliError(`${what}: serial must be 1 to ${VIRTIO_BLK_ID_BYTES} printable ASCII characters without spaces`);
      }
    } else throw new CliError(`${what}: unknown disk option ${JSON.stringify(o)}; the options are ${DISK_OPTIONS}`);
  }
  return { text, path, readonly, serial };
}

function errnoWhy(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code ?? (e as Error).message;
}

/**
 * Opens a disk image for a VirtioBlock (reads and writes go to the file; flush = fdatasync;
 * DISCARD punches holes through `holes` where the file system can).
 * `others`: disks already opened, so one file is not attached twice (two writers, one cache each).
 */
export function openDisk(spec: DiskSpec, index: number, others: ReadonlyArray<{ spec: DiskSpec; ino: number; dev: number }> = [], holes?: HolePuncher): { config: VirtioSlotConfig; ino: number; dev: number } {
  const what = `--disk ${spec.text}`;
  let st: fs.Stats;
  try {
    st = fs.statSync(spec.path);
  } catch (e) {
    const why = errnoWhy(e);
    const fix = why === 'no such file' ? `create a raw image first (e.g. truncate -s 64M ${spec.path}) or check the path` : 'check the path';
    throw new CliError(`${what}: cannot use it (${why}); ${fix}`);
  }
  if (st.isDirectory()) throw new CliError(`${what}: is a directory; give a raw disk image file`);
  if (!st.isFile()) throw new CliError(`${what}: not a regular file; tsvmm takes raw image files only (no block devices or pipes)`);
  const twin = others.find((o) => o.ino === st.ino && o.dev === st.dev);
  if (twin) throw new CliError(`${what}: the same file as --disk ${twin.spec.text}; give each disk its own image`);
  try {
    fs.accessSync(spec.path, fs.constants.R_OK);
  } catch (e) {
    throw new CliError(`${what}: cannot read it (${errnoWhy(e)}); check its permissions`);
  }
  if (!spec.readonly) {
    try {
      fs.accessSync(spec.path, fs.constants.W_OK);
    } catch (e) {
      throw new CliError(`${what}: not writable (${errnoWhy(e)}); add ,readonly to attach it read-only, or make the file writable`);
    }
  }
  let backend: FileBlockBackend;
  try {
    backend = FileBlockBackend.open(spec.path, { readonly: spec.readonly, ...(holes ? { holes } : {}) });
  } catch (e) {
    throw new CliError(`${what}: ${(e as Error).message}`, { cause: e });
  }
  const device = new VirtioBlock({ backend, readonly: spec.readonly, serial: spec.serial ?? `tsvmm-disk${index}` });
  // Once only: a second close(2) of the number could close an fd opened since (a vCPU's, KVM's).
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    backend.close();
  };
  return {
    config: { device, label: `block ${spec.path}${spec.readonly ? ' (readonly)' : ''}`, close },
    ino: st.ino,
    dev: st.dev,
  };
}

export type VirtioTransport = 'mmio' | 'pci';

/**
 * `--virtio-transport mmio|pci`: every virtio device on the one transport, as QEMU users pick
 * virtio-blk-device or virtio-blk-pci. Default mmio (what Firecracker users know).
 */
export function parseVirtioTransport(text: string | undefined): VirtioTransport {
  if (text === undefined || text === 'mmio') return 'mmio';
  if (text === 'pci') return 'pci';
  throw new CliError(`--virtio-transport ${JSON.stringify(text)}: give mmio (fixed virtio-mmio slots, the default) or pci (virtio-pci devices behind a PCI host bridge)`);
}

export interface NetSpec {
  /** The option as given, for messages: `--net tap=tap0,mac=...`. */
  readonly text: string;
  readonly tap: string;
  /** Default: defaultMac(slot). */
  readonly mac: Uint8Array | null;
}

const NET_OPTIONS = 'tap=NAME and mac=xx:xx:xx:xx:xx:xx';

/** `tap=NAME[,mac=xx:xx:xx:xx:xx:xx]`. The name itself is checked when the TAP is opened. */
export function parseNetSpec(text: string): NetSpec {
  const what = `--net ${text}`;
  let tap: string | null = null;
  let mac: Uint8Array | null = null;
  for (const o of text.split(',')) {
    if (o.startsWith('tap=')) tap = o.slice('tap='.length);
    else if (o.startsWith('mac=')) {
      mac = parseMac(o.slice('mac='.length));
      if (!mac) throw new CliError(`${what}: mac must be six hex bytes like 02:74:73:76:6d:05`);
      if (mac[0]! & 1) throw new CliError(`${what}: ${formatMac(mac)} is a multicast address; give a unicast MAC (first byte even, e.g. 02:...)`);
      if (mac.every((b) => b === 0)) throw new CliError(`${what}: 00:00:00:00:00:00 is not a usable MAC; give another`);
    } else throw new CliError(`${what}: unknown net option ${JSON.stringify(o)}; the options are ${NET_OPTIONS}`);
  }
  if (tap === null) throw new CliError(`${what}: no TAP device; give --net tap=NAME (e.g. made with: ip tuntap add NAME mode tap user $USER)`);
  return { text, tap, mac };
}

/**
 * The MAC a --net gets without mac=: 02:74:73:76:6d:NN, NN = its slot. 02 = locally administered
 * unicast; 74:73:76:6d is "tsvm". Unique within one VM; two VMs on one bridge need their own mac=.
 */
export function defaultMac(slot: number): Uint8Array {
  return Uint8Array.of(0x02, 0x74, 0x73, 0x76, 0x6d, slot);
}

/** A TAP device as the VMM sees it. Throws CliError (one line) when it cannot be opened. */
export type TapOpener = (name: string) => NetBackend & { readonly name: string; close(): void };

/** What the virtio options asked for, checked; `open()` makes the devices. */
export interface VirtioRequest {
  readonly disks: readonly DiskSpec[];
  readonly rng: boolean;
  readonly consoleSocket: string | null;
  /** Default mmio. */
  readonly transport?: VirtioTransport;
  readonly nets?: readonly NetSpec[];
  /** How --net opens its TAP device (the CLI passes the KVM backend's; required when nets is not empty). */
  readonly openTap?: TapOpener;
  /** How disks free blocks for DISCARD (the CLI passes the KVM backend's host calls); without it, no DISCARD. */
  readonly holes?: HolePuncher;
}

/**
 * Checks the virtio options and opens the disks (all before KVM). The console socket is only
 * checked here; `listen()` creates it once the VM is about to be built.
 */
export function prepareVirtio(request: VirtioRequest): { configs: VirtioSlotConfig[]; listen(): Promise<void> } {
  const transport = request.transport ?? 'mmio';
  const nets = request.nets ?? [];
  const count = request.disks.length + (request.rng ? 1 : 0) + (request.consoleSocket !== null ? 1 : 0) + nets.length;
  if (count > VIRTIO_MMIO_SLOTS) {
    throw new CliError(`${count} virtio devices asked for (--disk, --rng, --console-socket, --net): the machine has ${VIRTIO_MMIO_SLOTS} ${transport === 'pci' ? 'virtio-pci slots' : 'virtio-mmio slots'}; attach fewer`);
  }
  nets.forEach((n, i) => {
    const twin = nets.slice(0, i).find((o) => o.tap === n.tap);
    if (twin) throw new CliError(`--net ${n.text}: TAP device ${n.tap} is already given by --net ${twin.text}; give each --net its own TAP`);
  });
  if (request.consoleSocket !== null) checkConsoleSocketPath('--console-socket', request.consoleSocket);
  const configs: VirtioSlotConfig[] = [];
  const opened: Array<{ spec: DiskSpec; ino: number; dev: number }> = [];
  try {
    request.disks.forEach((spec, i) => {
      const d = openDisk(spec, i, opened, request.holes);
      opened.push({ spec, ino: d.ino, dev: d.dev });
      configs.push(d.config);
    });
  } catch (e) {
    for (const c of configs) c.close?.();
    throw e;
  }
  if (request.rng) configs.push({ device: new VirtioRng(), label: 'rng' });
  let listen = async () => {};
  if (request.consoleSocket !== null) {
    const socketPath = request.consoleSocket;
    let server: ConsoleSocketServer | null = null;
    const device = new VirtioConsole({ output: (bytes) => server?.send(bytes) });
    configs.push({ device, label: `console ${socketPath}`, close: () => server?.close() });
    listen = async () => {
      server = await ConsoleSocketServer.listen('--console-socket', socketPath);
      server.onInput = (bytes) => device.enqueueInput(bytes);
    };
  }
  try {
    for (const n of nets) configs.push(openNet(n, configs.length, request.openTap, configs));
  } catch (e) {
    for (const c of configs) c.close?.();
    throw e;
  }
  return { configs: transport === 'pci' ? configs.map((c) => ({ ...c, transport })) : configs, listen };
}

/** Opens the TAP for one --net (before KVM) and puts a virtio-net device on it, for slot `slot`. */
function openNet(spec: NetSpec, slot: number, openTap: TapOpener | undefined, others: readonly VirtioSlotConfig[]): VirtioSlotConfig {
  const what = `--net ${spec.text}`;
  if (!openTap) throw new Error(`${what}: no TAP opener was given to prepareVirtio`);
  const mac = spec.mac ?? defaultMac(slot);
  const twin = others.find((c) => c.device instanceof VirtioNet && formatMac(c.device.mac) === formatMac(mac));
  if (twin) throw new CliError(`${what}: MAC ${formatMac(mac)} is already used by ${twin.label}; give each --net its own mac=`);
  let tap: ReturnType<TapOpener>;
  try {
    tap = openTap(spec.tap);
  } catch (e) {
    if (e instanceof CliError) throw new CliError(`${what}: ${e.message}`, { cause: e });
    throw e;
  }
  const device = new VirtioNet({ backend: tap, mac });
  return { device, label: `net tap ${tap.name} ${formatMac(mac)}`, close: () => tap.close() };
}
