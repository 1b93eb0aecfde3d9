// Runs the built agent (bin/bwc-agent, as a field engineer would) as a child process.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const agentBin = path.join(repoRoot, 'bin', 'bwc-agent');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `bwc-agent ARGS` to its end: a non-zero exit is a result to check, not an error. */
export async function runCli(args: string[]): Promise<CliResult> {
  try {
    const r = await promisify(execFile)(agentBin, args);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as CliResult;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export interface AgentProcess {
  child: ChildProcess;
  readonly output: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function tempStateDir(prefix = 'bwc-state-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/**
 * `command` is what runs the agent, `args` appended: bin/bwc-agent by default; the arm64 smoke test
 * (test/arm64/agent-smoke.ts) passes qemu-aarch64-static, the bundle's node and its main.js.
 */
export function spawnAgent(args: string[], env: Record<string, string>, command: string[] = [agentBin]): AgentProcess {
  const child = spawn(command[0]!, [...command.slice(1), ...args], {
    env: { ...process.env, BWC_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const listeners = new Set<() => void>();
  const collect = (d: Buffer) => {
    output += d.toString('utf8');
    for (const l of listeners) l();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const proc: AgentProcess = {
    child,
    get output() {
      return output;
    },
    exited,
    waitForOutput(pattern, timeoutMs) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(output)) {
            clearTimeout(timer);
            listeners.delete(check);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`agent output did not match ${pattern} within ${timeoutMs} ms; output:\n${output.slice(-3000)}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  return proc;
}
