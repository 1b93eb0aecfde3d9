// Settings of the capture pipeline; mounted as `capture:` in the main configuration schema.
import { z } from 'zod';

export const capturePresets = ['test', 'rpi', 'v4l2', 'rpi5', 'auto'] as const;
export type CapturePreset = (typeof capturePresets)[number];

const int = (description: string, unit: string | undefined, min: number, max: number, dflt: number) =>
  z
    .number()
    .int()
    .min(min)
    .max(max)
    .default(dflt)
    .meta(unit === undefined ? { description } : { description, unit });

export const captureConfigSchema = z
  .strictObject({
    preset: z.enum(capturePresets).default('test').meta({
      description:
        'Pipeline preset: "test" (videotestsrc + x264enc, runs anywhere), "rpi" (libcamerasrc + the Pi hardware encoder, /dev/video11; on a board without that device, a Pi 5, "rpi5" is used instead and the log says so), "rpi5" (libcamerasrc + x264enc tuned for the Pi 5\'s Cortex-A76, which has no hardware encoder), "auto" ("rpi" when /dev/video11 exists, else "rpi5"), "v4l2" (a USB UVC camera).',
      env: 'BWC_CAMERA',
    }),
    testPattern: z.enum(['ball', 'snow', 'smpte']).default('ball').meta({
      description:
        'Picture of the "test" preset (videotestsrc): "ball" is cheap to encode; "snow" is noise the encoder cannot compress, so it uses its whole bitrate as a busy street scene would (bandwidth tests).',
    }),
    width: int('Frame width.', 'px', 160, 3840, 1280),
    height: int('Frame height.', 'px', 120, 2160, 720),
    framerate: int('Frames per second.', 'fps', 1, 120, 30),
    bitrateKbps: int('Target video bitrate.', 'kbit/s', 100, 50_000, 2000),
    keyframeIntervalS: z.number().min(0.1).max(10).default(1).meta({
      description: 'Seconds between keyframes; kept no longer than segmentSeconds so every segment starts with one.',
      unit: 's',
    }),
    segmentSeconds: z.number().min(1).max(60).default(2).meta({
      description: 'Length of one evidence segment file: a power cut loses at most the segment being written.',
      unit: 's',
    }),
    v4l2: z
      .strictObject({
        device: z.string().min(1).default('/dev/video0').meta({ description: 'V4L2 device of the "v4l2" preset.' }),
        h264Passthrough: z.boolean().default(false).meta({
          description: 'Take H.264 straight from the camera (UVC cameras that encode) instead of encoding raw frames.',
        }),
      })
      .prefault({}),
    liveEncoder: z.enum(['separate', 'shared']).default('separate').meta({
      description:
        '"separate": the live view has an encoder of its own, started only while someone watches, whose bitrate follows the viewer\'s network path (stream.bitrate) while the recording keeps bitrateKbps; it costs a second encode while a view runs. "shared": the live view sends the recording\'s own stream (no adaptation, and a viewer\'s keyframe requests also shorten the recording\'s GOPs). v4l2.h264Passthrough always shares (the camera encodes once).',
    }),
    audio: z.boolean().default(false).meta({
      description: 'Record audio into the segments (Opus in MPEG-TS; audiotestsrc for "test", alsasrc otherwise).',
    }),
    audioDevice: z.string().min(1).default('default').meta({ description: 'ALSA device of the microphone (presets "rpi", "rpi5" and "v4l2").' }),
    workerLauncher: z.array(z.string().min(1)).default([]).meta({
      description:
        'Command prefix for the capture worker, which runs as [...workerLauncher, the agent\'s own node, worker.js], e.g. ["chrt", "-f", "10"] to give it real-time priority, or ["qemu-aarch64-static"] to run an arm64 bundle under qemu-user without binfmt (node there reports the arm64 binary as its own path).',
      localOnly: true,
    }),
    stallTimeoutS: z.number().min(1).max(600).default(10).meta({
      description:
        'A worker whose pipeline produces no data for this long is killed and restarted. Counted from when its pipeline runs: a worker still starting (a slow board) is not stalled; one not running 5 s + this long after its launch is killed.',
      unit: 's',
    }),
    restartMinDelayMs: int('First restart delay after a capture fault; doubles per consecutive fault.', 'ms', 10, 600_000, 500),
    restartMaxDelayMs: int('Cap of the capture restart delay.', 'ms', 10, 3_600_000, 30_000),
  })
  .refine((c) => c.keyframeIntervalS <= c.segmentSeconds, {
    message: 'keyframeIntervalS must not exceed segmentSeconds (each segment must begin with a keyframe)',
    path: ['keyframeIntervalS'],
  })
  .refine((c) => c.restartMinDelayMs <= c.restartMaxDelayMs, {
    message: 'restartMinDelayMs must not exceed restartMaxDelayMs',
    path: ['restartMinDelayMs'],
  })
  .prefault({});

export type CaptureConfig = z.infer<typeof captureConfigSchema>;
