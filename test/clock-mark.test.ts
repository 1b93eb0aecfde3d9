// The glass-to-glass clock mark (bench/glass-to-glass.ts): drawn into the test camera's picture
// only when the worker's environment asks for it, never otherwise, and never for a real camera.
import t from 'tap';
import { buildPipeline, clockMark, type CaptureSettings } from '../src/capture/presets.ts';
import { captureConfigSchema } from '../src/capture/config.ts';

const settings = (preset: 'test' | 'v4l2'): CaptureSettings => ({
  ...captureConfigSchema.parse({ preset }),
  segmentDir: '/tmp/x',
  segmentPrefix: 'seg',
  rtpPort: 5000,
  rtpAudioPort: 5002,
  liveBitrateKbps: 800,
});

t.test('the clock mark is in the test picture only with BWC_TEST_CLOCK_MARK=1', async (t) => {
  const was = process.env.BWC_TEST_CLOCK_MARK;
  t.teardown(() => (was === undefined ? delete process.env.BWC_TEST_CLOCK_MARK : (process.env.BWC_TEST_CLOCK_MARK = was)));
  delete process.env.BWC_TEST_CLOCK_MARK;
  t.notMatch(buildPipeline(settings('test')).description, /simplevideomark/, 'not by default');
  process.env.BWC_TEST_CLOCK_MARK = '1';
  const marked = buildPipeline(settings('test')).description;
  t.match(marked, new RegExp(`videotestsrc[^!]*! video/x-raw[^!]*! simplevideomark name=${clockMark.element} [^!]*pattern-data-count=${clockMark.bits}`), 'right after the test source, before the encoders');
  t.notMatch(buildPipeline(settings('v4l2')).description, /simplevideomark/, 'never for a real camera');
});
