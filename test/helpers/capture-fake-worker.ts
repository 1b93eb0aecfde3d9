// Stand-in for src/capture/worker.ts, so supervisor behaviour that a real camera cannot be made to
// show on demand (a stall, keyframe request counting) is testable. Chosen by FAKE_MODE in its env,
// which the test sets through the supervisor's workerLauncher (["env", "FAKE_MODE=..."]).
//   stall: reports ready, then stats whose frame count never moves.
//   count: reports the number of keyframe requests received as its frame count.
import type { ParentMessage, WorkerMessage } from '../../src/capture/protocol.ts';

const mode = process.env.FAKE_MODE ?? 'stall';
let keyframes = 0;
let timer: NodeJS.Timeout | undefined;

const send = (m: WorkerMessage) => process.send?.(m);

process.on('message', (m: ParentMessage) => {
  if (m.type === 'start') {
    send({ type: 'ready', pid: process.pid });
    timer = setInterval(() => send({ type: 'stats', frames: mode === 'count' ? keyframes : 1, bytes: 0 }), 50);
  } else if (m.type === 'keyframe') {
    keyframes++;
  } else if (m.type === 'stop') {
    clearInterval(timer);
    send({ type: 'eos' });
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
