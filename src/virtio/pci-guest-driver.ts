// The guest's side of virtio-pci, in miniature, for tests: MSI-X set-up in the order of Linux
// drivers/pci/msi/msi.c and a virtio-pci driver following
// drivers/virtio/virtio_pci_modern.c and virtio_pci_modern_dev.c. Plus a harness putting one
// device behind a host bridge on real PIO/MMIO buses over recording guest RAM. The PCI probe
// itself (configuration access, BAR sizing, capability walk) is src/pci/guest-probe.ts.
import { Bus } from '../bus/bus.js';
import {
  PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY,
} from '../pci/config-space.js';
import { PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_IO_SIZE_BYTES, PciBarRouter, PciBus, PciConfigIo, PciEcam } from '../pci/bus.js';
import { Conf1Access, EcamAccess, busRead, busWrite, probeFunction, type ConfigAccess, type ProbedFunction } from '../pci/guest-probe.js';
import {
  PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_ENTRY_DATA, PCI_MSIX_ENTRY_LOWER_ADDR, PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE, PCI_MSIX_PBA, PCI_MSIX_TABLE, PCI_MSIX_TABLE_BIR,
} from '../pci/msix.js';
import { HarnessRam, LINUX_RING_FEATURES, SplitRingDriver } from './guest-driver.js';
import {
  VIRTIO_PCI_CAP, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_COMMON_CFG, VIRTIO_PCI_NOTIFY_CAP, VIRTIO_MSI_NO_VECTOR, VirtioPci,
  type CommonCfgField,
} from './pci.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, hasFeature, type VirtioDevice,
} from './virtio.js';
import type { VirtioError } from './virtio-error.js';

/** The MSI message Linux programs for vector `vector` on APIC 0: fixed delivery, physical destination. */
export function msiMessage(vector: number): { addressLo: number; addressHi: number; data: number } {
  return { addressLo: 0xfee0_0000, addressHi: 0, data: 0x20 + vector };
}

interface VirtioRegion {
  readonly gpa: number;
  readonly length: number;
}

/** A virtio-pci driver (virtio_pci_modern.c) over configuration access and the MMIO bus. */
export class VirtioPciDriver {
  readonly info: ProbedFunction;
  common!: VirtioRegion;
  isr!: VirtioRegion;
  notify!: VirtioRegion;
  device: VirtioRegion | null = null;
  notifyOffMultiplier = 0;
  msixCap = -1;
  msixTableGpa = 0;
  msixVectors = 0;

  constructor(readonly cfg: ConfigAccess, readonly mmio: Bus, readonly slot: number) {
    const info = probeFunction(cfg, slot);
    if (!info) throw new Error(`no device in slot ${slot}`);
    this.info = info;
  }

  private barGpa(index: number): number {
    const bar = this.info.bars.find((b) => b.index === index);
    if (!bar) throw new Error(`BAR ${index} is not implemented`);
    return bar.address;
  }

  /**
   * vp_modern_probe(): device ID check, then virtio_pci_find_capability() for each structure (the
   * first vendor capability of each type whose BAR is a memory BAR), the notify multiplier, and
   * pci_enable_device + pci_set_master. Throws when a required structure is missing.
   */
  probe(): void {
    const info = this.info;
    if (info.vendorId !== 0x1af4 || info.deviceId < 0x1040 || info.deviceId > 0x107f) throw new Error(`0x${info.vendorId.toString(16)}:0x${info.deviceId.toString(16)} is not a modern virtio device`);
    const find = (cfgType: number): { pos: number; region: VirtioRegion } | null => {
      for (const [id, pos] of info.capabilities) {
        if (id !== PCI_CAP_ID_VNDR) continue;
        if (this.cfg.read(this.slot, pos + VIRTIO_PCI_CAP.offsetOf('cfg_type'), 1) !== cfgType) continue;
        const bar = this.cfg.read(this.slot, pos + VIRTIO_PCI_CAP.offsetOf('bar'), 1);
        if (!info.bars.some((b) => b.index === bar && b.kind !== 'io')) continue;
        const offset = this.cfg.read(this.slot, pos + VIRTIO_PCI_CAP.offsetOf('offset'), 4);
        const length = this.cfg.read(this.slot, pos + VIRTIO_PCI_CAP.offsetOf('length'), 4);
        return { pos, region: { gpa: this.barGpa(bar) + offset, length } };
      }
      return null;
    };
    const common = find(VIRTIO_PCI_CAP_COMMON_CFG);
    const isr = find(VIRTIO_PCI_CAP_ISR_CFG);
    const notify = find(VIRTIO_PCI_CAP_NOTIFY_CFG);
    if (!common || !isr || !notify) throw new Error('virtio-pci: missing common, ISR or notify capability');
    if (common.region.length < 56) throw new Error(`virtio-pci: common config of ${common.region.length} bytes`);
    this.common = common.region;
    this.isr = isr.region;
    this.notify = notify.region;
    this.notifyOffMultiplier = this.cfg.read(this.slot, notify.pos + VIRTIO_PCI_NOTIFY_CAP.offsetOf('notify_off_multiplier'), 4);
    this.device = find(VIRTIO_PCI_CAP_DEVICE_CFG)?.region ?? null;
    const msix = info.capabilities.find(([id]) => id === PCI_CAP_ID_MSIX);
    if (msix) {
      this.msixCap = msix[1];
      this.msixVectors = (this.cfg.read(this.slot, this.msixCap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1;
      const table = this.cfg.read(this.slot, this.msixCap + PCI_MSIX_TABLE, 4);
      this.msixTableGpa = this.barGpa(table & PCI_MSIX_TABLE_BIR) + (table & ~PCI_MSIX_TABLE_BIR);
    }
    const cmd = this.cfg.read(this.slot, PCI_COMMAND, 2);
    this.cfg.write(this.slot, PCI_COMMAND, 2, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  }

  read(field: CommonCfgField): number {
    return busRead(this.mmio, this.common.gpa + VIRTIO_PCI_COMMON_CFG.offsetOf(field), VIRTIO_PCI_COMMON_CFG.sizeOf(field));
  }

  write(field: CommonCfgField, value: number): void {
    busWrite(this.mmio, this.common.gpa + VIRTIO_PCI_COMMON_CFG.offsetOf(field), VIRTIO_PCI_COMMON_CFG.sizeOf(field), value);
  }

  readConfig(offset: number, len: 1 | 2 | 4): number {
    if (!this.device) return 0;
    return busRead(this.mmio, this.device.gpa + offset, len);
  }

  get status(): number {
    return this.read('device_status');
  }

  addStatus(bits: number): void {
    this.write('device_status', this.status | bits);
  }

  deviceFeatures(): bigint {
    this.write('device_feature_select', 1);
    const high = BigInt(this.read('device_feature'));
    this.write('device_feature_select', 0);
    return (high << 32n) | BigInt(this.read('device_feature'));
  }

  /** vp_reset() (write 0, wait for 0), ACKNOWLEDGE, DRIVER, features, FEATURES_OK and its re-read. */
  negotiate(wanted: bigint, options: { acceptExactly?: bigint } = {}): bigint | null {
    this.write('device_status', 0);
    if (this.status !== 0) throw new Error('reset did not complete');
    this.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.addStatus(VIRTIO_CONFIG_S_DRIVER);
    const features = options.acceptExactly ?? (this.deviceFeatures() & wanted);
    this.write('guest_feature_select', 0);
    this.write('guest_feature', Number(features & 0xffff_ffffn));
    this.write('guest_feature_select', 1);
    this.write('guest_feature', Number(features >> 32n));
    this.addStatus(VIRTIO_CONFIG_S_FEATURES_OK);
    return this.status & VIRTIO_CONFIG_S_FEATURES_OK ? features : null;
  }

  /**
   * msix_capability_init(): enable with the function masked, program every entry (still masked),
   * unmask the vectors, then the function. Afterwards INTx is disabled, as pci_intx_for_msi does.
   */
  enableMsix(): void {
    if (this.msixCap < 0) throw new Error('no MSI-X capability');
    const ctrl = this.msixCap + PCI_MSIX_FLAGS;
    this.cfg.write(this.slot, ctrl, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    for (let v = 0; v < this.msixVectors; v++) {
      const e = this.msixTableGpa + v * PCI_MSIX_ENTRY_SIZE;
      const m = msiMessage(v);
      busWrite(this.mmio, e + PCI_MSIX_ENTRY_LOWER_ADDR, 4, m.addressLo);
      busWrite(this.mmio, e + PCI_MSIX_ENTRY_UPPER_ADDR, 4, m.addressHi);
      busWrite(this.mmio, e + PCI_MSIX_ENTRY_DATA, 4, m.data);
    }
    for (let v = 0; v < this.msixVectors; v++) this.setVectorMask(v, false);
    this.cfg.write(this.slot, ctrl, 2, PCI_MSIX_FLAGS_ENABLE);
    this.cfg.write(this.slot, PCI_COMMAND, 2, this.cfg.read(this.slot, PCI_COMMAND, 2) | PCI_COMMAND_INTX_DISABLE);
  }

  setVectorMask(vector: number, masked: boolean): void {
    busWrite(this.mmio, this.msixTableGpa + vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, 4, masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
  }

  setFunctionMask(masked: boolean): void {
    this.cfg.write(this.slot, this.msixCap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | (masked ? PCI_MSIX_FLAGS_MASKALL : 0));
  }

  pendingBits(): number {
    const pba = this.cfg.read(this.slot, this.msixCap + PCI_MSIX_PBA, 4);
    return busRead(this.mmio, this.barGpa(pba & 7) + (pba & ~7), 4);
  }

  /** vp_modern_config_vector(): write, read back; NO_VECTOR back means the device refused it. */
  setConfigVector(vector: number): number {
    this.write('msix_config', vector);
    return this.read('msix_config');
  }

  /**
   * setup_vq() of virtio_pci_modern.c: select, check size and that the queue is off, write size
   * and the rings (64-bit addresses as two halves), read notify_off, and map the vector. The
   * queue is enabled later by enableQueues(), as vp_modern_find_vqs does.
   */
  setupQueue(index: number, ring: SplitRingDriver, vector = VIRTIO_MSI_NO_VECTOR): { notifyGpa: number } {
    this.write('queue_select', index);
    const max = this.read('queue_size');
    if (max === 0 || index >= this.read('num_queues')) throw new Error(`queue ${index} does not exist`);
    if (this.read('queue_enable')) throw new Error(`queue ${index} already enabled`);
    if (ring.size > max) throw new Error(`queue ${index}: ring of ${ring.size} exceeds queue_size ${max}`);
    this.write('queue_size', ring.size);
    const pairs: Array<[CommonCfgField, CommonCfgField, number]> = [
      ['queue_desc_lo', 'queue_desc_hi', ring.descGpa],
      ['queue_avail_lo', 'queue_avail_hi', ring.availGpa],
      ['queue_used_lo', 'queue_used_hi', ring.usedGpa],
    ];
    for (const [lo, hi, gpa] of pairs) {
      this.write(lo, gpa % 0x1_0000_0000);
      this.write(hi, Math.floor(gpa / 0x1_0000_0000));
    }
    const off = this.read('queue_notify_off');
    const notifyGpa = this.notify.gpa + off * this.notifyOffMultiplier;
    if (notifyGpa + 2 > this.notify.gpa + this.notify.length) throw new Error(`queue ${index}: notify offset ${off} is outside the notify region`);
    if (vector !== VIRTIO_MSI_NO_VECTOR) {
      this.write('queue_msix_vector', vector);
      if (this.read('queue_msix_vector') === VIRTIO_MSI_NO_VECTOR) throw new Error(`queue ${index}: vector ${vector} refused`);
    }
    this.queueNotify.set(index, notifyGpa);
    return { notifyGpa };
  }

  private readonly queueNotify = new Map<number, number>();

  enableQueue(index: number): void {
    this.write('queue_select', index);
    this.write('queue_enable', 1);
  }

  driverOk(): void {
    this.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
  }

  /** vp_notify(): a 16-bit write of the queue index to its doorbell. */
  notifyQueue(index: number): void {
    const gpa = this.queueNotify.get(index);
    if (gpa === undefined) throw new Error(`queue ${index} was not set up`);
    busWrite(this.mmio, gpa, 2, index);
  }

  /** vp_interrupt(): the ISR read that also de-asserts INTx. */
  readIsr(): number {
    return busRead(this.mmio, this.isr.gpa, 1);
  }
}

export interface PciHarnessOptions {
  readonly ramBytes?: number;
  /** Guest RAM regions instead of one of ramBytes at 0; the driver allocates in the first. */
  readonly ram?: ReadonlyArray<{ gpa: number; sizeBytes: number }>;
  /** Configuration access the driver uses (default: 0xCF8/0xCFC). */
  readonly access?: 'conf1' | 'ecam';
  /** Default true: MSI-X with one vector per queue plus vector 0 for configuration. */
  readonly msix?: boolean;
  readonly ringFeatures?: bigint;
  readonly slot?: number;
}

/** Where the harness puts things (the machine will choose its own; see src/pci/bus.ts). */
export const HARNESS_ECAM_GPA = 0xe000_0000;
export const HARNESS_BAR_WINDOW = { base: 0xc000_0000, sizeBytes: 0x1000_0000 };

/** One virtio device behind virtio-pci on bus 0, with a driver, for end-to-end tests. */
export class PciHarness extends HarnessRam {
  readonly pciBus: PciBus;
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');
  readonly router: PciBarRouter;
  readonly transport: VirtioPci;
  readonly driver: VirtioPciDriver;
  readonly slot: number;
  /** MSI messages sent, as their data (vector + 0x20). */
  readonly msi: number[] = [];
  /** The same messages in full: [address lo, address hi, data]. */
  readonly messages: Array<[number, number, number]> = [];
  /** Called for each message, after it is recorded (fuzz invariants). */
  onMsi: ((lo: number, hi: number, data: number) => void) | null = null;
  /** INTx level changes. */
  readonly intx: number[] = [];
  readonly errors: VirtioError[] = [];
  /** barMoved calls: [label, old, new]. */
  readonly barMoves: Array<[string, number | null, number | null]> = [];
  private intxLevel = 0;
  private readonly useMsix: boolean;

  constructor(readonly device: VirtioDevice, options: PciHarnessOptions = {}) {
    super(options.ram ?? [{ gpa: 0, sizeBytes: options.ramBytes ?? 1 << 20 }]);
    this.router = new PciBarRouter(HARNESS_BAR_WINDOW);
    this.pciBus = new PciBus({
      barMoved: (bar, oldGpa, newGpa) => {
        this.barMoves.push([bar.label, oldGpa, newGpa]);
        this.router.barMoved(bar, oldGpa, newGpa);
      },
    });
    this.transport = new VirtioPci(device, {
      memory: this.memory,
      signalMsi: (lo, hi, data) => {
        this.messages.push([lo, hi, data]);
        this.msi.push(data);
        this.onMsi?.(lo, hi, data);
      },
      intx: (level) => { this.intxLevel = level; this.intx.push(level); },
      onError: (e) => this.errors.push(e),
      ...(options.ringFeatures === undefined ? {} : { ringFeatures: options.ringFeatures }),
    });
    this.slot = this.pciBus.attach(this.transport, options.slot);
    const ecam = new PciEcam(this.pciBus);
    this.pio.insert(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_IO_SIZE_BYTES, 'pci-conf1', new PciConfigIo(this.pciBus));
    this.mmio.insert(HARNESS_ECAM_GPA, ecam.sizeBytes, 'pci-ecam', ecam);
    this.mmio.insert(HARNESS_BAR_WINDOW.base, HARNESS_BAR_WINDOW.sizeBytes, 'pci-bars', this.router);
    this.pciBus.assignBars({ mmio32: HARNESS_BAR_WINDOW });
    const cfg = options.access === 'ecam' ? new EcamAccess(this.mmio, HARNESS_ECAM_GPA) : new Conf1Access(this.pio);
    this.driver = new VirtioPciDriver(cfg, this.mmio, this.slot);
    this.useMsix = options.msix ?? true;
  }

  get intxAsserted(): boolean {
    return this.intxLevel === 1;
  }

  /**
   * The Linux bring-up: probe, MSI-X (config on vector 0, queue i on vector i + 1) or INTx,
   * negotiate, rings, enable, DRIVER_OK.
   */
  bringUp(options: { wanted?: bigint; queueSizes?: readonly number[] } = {}): SplitRingDriver[] {
    this.driver.probe();
    const features = this.driver.negotiate(options.wanted ?? (this.device.deviceFeatures | LINUX_RING_FEATURES));
    if (features === null) throw new Error('device refused the features');
    if (this.useMsix) {
      this.driver.enableMsix();
      if (this.driver.setConfigVector(0) !== 0) throw new Error('config vector refused');
    }
    const rings = this.device.queueMaxSizes.map((max, i) => {
      const ring = new SplitRingDriver(this.memory, this.alloc, options.queueSizes?.[i] ?? max, {
        eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
        indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
      });
      this.driver.setupQueue(i, ring, this.useMsix ? i + 1 : VIRTIO_MSI_NO_VECTOR);
      return ring;
    });
    rings.forEach((_, i) => this.driver.enableQueue(i));
    this.driver.driverOk();
    return rings;
  }

}
