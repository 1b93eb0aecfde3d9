// The configuration the agent starts on: the local file (and environment), then the remote
// document a config.apply left in the state folder (src/fleet/remote-config.ts). A change still on
// trial whose deadline has passed, or that has failed to start maxTrialAttempts times (a setting
// that crashes the agent before it can time itself out), is reverted here, before anything runs on
// it; the agent audits the revert once its audit trail is open.
import { ConfigError, loadConfig, type LoadConfigOptions } from '../config/load.ts';
import type { AgentConfig } from '../config/schema.ts';
import type { ConfigSource } from './fleet-management.ts';
import { maxTrialAttempts, RemoteConfigStore } from './remote-config.ts';

export function loadStartConfig(options: Omit<LoadConfigOptions, 'remote'>, nowMs = Date.now()): { config: AgentConfig; source: ConfigSource } {
  const local = loadConfig(options);
  const store = new RemoteConfigStore(local.stateDir);
  let trial = store.countTrialStart();
  const revert = (reason: string) => {
    const fromVersion = store.active()?.version ?? 0;
    const toVersion = store.revert();
    store.writeRevertNote({ fromVersion, toVersion, reason, at: new Date(nowMs).toISOString() });
    trial = undefined;
  };
  if (trial && nowMs >= trial.deadlineMs) revert(`not online and healthy within remoteConfig.healthyWithin (${local.remoteConfig.healthyWithin} s) after the change`);
  else if (trial && trial.attempts > maxTrialAttempts) revert(`failed to start ${maxTrialAttempts} times after the change`);
  let active = store.active();
  let config = local;
  if (active) {
    try {
      config = loadConfig({ ...options, remote: active.document });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // A software update can make an older remote document invalid: run on the last good one.
      revert(`the remote document no longer validates: ${err.problems.join('; ')}`);
      active = store.active();
      config = active ? loadConfig({ ...options, remote: active.document }) : local;
    }
  }
  return { config, source: { load: options, store, active, trial, revertNote: store.takeRevertNote() } };
}
