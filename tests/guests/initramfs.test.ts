// The newc writer against the format (buffer-format.rst): header fields, 4-byte alignment of
// names and data, the trailer; and, where the host has GNU cpio, against cpio's own reading.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import test from 'node:test';
import { buildInitramfs, NEWC_HEADER_BYTES, NEWC_MAGIC, S_IFDIR, S_IFREG } from './initramfs.js';

const dec = new TextDecoder();
const entries = [
  { name: 'dev', mode: S_IFDIR | 0o755 },
  { name: 'init', mode: S_IFREG | 0o755, data: new TextEncoder().encode('#!/bin/sh\necho hi\n') },
];

/** Reads the archive back by the spec: [name, mode, size, data] per entry. */
function parse(a: Uint8Array): Array<{ name: string; mode: number; data: string }> {
  const out = [];
  let at = 0;
  for (;;) {
    assert.equal(at % 4, 0, 'each header starts 4-byte aligned');
    const header = dec.decode(a.subarray(at, at + NEWC_HEADER_BYTES));
    assert.equal(header.slice(0, 6), NEWC_MAGIC);
    const field = (i: number) => parseInt(header.slice(6 + 8 * i, 14 + 8 * i), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const nameAt = at + NEWC_HEADER_BYTES;
    assert.equal(a[nameAt + nameSize - 1], 0, 'c_namesize counts the NUL');
    const name = dec.decode(a.subarray(nameAt, nameAt + nameSize - 1));
    const dataAt = Math.ceil((nameAt + nameSize) / 4) * 4;
    if (name === 'TRAILER!!!') {
      assert.equal(dataAt, a.length, 'nothing after the trailer');
      return out;
    }
    out.push({ name, mode, data: dec.decode(a.subarray(dataAt, dataAt + size)) });
    at = Math.ceil((dataAt + size) / 4) * 4;
  }
}

test('newc: headers, aligned names and data, the trailer', () => {
  const a = buildInitramfs(entries);
  assert.deepEqual(parse(a), [
    { name: 'dev', mode: S_IFDIR | 0o755, data: '' },
    { name: 'init', mode: S_IFREG | 0o755, data: '#!/bin/sh\necho hi\n' },
  ]);
});

test('newc: absolute names and directories with data are refused', () => {
  assert.throws(() => buildInitramfs([{ name: '/init', mode: S_IFREG | 0o755 }]), /relative/);
  assert.throws(() => buildInitramfs([{ name: 'd', mode: S_IFDIR | 0o755, data: new Uint8Array(1) }]), /no data/);
});

let hasCpio = true;
try { execFileSync('cpio', ['--version'], { stdio: 'ignore' }); } catch { hasCpio = false; }
test('newc: GNU cpio lists what we wrote', { skip: hasCpio ? false : 'no cpio on this host (apt-get install cpio)' }, () => {
  const listing = execFileSync('cpio', ['-it', '--quiet'], { input: buildInitramfs(entries) }).toString();
  assert.deepEqual(listing.trim().split('\n'), ['dev', 'init']);
});
