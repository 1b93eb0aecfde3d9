// Writes a config file for an agent under test: short intervals so a test sees traffic quickly.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { testAgeRecipient, testPlaintextDir } from './age-keys.ts';

export async function writeAgentConfig(stateDir: string, overrides: Record<string, unknown> = {}): Promise<string> {
  const config = {
    gps: { recordingInterval: 1, idleInterval: 1 },
    mqtt: { reconnectMinDelay: 200, reconnectMaxDelay: 2000, keepalive: 5 },
    health: { interval: 5 },
    // A small picture: every agent under test runs a real x264 pipeline, two test files at a time
    // on two cores. Tests about capture itself set their own.
    capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300 },
    ...overrides,
    // Evidence encrypted to the test process's own key, the open segment in a tmpfs folder of its own.
    recording: {
      encryption: { recipients: [testAgeRecipient] },
      plaintextDir: testPlaintextDir(stateDir),
      ...(overrides.recording as Record<string, unknown> | undefined),
    },
  };
  const file = path.join(stateDir, 'config.yaml');
  await writeFile(file, stringify(config));
  return file;
}
