// KVM's x86-64 userspace ABI: every struct tsvmm passes to or reads from the kernel, declared once.
// Source headers: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (Linux 6.x).
// Each table gives explicit byte offsets; at load, the same fields are laid out by koffi with C
// rules and every offset and the total size must agree, so a typo here fails at import time.
import koffi from 'koffi';

type Scalar = 'u8' | 'u16' | 'u32' | 'i32' | 'u64';
/** [offset, C type, element count (arrays)] or [offset, nested layout]. */
type FieldSpec = readonly [number, Scalar, number?] | readonly [number, Layout];

export interface Layout {
  readonly name: string;
  readonly sizeBytes: number;
  readonly fields: Readonly<Record<string, FieldSpec>>;
  /** byte offset of each field */
  readonly at: Readonly<Record<string, number>>;
}

const C_TYPES: Record<Scalar, string> = { u8: 'uint8_t', u16: 'uint16_t', u32: 'uint32_t', i32: 'int32_t', u64: 'uint64_t' };
const koffiTypes = new Map<string, unknown>();

function layout(name: string, sizeBytes: number, fields: Record<string, FieldSpec>): Layout {
  const at: Record<string, number> = {};
  const members: Record<string, unknown> = {};
  for (const [field, spec] of Object.entries(fields)) {
    at[field] = spec[0];
    if (typeof spec[1] === 'string') {
      const count = spec[2];
      members[field] = count === undefined ? C_TYPES[spec[1]] : koffi.array(C_TYPES[spec[1]], count);
    } else {
      members[field] = koffiTypes.get(spec[1].name);
    }
  }
  // Cross-check against C layout rules.
  const type = koffi.struct(`tsvmm_${name}`, members as never);
  koffiTypes.set(name, type);
  for (const field of Object.keys(fields)) {
    const cOffset = koffi.offsetof(type, field);
    if (cOffset !== at[field]) {
      throw new Error(`ABI table ${name}.${field}: declared offset ${at[field]} but C layout puts it at ${cOffset}`);
    }
  }
  const cSize = koffi.sizeof(type);
  if (cSize > sizeBytes) throw new Error(`ABI table ${name}: fields need ${cSize} bytes, declared size ${sizeBytes}`);
  return { name, sizeBytes, fields, at };
}

// struct kvm_regs (arch/x86/include/uapi/asm/kvm.h)
export const kvm_regs = layout('kvm_regs', 144, {
  rax: [0, 'u64'], rbx: [8, 'u64'], rcx: [16, 'u64'], rdx: [24, 'u64'],
  rsi: [32, 'u64'], rdi: [40, 'u64'], rsp: [48, 'u64'], rbp: [56, 'u64'],
  r8: [64, 'u64'], r9: [72, 'u64'], r10: [80, 'u64'], r11: [88, 'u64'],
  r12: [96, 'u64'], r13: [104, 'u64'], r14: [112, 'u64'], r15: [120, 'u64'],
  rip: [128, 'u64'], rflags: [136, 'u64'],
});

// struct kvm_segment
export const kvm_segment = layout('kvm_segment', 24, {
  base: [0, 'u64'], limit: [8, 'u32'], selector: [12, 'u16'], type: [14, 'u8'], present: [15, 'u8'],
  dpl: [16, 'u8'], db: [17, 'u8'], s: [18, 'u8'], l: [19, 'u8'], g: [20, 'u8'], avl: [21, 'u8'],
  unusable: [22, 'u8'], padding: [23, 'u8'],
});

// struct kvm_dtable
export const kvm_dtable = layout('kvm_dtable', 16, { base: [0, 'u64'], limit: [8, 'u16'], padding: [10, 'u16', 3] });

// struct kvm_sregs
export const kvm_sregs = layout('kvm_sregs', 312, {
  cs: [0, kvm_segment], ds: [24, kvm_segment], es: [48, kvm_segment], fs: [72, kvm_segment],
  gs: [96, kvm_segment], ss: [120, kvm_segment], tr: [144, kvm_segment], ldt: [168, kvm_segment],
  gdt: [192, kvm_dtable], idt: [208, kvm_dtable],
  cr0: [224, 'u64'], cr2: [232, 'u64'], cr3: [240, 'u64'], cr4: [248, 'u64'], cr8: [256, 'u64'],
  efer: [264, 'u64'], apic_base: [272, 'u64'], interrupt_bitmap: [280, 'u64', 4],
});

// struct kvm_vcpu_events
export const kvm_vcpu_events = layout('kvm_vcpu_events', 64, {
  exception_injected: [0, 'u8'], exception_nr: [1, 'u8'], exception_has_error_code: [2, 'u8'],
  exception_pending: [3, 'u8'], exception_error_code: [4, 'u32'],
  interrupt_injected: [8, 'u8'], interrupt_nr: [9, 'u8'], interrupt_soft: [10, 'u8'], interrupt_shadow: [11, 'u8'],
  nmi_injected: [12, 'u8'], nmi_pending: [13, 'u8'], nmi_masked: [14, 'u8'], nmi_pad: [15, 'u8'],
  sipi_vector: [16, 'u32'], flags: [20, 'u32'],
  smi_smm: [24, 'u8'], smi_pending: [25, 'u8'], smi_smm_inside_nmi: [26, 'u8'], smi_latched_init: [27, 'u8'],
  triple_fault_pending: [28, 'u8'], reserved: [29, 'u8', 26], exception_has_payload: [55, 'u8'],
  exception_payload: [56, 'u64'],
});

// struct kvm_sync_regs: what KVM_CAP_SYNC_REGS mirrors inside kvm_run.
export const kvm_sync_regs = layout('kvm_sync_regs', 520, {
  regs: [0, kvm_regs], sregs: [144, kvm_sregs], events: [456, kvm_vcpu_events],
});

// The exit-reason union members of struct kvm_run (offsets relative to the union at kvm_run+32).
export const kvm_run_io = layout('kvm_run_io', 16, {
  direction: [0, 'u8'], size: [1, 'u8'], port: [2, 'u16'], count: [4, 'u32'], data_offset: [8, 'u64'],
});
export const kvm_run_mmio = layout('kvm_run_mmio', 24, {
  phys_addr: [0, 'u64'], data: [8, 'u8', 8], len: [16, 'u32'], is_write: [20, 'u8'],
});
export const kvm_run_fail_entry = layout('kvm_run_fail_entry', 16, {
  hardware_entry_failure_reason: [0, 'u64'], cpu: [8, 'u32'],
});
export const kvm_run_internal = layout('kvm_run_internal', 136, {
  suberror: [0, 'u32'], ndata: [4, 'u32'], data: [8, 'u64', 16],
});
/** kvm_run.emulation_failure: kvm_run.internal when suberror is KVM_INTERNAL_ERROR_EMULATION. */
export const kvm_run_emulation_failure = layout('kvm_run_emulation_failure', 32, {
  suberror: [0, 'u32'], ndata: [4, 'u32'], flags: [8, 'u64'], insn_size: [16, 'u8'], insn_bytes: [17, 'u8', 15],
});
export const KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1n << 0n;
export const kvm_run_debug = layout('kvm_run_debug', 32, {
  exception: [0, 'u32'], pad: [4, 'u32'], pc: [8, 'u64'], dr6: [16, 'u64'], dr7: [24, 'u64'],
});
export const kvm_run_hypercall = layout('kvm_run_hypercall', 72, {
  nr: [0, 'u64'], args: [8, 'u64', 6], ret: [56, 'u64'], flags: [64, 'u32'],
});
export const kvm_run_system_event = layout('kvm_run_system_event', 136, {
  type: [0, 'u32'], ndata: [4, 'u32'], data: [8, 'u64', 16],
});
export const kvm_run_msr = layout('kvm_run_msr', 24, {
  error: [0, 'u8'], pad: [1, 'u8', 7], reason: [8, 'u32'], index: [12, 'u32'], data: [16, 'u64'],
});

// struct kvm_run: the page KVM_RUN shares with userspace (mmap of the vCPU fd).
export const KVM_RUN_EXIT_UNION = 32;
export const kvm_run = layout('kvm_run', 2352, {
  request_interrupt_window: [0, 'u8'], immediate_exit: [1, 'u8'], padding1: [2, 'u8', 6],
  exit_reason: [8, 'u32'], ready_for_interrupt_injection: [12, 'u8'], if_flag: [13, 'u8'], flags: [14, 'u16'],
  cr8: [16, 'u64'], apic_base: [24, 'u64'],
  exit_union: [KVM_RUN_EXIT_UNION, 'u8', 256],
  kvm_valid_regs: [288, 'u64'], kvm_dirty_regs: [296, 'u64'],
  s: [304, 'u8', 2048],
});
/** Absolute offsets into kvm_run of the union members and sync regs, for the exit path. */
export const RUN = {
  io: KVM_RUN_EXIT_UNION, mmio: KVM_RUN_EXIT_UNION, internal: KVM_RUN_EXIT_UNION, fail_entry: KVM_RUN_EXIT_UNION,
  debug: KVM_RUN_EXIT_UNION, hypercall: KVM_RUN_EXIT_UNION, system_event: KVM_RUN_EXIT_UNION, msr: KVM_RUN_EXIT_UNION,
  syncRegs: 304, syncSregs: 304 + 144, syncEvents: 304 + 456,
} as const;

// struct kvm_userspace_memory_region
export const kvm_userspace_memory_region = layout('kvm_userspace_memory_region', 32, {
  slot: [0, 'u32'], flags: [4, 'u32'], guest_phys_addr: [8, 'u64'], memory_size: [16, 'u64'], userspace_addr: [24, 'u64'],
});

// struct kvm_cpuid_entry2 / kvm_cpuid2 (header only; entries follow)
export const kvm_cpuid_entry2 = layout('kvm_cpuid_entry2', 40, {
  function: [0, 'u32'], index: [4, 'u32'], flags: [8, 'u32'], eax: [12, 'u32'], ebx: [16, 'u32'],
  ecx: [20, 'u32'], edx: [24, 'u32'], padding: [28, 'u32', 3],
});
export const kvm_cpuid2 = layout('kvm_cpuid2', 8, { nent: [0, 'u32'], padding: [4, 'u32'] });

// struct kvm_msr_entry / kvm_msrs (header only; entries follow)
export const kvm_msr_entry = layout('kvm_msr_entry', 16, { index: [0, 'u32'], reserved: [4, 'u32'], data: [8, 'u64'] });
export const kvm_msrs = layout('kvm_msrs', 8, { nmsrs: [0, 'u32'], pad: [4, 'u32'] });

// struct kvm_fpu
export const kvm_fpu = layout('kvm_fpu', 416, {
  fpr: [0, 'u8', 128], fcw: [128, 'u16'], fsw: [130, 'u16'], ftwx: [132, 'u8'], pad1: [133, 'u8'],
  last_opcode: [134, 'u16'], last_ip: [136, 'u64'], last_dp: [144, 'u64'], xmm: [152, 'u8', 256],
  mxcsr: [408, 'u32'], pad2: [412, 'u32'],
});

// struct kvm_xsave: the vCPU's XSAVE area in the standard (non-compacted) format, as KVM_GET_XSAVE
// gives it: the legacy FXSAVE region (SDM vol. 1 10.5.1, table 10-2), the XSAVE header at 512, and
// the extended components from 576 (YMM_Hi128 first). XMM registers are split into u64 halves so
// the state cache has a field for each.
const XSAVE_XMM_FIELDS: Record<string, readonly [number, 'u64']> = {};
for (let i = 0; i < 16; i++) {
  XSAVE_XMM_FIELDS[`xmm${i}_lo`] = [160 + i * 16, 'u64'];
  XSAVE_XMM_FIELDS[`xmm${i}_hi`] = [168 + i * 16, 'u64'];
}
export const kvm_xsave = layout('kvm_xsave', 4096, {
  fcw: [0, 'u16'], fsw: [2, 'u16'], ftw: [4, 'u8'], reserved1: [5, 'u8'], fop: [6, 'u16'], fip: [8, 'u64'], fdp: [16, 'u64'],
  mxcsr: [24, 'u32'], mxcsr_mask: [28, 'u32'], st_space: [32, 'u8', 128], ...XSAVE_XMM_FIELDS, reserved2: [416, 'u8', 96],
  xstate_bv: [512, 'u64'], xcomp_bv: [520, 'u64'], header_reserved: [528, 'u8', 48], extended: [576, 'u8', 3520],
});

// struct kvm_lapic_state
export const kvm_lapic_state = layout('kvm_lapic_state', 1024, { regs: [0, 'u8', 1024] });

// struct kvm_irq_level
export const kvm_irq_level = layout('kvm_irq_level', 8, { irq: [0, 'u32'], level: [4, 'u32'] });

// struct kvm_ioeventfd
export const kvm_ioeventfd = layout('kvm_ioeventfd', 64, {
  datamatch: [0, 'u64'], addr: [8, 'u64'], len: [16, 'u32'], fd: [20, 'i32'], flags: [24, 'u32'], pad: [28, 'u8', 36],
});

/** kvm_ioeventfd.flags */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

// struct kvm_irqfd
export const kvm_irqfd = layout('kvm_irqfd', 32, {
  fd: [0, 'u32'], gsi: [4, 'u32'], flags: [8, 'u32'], resamplefd: [12, 'u32'], pad: [16, 'u8', 16],
});

/** kvm_irqfd.flags */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;

// struct kvm_msi (KVM_SIGNAL_MSI: one message, as a device's memory write of `data` to address_hi:lo)
export const kvm_msi = layout('kvm_msi', 32, {
  address_lo: [0, 'u32'], address_hi: [4, 'u32'], data: [8, 'u32'], flags: [12, 'u32'], devid: [16, 'u32'], pad: [20, 'u8', 12],
});

// struct kvm_enable_cap
export const kvm_enable_cap = layout('kvm_enable_cap', 104, {
  cap: [0, 'u32'], flags: [4, 'u32'], args: [8, 'u64', 4], pad: [40, 'u8', 64],
});

// struct kvm_guest_debug (with struct kvm_guest_debug_arch inlined)
export const kvm_guest_debug = layout('kvm_guest_debug', 72, {
  control: [0, 'u32'], pad: [4, 'u32'], debugreg: [8, 'u64', 8],
});

// struct kvm_irq_routing_entry (irqchip member of the union; the union is 32 bytes) / kvm_irq_routing
export const kvm_irq_routing_entry = layout('kvm_irq_routing_entry', 48, {
  gsi: [0, 'u32'], type: [4, 'u32'], flags: [8, 'u32'], pad: [12, 'u32'], irqchip: [16, 'u32'], pin: [20, 'u32'],
  union_pad: [24, 'u32', 6],
});
// The same entry with the union's msi member (struct kvm_irq_routing_msi): a GSI that sends a message.
export const kvm_irq_routing_entry_msi = layout('kvm_irq_routing_entry_msi', 48, {
  gsi: [0, 'u32'], type: [4, 'u32'], flags: [8, 'u32'], pad: [12, 'u32'],
  address_lo: [16, 'u32'], address_hi: [20, 'u32'], data: [24, 'u32'], devid: [28, 'u32'], union_pad: [32, 'u32', 4],
});
export const kvm_irq_routing = layout('kvm_irq_routing', 8, { nr: [0, 'u32'], flags: [4, 'u32'] });
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

// struct kvm_pit_config
export const kvm_pit_config = layout('kvm_pit_config', 64, { flags: [0, 'u32'], pad: [4, 'u32', 15] });

// struct kvm_clock_data
export const kvm_clock_data = layout('kvm_clock_data', 48, {
  clock: [0, 'u64'], flags: [8, 'u32'], pad0: [12, 'u32'], realtime: [16, 'u64'], host_tsc: [24, 'u64'], pad: [32, 'u32', 4],
});

// struct kvm_dirty_log
export const kvm_dirty_log = layout('kvm_dirty_log', 16, { slot: [0, 'u32'], padding1: [4, 'u32'], dirty_bitmap: [8, 'u64'] });

// struct kvm_dirty_gfn: one entry of a vCPU's dirty ring (KVM_CAP_DIRTY_LOG_RING). The pure reader
// declares the same numbers in src/memory/dirty-ring.ts; abi.test.ts checks that they agree.
export const kvm_dirty_gfn = layout('kvm_dirty_gfn', 16, { flags: [0, 'u32'], slot: [4, 'u32'], offset: [8, 'u64'] });
/** kvm_dirty_gfn.flags */
export const KVM_DIRTY_GFN_F_DIRTY = 1 << 0;
export const KVM_DIRTY_GFN_F_RESET = 1 << 1;
export const KVM_DIRTY_GFN_F_MASK = 0x3;
/** The dirty ring's page offset in the vCPU fd's mmap (arch/x86/include/uapi/asm/kvm.h). */
export const KVM_DIRTY_LOG_PAGE_OFFSET = 64;

// struct kvm_translation
export const kvm_translation = layout('kvm_translation', 24, {
  linear_address: [0, 'u64'], physical_address: [8, 'u64'], valid: [16, 'u8'], writeable: [17, 'u8'],
  usermode: [18, 'u8'], pad: [19, 'u8', 5],
});

// struct kvm_signal_mask (header; the kernel sigset follows)
export const kvm_signal_mask = layout('kvm_signal_mask', 4, { len: [0, 'u32'] });

// struct kvm_mp_state
export const kvm_mp_state = layout('kvm_mp_state', 4, { mp_state: [0, 'u32'] });

// struct kvm_msr_filter_range / kvm_msr_filter (KVM_X86_SET_MSR_FILTER)
export const kvm_msr_filter_range = layout('kvm_msr_filter_range', 24, {
  flags: [0, 'u32'], nmsrs: [4, 'u32'], base: [8, 'u32'], bitmap: [16, 'u64'],
});
export const KVM_MSR_FILTER_MAX_RANGES = 16;
export const kvm_msr_filter = layout('kvm_msr_filter', 8 + KVM_MSR_FILTER_MAX_RANGES * 24, {
  // ranges: kvm_msr_filter_range[16], declared as u64 words so the C layout aligns it as the struct does
  flags: [0, 'u32'], ranges: [8, 'u64', KVM_MSR_FILTER_MAX_RANGES * 3],
});
export const KVM_MSR_FILTER_DEFAULT_ALLOW = 0;
export const KVM_MSR_FILTER_READ = 1 << 0;
export const KVM_MSR_FILTER_WRITE = 1 << 1;
/** KVM_CAP_X86_USER_SPACE_MSR argument: exit to userspace for MSRs a filter denies. */
export const KVM_MSR_EXIT_REASON_FILTER = 1 << 2;

// struct kvm_interrupt (KVM_INTERRUPT: the vector to inject, without an in-kernel irqchip)
export const kvm_interrupt = layout('kvm_interrupt', 4, { irq: [0, 'u32'] });

/** Exit reasons (KVM_EXIT_*, include/uapi/linux/kvm.h). */
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_IOAPIC_EOI = 26;
export const KVM_EXIT_X86_RDMSR = 29;
export const KVM_EXIT_X86_WRMSR = 30;
export const KVM_EXIT_DIRTY_RING_FULL = 31;

export const KVM_EXIT_NAMES: Readonly<Record<number, string>> = {
  0: 'UNKNOWN', 1: 'EXCEPTION', 2: 'IO', 3: 'HYPERCALL', 4: 'DEBUG', 5: 'HLT', 6: 'MMIO', 7: 'IRQ_WINDOW_OPEN',
  8: 'SHUTDOWN', 9: 'FAIL_ENTRY', 10: 'INTR', 16: 'NMI', 17: 'INTERNAL_ERROR', 24: 'SYSTEM_EVENT',
  26: 'IOAPIC_EOI', 29: 'X86_RDMSR', 30: 'X86_WRMSR', 31: 'DIRTY_RING_FULL',
};

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;
/** kvm_run.internal.suberror values. */
export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;
/** kvm_run.system_event.type values. */
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;

/** kvm_run.kvm_valid_regs / kvm_dirty_regs bits (KVM_SYNC_X86_*). */
export const KVM_SYNC_X86_REGS = 1 << 0;
export const KVM_SYNC_X86_SREGS = 1 << 1;
export const KVM_SYNC_X86_EVENTS = 1 << 2;

/** kvm_userspace_memory_region.flags */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

/** KVM_GET_SUPPORTED_CPUID can need this many entries on recent hosts. */
export const KVM_MAX_CPUID_ENTRIES = 256;

/** KVM_MP_STATE_* */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

/** Capabilities (KVM_CAP_*) tsvmm asks about. */
export const KVM_CAP = {
  KVM_CAP_IRQCHIP: 0, KVM_CAP_HLT: 1, KVM_CAP_USER_MEMORY: 3, KVM_CAP_SET_TSS_ADDR: 4, KVM_CAP_EXT_CPUID: 7,
  KVM_CAP_NR_VCPUS: 9, KVM_CAP_NR_MEMSLOTS: 10, KVM_CAP_PIT: 11, KVM_CAP_MP_STATE: 14, KVM_CAP_SET_GUEST_DEBUG: 23,
  KVM_CAP_IRQ_ROUTING: 25, KVM_CAP_IRQFD: 32, KVM_CAP_PIT2: 33, KVM_CAP_IOEVENTFD: 36,
  KVM_CAP_SET_IDENTITY_MAP_ADDR: 37, KVM_CAP_XEN_HVM: 38, KVM_CAP_ADJUST_CLOCK: 39, KVM_CAP_VCPU_EVENTS: 41,
  KVM_CAP_USER_NMI: 22, KVM_CAP_READONLY_MEM: 81, KVM_CAP_XSAVE: 55,
  KVM_CAP_MAX_VCPUS: 66, KVM_CAP_SYNC_REGS: 74, KVM_CAP_SIGNAL_MSI: 77, KVM_CAP_MAX_VCPU_ID: 128,
  KVM_CAP_IMMEDIATE_EXIT: 136, KVM_CAP_X86_DISABLE_EXITS: 143, KVM_CAP_X86_USER_SPACE_MSR: 188,
  KVM_CAP_X86_MSR_FILTER: 189, KVM_CAP_DIRTY_LOG_RING: 192, KVM_CAP_GET_TSC_KHZ: 61,
  KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 223, KVM_CAP_EXIT_ON_EMULATION_FAILURE: 204,
} as const;
export type KvmCapName = keyof typeof KVM_CAP;

/** KVM_PIT_SPEAKER_DUMMY: the PIT's speaker port is emulated so guests probing port 0x61 don't exit. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

// struct ifreq (include/uapi/linux/if.h), as TUNSETIFF reads and writes it: the name, then the
// ifr_ifru union, of which only ifr_flags is used (the union is 24 bytes: struct ifmap).
export const IFNAMSIZ = 16;
export const ifreq = layout('ifreq', 40, { ifr_name: [0, 'u8', IFNAMSIZ], ifr_flags: [16, 'u16'] });
