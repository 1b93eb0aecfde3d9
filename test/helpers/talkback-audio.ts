// Talk-back tests (issue 19): a known tone for Chromium's fake microphone, made by GStreamer, and
// a check of what the camera's playback pipeline wrote: a WAV file's samples and the frequency
// that dominates them (a plain DFT scan: a few hundred bins over half a second of audio is quick,
// and a test's own arithmetic is easier to trust than an FFT package's windowing defaults).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';

/**
 * A mono 48 kHz 16-bit WAV: `seconds` of a sine at `freqHz` (audiotestsrc), or, with `burst`, a
 * train of `burst.onMs` tone then `burst.offMs` silence (the latency bench's known onsets).
 */
export function makeToneWav(file: string, freqHz: number, seconds: number, burst?: { onMs: number; offMs: number }): string {
  const rate = 48_000;
  if (!burst) {
    const buffers = Math.ceil((seconds * rate) / 480);
    execFileSync('gst-launch-1.0', ['-q', 'audiotestsrc', `freq=${freqHz}`, 'volume=0.5', 'samplesperbuffer=480', `num-buffers=${buffers}`, '!', `audio/x-raw,format=S16LE,rate=${rate},channels=1`, '!', 'wavenc', '!', 'filesink', `location=${file}`]);
    return file;
  }
  // Bursts: a sine switched on and off by sample count, written as WAV by hand (44-byte header),
  // because audiotestsrc has no on/off pattern and the onsets must be exact.
  const total = Math.round(seconds * rate);
  const period = Math.round(((burst.onMs + burst.offMs) * rate) / 1000);
  const on = Math.round((burst.onMs * rate) / 1000);
  const pcm = Buffer.alloc(total * 2);
  for (let i = 0; i < total; i++) {
    const v = i % period < on ? Math.sin((2 * Math.PI * freqHz * i) / rate) * 0.5 : 0;
    pcm.writeInt16LE(Math.round(v * 32767), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + pcm.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(pcm.length, 40);
  writeFileSync(file, Buffer.concat([header, pcm]));
  return file;
}

export interface WavSamples {
  rate: number;
  channels: number;
  /** The first channel, as floats in [-1, 1]. */
  samples: Float64Array;
}

/** Reads a PCM (16-bit) or IEEE float (32-bit) WAV as wavenc writes it; undefined if absent or empty. */
export function readWav(file: string): WavSamples | undefined {
  if (!existsSync(file) || statSync(file).size <= 44) return undefined;
  const b = readFileSync(file);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${file} is not a WAV file`);
  let at = 12;
  let fmt: { format: number; channels: number; rate: number; bits: number } | undefined;
  while (at + 8 <= b.length) {
    const id = b.toString('ascii', at, at + 4);
    const size = b.readUInt32LE(at + 4);
    const body = at + 8;
    if (id === 'fmt ') fmt = { format: b.readUInt16LE(body), channels: b.readUInt16LE(body + 2), rate: b.readUInt32LE(body + 4), bits: b.readUInt16LE(body + 14) };
    if (id === 'data') {
      if (!fmt) throw new Error(`${file}: data before fmt`);
      const end = Math.min(b.length, body + size);
      const step = (fmt.bits / 8) * fmt.channels;
      const n = Math.floor((end - body) / step);
      const samples = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const o = body + i * step;
        samples[i] = fmt.format === 3 ? b.readFloatLE(o) : b.readInt16LE(o) / 32768;
      }
      return { rate: fmt.rate, channels: fmt.channels, samples };
    }
    at = body + size + (size % 2);
  }
  return undefined;
}

export interface ToneCheck {
  /** The frequency with the most power, Hz (10 Hz steps from 50 Hz to 4 kHz). */
  peakHz: number;
  /** Power at the peak over the strongest bin more than 100 Hz away from it. */
  ratio: number;
  /** RMS of the analysed window. */
  rms: number;
}

/** Where the power is in the loudest half-second of `s` (a DFT scan, Hann window). */
export function dominantFrequency(s: WavSamples): ToneCheck {
  const win = Math.min(s.samples.length, Math.round(s.rate / 2));
  // The loudest window: talk audio starts after a gap and may end with one.
  let bestStart = 0;
  let bestEnergy = -1;
  for (let start = 0; start + win <= s.samples.length; start += Math.max(1, Math.round(win / 4))) {
    let e = 0;
    for (let i = start; i < start + win; i++) e += s.samples[i]! * s.samples[i]!;
    if (e > bestEnergy) {
      bestEnergy = e;
      bestStart = start;
    }
  }
  const x = new Float64Array(win);
  for (let i = 0; i < win; i++) x[i] = s.samples[bestStart + i]! * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (win - 1)));
  const power = new Map<number, number>();
  for (let f = 50; f <= 4000; f += 10) {
    let re = 0;
    let im = 0;
    const w = (2 * Math.PI * f) / s.rate;
    for (let i = 0; i < win; i++) {
      re += x[i]! * Math.cos(w * i);
      im -= x[i]! * Math.sin(w * i);
    }
    power.set(f, re * re + im * im);
  }
  let peakHz = 0;
  let peak = -1;
  for (const [f, p] of power) if (p > peak) [peakHz, peak] = [f, p];
  let other = 0;
  for (const [f, p] of power) if (Math.abs(f - peakHz) > 100) other = Math.max(other, p);
  return { peakHz, ratio: peak / Math.max(other, 1e-12), rms: Math.sqrt(bestEnergy / Math.max(1, win)) };
}
