// The modern virtio-pci transport: a PCI function (configuration header, virtio vendor
// capabilities, MSI-X) and its memory BAR holding the common configuration, notification, ISR and
// device configuration regions, wrapping any VirtioDevice. Spec: VIRTIO 1.2, 4.1 Virtio Over PCI
// Bus; struct and constant names as in Linux include/uapi/linux/virtio_pci.h.
//
// Status, features and queues go through the shared transport core (transport.ts), as virtio-mmio
// does. Interrupts: with MSI-X enabled, each queue and the configuration use the vector the driver
// chose (VIRTIO_MSI_NO_VECTOR: none); with it disabled, ISR bits and INTA# as a level line. It
// does not know where its BAR lands (the PCI bus tells the machine) nor how a message reaches a
// vCPU (signalMsi). It does not do the legacy or transitional interface (device IDs 0x1000-0x103f,
// the I/O BAR), shared memory capabilities, VIRTIO_F_RING_RESET or VIRTIO_F_NOTIFICATION_DATA.
//
// BAR choice: everything in BAR 0, one 64-bit non-prefetchable memory BAR (as Cloud Hypervisor
// does). QEMU uses BAR 4 marked prefetchable, but reading ISR clears it, and a BAR whose reads
// have side effects must not be prefetchable (PCI 3.0, 6.2.5.1); 64-bit lets the VMM put it above
// 4 GiB. The MSI-X table and PBA sit in the same BAR, each in its own 4 KiB page.
import type { GuestMemory } from '../memory/guest-memory.js';
import { struct } from '../boot/struct.js';
import {
  PCI_CAP_ID_VNDR, PCI_INTERRUPT_PIN_INTA, PciConfigSpace, type PciBar, type PciFunction,
} from '../pci/config-space.js';
import { Msix, type MsixVectorState } from '../pci/msix.js';
import { VirtioTransportCore, QUEUE_DESC_HIGH, QUEUE_DESC_LOW, QUEUE_DEVICE_HIGH, QUEUE_DEVICE_LOW, QUEUE_DRIVER_HIGH, QUEUE_DRIVER_LOW } from './transport.js';
import { VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, type VirtioDevice } from './virtio.js';
import type { VirtioError } from './virtio-error.js';
import type { Virtqueue } from './virtqueue.js';

// ---- 4.1.2 PCI Device Discovery ----
export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** Modern (non-transitional) device IDs are 0x1040 + the virtio device type. */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
/** 4.1.2.1: non-transitional devices SHOULD have revision 1 or higher. */
export const VIRTIO_PCI_MODERN_REVISION = 1;

// Class codes (base class << 16 | subclass << 8 | prog-if), the ones QEMU reports per type.
export const PCI_CLASS_STORAGE_SCSI = 0x01_00_00;
export const PCI_CLASS_NETWORK_ETHERNET = 0x02_00_00;
export const PCI_CLASS_COMMUNICATION_OTHER = 0x07_80_00;
export const PCI_CLASS_OTHERS = 0xff_00_00;

// ---- 4.1.4 Virtio Structure PCI Capabilities ----
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

export const VIRTIO_PCI_CAP = struct('struct virtio_pci_cap', 16, {
  cap_vndr: [0, 'u8'],
  cap_next: [1, 'u8'],
  cap_len: [2, 'u8'],
  cfg_type: [3, 'u8'],
  bar: [4, 'u8'],
  id: [5, 'u8'],
  offset: [8, 'u32'],
  length: [12, 'u32'],
});
export const VIRTIO_PCI_NOTIFY_CAP = struct('struct virtio_pci_notify_cap', 20, {
  cap: [0, { bytes: 16 }],
  notify_off_multiplier: [16, 'u32'],
});
export const VIRTIO_PCI_CFG_CAP = struct('struct virtio_pci_cfg_cap', 20, {
  cap: [0, { bytes: 16 }],
  pci_cfg_data: [16, { bytes: 4 }],
});

/**
 * struct virtio_pci_modern_common_cfg: struct virtio_pci_common_cfg (56 bytes, the spec's
 * common configuration through queue_used_hi) plus queue_notify_data and queue_reset. Linux's
 * guest_feature* are the spec's driver_feature*, msix_config its config_msix_vector, queue_avail*
 * its queue_driver*, queue_used* its queue_device*.
 */
export const VIRTIO_PCI_COMMON_CFG = struct('struct virtio_pci_modern_common_cfg', 60, {
  device_feature_select: [0, 'u32'],
  device_feature: [4, 'u32'],
  guest_feature_select: [8, 'u32'],
  guest_feature: [12, 'u32'],
  msix_config: [16, 'u16'],
  num_queues: [18, 'u16'],
  device_status: [20, 'u8'],
  config_generation: [21, 'u8'],
  queue_select: [22, 'u16'],
  queue_size: [24, 'u16'],
  queue_msix_vector: [26, 'u16'],
  queue_enable: [28, 'u16'],
  queue_notify_off: [30, 'u16'],
  queue_desc_lo: [32, 'u32'],
  queue_desc_hi: [36, 'u32'],
  queue_avail_lo: [40, 'u32'],
  queue_avail_hi: [44, 'u32'],
  queue_used_lo: [48, 'u32'],
  queue_used_hi: [52, 'u32'],
  queue_notify_data: [56, 'u16'],
  queue_reset: [58, 'u16'],
});
export type CommonCfgField = Parameters<typeof VIRTIO_PCI_COMMON_CFG.offsetOf>[0];

/** The vector register value meaning "no interrupt". */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
// ISR status bits (4.1.4.5)
export const VIRTIO_PCI_ISR_QUEUE = 0x1;
export const VIRTIO_PCI_ISR_CONFIG = 0x2;

// ---- our BAR 0 layout: one 4 KiB page per region ----
export const VIRTIO_PCI_BAR = 0;
export const VIRTIO_PCI_COMMON_CFG_OFFSET = 0x0000;
export const VIRTIO_PCI_ISR_OFFSET = 0x1000;
export const VIRTIO_PCI_DEVICE_CFG_OFFSET = 0x2000;
export const VIRTIO_PCI_NOTIFY_OFFSET = 0x3000;
export const VIRTIO_PCI_MSIX_TABLE_OFFSET = 0x4000;
export const VIRTIO_PCI_MSIX_PBA_OFFSET = 0x5000;
export const VIRTIO_PCI_BAR_SIZE_BYTES = 0x8000;
const REGION_BYTES = 0x1000;
/**
 * Each queue's doorbell is its own dword (queue_notify_off = queue index), so a KVM ioeventfd per
 * queue needs no datamatch; Linux writes the 16-bit queue index there. QEMU uses 4 as well.
 */
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
const MAX_QUEUES = REGION_BYTES / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER;

/** The class QEMU gives each device type; the driver does not look at it. */
export function virtioPciClassCode(deviceType: number): number {
  switch (deviceType) {
    case VIRTIO_ID_BLOCK: return PCI_CLASS_STORAGE_SCSI;
    case VIRTIO_ID_CONSOLE: return PCI_CLASS_COMMUNICATION_OTHER;
    case VIRTIO_ID_NET: return PCI_CLASS_NETWORK_ETHERNET;
    default: return PCI_CLASS_OTHERS;
  }
}

export interface VirtioPciOptions {
  /** Guest RAM the rings and buffers live in. */
  readonly memory: GuestMemory;
  /** Sends one MSI-X message of `vector` (KVM_SIGNAL_MSI, or the irqfd the VMM routed to the vector). */
  readonly signalMsi: (addressLo: number, addressHi: number, data: number, vector: number) => void;
  /** A vector's address, data or mask changed, at each guest write of the MSI-X table. */
  readonly onMsixVectorChanged?: (vector: number, state: MsixVectorState) => void;
  /** INTA#, level: used while MSI-X is disabled (the ISR status semantics of 4.1.4.5). */
  readonly intx?: (level: 0 | 1) => void;
  /** PCI_INTERRUPT_LINE as firmware would leave it (the GSI _PRT gives the slot). */
  readonly interruptLine?: number;
  /** MSI-X vectors (default: one per queue plus one for configuration changes). */
  readonly msixVectors?: number;
  /** Ring features offered on top of the device's (default: all that Virtqueue supports). */
  readonly ringFeatures?: bigint;
  /** Called when the driver breaks the rules (the device then shows DEVICE_NEEDS_RESET), for logs. */
  readonly onError?: (error: VirtioError) => void;
}

// Common configuration decode table: per byte, the field that starts there (or -1).
const COMMON_FIELDS = [
  'device_feature_select', 'device_feature', 'guest_feature_select', 'guest_feature', 'msix_config', 'num_queues',
  'device_status', 'config_generation', 'queue_select', 'queue_size', 'queue_msix_vector', 'queue_enable',
  'queue_notify_off', 'queue_desc_lo', 'queue_desc_hi', 'queue_avail_lo', 'queue_avail_hi', 'queue_used_lo',
  'queue_used_hi', 'queue_notify_data', 'queue_reset',
] as const satisfies readonly CommonCfgField[];
const FIELD_AT = new Int8Array(VIRTIO_PCI_COMMON_CFG.sizeBytes).fill(-1);
COMMON_FIELDS.forEach((f, i) => { FIELD_AT[VIRTIO_PCI_COMMON_CFG.offsetOf(f)] = i; });
const QUEUE_ADDRESS_WORD: Partial<Record<CommonCfgField, number>> = {
  queue_desc_lo: QUEUE_DESC_LOW, queue_desc_hi: QUEUE_DESC_HIGH,
  queue_avail_lo: QUEUE_DRIVER_LOW, queue_avail_hi: QUEUE_DRIVER_HIGH,
  queue_used_lo: QUEUE_DEVICE_LOW, queue_used_hi: QUEUE_DEVICE_HIGH,
};

function readLe(data: Uint8Array): number {
  let v = 0;
  for (let i = data.length - 1; i >= 0; i--) v = v * 256 + data[i]!;
  return v;
}

function writeLe(data: Uint8Array, v: number): void {
  for (let i = 0; i < data.length; i++) {
    data[i] = v & 0xff;
    v = Math.floor(v / 256);
  }
}

export class VirtioPci implements PciFunction {
  readonly config: PciConfigSpace;
  readonly msix: Msix;
  readonly bar: PciBar;
  readonly queues: readonly Virtqueue[];
  readonly offeredFeatures: bigint;
  /** Offsets of the capabilities in configuration space, for tests and logs. */
  readonly capabilityOffsets: Readonly<Record<'common' | 'notify' | 'isr' | 'device' | 'pciCfg' | 'msix', number>>;
  private readonly core: VirtioTransportCore;
  private readonly queueVector: Uint16Array;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private deviceFeatureSelect = 0;
  private guestFeatureSelect = 0;
  private queueSelect = 0;
  private isr = 0;
  private readonly pciCfgCap: number;

  constructor(readonly device: VirtioDevice, options: VirtioPciOptions) {
    const name = `virtio-pci device ${device.deviceType}`;
    if (device.queueMaxSizes.length > MAX_QUEUES) throw new RangeError(`${name}: ${device.queueMaxSizes.length} queues, more than the ${MAX_QUEUES} the notify region holds`);
    this.core = new VirtioTransportCore(device, {
      memory: options.memory,
      label: name,
      interrupts: { queue: (q) => this.queueInterrupt(q), config: () => this.configInterrupt() },
      onError: options.onError,
      ...(options.ringFeatures === undefined ? {} : { ringFeatures: options.ringFeatures }),
    });
    this.queues = this.core.queues;
    this.offeredFeatures = this.core.offeredFeatures;
    this.queueVector = new Uint16Array(this.queues.length).fill(VIRTIO_MSI_NO_VECTOR);
    const deviceId = VIRTIO_PCI_DEVICE_ID_BASE + device.deviceType;
    this.config = new PciConfigSpace({
      name,
      vendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      deviceId,
      revisionId: VIRTIO_PCI_MODERN_REVISION,
      classCode: virtioPciClassCode(device.deviceType),
      subsystemVendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      // 4.1.2.1: SHOULD be 0x40 or higher for non-transitional devices; informational only.
      subsystemId: deviceId,
      interruptPin: PCI_INTERRUPT_PIN_INTA,
      ...(options.interruptLine === undefined ? {} : { interruptLine: options.interruptLine }),
    }, {
      bars: [{ index: VIRTIO_PCI_BAR, kind: 'mem64', sizeBytes: VIRTIO_PCI_BAR_SIZE_BYTES, handler: { read: (o, d) => this.barRead(o, d), write: (o, d) => this.barWrite(o, d) } }],
      ...(options.intx ? { intx: options.intx } : {}),
    });
    this.bar = this.config.bars[0]!;
    this.msix = new Msix({
      vectors: options.msixVectors ?? this.queues.length + 1,
      tableBar: VIRTIO_PCI_BAR,
      tableOffset: VIRTIO_PCI_MSIX_TABLE_OFFSET,
      pbaBar: VIRTIO_PCI_BAR,
      pbaOffset: VIRTIO_PCI_MSIX_PBA_OFFSET,
      signalMsi: options.signalMsi,
      ...(options.onMsixVectorChanged ? { onVectorChanged: options.onMsixVectorChanged } : {}),
    });
    if (this.msix.tableSizeBytes > REGION_BYTES) throw new RangeError(`${name}: ${this.msix.vectors} MSI-X vectors do not fit the 4 KiB table page`);
    // Capabilities in the order QEMU lists them: the virtio structures, then MSI-X.
    const common = this.addVirtioCap(VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_CFG_OFFSET, VIRTIO_PCI_COMMON_CFG.sizeBytes);
    const notify = this.addVirtioCap(VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFFSET, Math.max(1, this.queues.length) * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    const isr = this.addVirtioCap(VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFFSET, 1);
    // No device configuration, no capability (QEMU does the same; Linux then maps nothing).
    const dev = device.configSizeBytes > 0 ? this.addVirtioCap(VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_CFG_OFFSET, device.configSizeBytes) : -1;
    this.pciCfgCap = this.addVirtioCap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
    const msix = this.msix.addTo(this.config);
    this.capabilityOffsets = { common, notify, isr, device: dev, pciCfg: this.pciCfgCap, msix };
  }

  private addVirtioCap(cfgType: number, offset: number, length: number): number {
    const isNotify = cfgType === VIRTIO_PCI_CAP_NOTIFY_CFG;
    const isPciCfg = cfgType === VIRTIO_PCI_CAP_PCI_CFG;
    const size = isNotify ? VIRTIO_PCI_NOTIFY_CAP.sizeBytes : isPciCfg ? VIRTIO_PCI_CFG_CAP.sizeBytes : VIRTIO_PCI_CAP.sizeBytes;
    const body = new Uint8Array(size);
    VIRTIO_PCI_CAP.encode({ cap_len: size, cfg_type: cfgType, bar: VIRTIO_PCI_BAR, offset, length }, body);
    if (isNotify) VIRTIO_PCI_NOTIFY_CAP.set(body, 0, 'notify_off_multiplier', VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    let mask: Uint8Array | undefined;
    if (isPciCfg) {
      // 4.1.4.9: the driver programs bar, offset and length, then accesses pci_cfg_data.
      mask = new Uint8Array(size);
      VIRTIO_PCI_CAP.bytesOf(mask, 0, 'bar').fill(0xff);
      VIRTIO_PCI_CAP.bytesOf(mask, 0, 'offset').fill(0xff);
      VIRTIO_PCI_CAP.bytesOf(mask, 0, 'length').fill(0xff);
      VIRTIO_PCI_CFG_CAP.bytesOf(mask, 0, 'pci_cfg_data').fill(0xff);
    }
    return this.config.addCapability(PCI_CAP_ID_VNDR, body, mask);
  }

  // ---- what the machine needs ----

  get deviceStatus(): number {
    return this.core.status;
  }

  get negotiatedFeatures(): bigint {
    return this.core.driverFeatures;
  }

  /** ISR status as the driver would read it (without clearing it). */
  get pendingIsr(): number {
    return this.isr;
  }

  /** The BAR offset of queue `queueIndex`'s doorbell. */
  static notifyOffset(queueIndex: number): number {
    return VIRTIO_PCI_NOTIFY_OFFSET + queueIndex * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER;
  }

  /**
   * The guest-physical address of queue `queueIndex`'s doorbell (a 2-byte write of the queue
   * index), or null while the BAR does not decode: where the machine puts a KVM ioeventfd.
   */
  notifyGpa(queueIndex: number): number | null {
    if (this.bar.gpa === null || queueIndex < 0 || queueIndex >= this.queues.length) return null;
    return this.bar.gpa + VirtioPci.notifyOffset(queueIndex);
  }

  /**
   * The whole doorbell region while the BAR decodes: queue i's doorbell is at
   * gpa + i * multiplier. One ioeventfd per queue (length 2, no datamatch) covers Linux's writes.
   */
  get notifyRegion(): { readonly gpa: number; readonly sizeBytes: number; readonly multiplier: number } | null {
    if (this.bar.gpa === null) return null;
    return { gpa: this.bar.gpa + VIRTIO_PCI_NOTIFY_OFFSET, sizeBytes: this.queues.length * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, multiplier: VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER };
  }

  /** The MSI-X vector queue `queueIndex` interrupts on (VIRTIO_MSI_NO_VECTOR: none). */
  queueMsixVector(queueIndex: number): number {
    return this.queueVector[queueIndex] ?? VIRTIO_MSI_NO_VECTOR;
  }

  get configMsixVector(): number {
    return this.configVector;
  }

  /** An ioeventfd fired for queue `queueIndex` (the doorbell write never reached barWrite). */
  notifyQueue(queueIndex: number): void {
    this.core.notify(queueIndex);
  }

  // ---- PCI configuration space ----

  configRead(offset: number, data: Uint8Array): void {
    if (this.coversPciCfgData(offset, data.length)) this.pciCfgAccess(false);
    this.config.read(offset, data);
  }

  configWrite(offset: number, data: Uint8Array): void {
    this.config.write(offset, data);
    if (this.msix.coversConfig(offset, data.length)) {
      this.msix.controlWritten();
      this.updateIntx();
    }
    if (this.coversPciCfgData(offset, data.length)) this.pciCfgAccess(true);
  }

  private coversPciCfgData(offset: number, len: number): boolean {
    const at = this.pciCfgCap + VIRTIO_PCI_CFG_CAP.offsetOf('pci_cfg_data');
    return offset < at + 4 && at < offset + len;
  }

  /** VIRTIO_PCI_CAP_PCI_CFG: a BAR access through configuration space, as the capability describes it. */
  private pciCfgAccess(isWrite: boolean): void {
    const cap = this.pciCfgCap;
    const bar = this.config.u8(cap + VIRTIO_PCI_CAP.offsetOf('bar'));
    const offset = this.config.u32(cap + VIRTIO_PCI_CAP.offsetOf('offset'));
    const length = this.config.u32(cap + VIRTIO_PCI_CAP.offsetOf('length'));
    const dataAt = cap + VIRTIO_PCI_CFG_CAP.offsetOf('pci_cfg_data');
    // 4.1.4.9.1: length 1, 2 or 4, offset a multiple of it; anything else does nothing.
    if (bar !== VIRTIO_PCI_BAR || (length !== 1 && length !== 2 && length !== 4) || offset % length !== 0 || offset + length > VIRTIO_PCI_BAR_SIZE_BYTES) return;
    const window = this.config.bytes.subarray(dataAt, dataAt + length);
    if (isWrite) this.barWrite(offset, window.slice());
    else this.barRead(offset, window);
  }

  // ---- BAR 0 ----

  barRead(offset: number, data: Uint8Array): void {
    const region = offset - (offset % REGION_BYTES);
    const at = offset - region;
    if (at + data.length > REGION_BYTES) {
      data.fill(0);
      return;
    }
    switch (region) {
      case VIRTIO_PCI_COMMON_CFG_OFFSET: this.commonRead(at, data); return;
      case VIRTIO_PCI_ISR_OFFSET: this.isrRead(at, data); return;
      case VIRTIO_PCI_DEVICE_CFG_OFFSET: this.deviceConfigAccess(at, data, false); return;
      case VIRTIO_PCI_MSIX_TABLE_OFFSET: this.msix.tableRead(at, data); return;
      case VIRTIO_PCI_MSIX_PBA_OFFSET: this.msix.pbaRead(at, data); return;
      default: data.fill(0); // the notify region is write-only; the rest is reserved
    }
  }

  barWrite(offset: number, data: Uint8Array): void {
    const region = offset - (offset % REGION_BYTES);
    const at = offset - region;
    if (at + data.length > REGION_BYTES) return;
    switch (region) {
      case VIRTIO_PCI_COMMON_CFG_OFFSET: this.commonWrite(at, data); return;
      case VIRTIO_PCI_DEVICE_CFG_OFFSET: this.deviceConfigAccess(at, data, true); return;
      case VIRTIO_PCI_NOTIFY_OFFSET: {
        // The doorbell's address says which queue; its value (the index) is not needed.
        const q = Math.floor(at / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
        if (q < this.queues.length) this.core.notify(q);
        return;
      }
      case VIRTIO_PCI_MSIX_TABLE_OFFSET: this.msix.tableWrite(at, data); return;
      default: return; // ISR and PBA are read-only
    }
  }

  private isrRead(at: number, data: Uint8Array): void {
    data.fill(0);
    if (at !== 0) return;
    // 4.1.4.5: reading ISR status resets it to 0 and de-asserts INTx.
    data[0] = this.isr;
    this.isr = 0;
    this.updateIntx();
  }

  private deviceConfigAccess(offset: number, data: Uint8Array, isWrite: boolean): void {
    if (offset + data.length > this.device.configSizeBytes) {
      if (!isWrite) data.fill(0);
      return;
    }
    if (isWrite) this.device.writeConfig(offset, data);
    else this.device.readConfig(offset, data);
  }

  /** The field an access names, when it is exactly that field (4.1.3.1: natural widths only). */
  private commonField(at: number, len: number): CommonCfgField | null {
    const i = at < FIELD_AT.length ? FIELD_AT[at]! : -1;
    if (i < 0) return null;
    const field = COMMON_FIELDS[i]!;
    return VIRTIO_PCI_COMMON_CFG.sizeOf(field) === len ? field : null;
  }

  private commonRead(at: number, data: Uint8Array): void {
    const field = this.commonField(at, data.length);
    writeLe(data, field === null ? 0 : this.commonValue(field));
  }

  private commonValue(field: CommonCfgField): number {
    const q = this.queues[this.queueSelect];
    switch (field) {
      case 'device_feature_select': return this.deviceFeatureSelect;
      case 'device_feature': return this.core.deviceFeatureWord(this.deviceFeatureSelect);
      case 'guest_feature_select': return this.guestFeatureSelect;
      case 'guest_feature': return this.core.driverFeatureWord(this.guestFeatureSelect);
      case 'msix_config': return this.configVector;
      case 'num_queues': return this.queues.length;
      case 'device_status': return this.core.status;
      case 'config_generation': return this.core.configGeneration & 0xff;
      case 'queue_select': return this.queueSelect;
      // 0 says "no such queue" (4.1.4.3).
      case 'queue_size': return q ? q.size & 0xffff : 0;
      case 'queue_msix_vector': return q ? this.queueVector[q.index]! : VIRTIO_MSI_NO_VECTOR;
      case 'queue_enable': return q?.ready ? 1 : 0;
      case 'queue_notify_off': return q ? q.index : 0;
      case 'queue_notify_data': return 0;
      case 'queue_reset': return 0;
      default: return q ? this.core.queueAddressWord(q.index, QUEUE_ADDRESS_WORD[field]!) : 0;
    }
  }

  private commonWrite(at: number, data: Uint8Array): void {
    const field = this.commonField(at, data.length);
    if (field === null) return;
    const v = readLe(data);
    const sel = this.queueSelect;
    const q = this.queues[sel];
    switch (field) {
      case 'device_feature_select': this.deviceFeatureSelect = v; return;
      case 'guest_feature_select': this.guestFeatureSelect = v; return;
      case 'guest_feature': this.core.writeDriverFeatureWord(this.guestFeatureSelect, v); return;
      case 'msix_config': this.configVector = this.acceptVector(v); return;
      case 'device_status':
        if (v === 0) this.reset();
        else this.core.writeStatus(v);
        return;
      case 'queue_select': this.queueSelect = v; return;
      case 'queue_size': this.core.writeQueueSize(sel, v); return;
      case 'queue_msix_vector':
        if (q) this.queueVector[q.index] = this.acceptVector(v);
        return;
      // 4.1.4.3.2: the driver MUST NOT write 0 to queue_enable (that is what queue_reset is for).
      case 'queue_enable':
        if (v === 1) this.core.writeQueueReady(sel, true);
        return;
      case 'queue_desc_lo': case 'queue_desc_hi': case 'queue_avail_lo': case 'queue_avail_hi': case 'queue_used_lo': case 'queue_used_hi':
        this.core.writeQueueAddressWord(sel, QUEUE_ADDRESS_WORD[field]!, v);
        return;
      default: return; // read-only fields
    }
  }

  /** A vector the table has, or VIRTIO_MSI_NO_VECTOR: the driver reads back NO_VECTOR when the mapping failed (4.1.5.1.2). */
  private acceptVector(v: number): number {
    return v < this.msix.vectors ? v : VIRTIO_MSI_NO_VECTOR;
  }

  // ---- interrupts ----

  private queueInterrupt(queueIndex: number): void {
    if (this.msix.enabled) {
      const v = this.queueVector[queueIndex]!;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.msix.notify(v);
      return;
    }
    this.isr |= VIRTIO_PCI_ISR_QUEUE;
    this.updateIntx();
  }

  private configInterrupt(): void {
    // 4.1.5.3: the configuration bit is set in ISR whether or not MSI-X is in use.
    this.isr |= VIRTIO_PCI_ISR_CONFIG;
    if (this.msix.enabled) {
      if (this.configVector !== VIRTIO_MSI_NO_VECTOR) this.msix.notify(this.configVector);
      return;
    }
    this.updateIntx();
  }

  /** INTx follows ISR status only while MSI-X is disabled (4.1.4.5.1). */
  private updateIntx(): void {
    this.config.setInterruptStatus(!this.msix.enabled && this.isr !== 0);
  }

  /** Writing 0 to device_status: the device, queues, vectors and selectors back to power-on. */
  reset(): void {
    this.core.reset();
    this.queueVector.fill(VIRTIO_MSI_NO_VECTOR);
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.deviceFeatureSelect = 0;
    this.guestFeatureSelect = 0;
    this.queueSelect = 0;
    this.isr = 0;
    this.updateIntx();
  }
}
