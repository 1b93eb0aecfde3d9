// What the agent starts and stops: each extension does one job, is started in the agent's order
// and stopped in reverse (src/agent/agent.ts), in the style of zigbee2mqtt's extensions.
export interface Extension {
  readonly name: string;
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}
