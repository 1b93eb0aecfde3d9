// Messages between the capture supervisor (main process) and the capture worker, over Node IPC.
import type { CaptureSettings } from './presets.ts';

/** A closed segment, as the worker reports it and the recorder takes it in. */
export interface SegmentInfo {
  /** Absolute path of the MPEG-TS file (inside the recorder's bufferDir). */
  file: string;
  /** Wall-clock start (ISO 8601), taken when splitmuxsink opened the file. */
  startedAt: string;
  /** Wall-clock end (ISO 8601): startedAt plus the pipeline running time the segment covers. */
  endedAt: string;
  /** Seconds of media in the file, from the pipeline running time. */
  durationS: number;
}

export type ParentMessage =
  | { type: 'start'; settings: CaptureSettings; live: boolean; statsIntervalMs: number; startTimeoutMs: number }
  | { type: 'keyframe' }
  | { type: 'live'; open: boolean }
  | { type: 'live-bitrate'; kbps: number }
  | { type: 'stop' };

export type WorkerMessage =
  | { type: 'ready'; pid: number }
  | { type: 'segment-opened'; file: string; startedAt: string }
  | ({ type: 'segment-closed' } & SegmentInfo)
  | { type: 'stats'; frames: number }
  | { type: 'error'; message: string; debug?: string }
  /** The Pi encoder took a live bitrate (VIDIOC_S_CTRL), as the driver read it back. */
  | { type: 'live-bitrate-set'; kbps: number; device: string; appliedBps: number }
  /** Setting the Pi encoder's live bitrate failed: the encoder keeps its last rate. */
  | { type: 'live-bitrate-failed'; kbps: number; message: string }
  | { type: 'eos' };

export function isWorkerMessage(value: unknown): value is WorkerMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

export function isParentMessage(value: unknown): value is ParentMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}
