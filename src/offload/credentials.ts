// The store credentials, from the file offload.credentialsFile names (kept out of the config file,
// as mqtt.passwordFile is). Read again whenever its size, time or inode changed, so a rotated key
// is picked up without a restart. Errors name the setting and never quote the file's contents.
import { readFileSync, statSync } from 'node:fs';
import { parse } from 'yaml';
import type { StoreCredentials } from './object-store.ts';
import { StoreError } from './object-store.ts';

export class CredentialsFile {
  readonly #path: string;
  #stamp = '';
  #value: StoreCredentials | undefined;

  constructor(path: string) {
    this.#path = path;
  }

  /** The credentials, re-read if the file changed; throws StoreError naming offload.credentialsFile. */
  read(): { credentials: StoreCredentials; changed: boolean } {
    let stamp: string;
    try {
      const st = statSync(this.#path);
      stamp = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (err) {
      throw new StoreError('offload.credentialsFile', 'credentials_missing', `cannot read ${this.#path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (stamp === this.#stamp && this.#value) return { credentials: this.#value, changed: false };
    let doc: unknown;
    try {
      doc = parse(readFileSync(this.#path, 'utf8'));
    } catch (err) {
      throw new StoreError('offload.credentialsFile', 'credentials_unreadable', `${this.#path} is not YAML or JSON (${(err as NodeJS.ErrnoException).code ?? 'parse error'})`);
    }
    const d = (doc ?? {}) as Record<string, unknown>;
    const str = (k: string) => (typeof d[k] === 'string' && (d[k] as string).length > 0 ? (d[k] as string) : undefined);
    const accessKeyId = str('accessKeyId');
    const secretAccessKey = str('secretAccessKey');
    if (!accessKeyId || !secretAccessKey) {
      throw new StoreError('offload.credentialsFile', 'credentials_unreadable', `${this.#path} needs string fields accessKeyId and secretAccessKey`);
    }
    const sessionToken = str('sessionToken');
    this.#value = { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
    this.#stamp = stamp;
    return { credentials: this.#value, changed: true };
  }
}
