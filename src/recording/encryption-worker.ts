// The thread that encrypts closed segments (EncryptionThread in encryption.ts), so the cipher's
// work, a few milliseconds per segment at 2 Mbit/s but longer on a slow board or a high bitrate,
// never runs on the agent's event loop between MQTT, the live view and the watchdog.
import { parentPort } from 'node:worker_threads';
import { encryptFile } from './encryption.ts';
import { errorMessage } from '../errors.ts';

interface EncryptRequest {
  id: number;
  src: string;
  dest: string;
  recipients: string[];
}

parentPort?.on('message', (m: EncryptRequest) => {
  encryptFile(m.src, m.dest, m.recipients).then(
    (r) => parentPort?.postMessage({ id: m.id, ok: true, bytes: r.bytes }),
    (err: unknown) => parentPort?.postMessage({ id: m.id, ok: false, message: errorMessage(err), code: (err as NodeJS.ErrnoException).code ?? null }),
  );
});
