// TLS with client certificates against a real mosquitto that requires them: the agent connects
// with the configured CA, certificate and key; without a certificate, or trusting the wrong CA,
// it says why in `ctl status` and its log, and keeps retrying.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { controlRequest } from '../src/control/control-socket.ts';
import { spawnAgent, tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const openssl = (args: string[], cwd: string) => promisify(execFile)('openssl', args, { cwd });

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
async function makePki(dir: string, name: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name} test CA`, '-keyout', `${name}-ca.key`, '-out', `${name}-ca.pem`], dir);
  for (const [who, ext] of [['server', 'subjectAltName=IP:127.0.0.1'], ['client', 'extendedKeyUsage=clientAuth']] as const) {
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}-${who}`, '-keyout', `${name}-${who}.key`, '-out', `${name}-${who}.csr`], dir);
    await writeFile(path.join(dir, `${who}.ext`), `${ext}\n`);
    await openssl(['x509', '-req', '-in', `${name}-${who}.csr`, '-CA', `${name}-ca.pem`, '-CAkey', `${name}-ca.key`, '-CAcreateserial', '-days', '2', '-extfile', `${who}.ext`, '-out', `${name}-${who}.pem`], dir);
  }
}

t.test('mutual TLS', async (t) => {
  const pki = await mkdtemp(path.join(os.tmpdir(), 'bwc-pki-'));
  await makePki(pki, 'fleet');
  await makePki(pki, 'other');
  const file = (f: string) => path.join(pki, f);
  const broker = await startBroker({
    listenerLines: [`cafile ${file('fleet-ca.pem')}`, `certfile ${file('fleet-server.pem')}`, `keyfile ${file('fleet-server.key')}`, 'require_certificate true'],
  });
  t.teardown(() => broker.dispose());
  t.match(broker.url, /^mqtts:/);
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/+/state', undefined, {
    ca: await readFile(file('fleet-ca.pem')),
    cert: await readFile(file('fleet-client.pem')),
    key: await readFile(file('fleet-client.key')),
  });
  t.teardown(() => recorder.close());

  const start = async (deviceId: string, tls: Record<string, unknown>) => {
    const stateDir = await tempStateDir();
    const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir, { mqtt: { url: broker.url, reconnectMinDelay: 200, reconnectMaxDelay: 1000, tls } })], {
      BWC_DEVICE_ID: deviceId,
      BWC_STATE_DIR: stateDir,
      BWC_GPSD: '127.0.0.1:9',
    });
    t.teardown(() => agent.stop('SIGKILL'));
    return { agent, stateDir };
  };

  await start('cam-tls', { caFile: file('fleet-ca.pem'), certFile: file('fleet-client.pem'), keyFile: file('fleet-client.key') });
  await recorder.waitFor(() => recorder.messages.some((m) => m.topic === 'bwc/v1/cam-tls/state' && m.json?.online === true), 30_000, 'online over TLS');
  t.pass('connected with the configured CA, certificate and key');

  const noCert = await start('cam-no-cert', { caFile: file('fleet-ca.pem') });
  await noCert.agent.waitForOutput(/reconnecting after back-off[\s\S]*reconnecting after back-off/, 30_000);
  const noCertStatus = (await controlRequest(path.join(noCert.stateDir, 'control.sock'), 'status')) as { link: { connected: boolean; lastError?: string } };
  t.equal(noCertStatus.link.connected, false, 'no client certificate: refused by the broker');

  const wrongCa = await start('cam-wrong-ca', { caFile: file('other-ca.pem'), certFile: file('fleet-client.pem'), keyFile: file('fleet-client.key') });
  await wrongCa.agent.waitForOutput(/"msg":"MQTT error"/, 30_000);
  const wrongCaStatus = (await controlRequest(path.join(wrongCa.stateDir, 'control.sock'), 'status')) as { link: { connected: boolean; lastError?: string } };
  t.equal(wrongCaStatus.link.connected, false);
  t.match(wrongCaStatus.link.lastError, /certificate/i, `the error names the certificate problem: ${wrongCaStatus.link.lastError}`);
  t.notOk(recorder.messages.some((m) => m.topic !== 'bwc/v1/cam-tls/state'), 'only the properly configured camera got through');
});
