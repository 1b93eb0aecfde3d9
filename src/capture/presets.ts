// The GStreamer pipeline of each capture preset, as one gst-launch description.
// Every pipeline has the same shape so the worker can drive any of them by element name:
//   <source + encoder> ! capsfilter name=kf ! h264parse ! tee name=t
//     t. ! recording: splitmuxsink (MPEG-TS segments; survives a kill -9 up to the last packets written)
//     t. ! live: valve (closed unless someone watches) ! rtph264pay ! udpsink to the main process
//     t. ! meter: appsink the worker counts, so the supervisor can tell a stalled camera from a quiet one
// One encoder feeds everything: a keyframe request serves the viewer and the next segment alike.
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
  /** appsink counting encoded frames for stall detection. */
  meter: string;
  /** The element handing RTP to the main process. */
  rtpSink: string;
  /** valve of the live audio branch (audio only). */
  liveAudio: string;
}

export interface BuiltPipeline {
  description: string;
  elements: PipelineElements;
}

const elements: PipelineElements = {
  encoder: 'enc',
  keyframe: 'kf',
  segments: 'segments',
  live: 'live',
  meter: 'meter',
  rtpSink: 'rtpsink',
  liveAudio: 'liveaudio',
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

function x264(s: CaptureConfig): string {
  return [
    `x264enc name=${elements.encoder} tune=zerolatency speed-preset=ultrafast`,
    `key-int-max=${keyframePeriod(s)} bitrate=${s.bitrateKbps}`,
  ].join(' ');
}

/** H.264 level for the Pi encoder: without explicit level caps v4l2h264enc picks 1.0 and negotiation fails. */
export function h264Level(s: Pick<CaptureConfig, 'width' | 'height' | 'framerate'>): string {
  const macroblocksPerSecond = Math.ceil(s.width / 16) * Math.ceil(s.height / 16) * s.framerate;
  if (macroblocksPerSecond <= 108_000) return '3.1'; // 1280x720@30
  if (macroblocksPerSecond <= 245_760) return '4'; // 1920x1080@30
  return '4.2'; // 1920x1080@60, the Pi encoder's ceiling
}

function videoHead(s: CaptureConfig): string {
  const raw = `width=${s.width},height=${s.height},framerate=${s.framerate}/1`;
  switch (s.preset) {
    case 'test':
      return [
        'videotestsrc is-live=true pattern=ball',
        `video/x-raw,format=I420,${raw}`,
        x264(s),
        `capsfilter name=${elements.keyframe} caps=${quote(h264Caps)}`,
      ].join(' ! ');
    case 'rpi': {
      const controls = [
        'controls',
        'repeat_sequence_header=1',
        `video_bitrate=${s.bitrateKbps * 1000}`,
        `h264_i_frame_period=${keyframePeriod(s)}`,
      ].join(',');
      return [
        'libcamerasrc',
        `video/x-raw,format=NV12,${raw}`,
        `v4l2h264enc name=${elements.encoder} extra-controls=${quote(controls)}`,
        `capsfilter name=${elements.keyframe} caps=${quote(`${h264Caps},level=(string)${h264Level(s)}`)}`,
      ].join(' ! ');
    }
    case 'v4l2':
      if (s.v4l2.h264Passthrough) {
        // The camera encodes; keyframe requests reach v4l2src, which most UVC cameras ignore, so the
        // camera's own GOP bounds the time to the first picture of a new viewer.
        return [
          `v4l2src name=${elements.encoder} device=${quote(s.v4l2.device)} do-timestamp=true`,
          `video/x-h264,${raw}`,
          `capsfilter name=${elements.keyframe} caps=video/x-h264`,
        ].join(' ! ');
      }
      return [
        `v4l2src device=${quote(s.v4l2.device)} do-timestamp=true`,
        `video/x-raw,${raw}`,
        'videoconvert',
        'video/x-raw,format=I420',
        x264(s),
        `capsfilter name=${elements.keyframe} caps=${quote(h264Caps)}`,
      ].join(' ! ');
  }
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

export function buildPipeline(s: CaptureSettings): BuiltPipeline {
  const segmentNs = Math.round(s.segmentSeconds * 1e9);
  const location = `${s.segmentDir.replace(/\/+$/, '')}/${s.segmentPrefix}-%06d.ts`;
  const parts = [
    `${videoHead(s)} ! h264parse config-interval=-1 ! tee name=t`,
    // send-keyframe-requests makes the cut land on max-size-time; the encoder's own keyframe period
    // (<= segmentSeconds) is the fallback for sources that ignore requests. splitmuxsink holds one GOP
    // before muxing it, and filesink would then sit on 64 KiB more (seconds of video at low bitrates):
    // unbuffered, a kill -9 loses about one keyframe interval.
    [
      't. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=3000000000',
      `splitmuxsink name=${elements.segments} muxer=mpegtsmux sink=${quote('filesink buffer-mode=unbuffered')} send-keyframe-requests=true max-size-time=${segmentNs} location=${quote(location)}`,
    ].join(' ! '),
    // The live branch never holds recording back: a leaky queue drops for the viewer first.
    [
      't. ! queue leaky=downstream max-size-buffers=60 max-size-bytes=0 max-size-time=0',
      `valve name=${elements.live} drop=true drop-mode=forward-sticky-events`,
      'rtph264pay config-interval=-1 mtu=1200 pt=96 aggregate-mode=zero-latency',
      `udpsink name=${elements.rtpSink} host=127.0.0.1 port=${s.rtpPort} sync=false async=false`,
    ].join(' ! '),
    [
      't. ! queue leaky=downstream max-size-buffers=30 max-size-bytes=0 max-size-time=0',
      `appsink name=${elements.meter} sync=false async=false max-buffers=4 drop=true`,
    ].join(' ! '),
  ];
  if (s.audio) parts.push(...audioBranch(s));
  return { description: parts.join('  '), elements: { ...elements } };
}
