// The reference MCU simulator (firmware-bridge/mcu-sim/mcu-sim.ts) as a child process: commands go to its
// stdin, its JSON-line reports (the frames it sent, every NOTIFY it played: the wearer's haptic output)
// are collected and waited on. Pair it with a socat pty (helpers/pty.ts): the agent or a SerialBackend
// opens one end, the simulator the other.
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const mcuSimScript = fileURLToPath(new URL('../../firmware-bridge/mcu-sim/mcu-sim.ts', import.meta.url));

/** One stdout report of the simulator, e.g. {"tx":"TRIGGER","source":"holster","id":1,"acked":true}. */
export type SimLine = Record<string, unknown>;

/** Guards against hangs only; nothing asserts how fast the simulator answers. */
const DEFAULT_WAIT_MS = 30_000;

export class McuSim {
  readonly lines: SimLine[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;

  /** Battery reports only on command by default, so injected faults hit exactly the frame a test expects. */
  constructor(path: string, firmware = 'mcu-sim-test-2.3', extraArgs: string[] = ['--battery-interval-ms', '0']) {
    this.child = spawn(process.execPath, [mcuSimScript, path, '--firmware', firmware, ...extraArgs], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => this.lines.push(JSON.parse(line) as SimLine));
    this.child.stderr.resume();
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** The index of the next report, to wait only for what follows a step. */
  mark(): number {
    return this.lines.length;
  }

  /** One stdin command: `press record`, `double function`, `hold function`, `trigger holster`, `fall`, ... */
  send(cmd: string): void {
    this.child.stdin.write(`${cmd}\n`);
  }

  async waitFor(pred: (l: SimLine) => boolean, what: string, from = 0, timeoutMs = DEFAULT_WAIT_MS): Promise<SimLine> {
    await until(() => this.lines.slice(from).some(pred), `mcu-sim: ${what}; saw ${JSON.stringify(this.lines.slice(from))}`, timeoutMs);
    return this.lines.slice(from).find(pred)!;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin.end();
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/** Polls cond until true; the timeout is a hang guard that names what never happened. */
export async function until(cond: () => boolean, what: string, timeoutMs = DEFAULT_WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
