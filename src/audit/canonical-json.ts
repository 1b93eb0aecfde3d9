// Canonical JSON for what the audit chain hashes and signs: object members sorted by key (UTF-16
// code units, JavaScript's default sort), no whitespace, strings and numbers exactly as
// JSON.stringify writes them. For values that came out of JSON.parse this is the JSON
// Canonicalization Scheme (RFC 8785), so a verifier in another language can use any RFC 8785
// library. Written here rather than taken from the `canonicalize` package because that package,
// like JSON.stringify, silently drops or nulls values JSON cannot carry; here they throw, since
// what is hashed must be exactly what is sent, and the whole function is thirty lines.
//
// Values JSON cannot carry (undefined at the top level, functions, symbols, bigint, NaN,
// Infinity) throw instead of being silently dropped or turned into null: what is hashed must be
// exactly what is sent. Callers pass plain JSON (AuditLog round-trips `detail` through JSON first).

export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonical JSON cannot carry the number ${value}`);
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new TypeError(`canonical JSON cannot carry a ${typeof value}`);
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const members: string[] = [];
  for (const key of Object.keys(obj).sort()) {
    const v = obj[key];
    if (v === undefined) continue; // as JSON.stringify does: an absent member
    members.push(`${JSON.stringify(key)}:${canonicalJson(v)}`);
  }
  return `{${members.join(',')}}`;
}
