import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const unitPath = fileURLToPath(new URL('../systemd/bwc-agent.service', import.meta.url));
const sysusersPath = fileURLToPath(new URL('../systemd/bwc-agent.sysusers.conf', import.meta.url));
const unitName = 'bwc-agent.service';
// Where the package installs the launcher; verify checks that ExecStart names an executable.
const execStartBinary = '/opt/bwc-agent/releases/current/bin/bwc-agent';
const execStartPreBinary = '/opt/bwc-agent/releases/committed/bin/bwc-agent';
const MAX_EXPOSURE = 2.0;

function run(cmd: string, args: string[]): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    env: { ...process.env, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '', SYSTEMD_LOG_COLOR: '0' },
  });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const unitText = readFileSync(unitPath, 'utf8');

/**
 * Runs `systemd-analyze verify` on unit text. verify wants the whole unit graph (sysinit.target,
 * ...) and an executable ExecStart, so it runs against a scratch root holding the distribution's
 * units, a stub launcher at the installed path, and the unit where an administrator would put it.
 * The unit text itself is not rewritten.
 */
function verify(t: Test, text: string): { code: number | null; out: string; aboutUnit: string[] } {
  const root = mkdtempSync(join(tmpdir(), 'bwc-unit-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  cpSync('/usr/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
  writeFileSync(join(root, 'etc/systemd/system', unitName), text);
  // As install.sh lays it out: a release folder, and the current and committed symlinks to it.
  const stub = join(root, '/opt/bwc-agent/releases/0.1.0/bin/bwc-agent');
  mkdirSync(dirname(stub), { recursive: true });
  writeFileSync(stub, '#!/bin/sh\nexit 0\n');
  chmodSync(stub, 0o755);
  for (const link of ['current', 'committed']) symlinkSync('0.1.0', join(root, '/opt/bwc-agent/releases', link));
  const r = run('systemd-analyze', ['verify', `--root=${root}`, unitName]);
  return { ...r, aboutUnit: r.out.split('\n').filter((l) => l.includes('bwc-agent')) };
}

t.test('systemd-analyze verify is clean', async (t) => {
  t.match(unitText, new RegExp(`^ExecStart=${execStartBinary} `, 'm'), 'ExecStart runs the current release');
  t.match(unitText, new RegExp(`^ExecStartPre=-${execStartPreBinary} update boot-check `, 'm'), 'the boot check runs from the committed release');
  const r = verify(t, unitText);
  t.same(r.aboutUnit, [], 'no warnings about the unit');
  t.equal(r.code, 0, 'verify exits 0', { output: r.out });
});

// Most unit errors are warnings with exit code 0 ("..., ignoring"); make sure the check above would
// see them.
t.test('the verify check catches a broken unit', async (t) => {
  const broken = verify(t, unitText.replace(/^KillMode=mixed$/m, 'KillMode=mixd'));
  t.not(broken.aboutUnit.length, 0, 'a bad value is reported', { output: broken.out });
  const noBinary = verify(t, unitText.replace(execStartBinary, '/opt/elsewhere/bwc-agent'));
  t.not(noBinary.code, 0, 'a missing ExecStart binary fails', { output: noBinary.out });
});

t.test('systemd-analyze security exposure', async (t) => {
  const r = run('systemd-analyze', ['security', '--offline=true', '--no-pager', unitPath]);
  t.equal(r.code, 0, 'security exits 0', { output: r.out });
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(r.out);
  t.ok(m, 'exposure level found in the output', { output: r.out });
  t.comment(`exposure level: ${m?.[1]}`);
  const level = Number(m?.[1]);
  t.ok(level <= MAX_EXPOSURE, `exposure level ${level} <= ${MAX_EXPOSURE}`, { output: r.out });
});

t.test('the settings the agent depends on', async (t) => {
  const values = (key: string): string[] =>
    [...unitText.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());
  t.same(values('Type'), ['notify']);
  t.same(values('NotifyAccess'), ['main']);
  t.same(values('KillMode'), ['mixed']);
  t.same(values('User'), ['bwc-agent']);
  // V8's JIT needs writable+executable pages.
  t.notOk(values('MemoryDenyWriteExecute').includes('yes'), 'no MemoryDenyWriteExecute=yes');
  t.same(
    values('RestrictAddressFamilies').join(' ').split(/\s+/).sort(),
    ['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX'],
  );
  const devices = values('DeviceAllow').map((v) => v.split(/\s+/)[0]);
  for (const d of ['char-video4linux', 'char-media', 'char-dma_heap', 'char-gpiochip', 'char-ttyAMA', 'char-ttyS', 'char-ttyUSB', 'char-ttyACM']) {
    t.ok(devices.includes(d), `DeviceAllow=${d}`);
  }
  t.ok(values('Environment').includes('BWC_STATE_DIR=%S/bwc-agent'));
});

t.test('sysusers.d entry parses and provides the unit\'s groups', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bwc-sysusers-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'etc'));
  // An absolute path is read from the host, not from --root.
  const r = run('systemd-sysusers', [`--root=${root}`, '--dry-run', sysusersPath]);
  t.equal(r.code, 0, 'systemd-sysusers exits 0', { output: r.out });
  t.match(r.out, /Creating user 'bwc-agent'/);
  const groups = (/^SupplementaryGroups=(.*)$/m.exec(unitText)?.[1] ?? '').trim().split(/\s+/);
  for (const g of groups) t.match(r.out, new RegExp(`Creating group '${g}'`), `sysusers creates ${g}`);
});
