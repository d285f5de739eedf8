// The shared-memory protocol between a vCPU worker and the main thread: commands in, state and
// forwarded device accesses out. One Int32Array over a SharedArrayBuffer per vCPU; the worker
// never runs its event loop (it sits in KVM_RUN), so nothing here uses postMessage to reach it.

import type { VcpuLocalDevice } from '../types.js';

/** Int32 slots of the control block. */
export const CTRL = {
  /** command posted by the main thread (VcpuCommand) */
  CMD: 0,
  /** VcpuState, written by the worker */
  STATE: 1,
  /** incremented by the worker each time it has handled a command */
  ACK: 2,
  /** mailbox for one forwarded access: MBOX_IDLE, MBOX_REQUEST, MBOX_RESPONSE */
  MBOX: 3,
  MBOX_KIND: 4,
  MBOX_IS_WRITE: 5,
  MBOX_SIZE: 6,
  MBOX_ADDR_LO: 7,
  MBOX_ADDR_HI: 8,
  /** 8 data bytes at Int32 slots 10-11 (byte offset 40) */
  MBOX_DATA: 10,
  /** the main thread's answer to an MSR access: 1 done, 0 inject #GP */
  MBOX_RESULT: 9,
  /** pthread_t of the worker, BigInt64 slot 8 (byte offset 64) */
  TID_BIGINT_SLOT: 8,
  /** exits handled, total and by kind (Int32 slots 20..) */
  STAT_EXITS: 20,
  STAT_KICKS: 21,
  /** kicks requested by anyone (incremented before each kick) */
  KICK_SEQ: 22,
  /** the value of KICK_SEQ the vCPU last saw at its command point (after an exit was handled) */
  KICK_ACK: 23,
  /** the vCPU's deadline timer id (timer_t) + 1, BigInt64 slot 16 (byte offset 128) */
  TIMER_BIGINT_SLOT: 16,
  /** armed deadline, CLOCK_MONOTONIC ns (0: none), BigInt64 slot 17 (byte offset 136) */
  DEADLINE_BIGINT_SLOT: 17,
  /** lateness of the last deadline reached, ns, BigInt64 slot 18 (byte offset 144) */
  DEADLINE_LATE_BIGINT_SLOT: 18,
  /** deadlines reached so far */
  DEADLINES_REACHED: 24,
  /** 1 while DEADLINE_BIGINT_SLOT holds a deadline (checked on every exit without reading a BigInt) */
  DEADLINE_ARMED: 25,
  // ---- userspace interrupt controllers (VcpuWorkerData.irqchip === 'userspace') ----
  /** 1 while the VMM's interrupt controller has an interrupt this vCPU could take */
  IRQ_PENDING: 26,
  /** bumped (and notified) by every kick, command and interrupt: a halted vCPU waits on it */
  HALT_WAKE: 27,
  /** an INIT IPI is pending (1): the vCPU resets and waits for a SIPI */
  INIT_PENDING: 28,
  /** the vector of a pending STARTUP IPI, or -1 */
  SIPI_VECTOR: 29,
  /** an NMI is pending (1) */
  NMI_PENDING: 30,
  /** 1 when the VMM has deferred work for idle vCPUs: a halting vCPU then reports its idle time */
  WANTS_IDLE: 31,
  /** MWAITs this vCPU took as idle points (slept until a write to the monitored line or an interrupt) */
  STAT_MWAIT_IDLE: 42,
  /** the vCPU's next timer instant (LAPIC timer, PIT), CLOCK_MONOTONIC ns, 0 for none; BigInt64 slot 20 (byte 160) */
  IRQ_DEADLINE_BIGINT_SLOT: 20,
  /** register snapshot area (byte offset 256): kvm_regs then kvm_sregs */
  REGS_BYTE_OFFSET: 256,
  /** per exit reason r (< STAT_REASONS): exits at Int32 slot STAT_EXIT_BASE + r, state syscalls at STAT_SYSCALL_BASE + r */
  STAT_EXIT_BASE: 256,
  STAT_SYSCALL_BASE: 256 + 64,
} as const;
export const STAT_REASONS = 64;
export const MBOX_DATA_BYTE_OFFSET = CTRL.MBOX_DATA * 4;
export const CONTROL_BLOCK_BYTES = 2048;

export const enum VcpuCommand { None = 0, Pause = 1, Resume = 2, Stop = 3, ReadRegs = 4 }
export const enum VcpuState { Created = 0, Running = 1, Paused = 2, Stopped = 3 }
export const VCPU_STATE_NAMES = ['created', 'running', 'paused', 'stopped'] as const;
export const enum Mbox { Idle = 0, Request = 1, Response = 2 }
/**
 * What the worker forwards through the mailbox: device accesses, and with a userspace irqchip the
 * interrupt acknowledge cycle (the VMM answers the vector, as int32 data, -1 for none), a due
 * timer, and an idle point (the vCPU halted; the VMM may run deferred work before answering).
 * DirtyRingFull: KVM_EXIT_DIRTY_RING_FULL; the VMM answers once it has harvested and reset the rings.
 */
export const enum AccessKind { Pio = 1, Mmio = 2, Inta = 3, TimerDue = 4, Idle = 5, Msr = 6, DirtyRingFull = 7 }

/** Signal used to kick a vCPU out of KVM_RUN: SIGRTMIN + 6, clear of glibc's and Node's own use. */
export const SIG_KICK = 40;

/** Devices the worker handles itself, without a round trip to the main thread. */
export type LocalDeviceSpec = VcpuLocalDevice;

export interface VcpuWorkerData {
  index: number;
  fd: number;
  runHva: bigint;
  runSizeBytes: number;
  control: SharedArrayBuffer;
  /** the VM's memory-map sequence (Int32 slot 0): odd while memslots change under running vCPUs */
  mapSeq: SharedArrayBuffer;
  /** the VM's current RAM map (SharedRamTable), rewritten inside each map change */
  ramTable: SharedArrayBuffer;
  localDevices: LocalDeviceSpec[];
  /** every vCPU of the VM by index (this one included), so this thread can kick any of them */
  peers: VcpuPeer[];
  /** whose interrupt controllers: KVM's, or the VMM's (HLT then exits, interrupts come by KVM_INTERRUPT) */
  irqchip: 'kernel' | 'userspace';
  /** userspace irqchip: an AP that waits for its STARTUP IPI before it first runs */
  waitForSipi: boolean;
}

/** What a thread needs to kick a vCPU: its control block (kick sequence, thread id) and kvm_run. */
export interface VcpuPeer {
  control: SharedArrayBuffer;
  runHva: bigint;
  runSizeBytes: number;
}

/** Messages the worker posts to the main thread (never on the hot path). */
export type VcpuWorkerMessage =
  | { type: 'ready' }
  | { type: 'guest-exit'; status: number; reason: string }
  | { type: 'fatal'; report: string }
  | { type: 'error'; message: string };
