// The rig most agent-level tests start from: a real mosquitto, a recorder subscribed to the
// device's topics, and the real agent process (its embedded defaults plus the given config) with
// the given issuers trusted, online (the retained state says so, which the agent publishes only
// once it listens on its request topics). Torn down with the test, the agent killed first.
import type { Test } from 'tap';
import { spawnAgent, tempStateDir, type AgentProcess } from './agent-process.ts';
import { writeAgentConfig } from './agent-config.ts';
import { ChromiumViewers } from './chromium-viewer.ts';
import { writeTrustStore, type Issuer } from './command-tokens.ts';
import { FleetClient } from './fleet-client.ts';
import { startBroker, type Broker } from './mosquitto.ts';
import { MqttRecorder } from './mqtt-recorder.ts';

export interface AgentOnBroker {
  broker: Broker;
  recorder: MqttRecorder;
  agent: AgentProcess;
  stateDir: string;
}

export interface AgentOnBrokerOptions {
  deviceId: string;
  /** Trusted for commands (their trust store is written into the state folder). */
  issuers?: readonly Issuer[];
  /** Config on top of the trust store and `commands.unsynchronisedClock: accept`. */
  config?: Record<string, unknown>;
  /** Extra mosquitto config lines (e.g. `log_type subscribe`). */
  brokerLines?: string[];
  /** The state folder to use (default: a fresh temporary one). */
  stateDir?: string;
  /** BWC_LOG_LEVEL; default: spawnAgent's. */
  logLevel?: string;
  /** Also wait until the capture runs (a live view needs frames). */
  capturing?: boolean;
}

export async function startAgentOnBroker(t: Test, o: AgentOnBrokerOptions): Promise<AgentOnBroker> {
  const stateDir = o.stateDir ?? (await tempStateDir());
  const broker = await startBroker(o.brokerLines ? { listenerLines: o.brokerLines } : undefined);
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${o.deviceId}/#`);
  const { commands, stream, ...rest } = o.config ?? {};
  const trustStore = o.issuers ? writeTrustStore(stateDir, o.issuers) : undefined;
  const config = await writeAgentConfig(stateDir, {
    ...rest,
    commands: { ...(trustStore ? { trustStore } : {}), unsynchronisedClock: 'accept', ...(commands as object | undefined) },
    // Loopback only, for ICE and for the network watcher: the netns tests running beside this one
    // add and move veth interfaces in the root namespace, which an agent watching every interface
    // takes for a new network and answers by reconnecting (seen: a "did not reconnect" check failed).
    stream: { ice: { interfaces: ['lo'] }, ...(stream as object | undefined) },
  });
  const agent = spawnAgent(['run', '--config', config], {
    BWC_DEVICE_ID: o.deviceId,
    BWC_MQTT_URL: broker.url,
    BWC_STATE_DIR: stateDir,
    BWC_GPSD: '127.0.0.1:9',
    ...(o.logLevel === undefined ? {} : { BWC_LOG_LEVEL: o.logLevel }),
  });
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await recorder.close();
    await broker.dispose();
  });
  const ready = (m: { json?: Record<string, unknown> }) =>
    m.json?.online === true && (!o.capturing || (m.json?.capture as { status?: string } | null)?.status === 'running');
  await recorder.waitFor(() => recorder.on('state').some(ready), 60_000, o.capturing ? 'the agent online and capturing' : 'the agent online');
  return { broker, recorder, agent, stateDir };
}

export interface LiveViewRig extends AgentOnBroker {
  viewers: ChromiumViewers;
  fleet: FleetClient;
}

/**
 * The live-view tests' rig: the agent on its broker, online and capturing (a view needs frames),
 * a headless Chromium to view it (with `chromiumArgs`, e.g. a fake microphone) and a fleet client
 * to send it signed commands; all torn down with the test.
 */
export async function startLiveViewRig(t: Test, o: Omit<AgentOnBrokerOptions, 'capturing'> & { chromiumArgs?: string[] }): Promise<LiveViewRig> {
  const { chromiumArgs, ...agentOptions } = o;
  const rig = await startAgentOnBroker(t, { ...agentOptions, capturing: true });
  const viewers = await ChromiumViewers.launch(chromiumArgs);
  t.teardown(() => viewers.close());
  const fleet = await FleetClient.connect(rig.broker.url);
  t.teardown(() => fleet.close());
  return { ...rig, viewers, fleet };
}
