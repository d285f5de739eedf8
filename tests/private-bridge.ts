// Layer-2 test networks of the test's own: a Linux bridge with IPv6 off and no addresses, so the
// frames the TAP tests exchange (ethertype 0x88b5, IEEE's local experimental one) never leave it.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export const ETHERTYPE_LOCAL_EXPERIMENTAL = 0x88b5;

/** A frame of the tests' own ethertype. */
export const isTestFrame = (f: Uint8Array): boolean => f.length >= 14 && (f[12]! << 8 | f[13]!) === ETHERTYPE_LOCAL_EXPERIMENTAL;

/** Runs `ip ARGS`, throwing with its stderr when it fails. */
export function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

/** Creates bridge `br`, puts the existing interfaces `members` on it, IPv6 off everywhere, all up. */
export function makePrivateBridge(br: string, members: readonly string[]): void {
  ip('link', 'add', br, 'type', 'bridge');
  for (const n of [br, ...members]) {
    const knob = `/proc/sys/net/ipv6/conf/${n}/disable_ipv6`;
    if (fs.existsSync(knob)) fs.writeFileSync(knob, '1');
  }
  for (const n of members) ip('link', 'set', n, 'master', br);
  for (const n of [...members, br]) ip('link', 'set', n, 'up');
}

/** Removes bridge `br` (its members stay); never throws, for finally blocks. */
export function removeBridge(br: string): void {
  spawnSync('ip', ['link', 'del', br]);
}
