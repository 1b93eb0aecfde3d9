// The chain verifier's worker thread: the hashing and Ed25519 checks of ops-console/chain-verifier.ts
// run here, off the console's event loop, with src/audit/verify.ts's incremental primitives (the
// same rules `bwc-agent audit verify` applies to a whole chain). Pure: no database, no state kept
// between jobs; the main thread holds the heads.
import { parentPort } from 'node:worker_threads';
import type { JWK } from 'jose';
import { checkpointProblem, nextEntryProblem, type AuditHead, type AuditProblem } from '../src/audit/verify.ts';
import type { AuditEntry } from '../src/audit/audit-log.ts';
import type { PublishedCheckpoint } from './archive/archive.ts';

export interface EntriesJob {
  id: number;
  kind: 'entries';
  head: AuditHead;
  /** Candidates by seq from head.seq + 1 on; a seq may have several (a conflict): the one that chains is taken. */
  entries: AuditEntry[];
  /** Checkpoints to check as the chain passes their seq (and those at or below head.seq, with chainHashes). */
  checkpoints: PublishedCheckpoint[];
  publicJwk: JWK | null;
  /** For checkpoints at or below head.seq: the hashes stored at their seq (several in a conflict). */
  storedHashes: Record<number, string[]>;
}

export interface EntriesResult {
  id: number;
  /** The head after every entry that chained. */
  head: AuditHead;
  verified: number;
  /** The first entry that did not chain (then verification stops there). */
  problem?: AuditProblem;
  /** Seqs where several candidates were offered: a fork to report. */
  conflicts: number[];
  /** Highest checkpoint that verified against the chain; problems of the others. */
  checkpointSeq: number;
  checkpointProblems: AuditProblem[];
}

export function verifyEntriesJob(job: EntriesJob): EntriesResult {
  let head = job.head;
  const bySeq = new Map<number, AuditEntry[]>();
  for (const e of job.entries) bySeq.set(e.seq, [...(bySeq.get(e.seq) ?? []), e]);
  const hashes = new Map<number, string>([[head.seq, head.hash]]);
  const conflicts: number[] = [];
  let problem: AuditProblem | undefined;
  let verified = 0;
  for (;;) {
    const candidates = bySeq.get(head.seq + 1);
    if (!candidates) break;
    if (candidates.length > 1) conflicts.push(head.seq + 1);
    let next: AuditEntry | undefined;
    let first: AuditProblem | undefined;
    for (const c of candidates) {
      const p = nextEntryProblem(head, c as unknown as AuditEntry & Record<string, unknown>);
      if (!p) {
        next = c;
        break;
      }
      first ??= p;
    }
    if (!next) {
      problem = first;
      break;
    }
    head = { seq: next.seq, hash: next.hash };
    hashes.set(head.seq, head.hash);
    verified += 1;
  }
  let checkpointSeq = 0;
  const checkpointProblems: AuditProblem[] = [];
  if (job.publicJwk) {
    for (const cp of job.checkpoints) {
      if (cp.seq > head.seq) continue; // not reached yet: checked when the chain gets there
      const stored = job.storedHashes[cp.seq];
      // In a conflict the checkpoint names which side the device signed; the fork is reported apart.
      const chainHash = hashes.get(cp.seq) ?? (stored?.includes(cp.headHash) ? cp.headHash : stored?.[0]);
      const p = checkpointProblem(job.publicJwk, cp, chainHash);
      if (p) checkpointProblems.push(p);
      else if (chainHash !== undefined) checkpointSeq = Math.max(checkpointSeq, cp.seq);
    }
  }
  return { id: job.id, head, verified, ...(problem ? { problem } : {}), conflicts, checkpointSeq, checkpointProblems };
}

parentPort?.on('message', (job: EntriesJob) => {
  let result: EntriesResult | { id: number; error: string };
  try {
    result = verifyEntriesJob(job);
  } catch (err) {
    result = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(result);
});
