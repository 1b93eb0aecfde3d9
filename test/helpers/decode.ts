// What a real H.264 decoder gets out of an MPEG-TS segment, for tests that check how much video a
// file holds.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
// avdec_h264 (gstreamer1.0-libav) where installed, else openh264dec.
const decoder = spawnSync('gst-inspect-1.0', ['avdec_h264'], { stdio: 'ignore' }).status === 0 ? 'avdec_h264' : 'openh264dec';

const clockSeconds = (text: string): number => {
  const [h, m, s] = text.split(':').map(Number);
  return h! * 3600 + m! * 60 + s!;
};

/**
 * Seconds of video decoded from a file, from the frames' timestamps (the first pts to the last pts
 * plus its duration), and the number of frames; seconds -1 when GStreamer cannot decode it.
 * Seconds, not frames / fps: the source is live, so a loaded machine encodes fewer frames per second
 * of video, not fewer seconds, and a frame count would measure the machine's load.
 */
export async function decodedVideo(file: string): Promise<{ seconds: number; frames: number }> {
  try {
    const { stdout } = await run(
      'gst-launch-1.0',
      ['-v', 'filesrc', `location=${file}`, '!', 'tsdemux', '!', 'h264parse', '!', decoder, '!', 'fakesink', 'silent=false'],
      { maxBuffer: 64 << 20 },
    );
    let first = Infinity;
    let end = -Infinity;
    let frames = 0;
    for (const line of stdout.split('\n')) {
      const frame = /fakesink0: last-message = chain.* pts: (\d+:\d+:[\d.]+), duration: (\d+:\d+:[\d.]+)/.exec(line);
      if (!frame) continue;
      frames += 1;
      first = Math.min(first, clockSeconds(frame[1]!));
      end = Math.max(end, clockSeconds(frame[1]!) + clockSeconds(frame[2]!));
    }
    return { seconds: end > first ? end - first : -1, frames };
  } catch {
    return { seconds: -1, frames: 0 };
  }
}
