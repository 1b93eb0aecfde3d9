// Loaded into the agent and the capture worker by bench/shift-memory.ts (NODE_OPTIONS=--import=this
// file, which the worker inherits): every BWC_MEMPROBE_INTERVAL_MS it appends one JSON line with
// process.memoryUsage() and V8's heap spaces to BWC_MEMPROBE_DIR/<pid>.jsonl, so a growing RSS can
// be split into V8 heap, external/array buffers and native (the rest) without attaching a debugger.
// Heap snapshots come from --heapsnapshot-signal, which the benchmark adds beside it. Never loaded
// by the product.
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

const dir = process.env.BWC_MEMPROBE_DIR;
const intervalMs = Number(process.env.BWC_MEMPROBE_INTERVAL_MS ?? 10_000);
if (dir) {
  const file = path.join(dir, `${process.pid}.jsonl`);
  const role = process.send ? 'worker' : 'agent';
  const sample = () => {
    const m = process.memoryUsage();
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, Math.round(s.space_size / 1024)]));
    const h = v8.getHeapStatistics();
    appendFileSync(
      file,
      `${JSON.stringify({ t: Date.now(), pid: process.pid, role, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, mallocedMemory: h.malloced_memory, codeKiB: (spaces.code_space ?? 0) + (spaces.code_large_object_space ?? 0), spacesKiB: spaces })}\n`,
    );
  };
  setInterval(sample, intervalMs).unref();
  sample();
}
