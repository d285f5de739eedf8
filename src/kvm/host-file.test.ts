import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { KvmError } from './errors.js';
import { canPunchHoles, punchHole } from './host-file.js';

test('punchHole: the range reads as zeros, its blocks are freed, the size stays; a bad fd is a KvmError naming fallocate', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-holes-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(64 * 1024, 0xee));
  const fd = fs.openSync(file, 'r+');
  t.after(() => fs.closeSync(fd));
  const before = fs.fstatSync(fd);
  if (!canPunchHoles(fd, before.size)) {
    // Not every file system punches holes; then the probe must say so without changing the file.
    assert.ok(fs.readFileSync(file).every((b) => b === 0xee));
    t.skip(`${os.tmpdir()} does not punch holes`);
    return;
  }
  assert.equal(fs.fstatSync(fd).size, before.size, 'the probe past the end changed nothing');
  punchHole(fd, 16 * 1024, 16 * 1024);
  const bytes = fs.readFileSync(file);
  assert.ok(bytes.subarray(16 * 1024, 32 * 1024).every((b) => b === 0));
  assert.ok(bytes.subarray(0, 16 * 1024).every((b) => b === 0xee) && bytes.subarray(32 * 1024).every((b) => b === 0xee), 'nothing outside the range');
  const after = fs.fstatSync(fd);
  assert.equal(after.size, before.size);
  assert.ok(after.blocks <= before.blocks - 32, `16 KiB of 512-byte blocks freed: ${before.blocks} -> ${after.blocks}`);
  punchHole(fd, 0, 0); // nothing to do
  const ro = fs.openSync(file, 'r');
  t.after(() => fs.closeSync(ro));
  assert.equal(canPunchHoles(ro, before.size), false, 'a read-only fd cannot');
  assert.throws(() => punchHole(ro, 0, 4096), (e) => e instanceof KvmError && /fallocate\(FALLOC_FL_PUNCH_HOLE\)/.test(e.message) && /EBADF/.test(e.message));
});
