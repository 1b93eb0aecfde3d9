// The test rig that stands in for systemd (test/helpers/service-supervisor.ts) does what the unit
// says: a run is ready at READY=1, a crash is restarted, a configuration error (exit 2) is not.
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { readRestartPolicy, ServiceSupervisor } from './helpers/service-supervisor.ts';

t.test('reads the unit file policy', async (t) => {
  const p = readRestartPolicy();
  t.equal(p.restart, 'on-failure');
  t.same(p.restartPreventExitStatus, [2]);
  t.equal(p.restartSecMs, 2000);
  t.equal(p.watchdogSecMs, 30_000);
  t.equal(p.startLimitBurst, 5);
});

t.test('a killed agent is restarted and ready again; exit 2 is not restarted', async (t) => {
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, { mqtt: { url: 'mqtt://127.0.0.1:9' } });
  const sup = new ServiceSupervisor({
    args: ['run', '--config', config],
    env: { BWC_DEVICE_ID: 'sup-1', BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' },
    policy: { restartSecMs: 100 },
  });
  t.teardown(() => sup.dispose());
  await sup.start();
  const first = await sup.waitFor('ready', (e) => e.run === 1);
  t.ok(first.pid > 0, 'READY=1 from the main process');
  sup.current!.child.kill('SIGKILL');
  const exit = await sup.waitFor('exit', (e) => e.run === 1);
  t.equal(exit.willRestart, true, 'SIGKILL is a failure: restarted');
  await sup.waitFor('ready', (e) => e.run === 2);

  // A configuration error: Restart=on-failure, but RestartPreventExitStatus=2.
  await writeFile(config, 'nonsense: 1\n');
  sup.current!.child.kill('SIGABRT');
  await sup.waitFor('exit', (e) => e.run === 3);
  const failed = await sup.waitFor('failed');
  const exit3 = sup.events.find((e) => e.type === 'exit' && e.run === 3);
  t.match(exit3, { code: 2, willRestart: false }, `exit 2 not restarted (${failed.why})`);
  t.match(sup.runs[2]!.output, /nonsense/, 'the agent named the bad key');
  t.equal(path.isAbsolute(stateDir), true);
});
