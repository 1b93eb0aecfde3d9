// Renders docs/configuration.md from the schema, so the reference cannot drift from the code.
// `npm run docs:config` rewrites the file; test/config.test.ts fails when the two differ.
import { z } from 'zod';
import { configSchema, envOverrides } from './schema.ts';

interface JsonSchemaNode {
  type?: string;
  description?: string;
  unit?: string;
  env?: string;
  /** Changed only in the device's own config file, never by a remote config.apply (unless unlocked there). */
  localOnly?: boolean;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  pattern?: string;
  properties?: Record<string, JsonSchemaNode>;
}

interface Row {
  key: string;
  node: JsonSchemaNode;
}

function flatten(node: JsonSchemaNode, prefix: string, rows: Row[]): void {
  for (const [name, child] of Object.entries(node.properties ?? {})) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (child.type === 'object' && child.properties) flatten(child, key, rows);
    else rows.push({ key, node: child });
  }
}

/** Every leaf key of the schema, dotted (e.g. `mqtt.tls.caFile`). */
export function configKeys(): string[] {
  const rows: Row[] = [];
  flatten(z.toJSONSchema(configSchema, { io: 'input' }) as JsonSchemaNode, '', rows);
  return rows.map((r) => r.key);
}

/**
 * The keys flagged `localOnly` in the schema: a signed config.apply may not set them (nor anything
 * below them) unless the device's own file lists them in remoteConfig.unlockedKeys.
 */
export function localOnlyKeys(): string[] {
  const rows: Row[] = [];
  flatten(z.toJSONSchema(configSchema, { io: 'input' }) as JsonSchemaNode, '', rows);
  return rows.filter((r) => r.node.localOnly === true).map((r) => r.key);
}

function typeOf(node: JsonSchemaNode): string {
  if (node.enum) return node.enum.map((v) => `\`${String(v)}\``).join(' \\| ');
  const range =
    node.minimum !== undefined && node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER
      ? ` ${node.minimum}–${node.maximum}`
      : '';
  return `${node.type ?? 'any'}${range}`;
}

export function renderConfigDoc(): string {
  const rows: Row[] = [];
  flatten(z.toJSONSchema(configSchema, { io: 'input' }) as JsonSchemaNode, '', rows);
  const lines = [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/schema.ts by `npm run docs:config`; test/config.test.ts keeps it in step. -->',
    '',
    'One file, YAML (JSON is valid YAML too), given with `bwc-agent run --config FILE`; under systemd it is',
    '`/etc/bwc-agent/config.yaml`. Every key is optional: with no file at all the agent runs on the defaults below.',
    'Unknown keys are refused, so a misspelt setting cannot be silently ignored. A bad file or value stops start-up',
    'with exit code 2 and a message naming the key, the value and what was expected.',
    '',
    'Nested keys are written as YAML mappings: `mqtt.tls.caFile` is',
    '',
    '```yaml',
    'mqtt:',
    '  tls:',
    '    caFile: /etc/bwc-agent/ca.pem',
    '```',
    '',
    '| key | type | unit | default | environment | meaning |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const { key, node } of rows) {
    const dflt = node.default === undefined ? '—' : `\`${JSON.stringify(node.default)}\``;
    const env = node.env ? `\`${node.env}\`` : '';
    const localOnly = node.localOnly ? ' **Local only.**' : '';
    lines.push(`| \`${key}\` | ${typeOf(node)} | ${node.unit ?? ''} | ${dflt} | ${env} | ${node.description ?? ''}${localOnly} |`);
  }
  lines.push(
    '',
    '## Environment overrides',
    '',
    'For containers and tests, these variables override the file (an empty variable is ignored):',
    '',
    ...Object.entries(envOverrides).map(([variable, key]) => `- \`${variable}\` → \`${key}\``),
    '',
    '`STATE_DIRECTORY` (set by systemd from `StateDirectory=`) is the state folder when neither `stateDir` nor',
    '`BWC_STATE_DIR` is set.',
    '',
    '## Remote configuration and local-only keys',
    '',
    'Fleet ops change settings with a signed `config.apply` (docs/protocol.md, "Fleet management"). The remote',
    'document is layered over this file (and under the environment overrides), kept in the state folder',
    '(`remote-config/`), and checked against this same schema before anything is written. These keys are',
    '**local only**: a config.apply that sets any of them, or anything below them, is refused',
    '(`config_key_protected`, naming the key) unless this file lists it in `remoteConfig.unlockedKeys`. They decide',
    'whom the camera obeys and where its evidence and keys live, whether the wearer is told of a live view, and what',
    'program runs as the capture worker; none of that may be changed by someone holding a fleet key alone.',
    '',
    ...localOnlyKeys().map((key) => `- \`${key}\``),
    '',
    'Two more rules hold for every remote document: a file it names (any key ending in `File`, such as',
    '`stream.ice.servers[].credentialFile`) must be in this file\'s folder and not in the state folder, and it may not',
    'move `mqtt.url` from TLS (`mqtts:`, `wss:`) to plain text unless `remoteConfig.unlockedKeys` lists `mqtt.url`.',
    '',
  );
  return lines.join('\n');
}

if (import.meta.main) process.stdout.write(renderConfigDoc());
