// The machine's guest memory map on the hypervisor: address-space transactions applied as memslot
// operations while vCPUs run, the VMM's view of guest RAM kept in step, and dirty pages (the
// hypervisor's log plus the VMM's own writes) carried across every change.
// Spec: KVM_SET_USER_MEMORY_REGION and KVM_GET_DIRTY_LOG, Documentation/virt/kvm/api.rst.
//
// Two commit modes. `atomic` (the default) applies the memslot operations with every vCPU running:
// KVM applies one operation at a time, so a vCPU can touch a range in the gap between a delete and
// its create. Such an access exits as MMIO, and the VMM completes it against the new map
// (completeAgainstRam): the main thread serves MMIO exits only between event-loop turns and a
// commit is one synchronous turn, so the access is answered after the whole commit, as if it came
// after it. An instruction fetch in the gap fails instead; the vCPU thread sees the map sequence
// move and enters again (HvVm.beginMapChange). Only vCPUs that touch the changing range wait.
// `pause-all` pauses every vCPU around the operations: simpler, and the baseline in benchmarks.
//
// Dirty pages come from KVM_GET_DIRTY_LOG per logging slot (the default) or, with `dirtyRing`, from
// KVM's per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING) where the host has them: harvests then drain
// the rings into the same DirtyTracker, and a ring that fills stops its vCPU until it is drained.
import type { HvMemslot, HvVcpu, HvVm } from '../hypervisor/types.js';
import {
  AddressSpace, PAGE_SIZE_BYTES, type CommitResult, type GpaRange, type MapTransaction, type MemSlot, type MemslotOp,
} from '../memory/address-space.js';
import { DirtyTracker, slotsLosingDirtyLog, type KvmDirtyLog } from '../memory/dirty-bitmap.js';
import { checkDirtyRingSize } from '../memory/dirty-ring.js';
import { GuestMemory, type RamRegionSpec, type ViewFactory } from '../memory/guest-memory.js';

export type CommitMode = 'atomic' | 'pause-all';

export interface HostAllocation {
  readonly hva: bigint;
  readonly sizeBytes: number;
  free(): void;
}

export type MemoryMapErrorKind = 'host' | 'readonly-unsupported' | 'inconsistent';

export class MemoryMapError extends Error {
  override readonly name = 'MemoryMapError';
  constructor(readonly kind: MemoryMapErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** The hypervisor memslot for `slot`, whose backing is host allocation `host`. */
export function memslotFor(slot: MemSlot, host: { hva: bigint; sizeBytes: number }): HvMemslot {
  if (slot.offsetBytes + slot.sizeBytes > host.sizeBytes) {
    throw new MemoryMapError('host', `memslot ${slot.slot} (region "${slot.regionId}") ends ${slot.offsetBytes + slot.sizeBytes - host.sizeBytes} bytes past its host allocation "${slot.hostId}"`);
  }
  return {
    gpa: slot.gpa, sizeBytes: slot.sizeBytes, hva: host.hva + BigInt(slot.offsetBytes),
    readonly: slot.flags.readonly, logDirty: slot.flags.logDirty,
  };
}

/** The VMM's RAM regions for a slot table: every memslot, at its host address. */
export function ramSpecsFor(slots: readonly MemSlot[], hosts: ReadonlyMap<string, { hva: bigint; sizeBytes: number }>): RamRegionSpec[] {
  return slots.map((s) => {
    const host = hosts.get(s.hostId);
    if (host === undefined) throw new MemoryMapError('host', `memslot ${s.slot} uses host allocation "${s.hostId}", which the memory map does not know`);
    return { gpa: s.gpa, sizeBytes: s.sizeBytes, hva: host.hva + BigInt(s.offsetBytes) };
  });
}

export interface MemoryMapOptions {
  vm: HvVm;
  makeView: ViewFactory;
  /** the vCPUs to pause in pause-all mode; read at each commit, so vCPUs added later count */
  vcpus: () => readonly HvVcpu[];
  /**
   * Take dirty pages from the hypervisor's per-vCPU dirty rings instead of per-slot logs, where the
   * host has them (off by default; see MemoryMap.usesDirtyRing). The map must be made before any
   * vCPU exists. `true` gives rings of DEFAULT_DIRTY_RING_BYTES.
   */
  dirtyRing?: boolean | { sizeBytes: number };
}

/** 4096 entries per vCPU: api.rst's recommended minimum, 64 KiB per vCPU. */
export const DEFAULT_DIRTY_RING_BYTES = 4096 * 16;

export class MemoryMap {
  readonly space: AddressSpace;
  /** Guest RAM as the VMM reads and writes it; the same object across every map change. */
  readonly memory: GuestMemory;
  private readonly vm: HvVm;
  private readonly vcpus: () => readonly HvVcpu[];
  private readonly hosts = new Map<string, HostAllocation>();
  private tracker = new DirtyTracker();
  /** commits run one after another: pause-all awaits between validation and apply */
  private chain: Promise<unknown> = Promise.resolve();
  private broken: Error | null = null;
  /**
   * Whether dirty pages come from the dirty rings: true only when asked for (`dirtyRing`) and the
   * host has them; false means KVM_GET_DIRTY_LOG, also when rings were asked for and the host
   * lacks them (compare with dirtyRingRequested to tell).
   */
  readonly usesDirtyRing: boolean;
  readonly dirtyRingRequested: boolean;
  /** ring entries that named no current slot or a page past its slot's end: ignored */
  private ringEntriesIgnored = 0;

  constructor(opts: MemoryMapOptions) {
    this.vm = opts.vm;
    this.vcpus = opts.vcpus;
    this.space = new AddressSpace({ maxSlots: opts.vm.maxMemslots() });
    this.memory = new GuestMemory([], opts.makeView);
    this.dirtyRingRequested = opts.dirtyRing !== undefined && opts.dirtyRing !== false;
    const ringBytes = typeof opts.dirtyRing === 'object' ? opts.dirtyRing.sizeBytes : DEFAULT_DIRTY_RING_BYTES;
    if (this.dirtyRingRequested) checkDirtyRingSize(ringBytes);
    // A full ring stops its vCPU until drainDirtyRings has run on this thread.
    this.usesDirtyRing = this.dirtyRingRequested && opts.vm.enableDirtyRing(ringBytes, () => { this.drainDirtyRings(); });
  }

  /** Makes a host allocation available as a backing; it is freed by close(), never while vCPUs may use it. */
  defineHost(hostId: string, host: HostAllocation): void {
    this.space.defineHost(hostId, host.sizeBytes);
    this.hosts.set(hostId, host);
  }

  begin(): MapTransaction {
    return this.space.begin();
  }

  /**
   * Validates and applies `tx`. A refused transaction (AddressSpaceError) leaves the map, KVM and
   * guest RAM as they were. Commits are serialized.
   */
  commit(tx: MapTransaction, mode: CommitMode = 'atomic'): Promise<CommitResult> {
    const next = this.chain.then(async () => {
      if (mode === 'atomic') return this.commitNow(tx);
      const vcpus = this.vcpus().filter((v) => v.state() === 'running');
      await Promise.all(vcpus.map((v) => v.pause()));
      try {
        return this.commitNow(tx);
      } finally {
        await Promise.all(vcpus.map((v) => v.resume()));
      }
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /**
   * Validates and applies `tx` in this event-loop turn (atomic mode, or before any vCPU runs).
   * Synchronous on purpose: no MMIO exit is served between the first and the last memslot op.
   */
  commitNow(tx: MapTransaction): CommitResult {
    if (this.broken) throw new MemoryMapError('inconsistent', `the memory map is out of step with KVM since an earlier failure (${this.broken.message}); stop the VM`);
    if (!this.vm.supportsReadonlyMemory()) {
      const ro = tx.regions().find((r) => r.kind === 'rom' || (r.kind === 'ram' && r.readonly));
      if (ro !== undefined) {
        tx.abort();
        throw new MemoryMapError('readonly-unsupported', `memory map: region "${ro.id}" is read-only, but this host's KVM has no read-only memslots (KVM_CAP_READONLY_MEM); map it read-write or as mmio`);
      }
    }
    const oldSlots = new Map(this.tracker.slots().map((s) => [s.slot, s]));
    const result = tx.commit(); // validation: throws with the map unchanged
    try {
      this.apply(result.ops, oldSlots);
    } catch (e) {
      this.broken = e as Error;
      throw new MemoryMapError('inconsistent', `applying memory map generation ${result.generation} failed part-way (${(e as Error).message}); the VM's memory map is now neither the old nor the new one: stop the VM`, { cause: e });
    }
    return result;
  }

  private apply(ops: readonly MemslotOp[], oldSlots: ReadonlyMap<number, MemSlot>): void {
    // Logs die with their slot (and when logging stops): read them first. The rings have no
    // per-slot log, but their entries name slots by number, which a create may reuse: drain them
    // while the tracker still has the old table.
    const harvested = new Map<number, KvmDirtyLog>();
    const losing = slotsLosingDirtyLog(ops);
    if (this.usesDirtyRing && losing.length > 0) this.drainDirtyRings();
    for (const slot of losing) {
      const old = oldSlots.get(slot)!;
      if (!this.usesDirtyRing) harvested.set(slot, this.vm.getDirtyLog(slot, old.sizeBytes / PAGE_SIZE_BYTES));
      // Running vCPUs can still dirty the slot between that read and the delete, and KVM never
      // reports those writes (a ring entry pushed meanwhile names the old slot number, and lands
      // in whatever slot has that number next, or nowhere: a superset, or ignored). Count the whole slot dirty rather than lose one: correctness must not
      // depend on timing. (Exact in pause-all mode too, where nothing runs: a superset only.)
      this.tracker.markGpa(old.gpa, old.sizeBytes);
    }
    this.vm.beginMapChange();
    let ram: RamRegionSpec[] | undefined;
    try {
      for (const o of ops) {
        if (o.op === 'delete') this.vm.deleteMemslot(o.slot, o.gpa);
        else this.vm.setMemslot(o.slot, memslotFor(o, this.host(o.hostId)));
      }
      this.tracker.applyOps(ops, harvested);
      ram = ramSpecsFor(this.tracker.slots(), this.hosts);
    } finally {
      // The vCPU threads' view of RAM changes with the map (unchanged when an op failed: the
      // map is broken then, and the VM must stop).
      this.vm.endMapChange(ram);
    }
    this.memory.remap(ram);
  }

  private host(hostId: string): HostAllocation {
    const h = this.hosts.get(hostId);
    if (h === undefined) throw new MemoryMapError('host', `host allocation "${hostId}" is not defined; call defineHost first`);
    return h;
  }

  /**
   * An MMIO exit at `gpa` that the current map backs with memory (the vCPU hit the gap of a map
   * change): performs the access on guest RAM and returns true. Writes to read-only memory are
   * dropped, as ROM does. False when `gpa` is not memory: the access is a device's.
   */
  completeAgainstRam(gpa: number, isWrite: boolean, data: Uint8Array): boolean {
    const f = this.space.lookup(gpa);
    if (f === undefined || f.backing === undefined) return false;
    if (!this.memory.contains(gpa, data.length)) return false;
    if (!isWrite) data.set(this.memory.slice(gpa, data.length));
    else if (!f.readonly) {
      this.memory.write(gpa, data);
      this.tracker.markGpa(gpa, data.length);
    }
    return true;
  }

  /** Records a write the VMM made to guest RAM (device DMA, loaders): KVM's log never sees those. */
  noteVmmWrite(gpa: number, sizeBytes: number): void {
    this.tracker.markGpa(gpa, sizeBytes);
  }

  /** Turns KVM dirty logging of region `regionId` on or off (a flags-only memslot change). */
  setLogging(regionId: string, on: boolean): Promise<CommitResult> {
    return this.commit(this.begin().setLogDirty(regionId, on));
  }

  /**
   * The guest-physical pages dirtied since the last harvest, sorted and coalesced: KVM's log of
   * every logging slot merged with the VMM's own writes, including pages dirtied in slots that a
   * map change has since replaced. In ring mode the rings are drained instead of the logs read;
   * a page a running vCPU dirtied can reach its ring only at that vCPU's next exit (the processor
   * buffers it), so a harvest with every vCPU paused is complete and one while they run may leave
   * such a page to the next harvest.
   */
  harvestDirty(): GpaRange[] {
    if (this.usesDirtyRing) this.drainDirtyRings();
    else {
      for (const s of this.tracker.slots()) {
        if (s.flags.logDirty) this.tracker.mergeKvmLog(s.slot, this.vm.getDirtyLog(s.slot, s.sizeBytes / PAGE_SIZE_BYTES));
      }
    }
    return this.tracker.harvest();
  }

  /**
   * harvestDirty(), complete while vCPUs run. In ring mode each running vCPU is kicked first and
   * waited for: the exit a kick forces flushes the pages the processor buffered (Intel PML) into
   * its ring, as QEMU does before reaping (kvm_dirty_ring_reap). A deliberate exit, not a hope for
   * a spurious one. In log mode KVM_GET_DIRTY_LOG already makes every vCPU flush, so nothing waits.
   */
  async harvestDirtyComplete(timeoutMs = 1000): Promise<GpaRange[]> {
    if (this.usesDirtyRing) {
      const running = this.vcpus().filter((v) => v.state() === 'running');
      const seen = running.map((v) => { v.kick(); return v.stats().kickSeq; });
      const end = Date.now() + timeoutMs;
      while (running.some((v, i) => v.state() === 'running' && v.stats().kickAck < seen[i]!)) {
        if (Date.now() > end) throw new MemoryMapError('inconsistent', `harvesting the dirty rings: a vCPU did not take its kick within ${timeoutMs} ms; its last pages may be missing`);
        await new Promise((res) => setImmediate(res));
      }
    }
    return this.harvestDirty();
  }

  /**
   * Ring mode: moves every entry of every vCPU's dirty ring into the tracker, by slot, then hands
   * the entries back (reset) so the hypervisor tracks those pages again; the reset comes before
   * anyone reads the pages, as the ring protocol requires. Pages a running vCPU dirtied may reach
   * its ring only at its next exit: a harvest with every vCPU paused is complete. Returns the
   * entries taken.
   */
  private drainDirtyRings(): number {
    const bySlot = new Map<number, number[]>();
    const n = this.vm.harvestDirtyRings((slot, pageOffset) => {
      const pages = bySlot.get(slot);
      if (pages === undefined) bySlot.set(slot, [pageOffset]);
      else pages.push(pageOffset);
    });
    for (const [slot, pages] of bySlot) this.ringEntriesIgnored += pages.length - this.tracker.markSlotPages(slot, pages);
    if (n > 0) this.vm.resetDirtyRings();
    return n;
  }

  /** Ring mode: entries that named no current slot, or a page past their slot's end, since the map was made. */
  get dirtyRingEntriesIgnored(): number {
    return this.ringEntriesIgnored;
  }

  /** The RAM regions of the current map (gpa, size, host address). */
  ramSpecs(): RamRegionSpec[] {
    return this.memory.specs;
  }

  /** Frees every host allocation; the VM must be gone (or never run). */
  close(): void {
    this.memory.detach();
    for (const h of this.hosts.values()) h.free();
    this.hosts.clear();
  }
}
