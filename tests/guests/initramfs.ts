// A minimal initramfs writer: the "newc" cpio format the Linux kernel unpacks as its initramfs
// (regular files and directories, no hard links), for the Linux boot test's /init.
// Spec: Linux Documentation/driver-api/early-userspace/buffer-format.rst; cpio(5), "New ASCII Format".

export interface InitramfsEntry {
  /** path inside the archive, without a leading slash ("init", "dev") */
  name: string;
  /** st_mode: file type and permission bits, e.g. 0o100755 or 0o040755 */
  mode: number;
  data?: Uint8Array;
}

export const NEWC_MAGIC = '070701';
export const NEWC_HEADER_BYTES = 110;
export const NEWC_TRAILER = 'TRAILER!!!';
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;

const hex8 = (n: number) => n.toString(16).padStart(8, '0');
const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** The archive: each entry's header, name and data (each padded to 4 bytes), then the trailer. */
export function buildInitramfs(entries: readonly InitramfsEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const add = (ino: number, name: string, mode: number, data: Uint8Array, nlink: number) => {
    if (name.startsWith('/') || name.length === 0) throw new Error(`initramfs entry "${name}": names are relative and not empty`);
    const nameBytes = enc.encode(`${name}\0`);
    // c_ino, c_mode, c_uid, c_gid, c_nlink, c_mtime, c_filesize, c_devmajor, c_devminor,
    // c_rdevmajor, c_rdevminor, c_namesize, c_check: 8 hex digits each.
    const fields = [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
    const header = enc.encode(NEWC_MAGIC + fields.map(hex8).join(''));
    parts.push(header, nameBytes, new Uint8Array(pad4(NEWC_HEADER_BYTES + nameBytes.length)), data, new Uint8Array(pad4(data.length)));
  };
  entries.forEach((e, i) => {
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    if (isDir && e.data !== undefined && e.data.length > 0) throw new Error(`initramfs entry "${e.name}": a directory has no data`);
    add(i + 1, e.name, e.mode, e.data ?? new Uint8Array(0), isDir ? 2 : 1);
  });
  add(0, NEWC_TRAILER, 0, new Uint8Array(0), 1);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
