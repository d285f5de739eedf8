// The console socket: one client at a time, bytes both ways, output kept for a late client.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import test from 'node:test';
import { BACKLOG_MAX_BYTES, checkConsoleSocketPath, ConsoleSocketServer } from './console-socket.js';
import { CliError } from './options.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-sock-'));

function connect(p: string): Promise<{ socket: net.Socket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(p);
    let data = '';
    socket.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    const closed = new Promise<void>((res) => socket.once('close', () => res()));
    socket.once('connect', () => resolve({ socket, received: () => data, closed }));
    socket.once('error', reject);
  });
}

async function until(what: string, pred: () => boolean): Promise<void> {
  const end = Date.now() + 5000;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('output before any client waits for the first one; input reaches onInput; close removes the socket', async () => {
  const p = path.join(tmp, 'a.sock');
  const server = await ConsoleSocketServer.listen('--console-socket', p);
  const input: string[] = [];
  server.onInput = (b) => input.push(Buffer.from(b).toString('latin1'));
  const guestRam = Buffer.from('early boot\n');
  server.send(guestRam);
  guestRam.fill(0); // the server copied it
  const c = await connect(p);
  await until('the backlog', () => c.received() === 'early boot\n');
  server.send(Buffer.from('later\n'));
  c.socket.write('typed\n');
  await until('the input', () => input.join('') === 'typed\n');
  await until('live output', () => c.received() === 'early boot\nlater\n');
  server.close();
  await c.closed;
  assert.equal(fs.existsSync(p), false);
});

test('a second client is refused while one is attached; the next one after it leaves is served', async () => {
  const p = path.join(tmp, 'b.sock');
  const server = await ConsoleSocketServer.listen('--console-socket', p);
  const first = await connect(p);
  await until('the first client', () => server.attached);
  const second = await connect(p);
  await second.closed;
  first.socket.destroy();
  await until('the first client to go', () => !server.attached);
  server.send(Buffer.from('x'));
  const third = await connect(p);
  await until('the third client to get the output', () => third.received() === 'x');
  server.close();
  await third.closed;
});

test('the backlog keeps only the newest BACKLOG_MAX_BYTES and counts what it dropped', async () => {
  const p = path.join(tmp, 'c.sock');
  const server = await ConsoleSocketServer.listen('--console-socket', p);
  server.send(Buffer.alloc(BACKLOG_MAX_BYTES, 0x61));
  server.send(Buffer.from('end'));
  assert.equal(server.droppedOutputBytes, BACKLOG_MAX_BYTES);
  const c = await connect(p);
  await until('the backlog', () => c.received() === 'end');
  server.close();
});

test('path checks: existing path, missing directory, too long; listen on a taken path is a CliError', async () => {
  const taken = path.join(tmp, 'taken');
  fs.writeFileSync(taken, '');
  assert.throws(() => checkConsoleSocketPath('--console-socket', taken), (e: Error) => e instanceof CliError && /already exists/.test(e.message));
  assert.throws(() => checkConsoleSocketPath('--console-socket', path.join(tmp, 'nope', 's')), /directory .* does not exist/);
  assert.throws(() => checkConsoleSocketPath('--console-socket', path.join(tmp, 'x'.repeat(110))), /longer than the 107 bytes/);
  assert.throws(() => checkConsoleSocketPath('--console-socket', ''), /empty path/);
  checkConsoleSocketPath('--console-socket', path.join(tmp, 'free.sock'));
  const p = path.join(tmp, 'd.sock');
  const server = await ConsoleSocketServer.listen('--console-socket', p);
  await assert.rejects(ConsoleSocketServer.listen('--console-socket', p), (e: Error) => e instanceof CliError && /already in use/.test(e.message));
  server.close();
});
