// A Unix socket the VMM listens on for a virtio console: one client at a time, bytes both ways.
// Guest output that comes while nobody is attached waits (up to BACKLOG_MAX_BYTES, then the
// oldest is dropped) and goes to the next client, so boot messages are not lost to a late attach.
// A second client is refused (closed at once) while one is attached. Spec: unix(7).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CliError } from './options.js';

/** Guest output kept for the next client while none is attached. */
export const BACKLOG_MAX_BYTES = 64 * 1024;
/** Guest output queued to a client that does not read; past it, output is dropped (and counted). */
export const CLIENT_QUEUE_MAX_BYTES = 1 << 20;
/** sun_path holds 108 bytes including the terminating NUL (unix(7)). */
export const UNIX_PATH_MAX_BYTES = 107;

/**
 * Checks a --console-socket path before anything is started: its directory exists and nothing is
 * at the path yet. Throws CliError naming the path and the fix.
 */
export function checkConsoleSocketPath(option: string, socketPath: string): void {
  if (socketPath === '') throw new CliError(`${option}: empty path; give the path of a socket to create, e.g. ${option} /tmp/vm.sock`);
  if (Buffer.byteLength(socketPath) > UNIX_PATH_MAX_BYTES) {
    throw new CliError(`${option} ${socketPath}: longer than the ${UNIX_PATH_MAX_BYTES} bytes a Unix socket path may have; use a shorter path`);
  }
  const dir = path.dirname(path.resolve(socketPath));
  let dirStat: fs.Stats;
  try {
    dirStat = fs.statSync(dir);
  } catch {
    throw new CliError(`${option} ${socketPath}: directory ${dir} does not exist; create it or give another path`);
  }
  if (!dirStat.isDirectory()) throw new CliError(`${option} ${socketPath}: ${dir} is not a directory; give a path inside a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new CliError(`${option} ${socketPath}: cannot create a socket in ${dir} (permission denied); give a path in a directory you can write`);
  }
  let exists = false;
  try {
    fs.lstatSync(socketPath);
    exists = true;
  } catch { /* free: the socket is created there */ }
  if (exists) {
    throw new CliError(`${option} ${socketPath}: already exists (another VM's socket, or left by an earlier run); remove it or give another path`);
  }
}

export class ConsoleSocketServer {
  /** Called with each chunk a client sends (the buffer is the caller's to keep). */
  onInput: (bytes: Uint8Array) => void = () => {};
  /** Guest output dropped: backlog overflow, or a client that does not read. */
  droppedOutputBytes = 0;
  private client: net.Socket | null = null;
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  private closed = false;

  private constructor(private readonly server: net.Server, readonly path: string) {
    server.on('connection', (socket) => this.accept(socket));
  }

  /** Creates the socket at `socketPath` and listens; CliError if it cannot. */
  static listen(option: string, socketPath: string): Promise<ConsoleSocketServer> {
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        const why = e.code === 'EADDRINUSE' ? 'already in use; remove it or give another path'
          : e.code === 'EACCES' ? 'permission denied; give a path in a directory you can write'
            : e.code === 'ENOENT' ? 'its directory does not exist; create it or give another path'
              : `${e.code ?? e.message}; check the path`;
        reject(new CliError(`${option} ${socketPath}: cannot listen there (${why})`, { cause: e }));
      };
      server.once('error', onError);
      server.listen(socketPath, () => {
        server.off('error', onError);
        // Later server errors (EMFILE on accept) must not crash the VMM; the console just misses a client.
        server.on('error', (e) => process.stderr.write(`tsvmm: console socket ${socketPath}: ${e.message}\n`));
        resolve(new ConsoleSocketServer(server, socketPath));
      });
    });
  }

  get attached(): boolean {
    return this.client !== null;
  }

  private accept(socket: net.Socket): void {
    if (this.closed || this.client) {
      socket.destroy(); // one client at a time
      return;
    }
    this.client = socket;
    socket.on('data', (chunk: Buffer) => this.onInput(chunk));
    socket.on('error', () => { /* a client that vanished: 'close' follows */ });
    socket.on('close', () => {
      if (this.client === socket) this.client = null;
    });
    for (const b of this.backlog) socket.write(b);
    this.backlog = [];
    this.backlogBytes = 0;
  }

  /** Guest output. `bytes` may be a view of guest RAM: it is copied before this returns. */
  send(bytes: Uint8Array): void {
    if (this.closed || bytes.length === 0) return;
    const copy = Buffer.from(bytes);
    const c = this.client;
    if (c) {
      if (c.writableLength > CLIENT_QUEUE_MAX_BYTES) {
        this.droppedOutputBytes += copy.length;
        return;
      }
      c.write(copy);
      return;
    }
    this.backlog.push(copy);
    this.backlogBytes += copy.length;
    while (this.backlogBytes > BACKLOG_MAX_BYTES) {
      const old = this.backlog.shift()!;
      this.backlogBytes -= old.length;
      this.droppedOutputBytes += old.length;
    }
  }

  /** Stops listening, drops the client, and removes the socket file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client?.end();
    this.client = null;
    this.server.close();
    try { fs.unlinkSync(this.path); } catch { /* already gone */ }
  }
}
