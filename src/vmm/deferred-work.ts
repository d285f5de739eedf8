// Deferred VMM work (flushes, dirty-log harvests, housekeeping) run in the time idle vCPUs hand
// over, with a fallback deadline per item so the work happens even when no vCPU ever idles.
// The model is the idle-time hand-off of hypervisors that run their own deferred work on halted
// CPUs; here the queue is pure logic: the clock, the idle points and the fallback timer come from
// the caller, so it runs the same under tests and on a machine.
//
// It does not decide when a vCPU is idle (the interrupt controller and HLT/MWAIT exits do), and it
// never runs an item twice or drops one: each posted item runs exactly once, at an idle point or
// at its deadline, unless it is cancelled first.

/** Lower numbers run first. */
export const WORK_PRIORITY_URGENT = 0;
export const WORK_PRIORITY_NORMAL = 1;
export const WORK_PRIORITY_BACKGROUND = 2;
const PRIORITY_LEVELS = 3;

export type WorkPriority = typeof WORK_PRIORITY_URGENT | typeof WORK_PRIORITY_NORMAL | typeof WORK_PRIORITY_BACKGROUND;

export interface PostOptions {
  priority?: WorkPriority;
  /** Longest the item may wait for an idle vCPU before the fallback timer runs it (default: the queue's). */
  maxDelayNs?: bigint;
}

export interface WorkHandle {
  /** Removes the item if it has not run; returns whether it was still queued. */
  cancel(): boolean;
}

export interface DeferredWorkOptions {
  /** Monotonic clock, ns (process.hrtime.bigint on a machine). */
  nowNs(): bigint;
  /** Called whenever the earliest fallback deadline changes; null when the queue is empty. */
  armFallback(deadlineNs: bigint | null): void;
  /** Default maxDelayNs. */
  defaultMaxDelayNs: bigint;
  /**
   * An idle stretch shorter than this is not used: the vCPU is about to wake, and work run now
   * would delay its wake-up. Default 50 µs.
   */
  minIdleSliceNs?: bigint;
  /** An item that throws is reported here and the queue goes on. */
  onError?(name: string, error: unknown): void;
}

export interface DeferredWorkStats {
  posted: number;
  ranIdle: number;
  ranFallback: number;
  cancelled: number;
  failed: number;
}

export type DeferredWorkErrorKind = 'bad-priority' | 'bad-delay' | 'reentered';

export class DeferredWorkError extends Error {
  override readonly name = 'DeferredWorkError';
  constructor(readonly kind: DeferredWorkErrorKind, message: string) {
    super(message);
  }
}

interface Item {
  readonly name: string;
  readonly run: () => void;
  readonly deadlineNs: bigint;
  /** posting order, for FIFO within a priority and for deterministic tie-breaks */
  readonly seq: number;
  done: boolean;
}

export class DeferredWorkQueue {
  /** one FIFO per priority; finished items are dropped from the front lazily */
  private readonly queues: Item[][] = Array.from({ length: PRIORITY_LEVELS }, () => []);
  private queued = 0;
  private seq = 0;
  /** what armFallback was last told; undefined once the fallback timer has fired (spent) */
  private armedNs: bigint | null | undefined = null;
  private running = false;
  private readonly minIdleSliceNs: bigint;
  readonly stats: DeferredWorkStats = { posted: 0, ranIdle: 0, ranFallback: 0, cancelled: 0, failed: 0 };

  constructor(private readonly opts: DeferredWorkOptions) {
    if (opts.defaultMaxDelayNs <= 0n) throw new DeferredWorkError('bad-delay', `defaultMaxDelayNs ${opts.defaultMaxDelayNs}: give a positive delay`);
    this.minIdleSliceNs = opts.minIdleSliceNs ?? 50_000n;
  }

  get length(): number {
    return this.queued;
  }

  post(name: string, run: () => void, options: PostOptions = {}): WorkHandle {
    const priority = options.priority ?? WORK_PRIORITY_NORMAL;
    if (!Number.isInteger(priority) || priority < 0 || priority >= PRIORITY_LEVELS) {
      throw new DeferredWorkError('bad-priority', `deferred work "${name}": priority ${priority} is not one of WORK_PRIORITY_URGENT, _NORMAL, _BACKGROUND`);
    }
    const delay = options.maxDelayNs ?? this.opts.defaultMaxDelayNs;
    if (delay < 0n) throw new DeferredWorkError('bad-delay', `deferred work "${name}": maxDelayNs ${delay} is negative`);
    const item: Item = { name, run, deadlineNs: this.opts.nowNs() + delay, seq: this.seq++, done: false };
    this.queues[priority]!.push(item);
    this.queued++;
    this.stats.posted++;
    this.rearm();
    return {
      cancel: () => {
        if (item.done) return false;
        item.done = true;
        this.queued--;
        this.stats.cancelled++;
        this.rearm();
        return true;
      },
    };
  }

  /**
   * Whether a vCPU that is idle until `untilNs` (its next timer, or never: null) should give its
   * time to this queue. Asked at every idle point, before the vCPU sleeps.
   */
  wantsIdleTime(untilNs: bigint | null): boolean {
    if (this.queued === 0) return false;
    return untilNs === null || untilNs - this.opts.nowNs() >= this.minIdleSliceNs;
  }

  /**
   * An idle point: runs items, most urgent first and in posting order within a priority, until
   * the queue is empty or `untilNs` is less than minIdleSliceNs away. Returns how many ran.
   */
  runIdle(untilNs: bigint | null): number {
    return this.drain((item) => item !== null && this.wantsIdleTime(untilNs), 'ranIdle');
  }

  /**
   * The fallback timer fired: runs every item whose deadline has passed, whatever the vCPUs do.
   * The timer is one-shot, so what it was armed for is spent: the next deadline is armed again
   * even when it is the same instant (a timer that fires a little early, as the event loop's
   * millisecond clock lets it, finds nothing due and must fire again).
   */
  runDue(): number {
    this.armedNs = undefined;
    const now = this.opts.nowNs();
    let ran = 0;
    // Due items in deadline order (then posting order), not priority order: they are all late.
    const due = this.queues.flat().filter((i) => !i.done && i.deadlineNs <= now)
      .sort((a, b) => (a.deadlineNs < b.deadlineNs ? -1 : a.deadlineNs > b.deadlineNs ? 1 : a.seq - b.seq));
    this.enter();
    try {
      for (const item of due) {
        if (item.done) continue; // cancelled by an item that ran before it
        this.runOne(item, 'ranFallback');
        ran++;
      }
    } finally {
      this.leave();
    }
    return ran;
  }

  /** The earliest fallback deadline, or null when nothing is queued. */
  nextDeadlineNs(): bigint | null {
    let min: bigint | null = null;
    for (const q of this.queues) {
      for (const i of q) if (!i.done && (min === null || i.deadlineNs < min)) min = i.deadlineNs;
    }
    return min;
  }

  private drain(more: (next: Item | null) => boolean, counter: 'ranIdle'): number {
    let ran = 0;
    this.enter();
    try {
      for (let next = this.head(); more(next); next = this.head()) {
        this.runOne(next!, counter);
        ran++;
      }
    } finally {
      this.leave();
    }
    return ran;
  }

  /** The most urgent queued item, dropping finished ones from the queue fronts. */
  private head(): Item | null {
    for (const q of this.queues) {
      while (q.length > 0 && q[0]!.done) q.shift();
      if (q.length > 0) return q[0]!;
    }
    return null;
  }

  private runOne(item: Item, counter: 'ranIdle' | 'ranFallback'): void {
    item.done = true;
    this.queued--;
    this.stats[counter]++;
    try {
      item.run();
    } catch (e) {
      this.stats.failed++;
      this.opts.onError?.(item.name, e);
    }
  }

  // An item may post or cancel work, but must not run the queue from inside itself: that would
  // run items out of order and re-enter the caller's idle accounting.
  private enter(): void {
    if (this.running) throw new DeferredWorkError('reentered', 'deferred work ran the queue from inside one of its items; post instead');
    this.running = true;
  }

  private leave(): void {
    this.running = false;
    for (const q of this.queues) while (q.length > 0 && q[0]!.done) q.shift();
    this.rearm();
  }

  private rearm(): void {
    if (this.running) return; // leave() re-arms once, after the batch
    const next = this.nextDeadlineNs();
    if (next !== this.armedNs) {
      this.armedNs = next;
      this.opts.armFallback(next);
    }
  }
}
