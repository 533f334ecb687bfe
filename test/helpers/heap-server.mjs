// Run with --expose-gc: the built server (dist/) on the tiny checkpoint, N requests one after another through
// createServer, the JS heap after a forced GC at checkpoints. Prints one JSON line: {counts, heap}.
import path from "node:path";
import { loadGlm4 } from "../../dist/index.js";
import { createServer } from "../../dist/server.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const [warm, total] = process.argv.slice(2).map(Number);
const model = await loadGlm4(path.join(ROOT, "fixtures/tiny-glm4/original"), { device: "cpu" });
const app = createServer(model, { maxConcurrent: 2 });
await app.listen({ host: "127.0.0.1", port: 0 });
const base = `http://127.0.0.1:${app.server.address().port}`;

const heap = () => {
  for (let i = 0; i < 4; i++) global.gc();
  return process.memoryUsage().heapUsed;
};
const one = async (i) => {
  // A mix: plain, streamed, chat, and a client that goes away (each kind once every 4 requests).
  const kind = i % 4;
  const ac = new AbortController();
  const body = kind === 2 ? { messages: [{ role: "user", content: `hi ${i}` }], max_tokens: 2 } : { prompt: `request ${i}`, max_tokens: 2, stream: kind !== 0 };
  const res = await fetch(`${base}${kind === 2 ? "/v1/chat/completions" : "/v1/completions"}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: ac.signal });
  if (kind === 3) {
    ac.abort();
    await res.body?.cancel().catch(() => undefined);
  } else await res.text();
};
const points = [];
for (let i = 0; i < total; i++) {
  await one(i);
  if (i + 1 === warm || i + 1 === total) points.push({ requests: i + 1, heap: heap() });
}
const health = await (await fetch(`${base}/health`)).json();
await app.close();
await model.dispose();
process.stdout.write(JSON.stringify({ points, health }) + "\n");
