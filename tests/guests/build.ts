// Builds every test guest into .cache/guests/NAME.elf with the system gcc/as/ld, skipping
// guests whose inputs (sources, headers, linker script, flags) have not changed.
// Run from anywhere as `node dist/tests/guests/build.js`; paths resolve from the repo root.
// Spec: the images are ELF64 PVH kernels (see common/entry.S and common/guest.ld).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildInitramfs, S_IFREG } from './initramfs.js';
import {
  GUEST_NAMES,
  LINUX_PROGRAMS,
  linuxInitrdPath,
  linuxProgramPath,
  GuestBuildError,
  guestCacheDir,
  guestInputs,
  guestPath,
  guestSourceDir,
  guestSources,
} from './index.js';

/** Freestanding x86-64, no SSE (no CR4.OSFXSR set up), no red zone (interrupts share the
 *  CPL0 stack), no stack protector or PIE (nothing sets up %fs or relocates), no loop-to-memcpy
 *  rewriting (lib.c implements memcpy with a loop), and low constant addresses are not NULL. */
const CFLAGS = [
  '-m64',
  '-march=x86-64',
  '-O2',
  '-std=gnu11',
  '-ffreestanding',
  '-fno-builtin',
  '-fno-pic',
  '-fno-pie',
  '-fno-stack-protector',
  '-fno-asynchronous-unwind-tables',
  '-fno-unwind-tables',
  '-fcf-protection=none',
  '-mno-red-zone',
  '-mgeneral-regs-only',
  '-fno-delete-null-pointer-checks',
  '-fno-tree-loop-distribute-patterns',
  '--param=min-pagesize=0',
  '-Wall',
  '-Wextra',
  '-Werror',
];

const LDFLAGS = [
  '-nostdlib',
  '-static',
  '-no-pie',
  '-Wl,--build-id=none',
  '-Wl,-z,noexecstack',
  '-Wl,-z,max-page-size=4096',
];

/** The tools the build needs and the Debian package each comes from. */
const TOOLS = [
  { command: 'gcc', debianPackage: 'gcc' },
  { command: 'as', debianPackage: 'binutils' },
  { command: 'ld', debianPackage: 'binutils' },
] as const;

function checkTools(): void {
  for (const { command, debianPackage } of TOOLS) {
    try {
      execFileSync(command, ['--version'], { stdio: 'ignore' });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'not found' : `does not run (${code ?? (err as Error).message})`;
      throw new GuestBuildError(
        'missing-tool',
        `${command} ${why}; building the test guests needs it: apt-get install -y ${debianPackage}`,
        { cause: err },
      );
    }
  }
}

/** A digest of everything that goes into the guest's image. */
function inputsDigest(name: string): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ CFLAGS, LDFLAGS }));
  for (const file of [...guestInputs(name), ...guestSources(name)]) {
    hash.update(`\0${file}\0`);
    hash.update(readFileSync(join(guestSourceDir(), file)));
  }
  return hash.digest('hex');
}

function stampPath(name: string): string {
  return `${guestPath(name)}.inputs`;
}

function isUpToDate(name: string, digest: string): boolean {
  if (!existsSync(guestPath(name)) || !existsSync(stampPath(name))) return false;
  return readFileSync(stampPath(name), 'utf8').trim() === digest;
}

/** Runs gcc writing `tmp`; on failure removes it and throws with gcc's own messages. */
function gcc(args: readonly string[], tmp: string, what: string): void {
  try {
    execFileSync('gcc', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (err) {
    rmSync(tmp, { force: true });
    const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim();
    throw new GuestBuildError('build-failed', `building ${what} failed:\n${stderr || (err as Error).message}`, { cause: err });
  }
}

function buildOne(name: string, digest: string): void {
  const sourceDir = guestSourceDir();
  const out = guestPath(name);
  // Build to a temporary name and rename: a concurrent reader never sees half an image.
  const tmp = `${out}.tmp-${process.pid}`;
  const args = [
    ...CFLAGS,
    `-I${join(sourceDir, 'common')}`,
    `-I${sourceDir}`,
    '-T',
    join(sourceDir, 'common', 'guest.ld'),
    ...LDFLAGS,
    '-o',
    tmp,
    ...guestSources(name).map((file) => join(sourceDir, file)),
  ];
  gcc(args, tmp, `test guest ${name}`);
  renameSync(tmp, out);
  writeFileSync(stampPath(name), `${digest}\n`);
}

/** Linux user programs: hosted x86-64 code under a real kernel, so SSE and the red zone are fine. */
const LINUX_CFLAGS = ['-m64', '-O2', '-std=gnu11', '-ffreestanding', '-fno-builtin', '-fno-pic', '-fno-pie', '-fno-stack-protector',
  '-fcf-protection=none', '-Wall', '-Wextra', '-Werror'];

/** Builds linux/NAME.c into linuxProgramPath(NAME) and the initramfs around init, when out of date. */
function buildLinuxPrograms(result: BuildResult, checkOnce: () => void): void {
  for (const name of LINUX_PROGRAMS) {
    const source = join(guestSourceDir(), 'linux', `${name}.c`);
    const digest = createHash('sha256').update(JSON.stringify({ LINUX_CFLAGS, LDFLAGS })).update(readFileSync(source)).digest('hex');
    const out = linuxProgramPath(name);
    const stamp = `${out}.inputs`;
    const initrd = name === 'init' ? linuxInitrdPath() : null;
    if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === digest && (initrd === null || existsSync(initrd))) {
      result.upToDate.push(`linux-${name}`);
      continue;
    }
    checkOnce();
    const tmp = `${out}.tmp-${process.pid}`;
    gcc([...LINUX_CFLAGS, ...LDFLAGS, '-o', tmp, source], tmp, `Linux program linux/${name}.c`);
    renameSync(tmp, out);
    if (initrd !== null) {
      writeFileSync(`${initrd}.tmp-${process.pid}`, buildInitramfs([{ name: 'init', mode: S_IFREG | 0o755, data: readFileSync(out) }]));
      renameSync(`${initrd}.tmp-${process.pid}`, initrd);
    }
    writeFileSync(stamp, `${digest}\n`);
    result.built.push(`linux-${name}`);
  }
}

export interface BuildResult {
  built: string[];
  upToDate: string[];
}

/** Builds the named guests (all by default) that are missing or out of date. */
export function buildGuests(names: readonly string[] = GUEST_NAMES): BuildResult {
  mkdirSync(guestCacheDir(), { recursive: true });
  const result: BuildResult = { built: [], upToDate: [] };
  let toolsChecked = false;
  for (const name of names) {
    const digest = inputsDigest(name);
    if (isUpToDate(name, digest)) {
      result.upToDate.push(name);
      continue;
    }
    if (!toolsChecked) {
      checkTools();
      toolsChecked = true;
    }
    buildOne(name, digest);
    result.built.push(name);
  }
  if (names === GUEST_NAMES) {
    buildLinuxPrograms(result, () => {
      if (!toolsChecked) checkTools();
      toolsChecked = true;
    });
  }
  return result;
}

function main(): void {
  try {
    const { built, upToDate } = buildGuests();
    const where = relative(process.cwd(), guestCacheDir()) || '.';
    console.log(`test guests in ${where}: ${built.length} built, ${upToDate.length} up to date`);
  } catch (err) {
    if (err instanceof GuestBuildError) {
      console.error(`tests/guests/build: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main();
}
