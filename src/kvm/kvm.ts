// Thin, typed wrappers over /dev/kvm, a VM fd and a vCPU fd. They own the buffers each ioctl
// needs (allocated once) and turn every failure into a KvmError. Spec: Documentation/virt/kvm/api.rst.
import * as abi from './abi.js';
import * as io from './ioctls.js';
import { KvmError } from './errors.js';
import * as libc from './libc.js';

/** x86's page size: the unit of mmap offsets into a vCPU fd. */
const X86_PAGE_SIZE_BYTES = 4096;

function fail(call: string, target: string, doing: string, hint = ''): never {
  throw new KvmError('ioctl', call, target, libc.errno(), doing, hint);
}

/** One GSI routing entry: a pin of an in-kernel PIC/IOAPIC, or an MSI message (KVM api.rst 4.52). */
export type GsiRoute =
  | { readonly kind: 'irqchip'; readonly gsi: number; readonly chip: number; readonly pin: number }
  | { readonly kind: 'msi'; readonly gsi: number; readonly addressLo: number; readonly addressHi: number; readonly data: number };

export interface CpuidEntry {
  function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number;
}

export class KvmSystem {
  private constructor(readonly fd: number, readonly path: string) {}

  /** Opens /dev/kvm; errors name the missing device or permission and what to do. */
  static open(path = '/dev/kvm'): KvmSystem {
    const fd = libc.open(path, libc.O_RDWR | libc.O_CLOEXEC);
    if (fd < 0) {
      const errno = libc.errno();
      const hint = errno === 2 ? 'KVM is not available on this host: load the kvm module or run on a machine with virtualization enabled'
        : errno === 13 || errno === 1 ? `add your user to the group that owns ${path} (usually "kvm") or run as root`
          : 'check that KVM is enabled on this host';
      throw new KvmError('open', `open(${path})`, 'host', errno, 'opening the KVM device', hint);
    }
    const system = new KvmSystem(fd, path);
    const version = libc.ioctlValue(fd, io.KVM_GET_API_VERSION.number, 0);
    if (version !== io.KVM_API_VERSION) {
      throw new KvmError('capability', 'KVM_GET_API_VERSION', 'system', 0, `checking the KVM API version (got ${version}, need ${io.KVM_API_VERSION})`);
    }
    return system;
  }

  checkExtension(cap: abi.KvmCapName): number {
    const r = libc.ioctlValue(this.fd, io.KVM_CHECK_EXTENSION.number, abi.KVM_CAP[cap]);
    return r < 0 ? 0 : r;
  }

  require(cap: abi.KvmCapName, doing: string): number {
    const r = this.checkExtension(cap);
    if (r <= 0) throw new KvmError('capability', `KVM_CHECK_EXTENSION(${cap})`, 'system', 0, doing, `this host's KVM lacks ${cap}`);
    return r;
  }

  vcpuMmapSize(): number {
    const r = libc.ioctlValue(this.fd, io.KVM_GET_VCPU_MMAP_SIZE.number, 0);
    if (r < 0) fail('KVM_GET_VCPU_MMAP_SIZE', 'system', 'sizing the kvm_run page');
    return r;
  }

  supportedCpuid(): CpuidEntry[] {
    const n = abi.KVM_MAX_CPUID_ENTRIES;
    const buf = Buffer.alloc(abi.kvm_cpuid2.sizeBytes + n * abi.kvm_cpuid_entry2.sizeBytes);
    buf.writeUInt32LE(n, abi.kvm_cpuid2.at.nent);
    if (libc.ioctlPointer(this.fd, io.KVM_GET_SUPPORTED_CPUID.number, buf) < 0) {
      fail('KVM_GET_SUPPORTED_CPUID', 'system', `reading the host's CPUID (${n} entries)`);
    }
    const nent = buf.readUInt32LE(abi.kvm_cpuid2.at.nent);
    const out: CpuidEntry[] = [];
    const e = abi.kvm_cpuid_entry2.at;
    for (let i = 0; i < nent; i++) {
      const base = abi.kvm_cpuid2.sizeBytes + i * abi.kvm_cpuid_entry2.sizeBytes;
      out.push({
        function: buf.readUInt32LE(base + e.function), index: buf.readUInt32LE(base + e.index),
        flags: buf.readUInt32LE(base + e.flags), eax: buf.readUInt32LE(base + e.eax), ebx: buf.readUInt32LE(base + e.ebx),
        ecx: buf.readUInt32LE(base + e.ecx), edx: buf.readUInt32LE(base + e.edx),
      });
    }
    return out;
  }

  createVm(): KvmVm {
    const fd = libc.ioctlValue(this.fd, io.KVM_CREATE_VM.number, 0);
    if (fd < 0) fail('KVM_CREATE_VM', 'system', 'creating the VM', 'check free memory and the kvm module');
    return new KvmVm(this, fd);
  }

  close(): void {
    libc.close(this.fd);
  }
}

export class KvmVm {
  private readonly irqLevel = Buffer.alloc(abi.kvm_irq_level.sizeBytes);
  private readonly msi = Buffer.alloc(abi.kvm_msi.sizeBytes);
  constructor(readonly system: KvmSystem, readonly fd: number) {}

  private call(req: io.Ioctl, arg: Buffer | number, doing: string, hint = ''): number {
    const r = typeof arg === 'number' ? libc.ioctlValue(this.fd, req.number, arg) : libc.ioctlPointer(this.fd, req.number, arg);
    if (r < 0) fail(req.name, 'vm', doing, hint);
    return r;
  }

  setUserMemoryRegion(slot: number, flags: number, gpa: number, sizeBytes: number, hva: bigint): void {
    const b = Buffer.alloc(abi.kvm_userspace_memory_region.sizeBytes);
    const f = abi.kvm_userspace_memory_region.at;
    b.writeUInt32LE(slot, f.slot);
    b.writeUInt32LE(flags, f.flags);
    b.writeBigUInt64LE(BigInt(gpa), f.guest_phys_addr);
    b.writeBigUInt64LE(BigInt(sizeBytes), f.memory_size);
    b.writeBigUInt64LE(hva, f.userspace_addr);
    this.call(io.KVM_SET_USER_MEMORY_REGION, b,
      `mapping memslot ${slot} gpa 0x${gpa.toString(16)} size 0x${sizeBytes.toString(16)} at hva 0x${hva.toString(16)}`);
  }

  /** Deletes memslot `slot` (KVM_SET_USER_MEMORY_REGION with memory_size 0). */
  deleteUserMemoryRegion(slot: number, gpa: number): void {
    const b = Buffer.alloc(abi.kvm_userspace_memory_region.sizeBytes);
    const f = abi.kvm_userspace_memory_region.at;
    b.writeUInt32LE(slot, f.slot);
    b.writeBigUInt64LE(BigInt(gpa), f.guest_phys_addr);
    this.call(io.KVM_SET_USER_MEMORY_REGION, b, `deleting memslot ${slot} (gpa 0x${gpa.toString(16)})`);
  }

  /**
   * KVM_GET_DIRTY_LOG: memslot `slot`'s dirty bitmap (one bit per 4 KiB page, `pages` of them, in
   * u64 words as KVM writes it), cleared in KVM by the read. The slot must log dirty pages.
   */
  getDirtyLog(slot: number, pages: number): BigUint64Array {
    const words = Math.ceil(pages / 64);
    // Off the V8 heap and unpooled (allocUnsafeSlow, at least 128 bytes), so the address KVM writes
    // through cannot move under a garbage collection between taking it and the ioctl.
    const store = Buffer.allocUnsafeSlow(Math.max(words * 8, 128)).fill(0);
    const b = Buffer.alloc(abi.kvm_dirty_log.sizeBytes);
    b.writeUInt32LE(slot, abi.kvm_dirty_log.at.slot);
    b.writeBigUInt64LE(libc.addressOf(store), abi.kvm_dirty_log.at.dirty_bitmap);
    this.call(io.KVM_GET_DIRTY_LOG, b, `reading the dirty log of memslot ${slot} (${pages} pages)`,
      'the slot must exist and have dirty logging on');
    return new BigUint64Array(store.buffer, store.byteOffset, words);
  }

  /**
   * KVM_X86_SET_MSR_FILTER: every MSR in `trapped` exits to userspace on RDMSR and WRMSR
   * (KVM_EXIT_X86_RDMSR/WRMSR, once KVM_CAP_X86_USER_SPACE_MSR is enabled with
   * KVM_MSR_EXIT_REASON_FILTER); all others stay KVM's. One range per MSR, bitmap bit 0 clear (deny).
   */
  setMsrFilter(trapped: readonly number[]): void {
    if (trapped.length > abi.KVM_MSR_FILTER_MAX_RANGES) throw new Error(`MSR filter: ${trapped.length} MSRs, at most ${abi.KVM_MSR_FILTER_MAX_RANGES}`);
    const b = Buffer.alloc(abi.kvm_msr_filter.sizeBytes);
    b.writeUInt32LE(abi.KVM_MSR_FILTER_DEFAULT_ALLOW, abi.kvm_msr_filter.at.flags);
    // KVM copies the bitmaps during the ioctl; one zero byte (off the V8 heap) serves every range.
    const deny = Buffer.allocUnsafeSlow(128).fill(0);
    const r = abi.kvm_msr_filter_range;
    trapped.forEach((index, i) => {
      const base = abi.kvm_msr_filter.at.ranges + i * r.sizeBytes;
      b.writeUInt32LE(abi.KVM_MSR_FILTER_READ | abi.KVM_MSR_FILTER_WRITE, base + r.at.flags);
      b.writeUInt32LE(1, base + r.at.nmsrs);
      b.writeUInt32LE(index >>> 0, base + r.at.base);
      b.writeBigUInt64LE(libc.addressOf(deny), base + r.at.bitmap);
    });
    this.call(io.KVM_X86_SET_MSR_FILTER, b, `trapping MSRs ${trapped.map((m) => `0x${m.toString(16)}`).join(', ')} to userspace`);
  }

  setTssAddr(gpa: number): void {
    this.call(io.KVM_SET_TSS_ADDR, gpa, `placing the real-mode TSS at gpa 0x${gpa.toString(16)}`);
  }

  setIdentityMapAddr(gpa: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(gpa));
    this.call(io.KVM_SET_IDENTITY_MAP_ADDR, b, `placing the identity-map page at gpa 0x${gpa.toString(16)}`);
  }

  createIrqchip(): void {
    this.call(io.KVM_CREATE_IRQCHIP, 0, 'creating the in-kernel PIC, IOAPIC and LAPICs');
  }

  /** Replaces the whole GSI routing table (KVM has no call that changes one entry). */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    const e = abi.kvm_irq_routing_entry;
    const m = abi.kvm_irq_routing_entry_msi.at;
    const b = Buffer.alloc(abi.kvm_irq_routing.sizeBytes + routes.length * e.sizeBytes);
    b.writeUInt32LE(routes.length, abi.kvm_irq_routing.at.nr);
    routes.forEach((r, i) => {
      const base = abi.kvm_irq_routing.sizeBytes + i * e.sizeBytes;
      b.writeUInt32LE(r.gsi, base + e.at.gsi!);
      if (r.kind === 'irqchip') {
        b.writeUInt32LE(abi.KVM_IRQ_ROUTING_IRQCHIP, base + e.at.type!);
        b.writeUInt32LE(r.chip, base + e.at.irqchip!);
        b.writeUInt32LE(r.pin, base + e.at.pin!);
      } else {
        b.writeUInt32LE(abi.KVM_IRQ_ROUTING_MSI, base + m.type!);
        b.writeUInt32LE(r.addressLo >>> 0, base + m.address_lo!);
        b.writeUInt32LE(r.addressHi >>> 0, base + m.address_hi!);
        b.writeUInt32LE(r.data >>> 0, base + m.data!);
      }
    });
    const msi = routes.filter((r) => r.kind === 'msi').length;
    this.call(io.KVM_SET_GSI_ROUTING, b, `installing ${routes.length} GSI routes (${msi} MSI)`,
      'KVM takes GSIs below KVM_MAX_IRQ_ROUTES (the value of KVM_CAP_IRQ_ROUTING) and MSI routes only with its in-kernel irqchip');
  }

  /**
   * Makes guest writes to [addr, addr+len) signal `fd` inside KVM, with no exit to userspace
   * (optionally only when the written value equals `datamatch`). `deassign` removes it again.
   */
  ioeventfd(space: 'pio' | 'mmio', addr: number, len: number, fd: number, datamatch: number | null, deassign = false): void {
    const f = abi.kvm_ioeventfd.at;
    const b = Buffer.alloc(abi.kvm_ioeventfd.sizeBytes);
    let flags = space === 'pio' ? abi.KVM_IOEVENTFD_FLAG_PIO : 0;
    if (datamatch !== null) {
      flags |= abi.KVM_IOEVENTFD_FLAG_DATAMATCH;
      b.writeBigUInt64LE(BigInt(datamatch), f.datamatch);
    }
    if (deassign) flags |= abi.KVM_IOEVENTFD_FLAG_DEASSIGN;
    b.writeBigUInt64LE(BigInt(addr), f.addr);
    b.writeUInt32LE(len, f.len);
    b.writeInt32LE(fd, f.fd);
    b.writeUInt32LE(flags, f.flags);
    this.call(io.KVM_IOEVENTFD, b, `${deassign ? 'removing' : 'adding'} an ioeventfd on ${space} 0x${addr.toString(16)}+${len}`,
      'KVM refuses overlapping ioeventfds and lengths other than 0, 1, 2, 4 or 8');
  }

  /** Makes a signal on `fd` raise GSI `gsi` inside KVM (edge: KVM pulses the line). */
  irqfd(fd: number, gsi: number, deassign = false): void {
    const f = abi.kvm_irqfd.at;
    const b = Buffer.alloc(abi.kvm_irqfd.sizeBytes);
    b.writeUInt32LE(fd, f.fd);
    b.writeUInt32LE(gsi, f.gsi);
    b.writeUInt32LE(deassign ? abi.KVM_IRQFD_FLAG_DEASSIGN : 0, f.flags);
    this.call(io.KVM_IRQFD, b, `${deassign ? 'removing' : 'adding'} an irqfd for GSI ${gsi}`);
  }

  createPit2(flags: number): void {
    const b = Buffer.alloc(abi.kvm_pit_config.sizeBytes);
    b.writeUInt32LE(flags, abi.kvm_pit_config.at.flags);
    this.call(io.KVM_CREATE_PIT2, b, 'creating the in-kernel PIT');
  }

  /** Drives an interrupt line of the in-kernel PIC and IOAPIC (GSI numbering). */
  irqLine(gsi: number, level: 0 | 1): void {
    this.irqLevel.writeUInt32LE(gsi, abi.kvm_irq_level.at.irq);
    this.irqLevel.writeUInt32LE(level, abi.kvm_irq_level.at.level);
    this.call(io.KVM_IRQ_LINE, this.irqLevel, `setting GSI ${gsi} to level ${level}`);
  }

  /**
   * KVM_SIGNAL_MSI: injects one MSI through the in-kernel LAPICs. Returns false when the guest
   * blocked it (KVM returns 0: e.g. no LAPIC is addressed), true when it was delivered.
   */
  signalMsi(addressLo: number, addressHi: number, data: number): boolean {
    const f = abi.kvm_msi.at;
    this.msi.writeUInt32LE(addressLo >>> 0, f.address_lo);
    this.msi.writeUInt32LE(addressHi >>> 0, f.address_hi);
    this.msi.writeUInt32LE(data >>> 0, f.data);
    return this.call(io.KVM_SIGNAL_MSI, this.msi, `signalling MSI address 0x${addressHi.toString(16)}:${addressLo.toString(16)} data 0x${data.toString(16)}`) > 0;
  }

  enableCap(cap: number, args: number[], doing: string): void {
    const b = Buffer.alloc(abi.kvm_enable_cap.sizeBytes);
    b.writeUInt32LE(cap, abi.kvm_enable_cap.at.cap);
    args.forEach((a, i) => b.writeBigUInt64LE(BigInt(a), abi.kvm_enable_cap.at.args + i * 8));
    this.call(io.KVM_ENABLE_CAP_VM, b, doing);
  }

  /**
   * KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING or _ACQ_REL): every vCPU gets a dirty ring of
   * `sizeBytes` (a power of two within what KVM_CHECK_EXTENSION returned), and KVM_GET_DIRTY_LOG
   * stops working. Only before the first KVM_CREATE_VCPU.
   */
  enableDirtyRing(cap: 'KVM_CAP_DIRTY_LOG_RING' | 'KVM_CAP_DIRTY_LOG_RING_ACQ_REL', sizeBytes: number): void {
    const b = Buffer.alloc(abi.kvm_enable_cap.sizeBytes);
    b.writeUInt32LE(abi.KVM_CAP[cap], abi.kvm_enable_cap.at.cap);
    b.writeBigUInt64LE(BigInt(sizeBytes), abi.kvm_enable_cap.at.args);
    this.call(io.KVM_ENABLE_CAP_VM, b, `enabling dirty rings of ${sizeBytes} bytes per vCPU (${cap})`,
      'the size must be a power of two of at least one page (16 KiB on hosts with PML) and no vCPU may exist yet');
  }

  /**
   * KVM_RESET_DIRTY_RINGS: KVM takes back every entry userspace marked harvested (RESET) in every
   * vCPU's ring and write-protects those pages again. Returns how many entries it reset.
   */
  resetDirtyRings(): number {
    return this.call(io.KVM_RESET_DIRTY_RINGS, 0, 'resetting the harvested entries of the dirty rings');
  }

  createVcpu(index: number): number {
    return this.call(io.KVM_CREATE_VCPU, index, `creating vCPU ${index}`, 'the host may allow fewer vCPUs; lower --cpus');
  }

  close(): void {
    libc.close(this.fd);
  }
}

/**
 * A vCPU fd and its mapped kvm_run page. Usable from the vCPU's own thread (KVM_RUN and state
 * ioctls) and, before the vCPU starts, from the thread that created it.
 */
export class KvmVcpu {
  readonly target: string;
  private readonly regsBuf = Buffer.alloc(abi.kvm_regs.sizeBytes);
  private readonly sregsBuf = Buffer.alloc(abi.kvm_sregs.sizeBytes);
  private readonly interruptBuf = Buffer.alloc(abi.kvm_interrupt.sizeBytes);

  constructor(readonly index: number, readonly fd: number, readonly runHva: bigint, readonly runSizeBytes: number) {
    this.target = `vcpu ${index}`;
  }

  /** Maps kvm_run for a freshly created vCPU fd. */
  static map(index: number, fd: number, mmapSizeBytes: number): KvmVcpu {
    const ptr = libc.mmap(null, mmapSizeBytes, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
    const hva = libc.addressOf(ptr);
    if (hva === 0xffffffffffffffffn || hva === 0n) {
      throw new KvmError('mmap', 'mmap(vcpu fd)', `vcpu ${index}`, libc.errno(), 'mapping the kvm_run page');
    }
    return new KvmVcpu(index, fd, hva, mmapSizeBytes);
  }

  /**
   * Maps this vCPU's dirty ring: `sizeBytes` (the size given to enableDirtyRing) at page
   * KVM_DIRTY_LOG_PAGE_OFFSET of the vCPU fd, shared and read-write (KVM refuses a private or
   * executable mapping). Unmap it with unmap() from memory.ts before closing the fd.
   */
  mapDirtyRing(sizeBytes: number): { hva: bigint; sizeBytes: number } {
    const offset = abi.KVM_DIRTY_LOG_PAGE_OFFSET * X86_PAGE_SIZE_BYTES;
    const ptr = libc.mmap(null, sizeBytes, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, this.fd, offset);
    const hva = libc.addressOf(ptr);
    if (hva === 0xffffffffffffffffn || hva === 0n) {
      throw new KvmError('mmap', `mmap(vcpu fd, offset 0x${offset.toString(16)})`, this.target, libc.errno(), `mapping the ${sizeBytes}-byte dirty ring`,
        'dirty rings must be enabled on the VM (KVM_CAP_DIRTY_LOG_RING) before the vCPU is created');
    }
    return { hva, sizeBytes };
  }

  runView(): ArrayBuffer {
    return libc.viewOf(this.runHva, this.runSizeBytes);
  }

  private call(req: io.Ioctl, arg: Buffer | number, doing: string): number {
    const r = typeof arg === 'number' ? libc.ioctlValue(this.fd, req.number, arg) : libc.ioctlPointer(this.fd, req.number, arg);
    if (r < 0) fail(req.name, this.target, doing);
    return r;
  }

  getRegs(): Buffer {
    this.call(io.KVM_GET_REGS, this.regsBuf, 'reading general registers');
    return this.regsBuf;
  }

  setRegs(buf: Buffer): void {
    this.call(io.KVM_SET_REGS, buf, 'writing general registers');
  }

  getSregs(): Buffer {
    this.call(io.KVM_GET_SREGS, this.sregsBuf, 'reading segment and control registers');
    return this.sregsBuf;
  }

  setSregs(buf: Buffer): void {
    this.call(io.KVM_SET_SREGS, buf, 'writing segment and control registers');
  }

  setCpuid(entries: CpuidEntry[]): void {
    const b = Buffer.alloc(abi.kvm_cpuid2.sizeBytes + entries.length * abi.kvm_cpuid_entry2.sizeBytes);
    b.writeUInt32LE(entries.length, abi.kvm_cpuid2.at.nent);
    const e = abi.kvm_cpuid_entry2.at;
    entries.forEach((entry, i) => {
      const base = abi.kvm_cpuid2.sizeBytes + i * abi.kvm_cpuid_entry2.sizeBytes;
      b.writeUInt32LE(entry.function, base + e.function);
      b.writeUInt32LE(entry.index, base + e.index);
      b.writeUInt32LE(entry.flags, base + e.flags);
      b.writeUInt32LE(entry.eax >>> 0, base + e.eax);
      b.writeUInt32LE(entry.ebx >>> 0, base + e.ebx);
      b.writeUInt32LE(entry.ecx >>> 0, base + e.ecx);
      b.writeUInt32LE(entry.edx >>> 0, base + e.edx);
    });
    this.call(io.KVM_SET_CPUID2, b, `setting ${entries.length} CPUID entries`);
  }

  setMsrs(msrs: Array<[number, bigint]>): void {
    const b = Buffer.alloc(abi.kvm_msrs.sizeBytes + msrs.length * abi.kvm_msr_entry.sizeBytes);
    b.writeUInt32LE(msrs.length, abi.kvm_msrs.at.nmsrs);
    msrs.forEach(([index, value], i) => {
      const base = abi.kvm_msrs.sizeBytes + i * abi.kvm_msr_entry.sizeBytes;
      b.writeUInt32LE(index, base + abi.kvm_msr_entry.at.index);
      b.writeBigUInt64LE(value, base + abi.kvm_msr_entry.at.data);
    });
    const n = this.call(io.KVM_SET_MSRS, b, `setting ${msrs.length} MSRs`);
    if (n !== msrs.length) {
      const bad = msrs[n]?.[0] ?? 0;
      throw new KvmError('ioctl', 'KVM_SET_MSRS', this.target, 0, `setting MSR 0x${bad.toString(16)} (entry ${n} of ${msrs.length})`, 'the host refused this MSR');
    }
  }

  /**
   * Sets the signal mask in force while KVM_RUN runs the guest (the kernel's 64-bit sigset, not
   * glibc's 1024-bit one): `blockedSet` is the glibc set; its first 8 bytes are what KVM takes.
   */
  setSignalMask(blockedSet: Buffer): void {
    const b = Buffer.alloc(abi.kvm_signal_mask.sizeBytes + libc.KERNEL_SIGSET_BYTES);
    b.writeUInt32LE(libc.KERNEL_SIGSET_BYTES, abi.kvm_signal_mask.at.len);
    blockedSet.copy(b, abi.kvm_signal_mask.sizeBytes, 0, libc.KERNEL_SIGSET_BYTES);
    this.call(io.KVM_SET_SIGNAL_MASK, b, 'setting the signal mask used inside KVM_RUN');
  }

  /**
   * KVM_INTERRUPT: queues external interrupt `vector` for injection at the next entry. Only
   * without an in-kernel irqchip, and only when kvm_run.ready_for_interrupt_injection said so.
   */
  interrupt(vector: number): void {
    this.interruptBuf.writeUInt32LE(vector, abi.kvm_interrupt.at.irq);
    this.call(io.KVM_INTERRUPT, this.interruptBuf, `injecting interrupt vector ${vector}`);
  }

  /** KVM_GET_TSC_KHZ: the guest TSC frequency in kHz. */
  tscKhz(): number {
    return this.call(io.KVM_GET_TSC_KHZ, 0, 'reading the guest TSC frequency');
  }

  /** One MSR's value (KVM_GET_MSRS with one entry). */
  getMsr(index: number): bigint {
    const b = Buffer.alloc(abi.kvm_msrs.sizeBytes + abi.kvm_msr_entry.sizeBytes);
    b.writeUInt32LE(1, abi.kvm_msrs.at.nmsrs);
    b.writeUInt32LE(index, abi.kvm_msrs.sizeBytes + abi.kvm_msr_entry.at.index);
    const n = this.call(io.KVM_GET_MSRS, b, `reading MSR 0x${index.toString(16)}`);
    if (n !== 1) throw new KvmError('ioctl', 'KVM_GET_MSRS', this.target, 0, `reading MSR 0x${index.toString(16)}`, 'the host does not have this MSR');
    return b.readBigUInt64LE(abi.kvm_msrs.sizeBytes + abi.kvm_msr_entry.at.data);
  }

  /** KVM_NMI: queues an NMI for the next entry. */
  nmi(): void {
    this.call(io.KVM_NMI, 0, 'injecting an NMI');
  }

  /** Linear-to-physical translation through the guest's page tables (KVM_TRANSLATE). */
  translate(linear: bigint): { gpa: bigint; valid: boolean } {
    const b = Buffer.alloc(abi.kvm_translation.sizeBytes);
    b.writeBigUInt64LE(linear, abi.kvm_translation.at.linear_address);
    const r = libc.ioctlPointer(this.fd, io.KVM_TRANSLATE.number, b);
    if (r < 0) return { gpa: 0n, valid: false };
    return { gpa: b.readBigUInt64LE(abi.kvm_translation.at.physical_address), valid: b[abi.kvm_translation.at.valid] !== 0 };
  }

  close(): void {
    libc.munmap(this.runHva, this.runSizeBytes);
    libc.close(this.fd);
  }
}
