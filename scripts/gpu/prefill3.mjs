// prefill3: where a 2048-token prefill chunk and a batched decode step spend their time, on the synthetic GLM-4-9B
// (INT4 g128): the prefill wall (median of 3 after a warm-up), the chunk's layers captured once and replayed, each
// op of that capture timed on its own (ctx.profile), and the decode plans of B rows (replay, ops). One process per
// setting: GLM4_LAYER_PATH / GLM4_EMBED_GATHER are read once (scripts/gpu/prefill3.sh runs the A/B).
// Usage (repo root, dist/ and build/Release built): node scripts/gpu/prefill3.mjs [T=2048] [B list=32,64]
import { loadGlm4 } from "../../dist/index.js";
import { Scratch, layerPath, recordLayers } from "../../dist/engine/forward.js";

const T = Number(process.argv[2] ?? 2048);
const Bs = (process.argv[3] ?? "32,64").split(",").map(Number);
const label = `GLM4_LAYER_PATH=${process.env.GLM4_LAYER_PATH ?? "(default)"} GLM4_EMBED_GATHER=${process.env.GLM4_EMBED_GATHER ?? "(default)"}`;
console.log(`== prefill3 ${label}`);
// PREFILL3_MODEL=DIR (a smoke test on the CPU with the tiny fixture) instead of the synthetic GLM-4-9B.
const dir = process.env.PREFILL3_MODEL ?? null;
const model = await loadGlm4(dir, { ...(dir ? {} : { synthetic: "glm-4-9b" }), device: dir ? "cpu" : "auto", quantization: "int4", groupSize: dir ? 32 : 128, maxContext: dir ? 1024 : 8192, prefillChunk: T });
const { ctx, engine, weights: w, solo } = model.runtime;
const cfg = model.config;
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const ids = Array.from({ length: T }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);

// 1. wall of one chunk (as the bench measures it)
const times = [];
for (let r = 0; r < 4; r++) {
  solo.reset();
  const t = performance.now();
  await solo.prefill(ids);
  ctx.flush();
  if (r > 0) times.push(performance.now() - t);
}
console.log(`prefill ${T} wall ${median(times).toFixed(1)} ms (runs ${times.map((x) => x.toFixed(1)).join(", ")}) = ${(T / (median(times) / 1000)).toFixed(0)} tok/s`);

// 2. the layers of one chunk, captured over a contiguous bf16 cache, replayed and profiled
const summarize = (prof, title) => {
  const by = new Map();
  for (const p of prof) {
    const e = by.get(p.op) ?? { n: 0, ms: 0 };
    e.n++;
    e.ms += p.ms;
    by.set(p.op, e);
  }
  const sum = prof.reduce((a, p) => a + p.ms, 0);
  console.log(`${title} ops one by one: sum ${sum.toFixed(3)} ms`);
  for (const [op, e] of [...by.entries()].sort((a, b) => b[1].ms - a[1].ms))
    console.log(`  ${op.padEnd(20)} x${String(e.n).padEnd(4)} ${e.ms.toFixed(3).padStart(8)} ms ${((100 * e.ms) / sum).toFixed(1).padStart(5)}%  (${((1000 * e.ms) / e.n).toFixed(1)} us each)`);
};
{
  const kv = { k: [], v: [], blockSize: 0 };
  for (let i = 0; i < cfg.numLayers; i++) {
    kv.k.push(ctx.empty("bf16", [T, cfg.numKvHeads, cfg.headDim]));
    kv.v.push(ctx.empty("bf16", [T, cfg.numKvHeads, cfg.headDim]));
  }
  const path = layerPath(w, T);
  const s = new Scratch(ctx, cfg, T, path);
  s.x.write(w.embed.gather(ids));
  s.pos.write(Int32Array.from(ids, (_, j) => j));
  await ctx.flushAsync();
  ctx.beginCapture();
  recordLayers(ctx, cfg, w, s, kv, null);
  const plan = await ctx.endCaptureAsync();
  ctx.replay(plan);
  ctx.flush();
  const reps = 5;
  const t = performance.now();
  for (let i = 0; i < reps; i++) ctx.replay(plan);
  ctx.flush();
  console.log(`prefill ${T} layers replayed: ${((performance.now() - t) / reps).toFixed(2)} ms (path ${JSON.stringify(path)}, ${plan.ops} ops)`);
  const prof = await ctx.profileAsync(plan, 3);
  summarize(prof, `prefill T=${T}`);
  const perLayer = prof.length / cfg.numLayers;
  const l1 = prof.slice(Math.round(perLayer), Math.round(2 * perLayer));
  console.log(`  layer 1 in order: ${l1.map((p) => `${p.op} ${(1000 * p.ms).toFixed(0)}us`).join(", ")}`);
  plan.dispose();
  s.dispose();
  for (const x of [...kv.k, ...kv.v]) x.dispose();
}

// 3. decode steps of B rows (the same unfused path past 8 rows): B sequences of 128 tokens in one engine, one real
// step (captures the plan and writes its positions and cache rows), then the plan replayed and profiled as it is.
for (const b of Bs) {
  const e = model.runtime.newEngine({ maxBatch: b, maxContext: 256 });
  await model.runtime.exclusive(async () => {
    const slots = [];
    for (let i = 0; i < b; i++) {
      const s = e.admit();
      slots.push(s);
      await e.prefill(s, Array.from({ length: 128 }, (_, j) => (i * 131 + j * 17 + 5) % cfg.vocabSize));
    }
    await e.step(slots.map((slot) => ({ slot, token: 7 })));
    await e.pick(slots.map((slot) => ({ slot, params: { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 } })));
    const plan = await e.stepPlan(b);
    const reps = 20;
    const t = performance.now();
    for (let i = 0; i < reps; i++) ctx.replay(plan);
    ctx.flush();
    console.log(`B=${b}: replay ${((performance.now() - t) / reps).toFixed(2)} ms (${plan.ops} ops)`);
    summarize(await ctx.profileAsync(plan, 3), `decode step B=${b}`);
  });
  await model.runtime.releaseEngine(e);
}
await model.dispose();
