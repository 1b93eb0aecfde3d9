// A counter read until it stops moving: two reads intervalMs apart that are equal. For "nothing more
// arrives after X" checks, where what was already under way when X happened (packets in a browser's
// WebRTC threads, say) may still be counted for a while on a loaded machine. A counter that never
// stops moving throws after timeoutMs, naming what kept moving.
export async function settledCount(read: () => Promise<number>, what: string, { intervalMs = 300, timeoutMs = 20_000 } = {}): Promise<number> {
  let last = await read();
  for (const deadline = Date.now() + timeoutMs; ;) {
    await new Promise((r) => setTimeout(r, intervalMs));
    const now = await read();
    if (now === last) return now;
    if (Date.now() > deadline) throw new Error(`${what} still moving ${timeoutMs} ms on (${now})`);
    last = now;
  }
}
