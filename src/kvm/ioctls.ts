// Every KVM ioctl tsvmm issues, with its number computed from the _IO/_IOR/_IOW/_IOWR encoding
// and the capability it needs. Source: include/uapi/linux/kvm.h, include/uapi/asm-generic/ioctl.h.
import * as abi from './abi.js';

const _IOC_NONE = 0;
export const _IOC_WRITE = 1;
const _IOC_READ = 2;
const KVMIO = 0xae;

export function _IOC(dir: number, type: number, nr: number, size: number): number {
  // (dir << 30) overflows int32, so compose with multiplication to stay an unsigned number.
  return dir * 2 ** 30 + (size << 16) + (type << 8) + nr;
}
const _IO = (nr: number) => _IOC(_IOC_NONE, KVMIO, nr, 0);
const _IOR = (nr: number, size: number) => _IOC(_IOC_READ, KVMIO, nr, size);
const _IOW = (nr: number, size: number) => _IOC(_IOC_WRITE, KVMIO, nr, size);
const _IOWR = (nr: number, size: number) => _IOC(_IOC_READ | _IOC_WRITE, KVMIO, nr, size);

export type IoctlTarget = 'system' | 'vm' | 'vcpu';
export interface Ioctl {
  readonly name: string;
  readonly number: number;
  readonly target: IoctlTarget;
  /** capability the host must report before tsvmm may issue it (null: part of the base API). */
  readonly needs: abi.KvmCapName | null;
}

function ioctl(name: string, number: number, target: IoctlTarget, needs: abi.KvmCapName | null = null): Ioctl {
  return { name, number, target, needs };
}

export const KVM_GET_API_VERSION = ioctl('KVM_GET_API_VERSION', _IO(0x00), 'system');
export const KVM_CREATE_VM = ioctl('KVM_CREATE_VM', _IO(0x01), 'system');
export const KVM_CHECK_EXTENSION = ioctl('KVM_CHECK_EXTENSION', _IO(0x03), 'system');
export const KVM_GET_VCPU_MMAP_SIZE = ioctl('KVM_GET_VCPU_MMAP_SIZE', _IO(0x04), 'system');
export const KVM_GET_SUPPORTED_CPUID = ioctl('KVM_GET_SUPPORTED_CPUID', _IOWR(0x05, abi.kvm_cpuid2.sizeBytes), 'system', 'KVM_CAP_EXT_CPUID');

export const KVM_CREATE_VCPU = ioctl('KVM_CREATE_VCPU', _IO(0x41), 'vm');
export const KVM_GET_DIRTY_LOG = ioctl('KVM_GET_DIRTY_LOG', _IOW(0x42, abi.kvm_dirty_log.sizeBytes), 'vm');
export const KVM_SET_USER_MEMORY_REGION = ioctl('KVM_SET_USER_MEMORY_REGION', _IOW(0x46, abi.kvm_userspace_memory_region.sizeBytes), 'vm', 'KVM_CAP_USER_MEMORY');
export const KVM_SET_TSS_ADDR = ioctl('KVM_SET_TSS_ADDR', _IO(0x47), 'vm', 'KVM_CAP_SET_TSS_ADDR');
export const KVM_SET_IDENTITY_MAP_ADDR = ioctl('KVM_SET_IDENTITY_MAP_ADDR', _IOW(0x48, 8), 'vm', 'KVM_CAP_SET_IDENTITY_MAP_ADDR');
export const KVM_CREATE_IRQCHIP = ioctl('KVM_CREATE_IRQCHIP', _IO(0x60), 'vm', 'KVM_CAP_IRQCHIP');
export const KVM_IRQ_LINE = ioctl('KVM_IRQ_LINE', _IOW(0x61, abi.kvm_irq_level.sizeBytes), 'vm', 'KVM_CAP_IRQCHIP');
export const KVM_SET_GSI_ROUTING = ioctl('KVM_SET_GSI_ROUTING', _IOW(0x6a, abi.kvm_irq_routing.sizeBytes), 'vm', 'KVM_CAP_IRQ_ROUTING');
export const KVM_IRQFD = ioctl('KVM_IRQFD', _IOW(0x76, abi.kvm_irqfd.sizeBytes), 'vm', 'KVM_CAP_IRQFD');
export const KVM_CREATE_PIT2 = ioctl('KVM_CREATE_PIT2', _IOW(0x77, abi.kvm_pit_config.sizeBytes), 'vm', 'KVM_CAP_PIT2');
export const KVM_IOEVENTFD = ioctl('KVM_IOEVENTFD', _IOW(0x79, abi.kvm_ioeventfd.sizeBytes), 'vm', 'KVM_CAP_IOEVENTFD');
export const KVM_SET_CLOCK = ioctl('KVM_SET_CLOCK', _IOW(0x7b, abi.kvm_clock_data.sizeBytes), 'vm', 'KVM_CAP_ADJUST_CLOCK');
export const KVM_GET_CLOCK = ioctl('KVM_GET_CLOCK', _IOR(0x7c, abi.kvm_clock_data.sizeBytes), 'vm', 'KVM_CAP_ADJUST_CLOCK');
export const KVM_X86_SET_MSR_FILTER = ioctl('KVM_X86_SET_MSR_FILTER', _IOW(0xc6, abi.kvm_msr_filter.sizeBytes), 'vm', 'KVM_CAP_X86_MSR_FILTER');
export const KVM_SIGNAL_MSI = ioctl('KVM_SIGNAL_MSI', _IOW(0xa5, abi.kvm_msi.sizeBytes), 'vm', 'KVM_CAP_SIGNAL_MSI');
export const KVM_ENABLE_CAP_VM = ioctl('KVM_ENABLE_CAP', _IOW(0xa3, abi.kvm_enable_cap.sizeBytes), 'vm');
export const KVM_RESET_DIRTY_RINGS = ioctl('KVM_RESET_DIRTY_RINGS', _IO(0xc7), 'vm', 'KVM_CAP_DIRTY_LOG_RING');

export const KVM_RUN = ioctl('KVM_RUN', _IO(0x80), 'vcpu');
export const KVM_GET_REGS = ioctl('KVM_GET_REGS', _IOR(0x81, abi.kvm_regs.sizeBytes), 'vcpu');
export const KVM_SET_REGS = ioctl('KVM_SET_REGS', _IOW(0x82, abi.kvm_regs.sizeBytes), 'vcpu');
export const KVM_GET_SREGS = ioctl('KVM_GET_SREGS', _IOR(0x83, abi.kvm_sregs.sizeBytes), 'vcpu');
export const KVM_SET_SREGS = ioctl('KVM_SET_SREGS', _IOW(0x84, abi.kvm_sregs.sizeBytes), 'vcpu');
export const KVM_GET_TSC_KHZ = ioctl('KVM_GET_TSC_KHZ', _IO(0xa3), 'vcpu', 'KVM_CAP_GET_TSC_KHZ');
export const KVM_INTERRUPT = ioctl('KVM_INTERRUPT', _IOW(0x86, abi.kvm_interrupt.sizeBytes), 'vcpu');
export const KVM_NMI = ioctl('KVM_NMI', _IO(0x9a), 'vcpu', 'KVM_CAP_USER_NMI');
export const KVM_TRANSLATE = ioctl('KVM_TRANSLATE', _IOWR(0x85, abi.kvm_translation.sizeBytes), 'vcpu');
export const KVM_GET_MSRS = ioctl('KVM_GET_MSRS', _IOWR(0x88, abi.kvm_msrs.sizeBytes), 'vcpu');
export const KVM_SET_MSRS = ioctl('KVM_SET_MSRS', _IOW(0x89, abi.kvm_msrs.sizeBytes), 'vcpu');
export const KVM_SET_SIGNAL_MASK = ioctl('KVM_SET_SIGNAL_MASK', _IOW(0x8b, abi.kvm_signal_mask.sizeBytes), 'vcpu');
export const KVM_GET_FPU = ioctl('KVM_GET_FPU', _IOR(0x8c, abi.kvm_fpu.sizeBytes), 'vcpu');
export const KVM_SET_FPU = ioctl('KVM_SET_FPU', _IOW(0x8d, abi.kvm_fpu.sizeBytes), 'vcpu');
export const KVM_GET_XSAVE = ioctl('KVM_GET_XSAVE', _IOR(0xa4, abi.kvm_xsave.sizeBytes), 'vcpu', 'KVM_CAP_XSAVE');
export const KVM_SET_XSAVE = ioctl('KVM_SET_XSAVE', _IOW(0xa5, abi.kvm_xsave.sizeBytes), 'vcpu', 'KVM_CAP_XSAVE');
export const KVM_GET_LAPIC = ioctl('KVM_GET_LAPIC', _IOR(0x8e, abi.kvm_lapic_state.sizeBytes), 'vcpu', 'KVM_CAP_IRQCHIP');
export const KVM_SET_LAPIC = ioctl('KVM_SET_LAPIC', _IOW(0x8f, abi.kvm_lapic_state.sizeBytes), 'vcpu', 'KVM_CAP_IRQCHIP');
export const KVM_SET_CPUID2 = ioctl('KVM_SET_CPUID2', _IOW(0x90, abi.kvm_cpuid2.sizeBytes), 'vcpu', 'KVM_CAP_EXT_CPUID');
export const KVM_GET_MP_STATE = ioctl('KVM_GET_MP_STATE', _IOR(0x98, abi.kvm_mp_state.sizeBytes), 'vcpu', 'KVM_CAP_MP_STATE');
export const KVM_SET_MP_STATE = ioctl('KVM_SET_MP_STATE', _IOW(0x99, abi.kvm_mp_state.sizeBytes), 'vcpu', 'KVM_CAP_MP_STATE');
export const KVM_SET_GUEST_DEBUG = ioctl('KVM_SET_GUEST_DEBUG', _IOW(0x9b, abi.kvm_guest_debug.sizeBytes), 'vcpu', 'KVM_CAP_SET_GUEST_DEBUG');
export const KVM_GET_VCPU_EVENTS = ioctl('KVM_GET_VCPU_EVENTS', _IOR(0x9f, abi.kvm_vcpu_events.sizeBytes), 'vcpu', 'KVM_CAP_VCPU_EVENTS');
export const KVM_SET_VCPU_EVENTS = ioctl('KVM_SET_VCPU_EVENTS', _IOW(0xa0, abi.kvm_vcpu_events.sizeBytes), 'vcpu', 'KVM_CAP_VCPU_EVENTS');
export const KVM_ENABLE_CAP_VCPU = ioctl('KVM_ENABLE_CAP', _IOW(0xa3, abi.kvm_enable_cap.sizeBytes), 'vcpu');

/** KVM_API_VERSION from kvm.h: the only version there has ever been. */
export const KVM_API_VERSION = 12;
