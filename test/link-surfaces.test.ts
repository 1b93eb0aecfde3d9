// The link's surfaces for the rooms above it (src/link/request-channel.ts, src/link/ice-topics.ts),
// on a stand-in for the MQTT session: the request channel replies only to an allowed Response
// Topic with the Correlation Data, one request at a time; the ICE topics hand over the sid parsed
// from the answer topic and publish offers on the session's offer topic.
import { EventEmitter } from 'node:events';
import pino from 'pino';
import t from 'tap';
import { IceTopics } from '../src/link/ice-topics.ts';
import { RequestChannel, responseTopicProblem, type InboundRequest } from '../src/link/request-channel.ts';

const logger = pino({ level: 'silent' });

function standInBus() {
  const published: { topic: string; payload: string; correlationData: string | undefined }[] = [];
  const bus = Object.assign(new EventEmitter(), {
    publish: (topic: string, payload: string | Buffer, o: { properties?: { correlationData?: Buffer } }, cb?: (e?: Error) => void) => {
      published.push({ topic, payload: String(payload), correlationData: o.properties?.correlationData?.toString() });
      cb?.();
    },
  });
  return { bus, published };
}

t.test('the request channel: one at a time, replies with the Correlation Data, refuses a Response Topic under the root', async (t) => {
  const { bus, published } = standInBus();
  const channel = new RequestChannel({
    bus: bus as never,
    topic: 'bwc/v1/cam-l/cmd',
    maxPending: 2,
    responseTopicProblem: (topic) => responseTopicProblem(topic, 'bwc/v1', []),
    logger,
  });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const handled: string[] = [];
  const refusedTopics: string[] = [];
  const overloaded: { payload: string; answerable: boolean }[] = [];
  channel.listen({
    handle: async (request: InboundRequest) => {
      await gate;
      handled.push(String(request.payload));
      request.reply({ ok: true, echo: String(request.payload) });
    },
    responseTopicRefused: (request, problem) => {
      refusedTopics.push(`${request.responseTopic}: ${problem}`);
      request.reply({ ok: false });
    },
    overloaded: (request, limits) => {
      overloaded.push({ payload: String(request.payload), answerable: request.reply !== undefined });
      request.reply?.({ ok: false, code: 'overloaded', max: limits.maxPending });
    },
  });
  const send = (topic: string, payload: string, responseTopic: string) =>
    bus.emit('message', topic, Buffer.from(payload), { properties: { responseTopic, correlationData: Buffer.from(`c-${payload}`) } });
  send('bwc/v1/cam-l/cmd', 'a', 'fleet/r');
  send('bwc/v1/cam-l/cmd', 'b', 'bwc/v1/cam-l/audit');
  send('bwc/v1/cam-l/cmd', 'c', 'fleet/r');
  send('bwc/v1/cam-l/cmd', 'd', 'bwc/v1/cam-l/state');
  send('bwc/v1/other/cmd', 'e', 'fleet/r');
  t.same(overloaded, [{ payload: 'c', answerable: true }, { payload: 'd', answerable: false }], 'past 2 waiting: refused at once, answered only on an allowed Response Topic');
  release();
  await channel.close();
  t.same(handled, ['a'], 'the request on an allowed Response Topic is handled; the other topic is not listened to');
  t.match(refusedTopics, [/^bwc\/v1\/cam-l\/audit: Response Topic is under the topic root/], 'the Response Topic under the root is refused before handling');
  t.same(
    published.map((p) => [p.topic, p.correlationData]),
    [
      ['fleet/r', 'c-c'],
      ['fleet/r', 'c-a'],
    ],
    'replies go only to fleet/r, each with its own Correlation Data',
  );
  t.equal(channel.received, 4);
});

t.test('the ICE topics: answers with the sid from the topic, offers on the offer topic', async (t) => {
  const { bus, published } = standInBus();
  const topics = new IceTopics({ bus: bus as never, topic: (suffix) => `bwc/v1/cam-l/${suffix}` });
  const answers: string[] = [];
  let connected = 0;
  topics.listen({ answer: (sid, payload) => answers.push(`${sid}=${String(payload)}`), connected: () => (connected += 1) });
  bus.emit('message', 'bwc/v1/cam-l/stream/s-1/ice-answer', Buffer.from('x'), {});
  bus.emit('message', 'bwc/v1/cam-l/stream/s-1/ice-offer', Buffer.from('own offer'), {});
  bus.emit('message', 'bwc/v1/cam-l/stream/a/b/ice-answer', Buffer.from('two levels'), {});
  bus.emit('message', 'bwc/v1/cam-l/cmd', Buffer.from('a command'), {});
  bus.emit('connected', { sessionPresent: true, receiveMaximum: 10 });
  t.same(answers, ['s-1=x'], 'only a one-level sid on an ice-answer topic is an answer');
  t.equal(connected, 1, 'a reconnection is passed on');
  let acknowledged = false;
  topics.publishOffer('s-1', '{"offer":1}', (err) => (acknowledged = err === undefined));
  t.same(published, [{ topic: 'bwc/v1/cam-l/stream/s-1/ice-offer', payload: '{"offer":1}', correlationData: undefined }]);
  t.ok(acknowledged, 'the publish callback is passed on');
  topics.close();
  bus.emit('message', 'bwc/v1/cam-l/stream/s-2/ice-answer', Buffer.from('y'), {});
  t.same(answers, ['s-1=x'], 'nothing after close');
});
