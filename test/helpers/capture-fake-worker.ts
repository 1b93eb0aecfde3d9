// Stand-in for src/capture/worker.ts, so supervisor behaviour that a real camera cannot be made to
// show on demand (a stall, keyframe request counting) is testable. Chosen by FAKE_MODE in its env,
// which the test sets through the supervisor's workerLauncher (["env", "FAKE_MODE=..."]).
//   stall: reports ready, then stats whose frame count never moves.
//   count: reports the number of keyframe requests received as its frame count.
//   slow-start: a worker on a slow board: reports ready only once the file FAKE_RELEASE exists (the
//     test decides when its start-up is over, whether or not `start` has arrived yet), then frames
//     that keep coming.
//   hang: never answers `start` (a worker stuck before its pipeline runs).
import { existsSync, watch } from 'node:fs';
import path from 'node:path';
import type { ParentMessage, WorkerMessage } from '../../src/capture/protocol.ts';

const mode = process.env.FAKE_MODE ?? 'stall';
let keyframes = 0;
let timer: NodeJS.Timeout | undefined;

const send = (m: WorkerMessage) => process.send?.(m);

let frames = 0;
const run = () => {
  send({ type: 'ready', pid: process.pid });
  timer = setInterval(() => send({ type: 'stats', frames: mode === 'count' ? keyframes : mode === 'slow-start' ? ++frames : 1 }), 50);
};

function whenReleased(then: () => void): void {
  const file = process.env.FAKE_RELEASE!;
  // Watch first, then look: a file made in between is not missed.
  const watcher = watch(path.dirname(file), () => check());
  const check = () => {
    if (!existsSync(file)) return;
    watcher.close();
    then();
  };
  check();
}

process.on('message', (m: ParentMessage) => {
  if (m.type === 'start') {
    if (mode === 'slow-start') whenReleased(run);
    else if (mode !== 'hang') run();
  } else if (m.type === 'keyframe') {
    keyframes++;
  } else if (m.type === 'stop') {
    clearInterval(timer);
    send({ type: 'eos' });
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
