// The Debian cloud kernel that tsvmm's Linux tests boot: where it is cached, and how to fetch it.
// Run as a script (`node dist/src/boot/debian-kernel.js`) to download it into .cache/kernels; CI does
// that before the tests. Tests call debianKernelPath() and skip when it returns null.
//
// Which kernel: the newest linux-image-6.1.0-N-cloud-amd64-unsigned, Debian 12's own kernel series.
// It is the one HOST.md describes (LZ4 payload, CONFIG_PVH, no MP tables); the 6.12 backports that
// the same archive also offers are zstd-compressed, which extractVmlinux() does not decompress.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const DEBIAN_KERNEL_SERIES = '6.1.0';
const PACKAGE_PATTERN = /^linux-image-6\.1\.0-(\d+)-cloud-amd64-unsigned$/;
const VMLINUZ_PATTERN = /^vmlinuz-6\.1\.0-(\d+)-cloud-amd64$/;

/** The repository root: the nearest directory above this module holding package.json (works from src/ and dist/). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}; is tsvmm checked out whole?`);
    dir = parent;
  }
  return dir;
}

/**
 * The package's virtio driver modules that the virtio slow test loads into the kernel (the cloud
 * kernel builds them as modules), by their path under lib/modules/<release>/kernel/.
 */
export const VIRTIO_MODULES = [
  'drivers/virtio/virtio.ko', 'drivers/virtio/virtio_ring.ko', 'drivers/virtio/virtio_mmio.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko', 'drivers/virtio/virtio_pci_legacy_dev.ko', 'drivers/virtio/virtio_pci.ko',
  'drivers/block/virtio_blk.ko', 'drivers/char/hw_random/virtio-rng.ko', 'drivers/char/virtio_console.ko',
] as const;

export function kernelCacheDir(): string {
  return join(repoRoot(), '.cache', 'kernels');
}

/** The newest cached .cache/kernels/vmlinuz-6.1.0-N-cloud-amd64 (absolute path), or null when none is there. */
export function debianKernelPath(dir = kernelCacheDir()): string | null {
  if (!existsSync(dir)) return null;
  let best: { abi: number; name: string } | null = null;
  for (const name of readdirSync(dir)) {
    const match = VMLINUZ_PATTERN.exec(name);
    if (match && (!best || Number(match[1]) > best.abi)) best = { abi: Number(match[1]), name };
  }
  return best ? join(dir, best.name) : null;
}

/** Where fetchDebianKernel() put the VIRTIO_MODULES of a cached vmlinuz (flat: one directory of .ko files). */
export function debianModulesDir(vmlinuz: string): string {
  return join(dirname(vmlinuz), `modules-${vmlinuz.slice(vmlinuz.lastIndexOf('vmlinuz-') + 'vmlinuz-'.length)}`);
}

function run(command: string, args: string[], cwd?: string): string {
  return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Newest package name of the series in the apt lists, or null. */
function newestPackage(): { name: string; abi: number } | null {
  const listing = run('apt-cache', ['search', '--names-only', '^linux-image-6\\.1\\.0-[0-9]+-cloud-amd64-unsigned$']);
  let best: { name: string; abi: number } | null = null;
  for (const line of listing.split('\n')) {
    const name = line.split(' - ')[0].trim();
    const match = PACKAGE_PATTERN.exec(name);
    if (match && (!best || Number(match[1]) > best.abi)) best = { name, abi: Number(match[1]) };
  }
  return best;
}

/**
 * Downloads the newest Debian 6.1 cloud kernel package with apt-get and extracts its
 * boot/vmlinuz-* into .cache/kernels, and its VIRTIO_MODULES into debianModulesDir(). Runs
 * `apt-get update` first only when apt knows no such package. Returns the vmlinuz path; does
 * nothing when that version is already cached with its modules.
 */
export function fetchDebianKernel(log: (line: string) => void = () => {}): string {
  let pkg = newestPackage();
  if (!pkg) {
    log('apt knows no linux-image-6.1.0-*-cloud-amd64-unsigned; running apt-get update');
    run('apt-get', ['update']);
    pkg = newestPackage();
  }
  if (!pkg) {
    throw new Error('apt-cache finds no linux-image-6.1.0-*-cloud-amd64-unsigned package; is a Debian 12 (bookworm) source configured?');
  }
  const dir = kernelCacheDir();
  const target = join(dir, `vmlinuz-${DEBIAN_KERNEL_SERIES}-${pkg.abi}-cloud-amd64`);
  const release = `${DEBIAN_KERNEL_SERIES}-${pkg.abi}-cloud-amd64`;
  const modules = debianModulesDir(target);
  if (existsSync(target) && existsSync(modules)) {
    log(`${target} is already cached`);
    return target;
  }
  mkdirSync(dir, { recursive: true });
  // Work in a private directory and rename at the end, so a concurrent or interrupted run never
  // leaves a partial vmlinuz where debianKernelPath() looks.
  const work = mkdtempSync(join(dir, 'fetch-'));
  try {
    log(`downloading ${pkg.name}`);
    // As root, apt would warn that its _apt sandbox user cannot write here; downloading as root is what we want.
    run('apt-get', ['download', '-o', 'APT::Sandbox::User=root', pkg.name], work);
    const deb = readdirSync(work).find((name) => name.startsWith(`${pkg.name}_`) && name.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg.name} left no .deb in ${work}`);
    // dpkg-deb -x would unpack ~400 MB of modules; only boot/vmlinuz-* and the virtio drivers are needed.
    const moduleMembers = VIRTIO_MODULES.map((m) => `./lib/modules/${release}/kernel/${m}`);
    run('sh', ['-c', 'deb="$1" dir="$2"; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards "./boot/vmlinuz-*" "$@"',
      'sh', join(work, deb), work, ...moduleMembers]);
    const extracted = join(work, 'boot', `vmlinuz-${release}`);
    if (!existsSync(extracted)) throw new Error(`${deb} holds no ${extracted.slice(work.length + 1)}`);
    const moduleWork = join(work, 'modules');
    mkdirSync(moduleWork);
    for (const member of moduleMembers) renameSync(join(work, member), join(moduleWork, member.slice(member.lastIndexOf('/') + 1)));
    rmSync(modules, { recursive: true, force: true });
    renameSync(moduleWork, modules);
    renameSync(extracted, target);
    log(`cached ${target}`);
    return target;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    console.log(fetchDebianKernel((line) => console.error(line)));
  } catch (error) {
    console.error(`fetching the Debian kernel failed: ${(error as Error).message}`);
    process.exitCode = 1;
  }
}
