// `npm run bench [-- NAME...]`: benchmarks that print ratios against a baseline measured in the
// same run (absolute times on shared machines are noise). Never pass/fail on time.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { guestPath } from '../tests/guests/index.js';
import { REGS_PROBE_PORT, regsProbeGuest } from '../tests/guests/generated.js';
import { runGuestFile, runImage, waitFor } from '../tests/run-guest.js';
import type { GuestMemory } from '../src/memory/guest-memory.js';
import type { VirtioDevice } from '../src/virtio/virtio.js';
import { openDisk, parseDiskSpec } from '../src/vmm/virtio-options.js';
import { buildKvmLoop, repoRoot } from './build.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function cLoop(bin: string, guest: string, cmdline: string): number {
  const r = spawnSync(bin, [guest, cmdline], { encoding: 'utf8' });
  const m = /ns=(\d+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`C baseline failed: ${r.stderr}`);
  return Number(m[1]) / 1e6;
}

async function tsvmmLoop(guest: string, cmdline: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await runGuestFile(guest, { cmdline, timeoutMs: 600000 });
  if (r.status !== 0) throw new Error(`tsvmm run failed: ${r.reason} ${r.fatal ?? ''}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Userspace PIO exit round trip: 1,000,000 `out` to port 0x80, tsvmm against a bare C KVM_RUN
 * loop. The guest issues them at CPL0 by default: on our nested host a CPL3 `out` costs ~20 µs
 * of fixed host overhead per exit that would hide the VMM's share (`BENCH_CPL=3` to compare).
 */
async function exits(): Promise<void> {
  const bin = buildKvmLoop();
  const guest = guestPath('bench-exits');
  const N = Number(process.env.BENCH_EXITS ?? 1_000_000);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const cpl = process.env.BENCH_CPL === '3' ? ' cpl=3' : '';
  const c: number[] = [];
  const t: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // Interleaved, and each as the difference between N exits and none, so start-up cost cancels.
    c.push(cLoop(bin, guest, `count=${N}${cpl}`) - cLoop(bin, guest, `count=0${cpl}`));
    t.push((await tsvmmLoop(guest, `count=${N}${cpl}`)) - (await tsvmmLoop(guest, `count=0${cpl}`)));
    console.log(`exits round ${i + 1}: c=${(c[i]! * 1e3 / N).toFixed(2)} µs/exit tsvmm=${(t[i]! * 1e3 / N).toFixed(2)} µs/exit`);
  }
  console.log(`exits: c median ${(median(c) * 1e3 / N).toFixed(2)} µs/exit, tsvmm median ${(median(t) * 1e3 / N).toFixed(2)} µs/exit (${N} exits, ${rounds} rounds)`);
  console.log(`exits: tsvmm/c = ${(median(t) / median(c)).toFixed(3)}`);
}

/** Time from process start to the first guest serial byte: tsvmm's CLI against QEMU microvm. */
async function startup(): Promise<void> {
  const qemu = spawnSync('qemu-system-x86_64', ['--version']);
  if (qemu.status !== 0) {
    console.log('startup: skipped (no qemu-system-x86_64; apt-get install qemu-system-x86)');
    return;
  }
  const guest = guestPath('hello');
  const cli = path.join(repoRoot, 'dist', 'src', 'cli.js');
  const tsvmmCmd = [process.execPath, cli, 'run', '--kernel', guest, '--memory', '256M'];
  const qemuCmd = ['qemu-system-x86_64', '-M', 'microvm', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities', '-m', '256M',
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', guest];
  const t: number[] = [];
  const q: number[] = [];
  for (let i = 0; i < 5; i++) {
    t.push(await firstByteMs(tsvmmCmd));
    q.push(await firstByteMs(qemuCmd));
  }
  console.log(`startup: first serial byte tsvmm ${median(t).toFixed(1)} ms, qemu microvm ${median(q).toFixed(1)} ms`);
  console.log(`startup: tsvmm/qemu = ${(median(t) / median(q)).toFixed(3)}`);
}

function firstByteMs(argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
    let done = false;
    p.stdout.once('data', () => { done = true; resolve(Number(process.hrtime.bigint() - t0) / 1e6); });
    p.on('exit', () => { if (!done) reject(new Error(`${argv[0]} printed nothing`)); });
  });
}

/** Userspace exits whose handler reads and writes RAX and RIP: state cache against plain ioctls. */
async function regs(): Promise<void> {
  const N = Number(process.env.BENCH_PROBES ?? 200_000);
  const image = regsProbeGuest(N);
  const time = async (via: 'cache' | 'ioctl') => {
    const t0 = process.hrtime.bigint();
    const r = await runImage(image, 'regs-probe', { regsProbePort: REGS_PROBE_PORT, regsProbeVia: via, timeoutMs: 600000 });
    if (r.status !== 0) throw new Error(`regs-probe guest failed (${via}): status ${r.status}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const cache: number[] = [];
  const ioctl: number[] = [];
  for (let i = 0; i < 3; i++) {
    cache.push(await time('cache'));
    ioctl.push(await time('ioctl'));
  }
  console.log(`regs: exits/s with the state cache ${(N / median(cache)).toFixed(0)}, with KVM_GET/SET_REGS ${(N / median(ioctl)).toFixed(0)}`);
  console.log(`regs: cache/ioctl exits per second = ${(median(ioctl) / median(cache)).toFixed(3)}`);
}

/** Kicks against a spinning vCPU: how many per second, how long until the vCPU has seen each, none lost. */
async function kicks(): Promise<void> {
  const N = Number(process.env.BENCH_KICKS ?? 20_000);
  const lat: number[] = [];
  let lost = 0;
  let elapsed = 0;
  await runGuestFile(guestPath('spin'), {
    timeoutMs: 600000,
    during: async (m) => {
      // The whole line: until its last byte is out the vCPU waits on this thread's mailbox, which
      // the synchronous spin below would never serve (in the KVM lab every kick then timed out).
      await waitFor('"spinning\\n"', () => m.serialOutput().includes('spinning\n'));
      const v = m.vcpus[0]!;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < N; i++) {
        const before = v.stats().kickSeq;
        const k0 = process.hrtime.bigint();
        v.kick();
        // Spin (not the event loop) so the number is the vCPU's latency, not libuv's...
        let seen = false;
        while (!(seen = v.stats().kickAck > before) && process.hrtime.bigint() - k0 < 1_000_000_000n);
        // ...but past 1 s let the event loop serve the vCPU (a device access it waits on) before
        // calling the kick lost.
        while (!seen && process.hrtime.bigint() - k0 < 10_000_000_000n) {
          await new Promise((res) => setImmediate(res));
          seen = v.stats().kickAck > before;
        }
        if (!seen) lost++;
        lat.push(Number(process.hrtime.bigint() - k0) / 1e3);
      }
      elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      await m.shutdown();
    },
  });
  lat.sort((a, b) => a - b);
  const p = (q: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * q))]!;
  console.log(`kicks: ${(N / elapsed).toFixed(0)} kicks/s (each waited for), kick-to-exit median ${p(0.5).toFixed(1)} µs, p99 ${p(0.99).toFixed(1)} µs, max ${p(1).toFixed(0)} µs`);
  console.log(`kicks: lost=${lost} p99=${p(0.99).toFixed(1)}`);
}

/** The `virtio` guest's benchmark lines (tests/guests/virtio.c's header). */
const BLOCK_PHASES = ['seqread', 'seqwrite', 'randread', 'randwrite'] as const;
type BlockPhase = (typeof BLOCK_PHASES)[number];
interface PhaseResult { bytes: number; reqs: number; tsc: number; khz: number }
/** tests/guests/common/lib.c's tsc_khz() when CPUID gives no TSC frequency. */
const GUEST_TSC_KHZ_GUESS = 4_000_000;
/** tests/guests/virtio.c: the u64 the bench_notify mode watches for the device callback's stamp. */
const BENCH_STAMP_GPA = 0xf0_0000;

function parseBlockPhases(who: string, serial: string): Record<BlockPhase, PhaseResult> {
  const out: Partial<Record<BlockPhase, PhaseResult>> = {};
  for (const m of serial.matchAll(/^bench: (\w+) bytes=(\d+) reqs=(\d+) req_bytes=\d+ qd=\d+ tsc=(\d+) khz=(\d+)$/gm)) {
    out[m[1] as BlockPhase] = { bytes: Number(m[2]), reqs: Number(m[3]), tsc: Number(m[4]), khz: Number(m[5]) };
  }
  const missing = BLOCK_PHASES.filter((p) => !out[p]);
  if (missing.length || !serial.includes('bench: done')) throw new Error(`${who} block run: no ${missing.join(', ') || 'done'} line; serial: ${serial}`);
  return out as Record<BlockPhase, PhaseResult>;
}

/** The host's TSC rate, for guests whose CPUID does not give one (AMD hosts give none). */
function hostTscKhz(): number | null {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(fs.readFileSync('/proc/cpuinfo', 'latin1'));
  return m ? Math.round(Number(m[1]) * 1000) : null;
}

/** QEMU microvm with its virtio-blk on `disk`, running the `virtio-qemu` build of the guest. */
function qemuBlockArgs(disk: string, cmdline: string, accel: string): string[] {
  return ['-M', 'microvm,ioapic2=off', '-accel', accel, '-cpu', accel === 'kvm' ? 'host,-arch-capabilities' : 'max', '-m', '256M',
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
    '-global', 'virtio-mmio.force-legacy=false', '-drive', `id=d0,file=${disk},format=raw,if=none`, '-device', 'virtio-blk-device,drive=d0',
    '-kernel', guestPath('virtio-qemu'), '-append', cmdline];
}

/** The block device with a stamp: each notify() first writes a new count to BENCH_STAMP_GPA. */
function stampingDevice(inner: VirtioDevice): VirtioDevice {
  let memory: GuestMemory | null = null;
  let stamp = 0n;
  return {
    deviceType: inner.deviceType,
    deviceFeatures: inner.deviceFeatures,
    queueMaxSizes: inner.queueMaxSizes,
    configSizeBytes: inner.configSizeBytes,
    readConfig: (offset, data) => inner.readConfig(offset, data),
    writeConfig: (offset, data) => inner.writeConfig(offset, data),
    activate: (queues, mem, interrupt, features) => { memory = mem; inner.activate(queues, mem, interrupt, features); },
    reset: () => { memory = null; inner.reset(); },
    notify: (queue) => { memory?.writeU64(BENCH_STAMP_GPA, ++stamp); inner.notify(queue); },
  };
}

/**
 * virtio-blk throughput: the `virtio` guest's bench mode (bench_seq_mib=S bench_req_kib=R
 * bench_qd=Q bench_rand=N) on a fresh raw file, tsvmm (ioeventfd doorbell, the device on the main
 * thread, polled used ring) against QEMU microvm's virtio-blk on the same file and the same guest
 * (its `virtio-qemu` build, same virtio-mmio transport), interleaved. The guest times each phase
 * with its TSC: sequential write then read of S MiB in R KiB requests, then N random 4 KiB writes
 * and reads, Q in flight; everything read is checked against what was written. Every run gets a
 * new sparse file (the last run's pages and blocks dropped with it, so no VMM inherits the other's
 * page cache or writeback), and one warm-up round per VMM is not counted (tsvmm's JIT, both
 * VMMs' first allocations). Ratios are of the medians over rounds. Then, for tsvmm only,
 * QueueNotify-to-device-callback latency (bench_notify).
 */
async function block(): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
  const warmups = Number(process.env.BENCH_BLOCK_WARMUP ?? 1);
  const mib = Number(process.env.BENCH_BLOCK_MIB ?? 256);
  const reqKib = Number(process.env.BENCH_BLOCK_REQ_KIB ?? 128);
  const qd = Number(process.env.BENCH_BLOCK_QD ?? 8);
  const rand = Number(process.env.BENCH_BLOCK_RAND ?? 20_000);
  const notifies = Number(process.env.BENCH_BLOCK_NOTIFIES ?? 2000);
  const vmms = (process.env.BENCH_BLOCK_VMMS ?? 'tsvmm,qemu').split(',');
  const accel = process.env.BENCH_QEMU_ACCEL ?? 'kvm';
  const cmdline = `bench_seq_mib=${mib} bench_req_kib=${reqKib} bench_qd=${qd} bench_rand=${rand}`;
  const disk = path.join(repoRoot, '.cache', 'bench-block.img');
  fs.mkdirSync(path.dirname(disk), { recursive: true });
  // BENCH_BLOCK_PREFILL=1: the file is written out (and synced) before each run, so the guest's
  // writes overwrite allocated, cached blocks instead of filling holes.
  const prefill = process.env.BENCH_BLOCK_PREFILL === '1';
  const freshDisk = () => {
    fs.rmSync(disk, { force: true });
    fs.writeFileSync(disk, '');
    fs.truncateSync(disk, mib << 20);
    if (!prefill) return;
    const fd = fs.openSync(disk, 'r+');
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let i = 0; i < mib; i++) fs.writeSync(fd, chunk, 0, chunk.length, i << 20);
    fs.fdatasyncSync(fd);
    fs.closeSync(fd);
  };
  freshDisk();

  const haveQemu = vmms.includes('qemu') && spawnSync('qemu-system-x86_64', ['--version']).status === 0;
  if (vmms.includes('qemu') && !haveQemu) console.log('block: qemu-system-x86_64 not installed (apt-get install qemu-system-x86); no baseline');
  const runTsvmm = async () => {
    freshDisk();
    const r = await runGuestFile(guestPath('virtio'), { cmdline, timeoutMs: 600000, virtio: [openDisk(parseDiskSpec(disk), 0).config] });
    if (r.status !== 0) throw new Error(`tsvmm block run failed (status ${r.status}, ${r.reason} ${r.fatal ?? ''}): ${r.serial}`);
    return parseBlockPhases('tsvmm', r.serial);
  };
  const qemuArgs = qemuBlockArgs(disk, cmdline, accel);
  if (haveQemu) console.log(`block: qemu-system-x86_64 ${qemuArgs.join(' ')}`);
  const runQemu = () => {
    freshDisk();
    const r = spawnSync('qemu-system-x86_64', qemuArgs, { encoding: 'utf8', timeout: 600000 });
    // isa-debug-exit: the guest's status 0 is QEMU's 1.
    if (r.status !== 1) throw new Error(`qemu block run failed (exit ${r.status}): ${r.stdout}${r.stderr}`);
    return parseBlockPhases('qemu', r.stdout);
  };

  const hostKhz = hostTscKhz();
  let guessed = false;
  const seconds = (p: PhaseResult) => {
    const khz = p.khz === GUEST_TSC_KHZ_GUESS && hostKhz !== null ? hostKhz : p.khz;
    if (khz !== p.khz) guessed = true;
    return p.tsc / (khz * 1000);
  };
  // MB/s for sequential phases, IOPS for random ones.
  const rate = (phase: BlockPhase, p: PhaseResult) => (phase.startsWith('seq') ? p.bytes / 1e6 : p.reqs) / seconds(p);
  const unit = (phase: BlockPhase) => (phase.startsWith('seq') ? 'MB/s' : 'IOPS');
  const fmt = (phase: BlockPhase, v: number) => `${v.toFixed(phase.startsWith('seq') ? 1 : 0)} ${unit(phase)}`;
  const results: Record<string, Record<BlockPhase, number[]>> = {};
  const khzSeen: Record<string, Set<number>> = {};
  const record = (who: string, r: Record<BlockPhase, PhaseResult>) => {
    results[who] ??= { seqread: [], seqwrite: [], randread: [], randwrite: [] };
    khzSeen[who] ??= new Set();
    for (const phase of BLOCK_PHASES) {
      results[who]![phase].push(rate(phase, r[phase]));
      khzSeen[who]!.add(r[phase].khz);
    }
    return BLOCK_PHASES.map((phase) => `${phase} ${fmt(phase, rate(phase, r[phase]))}`).join(', ');
  };
  const who = [...(vmms.includes('tsvmm') ? ['tsvmm'] : []), ...(haveQemu ? ['qemu'] : [])];
  const label = (w: string) => (w === 'qemu' && accel !== 'kvm' ? `qemu (${accel})` : w);
  for (let i = 0; i < warmups; i++) {
    for (const w of who) {
      if (w === 'tsvmm') await runTsvmm();
      else runQemu();
    }
  }
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so neither always runs just after the other's writeback.
    for (const w of i % 2 ? [...who].reverse() : who) {
      const line = record(w, w === 'tsvmm' ? await runTsvmm() : runQemu());
      console.log(`block round ${i + 1}: ${label(w)}: ${line}`);
    }
  }
  console.log(`block: ${mib} MiB sequential in ${reqKib} KiB requests, ${rand} random 4 KiB requests, queue depth ${qd}, ${rounds} rounds after ${warmups} warm-up, ${prefill ? 'file written out before each run' : 'a new sparse file each run'}; medians:`);
  for (const w of who) console.log(`block: ${label(w)}: ${BLOCK_PHASES.map((p) => `${p} ${fmt(p, median(results[w]![p]))}`).join(', ')}`);
  if (guessed) console.log(`block: the guests' CPUID gives no TSC rate; rates use the host's ${hostKhz} kHz (/proc/cpuinfo) for every VMM, so ratios do not depend on it`);
  if (who.length === 2 && [...khzSeen.tsvmm!].join() !== [...khzSeen.qemu!].join()) {
    console.log(`block: note: the guests' TSC kHz differ (tsvmm ${[...khzSeen.tsvmm!].join('/')}, qemu ${[...khzSeen.qemu!].join('/')}); each rate uses its own`);
  }

  if (vmms.includes('tsvmm')) {
    // QueueNotify to the device's notify() on the main thread, timed by the guest's TSC.
    const cfg = openDisk(parseDiskSpec(disk), 0).config;
    const r = await runGuestFile(guestPath('virtio'), {
      cmdline: `bench_notify=${notifies}`, timeoutMs: 600000, virtio: [{ ...cfg, device: stampingDevice(cfg.device) }],
    });
    const m = /^bench: notify n=\d+ callback_tsc_median=(\d+) callback_tsc_p99=(\d+) roundtrip_tsc_median=(\d+) khz=(\d+)$/m.exec(r.serial);
    if (r.status !== 0 || !m) throw new Error(`tsvmm notify run failed (status ${r.status}): ${r.serial}`);
    const khz = Number(m[4]) === GUEST_TSC_KHZ_GUESS && hostKhz !== null ? hostKhz : Number(m[4]);
    const us = (tsc: string) => (Number(tsc) / khz * 1e3).toFixed(1);
    console.log(`block: tsvmm notify-to-device-callback latency median ${us(m[1]!)} µs, p99 ${us(m[2]!)} µs; 4 KiB read round trip median ${us(m[3]!)} µs (${notifies} notifies, one in flight; qemu: not measured)`);
  }

  if (who.length < 2) {
    console.log(`block: no ratios (${haveQemu ? 'tsvmm not run' : 'no qemu baseline'}); measured: ${who.map((w) => `${w} read ${fmt('seqread', median(results[w]!.seqread))} write ${fmt('seqwrite', median(results[w]!.seqwrite))}`).join('; ')}`);
    return;
  }
  const ratio = (p: BlockPhase) => (median(results.tsvmm![p]) / median(results.qemu![p])).toFixed(3);
  console.log(`block: randread tsvmm/qemu=${ratio('randread')} randwrite tsvmm/qemu=${ratio('randwrite')} (4 KiB IOPS)`);
  console.log(`block: read tsvmm/qemu=${ratio('seqread')} write tsvmm/qemu=${ratio('seqwrite')}`);
}

/**
 * Memory-map commit latency: split-then-merge of the memmap guest's torture region (two commits)
 * while 1..24 vCPUs read, write and execute in it, atomic mode against pause-all mode, measured in
 * the same run. Target: atomic flat in the number of vCPUs (pause-all grows with it).
 */
/**
 * The calling thread's scheduler times from /proc/thread-self/schedstat (Linux): ns on a CPU and
 * ns waiting on a run queue. Zeros where the kernel has no schedstat.
 */
function mainThreadSchedstat(): { onCpuNs: number; runQueueNs: number } {
  try {
    const [onCpu, wait] = fs.readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ').map(Number);
    return { onCpuNs: onCpu ?? 0, runQueueNs: wait ?? 0 };
  } catch {
    return { onCpuNs: 0, runQueueNs: 0 };
  }
}

async function memslots(): Promise<void> {
  const REGION_GPA = 0x400_0000; // tests/guests/memmap.c
  const PAGE = 4096;
  const PAGES = 256;
  const N = Number(process.env.BENCH_MEMSLOTS_ITERATIONS ?? 50);
  const counts = (process.env.BENCH_MEMSLOTS_VCPUS ?? '1,2,4,8,16,24').split(',').map(Number);
  const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
  const rows: Array<{ cpus: number; mode: string; median: number; p99: number; cpuMedian: number }> = [];
  for (const cpus of counts) {
    for (const mode of ['atomic', 'pause-all'] as const) {
      const us: number[] = [];
      const cpuUs: number[] = [];
      const waitUs: number[] = [];
      await runGuestFile(guestPath('memmap'), {
        cpus, memoryBytes: 256 << 20, timeoutMs: 600000,
        during: async (m) => {
          await waitFor('memmap: ready', () => m.serialOutput().includes('memmap: ready'), 120000);
          await m.memoryMap.commit(m.memoryMap.begin().split('ram0', REGION_GPA, 'torture').split('torture', PAGES * PAGE, 'rest'), 'pause-all');
          for (let i = 0; i < N; i++) {
            const s0 = mainThreadSchedstat();
            const t0 = process.hrtime.bigint();
            await m.memoryMap.commit(m.memoryMap.begin().split('torture', (1 + (i % (PAGES - 1))) * PAGE, 'torture-b'), mode);
            await m.memoryMap.commit(m.memoryMap.begin().merge('torture', 'torture-b'), mode);
            us.push(Number(process.hrtime.bigint() - t0) / 1e3);
            const s1 = mainThreadSchedstat();
            cpuUs.push((s1.onCpuNs - s0.onCpuNs) / 1e3);
            waitUs.push((s1.runQueueNs - s0.runQueueNs) / 1e3);
          }
          m.memory.writeU64(0x20_0008, 1n); // the guest's stop flag
        },
      });
      rows.push({ cpus, mode, median: pct(us, 0.5), p99: pct(us, 0.99), cpuMedian: pct(cpuUs, 0.5) });
      console.log(`memslots: ${String(cpus).padStart(2)} vCPUs ${mode.padEnd(9)} split+merge median ${pct(us, 0.5).toFixed(0)} µs p99 ${pct(us, 0.99).toFixed(0)} µs (${N} pairs); main thread on a CPU ${pct(cpuUs, 0.5).toFixed(0)} µs, waiting for one ${pct(waitUs, 0.5).toFixed(0)} µs`);
    }
  }
  const at = (cpus: number, mode: string) => rows.find((r) => r.cpus === cpus && r.mode === mode)!.median;
  const lo = counts[0]!;
  const hi = counts[counts.length - 1]!;
  const cpuAt = (cpus: number, mode: string) => rows.find((r) => r.cpus === cpus && r.mode === mode)!.cpuMedian;
  // With more vCPU threads than host cores, spinning guests take CPU time from the main thread, so
  // wall time grows with vCPUs even for work that touches no vCPU; its own CPU time does not.
  console.log(`memslots: main-thread CPU flatness atomic=${(cpuAt(hi, 'atomic') / cpuAt(lo, 'atomic')).toFixed(2)} pauseall=${(cpuAt(hi, 'pause-all') / cpuAt(lo, 'pause-all')).toFixed(2)} (on-CPU time per pair, ${hi} vCPUs / ${lo})`);
  console.log(`memslots: flatness atomic=${(at(hi, 'atomic') / at(lo, 'atomic')).toFixed(2)} pauseall=${(at(hi, 'pause-all') / at(lo, 'pause-all')).toFixed(2)}`);
}

/**
 * Host CPU of an idle guest: the `idle` guest halts with a 100 Hz LAPIC timer for 20 s, with
 * KVM's irqchip and with tsvmm's userspace one (HLT exits to the VMM), against QEMU microvm on
 * the same image; CPU time of the whole VMM process over wall time, printed as percentages.
 */
async function idle(): Promise<void> {
  const seconds = Number(process.env.BENCH_IDLE_SECONDS ?? 20);
  const cmdline = `seconds=${seconds}`;
  const cpuPct: Record<string, number> = {};
  for (const irqchip of ['kernel', 'userspace'] as const) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const r = await runGuestFile(guestPath('idle'), { cmdline, irqchip, timeoutMs: (seconds + 60) * 1000 });
    if (r.status !== 0) throw new Error(`idle (${irqchip}) failed: ${r.reason} ${r.fatal ?? r.serial}`);
    const c = process.cpuUsage(c0);
    cpuPct[irqchip] = ((c.user + c.system) / 1e3) / (Number(process.hrtime.bigint() - t0) / 1e6) * 100;
    console.log(`idle: tsvmm --irqchip ${irqchip}: ${cpuPct[irqchip]!.toFixed(1)}% of one host CPU over ${seconds} s`);
  }
  const qemu = spawnSync('qemu-system-x86_64', ['--version']);
  if (qemu.status === 0) {
    // QEMU's CPU time from /proc just before it exits: the guest runs for `seconds`.
    const t0 = process.hrtime.bigint();
    const child = spawn('qemu-system-x86_64', ['-M', 'microvm,acpi=on', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities', '-m', '256M',
      '-nodefaults', '-no-user-config', '-nographic', '-serial', 'null', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
      '-kernel', guestPath('idle'), '-append', cmdline], { stdio: 'ignore' });
    await new Promise((res) => setTimeout(res, (seconds - 0.5) * 1000));
    const stat = fs.readFileSync(`/proc/${child.pid}/stat`, 'latin1').split(') ')[1]!.split(' ');
    const ticks = Number(stat[11]) + Number(stat[12]); // utime, stime (fields 14, 15)
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    await new Promise((res) => child.once('exit', res));
    cpuPct.qemu = (ticks * 10) / wallMs * 100; // USER_HZ = 100
    console.log(`idle: qemu microvm: ${cpuPct.qemu!.toFixed(1)}% of one host CPU`);
  } else console.log('idle: qemu not installed (apt-get install qemu-system-x86); no baseline');
  const q = cpuPct.qemu;
  console.log(`idle: kernel=${cpuPct.kernel!.toFixed(1)}% userspace=${cpuPct.userspace!.toFixed(1)}%${q !== undefined ? ` qemu=${q.toFixed(1)}% kernel/qemu=${(cpuPct.kernel! / q).toFixed(2)} userspace/qemu=${(cpuPct.userspace! / q).toFixed(2)}` : ''}`);
}

const BENCHES: Record<string, () => Promise<void>> = { startup, exits, regs, kicks, block, memslots, idle };

const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(BENCHES)) {
  const b = BENCHES[name];
  if (!b) {
    console.error(`bench: unknown benchmark "${name}"; known: ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
  await b();
}

