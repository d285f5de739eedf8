// A Linux TAP device as a frame pipe: /dev/net/tun attached with TUNSETIFF (IFF_TAP | IFF_NO_PI),
// non-blocking, its fd polled on the event loop (koffi.node.poll, as eventfd.ts does). Spec:
// Documentation/networking/tuntap.rst; include/uapi/linux/if_tun.h, include/uapi/linux/if.h.
//
// One read or write is one Ethernet frame (IFF_NO_PI: no packet-info prefix; no IFF_VNET_HDR:
// no offloads, so no virtio header either). Reads run until EAGAIN on each wake-up; a write the
// kernel cannot take now (EAGAIN) drops the frame and counts it. What this does not do:
// IFF_MULTI_QUEUE, IFF_VNET_HDR offloads, TUNSETPERSIST/TUNSETOWNER (creating TAPs for others),
// configuring the interface (address, link up): that is the host administrator's, with `ip`.
import * as fs from 'node:fs';
import koffi from 'koffi';
import { IFNAMSIZ, ifreq } from './abi.js';
import { errnoName } from './errors.js';
import { _IOC, _IOC_WRITE } from './ioctls.js';
import * as libc from './libc.js';

// include/uapi/linux/if_tun.h
export const TUNSETIFF = _IOC(_IOC_WRITE, 0x54 /* 'T' */, 202, 4); // _IOW('T', 202, int)
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const TUN_DEVICE_PATH = '/dev/net/tun';
/** One frame: the largest TAP MTU (65535) plus an Ethernet header with one VLAN tag, rounded up. */
const READ_BUFFER_BYTES = 65536 + 64;
/** Frames read per wake-up at most, so a flood cannot hold the event loop; the poll is level-triggered and comes back. */
const MAX_READS_PER_WAKEUP = 1024;

const EPERM = 1;
const ENOENT = 2;
const EIO = 5;
const EAGAIN = 11;
const EACCES = 13;
const EBUSY = 16;
const ENODEV = 19;
const ENXIO = 6;
const EINVAL = 22;
const EINTR = 4;

export type TapErrorKind =
  /** /dev/net/tun is missing (no TUN/TAP driver, or not passed into the container). */
  | 'no-tun'
  /** No permission on /dev/net/tun, or TUNSETIFF needs CAP_NET_ADMIN / the TAP belongs to another user. */
  | 'permission'
  /** The TAP device is attached to another process. */
  | 'busy'
  /** The name cannot be an interface name, or names an interface that is not a TAP device. */
  | 'name'
  /** Anything else from open/ioctl/read/write. */
  | 'io';

export class TapError extends Error {
  override readonly name = 'TapError';
  constructor(readonly kind: TapErrorKind, message: string, readonly errno = 0) {
    super(message);
  }
}

/** Why `name` cannot be an interface name (dev_valid_name() in net/core/dev.c, plus '%' templates), or null. */
export function tapNameProblem(name: string): string | null {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0) return 'is empty';
  if (bytes >= IFNAMSIZ) return `is ${bytes} bytes; interface names are at most ${IFNAMSIZ - 1} (IFNAMSIZ ${IFNAMSIZ} with the NUL)`;
  if (name === '.' || name === '..') return 'is not a valid interface name';
  if (/[/:%\s]/.test(name) || !/^[\x21-\x7e]+$/.test(name)) return "contains a character interface names cannot have ('/', ':', '%', spaces or non-ASCII)";
  return null;
}

/** The uid owning TAP `name` (/sys/class/net/NAME/owner), -1 when none, null when there is no such TAP. */
function tapOwner(name: string): number | null {
  try {
    return Number(fs.readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim());
  } catch {
    return null;
  }
}

function errText(errno: number): string {
  return `${errnoName(errno)} (${libc.strerror(errno)})`;
}

export interface TapStats {
  rxFrames: number;
  txFrames: number;
  /** The kernel's queue for the interface was full (EAGAIN): dropped. */
  txDroppedFull: number;
  /** Any other failed write (EIO while the interface is down): dropped. */
  txErrors: number;
  /** Failed reads other than EAGAIN. */
  rxErrors: number;
  /** The last errno of a failed write or read, for diagnostics. */
  lastErrno: number;
}

export class TapDevice {
  readonly stats: TapStats = { rxFrames: 0, txFrames: 0, txDroppedFull: 0, txErrors: 0, rxErrors: 0, lastErrno: 0 };
  private readonly readBuffer = Buffer.alloc(READ_BUFFER_BYTES);
  private readonly readView = new Uint8Array(this.readBuffer.buffer, this.readBuffer.byteOffset, READ_BUFFER_BYTES);
  private poller: ReturnType<typeof koffi.node.poll> | null = null;
  private receiver: ((frame: Uint8Array) => void) | null = null;
  private closed = false;

  private constructor(readonly fd: number, readonly name: string) {}

  /**
   * Attaches to TAP device `name`, creating it when it does not exist (which needs CAP_NET_ADMIN).
   * `devicePath` is for tests. Throws TapError, one line naming the device and the fix.
   */
  static open(name: string, devicePath = TUN_DEVICE_PATH): TapDevice {
    const problem = tapNameProblem(name);
    if (problem) throw new TapError('name', `TAP device name ${JSON.stringify(name)} ${problem}`);
    const fd = libc.open(devicePath, libc.O_RDWR | libc.O_NONBLOCK | libc.O_CLOEXEC);
    if (fd < 0) {
      const errno = libc.errno();
      if (errno === ENOENT || errno === ENODEV || errno === ENXIO) {
        throw new TapError('no-tun', `${devicePath} is missing (${errnoName(errno)}): this host has no TUN/TAP driver; load it (modprobe tun), or pass the device into the container`, errno);
      }
      if (errno === EACCES || errno === EPERM) {
        throw new TapError('permission', `cannot open ${devicePath} (${errnoName(errno)}): it needs read and write permission; run tsvmm as a user who has it (it is usually mode 0666, or root only in containers)`, errno);
      }
      throw new TapError('io', `cannot open ${devicePath}: ${errText(errno)}`, errno);
    }
    const req = Buffer.alloc(ifreq.sizeBytes);
    req.write(name, ifreq.at.ifr_name!, 'ascii');
    req.writeUInt16LE(IFF_TAP | IFF_NO_PI, ifreq.at.ifr_flags!);
    if (libc.ioctlPointer(fd, TUNSETIFF, req) < 0) {
      const errno = libc.errno();
      libc.close(fd);
      throw TapDevice.setIffError(name, errno);
    }
    const end = req.indexOf(0, ifreq.at.ifr_name!);
    const actual = req.toString('ascii', ifreq.at.ifr_name!, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end);
    if (actual !== name) {
      libc.close(fd);
      throw new TapError('io', `TUNSETIFF for ${name} attached interface ${JSON.stringify(actual)} instead`);
    }
    return new TapDevice(fd, actual);
  }

  private static setIffError(name: string, errno: number): TapError {
    const what = `TAP device ${name}`;
    if (errno === EPERM || errno === EACCES) {
      const owner = tapOwner(name);
      const make = `ip tuntap add ${name} mode tap user $USER`;
      if (owner === null) {
        return new TapError('permission', `${what} does not exist and creating it needs CAP_NET_ADMIN; run as root, or have it made for you first: ${make}`, errno);
      }
      const whose = owner >= 0 ? `belongs to user ${owner}` : 'has no owner';
      return new TapError('permission', `${what} ${whose} and attaching to it without CAP_NET_ADMIN is not allowed; recreate it for this user (ip tuntap del ${name} mode tap; ${make}) or run with CAP_NET_ADMIN`, errno);
    }
    if (errno === EBUSY) return new TapError('busy', `${what} is already attached (by another process or another --net; a TAP without multi-queue takes one); stop that user or give another name`, errno);
    if (errno === EINVAL) return new TapError('name', `${name} is an existing network interface that is not a TAP device (a TUN, a bridge, a NIC); give a TAP device's name or a new one`, errno);
    return new TapError('io', `TUNSETIFF for ${what} failed: ${errText(errno)}`, errno);
  }

  /** The fd's status flags (fcntl F_GETFL) and whether close-on-exec is set, for tests. */
  fdFlags(): { nonBlocking: boolean; closeOnExec: boolean } {
    return {
      nonBlocking: (libc.fcntl(this.fd, libc.F_GETFL, 0) & libc.O_NONBLOCK) !== 0,
      closeOnExec: (libc.fcntl(this.fd, libc.F_GETFD, 0) & libc.FD_CLOEXEC) !== 0,
    };
  }

  /**
   * Writes one frame to the host side of the interface. False when it was dropped: the kernel's
   * queue was full (EAGAIN), or the interface cannot take it (EIO: it is down).
   */
  send(frame: Uint8Array): boolean {
    if (this.closed) return false;
    for (;;) {
      const n = libc.write(this.fd, frame, frame.length);
      if (n === frame.length) {
        this.stats.txFrames++;
        return true;
      }
      const errno = n < 0 ? libc.errno() : EIO;
      if (errno === EINTR) continue;
      this.stats.lastErrno = errno;
      if (errno === EAGAIN) this.stats.txDroppedFull++;
      else this.stats.txErrors++;
      return false;
    }
  }

  /**
   * Frames the host sends on the interface go to `receiver` (a view of a reused buffer, valid only
   * during the call). With null, the fd is not polled: frames wait in the kernel's queue, which
   * drops them when full (its txqueuelen).
   */
  setReceiver(receiver: ((frame: Uint8Array) => void) | null): void {
    if (this.closed) return;
    this.receiver = receiver;
    if (receiver && !this.poller) {
      this.poller = koffi.node.poll(this.fd, { readable: true }, () => this.drain());
    } else if (!receiver && this.poller) {
      this.poller.close();
      this.poller = null;
    }
  }

  /** Reads frames until EAGAIN (or the per-wake-up bound). */
  private drain(): void {
    for (let i = 0; i < MAX_READS_PER_WAKEUP && this.receiver && !this.closed; i++) {
      const n = libc.read(this.fd, this.readBuffer, READ_BUFFER_BYTES);
      if (n < 0) {
        const errno = libc.errno();
        if (errno === EINTR) continue;
        if (errno !== EAGAIN) {
          this.stats.rxErrors++;
          this.stats.lastErrno = errno;
        }
        return;
      }
      if (n === 0) return;
      this.stats.rxFrames++;
      this.receiver(this.readView.subarray(0, Number(n)));
    }
  }

  /** Detaches: the interface goes away unless it was made persistent (ip tuntap add). Once only. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller?.close();
    this.poller = null;
    this.receiver = null;
    libc.close(this.fd);
  }
}
