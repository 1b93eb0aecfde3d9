// The GStreamer pipeline of each capture preset, as one gst-launch description.
// Every pipeline has the same shape so the worker can drive any of them by element name. With a
// separate live encoder (capture.liveEncoder, the default):
//   <source> ! tee name=vt
//     vt. ! <encoder enc> ! capsfilter name=kf ! h264parse ! tee name=t
//       t. ! recording: splitmuxsink (MPEG-TS segments; survives a kill -9 up to the last packets written)
//       t. ! meter: fpsdisplaysink whose frame count the worker reads, so the supervisor can tell a stalled camera from a quiet one
//     vt. ! live: valve (closed unless someone watches) ! <encoder liveenc> ! capsfilter name=livekf
//           ! rtph264pay ! udpsink to the main process
// The live encoder's bitrate follows the viewer's network path while the recording keeps its own, and a
// viewer's keyframe requests never shorten the recording's GOPs; closed, the valve leaves the live
// encoder idle. Shared (and always for a camera that encodes itself), the live branch hangs off
// `t` and the one encoder serves both.
import type { CaptureConfig } from './config.ts';

export interface CaptureSettings extends CaptureConfig {
  /** Folder the segment files are written to. */
  segmentDir: string;
  /** File name prefix; the worker appends -%06d.ts. */
  segmentPrefix: string;
  /** Loopback UDP port the main process listens on for the live RTP. */
  rtpPort: number;
  /** Loopback UDP port for the live audio RTP (Opus), when audio is on. */
  rtpAudioPort: number;
  /** Starting bitrate of a separate live encoder (the supervisor keeps the last one set). */
  liveBitrateKbps: number;
}

export interface PipelineElements {
  /** The encoder (or the camera, for H.264 passthrough): runtime numeric properties such as bitrate. */
  encoder: string;
  /** Element right after the encoder; forceKeyUnit pushes the upstream event from its sink pad. */
  keyframe: string;
  /** splitmuxsink: its element messages mark segment boundaries. */
  segments: string;
  /** valve of the live branch: `drop` opens and closes it. */
  live: string;
  /** fpsdisplaysink counting encoded frames for stall detection (its frames-rendered property). */
  meter: string;
  /** The element handing RTP to the main process. */
  rtpSink: string;
  /** The encoder of the live branch (the recording's own when shared). */
  liveEncoder: string;
  /** Where a viewer's keyframe request is pushed upstream from (kf when shared). */
  liveKeyframe: string;
  /** valve of the live audio branch (audio only). */
  liveAudio: string;
}

export interface BuiltPipeline {
  description: string;
  elements: PipelineElements;
  /** Whether the live branch has an encoder of its own, whose bitrate can follow the viewer. */
  liveEncoderSeparate: boolean;
}

const elements: PipelineElements = {
  encoder: 'enc',
  keyframe: 'kf',
  segments: 'segments',
  live: 'live',
  meter: 'meter',
  rtpSink: 'rtpsink',
  liveAudio: 'liveaudio',
  liveEncoder: 'liveenc',
  liveKeyframe: 'livekf',
};

/** gst-launch quoting: paths may hold spaces. */
function quote(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

function keyframePeriod(s: CaptureConfig): number {
  return Math.max(1, Math.round(s.framerate * s.keyframeIntervalS));
}

// Browsers decode constrained baseline (packetization-mode 1) everywhere; the encoder is held to it.
const h264Caps = 'video/x-h264,profile=(string)constrained-baseline';

function x264(s: CaptureConfig, name: string, kbps: number): string {
  if (s.preset === 'rpi5') return x264Pi5(s, name, kbps);
  return `x264enc name=${name} tune=zerolatency speed-preset=ultrafast key-int-max=${keyframePeriod(s)} bitrate=${kbps}`;
}

/**
 * The Pi 5's encoder settings (it has no hardware H.264 encoder): x264enc, chosen over openh264enc by
 * bench/pi5-encoder.ts (bench/results/pi5-encoder.md has the figures and the reasoning). Two threads
 * each: the recording and the live encoder together then use at most the four Cortex-A76 cores,
 * and zerolatency makes them slice threads (no frame of delay per thread).
 */
export const pi5X264 = { speedPreset: 'ultrafast', threads: 2 } as const;

function x264Pi5(s: CaptureConfig, name: string, kbps: number): string {
  return `x264enc name=${name} tune=zerolatency speed-preset=${pi5X264.speedPreset} threads=${pi5X264.threads} key-int-max=${keyframePeriod(s)} bitrate=${kbps}`;
}

/** The Pi encoder's controls, set when the pipeline is made. */
export function v4l2Controls(s: CaptureConfig, kbps: number): string {
  return ['controls', 'repeat_sequence_header=1', `video_bitrate=${kbps * 1000}`, `h264_i_frame_period=${keyframePeriod(s)}`].join(',');
}

/** H.264 level for the Pi encoder: without explicit level caps v4l2h264enc picks 1.0 and negotiation fails. */
export function h264Level(s: Pick<CaptureConfig, 'width' | 'height' | 'framerate'>): string {
  const macroblocksPerSecond = Math.ceil(s.width / 16) * Math.ceil(s.height / 16) * s.framerate;
  if (macroblocksPerSecond <= 108_000) return '3.1'; // 1280x720@30
  if (macroblocksPerSecond <= 245_760) return '4'; // 1920x1080@30
  return '4.2'; // 1920x1080@60, the Pi encoder's ceiling
}

/**
 * Glass-to-glass measurement (bench/glass-to-glass.ts), test preset only, when the worker's
 * environment has BWC_TEST_CLOCK_MARK=1: the capture time (epoch ms modulo 2^24) drawn into each
 * frame as 24 black and white squares at the bottom left, which the viewer's page reads back. The
 * worker keeps the element's pattern-data at the time now (worker.ts); gstreamer-superficial sets
 * numbers as single-precision floats, exact to 2^24, hence the 24 bits.
 */
export const clockMark = { element: 'clockmark', bits: 24, squarePx: 12 } as const;

function clockMarkElement(): string {
  const size = `pattern-width=${clockMark.squarePx} pattern-height=${clockMark.squarePx}`;
  return `simplevideomark name=${clockMark.element} ${size} pattern-count=0 pattern-data-count=${clockMark.bits}`;
}

/** Source up to raw frames; undefined for a camera that delivers H.264 itself. */
function rawSource(s: CaptureConfig): string | undefined {
  const raw = `width=${s.width},height=${s.height},framerate=${s.framerate}/1`;
  switch (s.preset) {
    case 'test':
      return [
        `videotestsrc is-live=true pattern=${s.testPattern}`,
        `video/x-raw,format=I420,${raw}`,
        ...(process.env.BWC_TEST_CLOCK_MARK === '1' ? [clockMarkElement()] : []),
      ].join(' ! ');
    case 'rpi':
    case 'rpi5':
      return ['libcamerasrc', `video/x-raw,format=NV12,${raw}`].join(' ! ');
    case 'auto':
      throw new Error('capture.preset "auto" must be resolved (resolvePreset) before the pipeline is built');
    case 'v4l2':
      if (s.v4l2.h264Passthrough) return undefined;
      return [`v4l2src device=${quote(s.v4l2.device)} do-timestamp=true`, `video/x-raw,${raw}`, 'videoconvert', 'video/x-raw,format=I420'].join(' ! ');
  }
}

/** Raw frames to constrained-baseline H.264: the encoder named `name` and its capsfilter `caps`. */
function encoder(s: CaptureConfig, name: string, caps: string, kbps: number): string {
  if (s.preset === 'rpi') {
    return [
      `v4l2h264enc name=${name} extra-controls=${quote(v4l2Controls(s, kbps))}`,
      `capsfilter name=${caps} caps=${quote(`${h264Caps},level=(string)${h264Level(s)}`)}`,
    ].join(' ! ');
  }
  return [x264(s, name, kbps), `capsfilter name=${caps} caps=${quote(h264Caps)}`].join(' ! ');
}

/** The camera that encodes itself (v4l2 passthrough). */
function passthroughHead(s: CaptureConfig): string {
  const raw = `width=${s.width},height=${s.height},framerate=${s.framerate}/1`;
  // Keyframe requests reach v4l2src, which most UVC cameras ignore, so the camera's own GOP bounds
  // the time to the first picture of a new viewer.
  return [
    `v4l2src name=${elements.encoder} device=${quote(s.v4l2.device)} do-timestamp=true`,
    `video/x-h264,${raw}`,
    `capsfilter name=${elements.keyframe} caps=video/x-h264`,
  ].join(' ! ');
}

// One Opus encoder for the segments and the live view, as for video. The live audio branch is
// closed like the video one until someone watches.
function audioBranch(s: CaptureSettings): string[] {
  const source =
    s.preset === 'test' ? 'audiotestsrc is-live=true wave=sine freq=440 volume=0.2' : `alsasrc device=${quote(s.audioDevice)}`;
  return [
    [source, 'audioconvert', 'audioresample', 'audio/x-raw,rate=48000,channels=1', 'opusenc bitrate=32000', 'tee name=at'].join(' ! '),
    ['at. ! queue max-size-time=1000000000', `${elements.segments}.audio_0`].join(' ! '),
    [
      'at. ! queue leaky=downstream max-size-buffers=50 max-size-bytes=0 max-size-time=0',
      `valve name=${elements.liveAudio} drop=true drop-mode=forward-sticky-events`,
      'rtpopuspay pt=111',
      `udpsink host=127.0.0.1 port=${s.rtpAudioPort} sync=false async=false`,
    ].join(' ! '),
  ];
}

// SPS and PPS come from h264parse (config-interval=-1, once per access unit, before an IDR), never
// from the payloader: rtph264pay's config-interval=-1 puts them before every IDR *slice*, and x264
// with tune=zerolatency cuts each frame into slices (sliced threads), so a keyframe went out as
// "SPS PPS slice1 SPS PPS slice2". A parameter set after a slice starts a new access unit (H.264
// 7.4.1.2.3): Chromium decoded half a keyframe, dropped a frame and sent a PLI, and our answer
// (another keyframe) did the same again: ~225 PLIs a minute at 0 % loss on a busy picture
// (bench/bad-link.ts; the packets seen with a UDP dump of this pipeline).
const rtpPayloader = 'rtph264pay config-interval=0 mtu=1200 pt=96 aggregate-mode=zero-latency';

export function buildPipeline(s: CaptureSettings): BuiltPipeline {
  const segmentNs = Math.round(s.segmentSeconds * 1e9);
  const location = `${s.segmentDir.replace(/\/+$/, '')}/${s.segmentPrefix}-%06d.ts`;
  const source = rawSource(s);
  const separate = source !== undefined && liveEncoderSeparate(s);
  const liveValve = `valve name=${elements.live} drop=true drop-mode=forward-sticky-events`;
  const rtpSink = `udpsink name=${elements.rtpSink} host=127.0.0.1 port=${s.rtpPort} sync=false async=false`;
  const encoded = `${encoder(s, elements.encoder, elements.keyframe, s.bitrateKbps)} ! h264parse config-interval=-1 ! tee name=t`;
  const parts = separate
    ? [
        `${source} ! tee name=vt`,
        // The recording's queue blocks rather than drop: evidence first. Both queues hold few raw
        // frames: a camera's buffer pool (libcamera's is small) must not run dry in them.
        `vt. ! queue max-size-buffers=4 max-size-bytes=0 max-size-time=0 ! ${encoded}`,
        // A live encoder that falls behind loses the oldest frames, never holds the recording back.
        [
          'vt. ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0',
          liveValve,
          encoder(s, elements.liveEncoder, elements.liveKeyframe, s.liveBitrateKbps),
          'h264parse config-interval=-1',
          rtpPayloader,
          rtpSink,
        ].join(' ! '),
      ]
    : [
        `${source === undefined ? passthroughHead(s) : `${source} ! ${encoder(s, elements.encoder, elements.keyframe, s.bitrateKbps)}`} ! h264parse config-interval=-1 ! tee name=t`,
        // The live branch never holds recording back: a leaky queue drops for the viewer first.
        ['t. ! queue leaky=downstream max-size-buffers=60 max-size-bytes=0 max-size-time=0', liveValve, rtpPayloader, rtpSink].join(' ! '),
      ];
  parts.push(
    // send-keyframe-requests makes the cut land on max-size-time; the encoder's own keyframe period
    // (<= segmentSeconds) is the fallback for sources that ignore requests. splitmuxsink holds one GOP
    // before muxing it, and filesink would then sit on 64 KiB more (seconds of video at low bitrates):
    // unbuffered, a kill -9 loses about one keyframe interval.
    [
      't. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=3000000000',
      `splitmuxsink name=${elements.segments} muxer=mpegtsmux sink=${quote('filesink buffer-mode=unbuffered')} send-keyframe-requests=true max-size-time=${segmentNs} location=${quote(location)}`,
    ].join(' ! '),
    // The frame count is read from fpsdisplaysink's frames-rendered each stats interval. An appsink
    // pulled per frame made gstreamer-superficial copy every encoded frame into the worker's heap and
    // leak two strings a frame (it turns the caps' fractions into strings and never frees them:
    // ~7 MB an hour at 30 fps; issue 18, bench/shift-memory.ts).
    [
      't. ! queue leaky=downstream max-size-buffers=30 max-size-bytes=0 max-size-time=0',
      `fpsdisplaysink name=${elements.meter} text-overlay=false signal-fps-measurements=false sync=false video-sink=${quote('fakesink sync=false async=false')}`,
    ].join(' ! '),
  );
  if (s.audio) parts.push(...audioBranch(s));
  const names = separate ? { ...elements } : { ...elements, liveEncoder: elements.encoder, liveKeyframe: elements.keyframe };
  return { description: parts.join('  '), elements: names, liveEncoderSeparate: separate };
}

/** The Pi 4's (and 3's) hardware H.264 encoder, bcm2835-codec; the Pi 5 has none. */
export const piEncoderDevice = '/dev/video11';

/**
 * The preset to run: `auto`, and `rpi` on a board without the Pi encoder's device (a Pi 5), become
 * `rpi5`; `auto` with the device becomes `rpi`. `note` says why, for the log.
 */
export function resolvePreset(preset: CaptureConfig['preset'], piEncoderPresent: boolean): { preset: Exclude<CaptureConfig['preset'], 'auto'>; note?: string } {
  if (preset === 'auto') {
    return piEncoderPresent
      ? { preset: 'rpi', note: `capture.preset auto: ${piEncoderDevice} (the Pi hardware H.264 encoder) is present, using rpi` }
      : { preset: 'rpi5', note: `capture.preset auto: no ${piEncoderDevice} (no Pi hardware H.264 encoder: a Pi 5), using rpi5 (libcamerasrc + x264enc)` };
  }
  if (preset === 'rpi' && !piEncoderPresent) {
    return { preset: 'rpi5', note: `capture.preset rpi: no ${piEncoderDevice} (no Pi hardware H.264 encoder: a Pi 5), using rpi5 (libcamerasrc + x264enc) instead` };
  }
  return { preset };
}

/** Whether the live branch gets an encoder of its own (a camera that encodes itself always shares). */
export function liveEncoderSeparate(s: CaptureConfig): boolean {
  return s.liveEncoder === 'separate' && !(s.preset === 'v4l2' && s.v4l2.h264Passthrough);
}

/**
 * Whether the live bitrate can follow the viewer. x264enc takes kbit/s at run time. The Pi's
 * v4l2h264enc has its bitrate only inside the extra-controls structure, which gstreamer-superficial
 * cannot set (it sets strings, numbers and booleans only: a string set on extra-controls leaves it
 * NULL), so on the Pi the worker sets the encoder's V4L2 control itself (v4l2-control.ts).
 * Shared with the recording, nothing may change.
 */
export function liveBitrateAdjustable(s: CaptureConfig): boolean {
  return liveEncoderSeparate(s);
}

/**
 * How the live encoder is set to `kbps`: a property of the element (x264enc's kbit/s), or the V4L2
 * control `video_bitrate` in bit/s on the device the element opened (the Pi's v4l2h264enc); undefined
 * where it cannot follow.
 */
export type LiveBitrateChange = { kind: 'property'; property: string; value: number } | { kind: 'v4l2-control'; control: 'video_bitrate'; bps: number };

export function liveBitrateChange(s: CaptureConfig, kbps: number): LiveBitrateChange | undefined {
  if (!liveBitrateAdjustable(s)) return undefined;
  if (s.preset === 'rpi') return { kind: 'v4l2-control', control: 'video_bitrate', bps: kbps * 1000 };
  return { kind: 'property', property: 'bitrate', value: kbps };
}

/** The property change that sets the live encoder to `kbps`, or undefined where it is not a property. */
export function liveBitrateProperty(s: CaptureConfig, kbps: number): { property: string; value: number } | undefined {
  const change = liveBitrateChange(s, kbps);
  return change?.kind === 'property' ? { property: change.property, value: change.value } : undefined;
}
