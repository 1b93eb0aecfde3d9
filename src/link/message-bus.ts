// What the link's request channel and ICE topics need of the MQTT session: publish, and its
// 'message' and 'connected' events. A type of its own so that tests can hand in a stand-in and
// nothing above src/link/ sees the session.
import type { MqttSession } from './mqtt-session.ts';

export type MessageBus = Pick<MqttSession, 'publish' | 'on' | 'off'>;
