// Host vs device per batched decode step (issue 14): for B in PB (default 1,8,32,64) sequences at context 128, the
// wall of the pick + step loop (JS time in step(), the pick), the captured step replayed back to back, replay +
// flush each, replay + flushAsync each. On the GPU machine: `. .gpu/prelude.sh && node scripts/gpu/step-host.mjs`.
import { loadGlm4 } from "../../dist/index.js";
const Bs = (process.env.PB || "1,8,32,64").split(",").map(Number);
const model = await loadGlm4(null, { device: "cuda:0", synthetic: "glm-4-9b", quantization: "int4", groupSize: 128, maxContext: 1024 });
const { ctx } = model.runtime;
const be = model.runtime.newEngine({ maxBatch: Math.max(...Bs), maxContext: 400 });
const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
for (const B of Bs) {
  const slots = Array.from({ length: B }, () => be.admit());
  for (const [i, s] of slots.entries()) await be.prefill(s, Array.from({ length: 128 }, (_, j) => (j * 31 + i * 101) % 150000));
  let next = await be.pick(slots.map((slot) => ({ slot, params: greedy })));
  for (let i = 0; i < 4; i++) { await be.step(slots.map((slot, j) => ({ slot, token: next[j] }))); next = await be.pick(slots.map((slot) => ({ slot, params: greedy }))); }
  const N = 30;
  let ts = 0, tp = 0;
  const t = performance.now();
  for (let i = 0; i < N; i++) {
    const a = performance.now();
    await be.step(slots.map((slot, j) => ({ slot, token: next[j] })));
    const b = performance.now();
    next = await be.pick(slots.map((slot) => ({ slot, params: greedy })));
    tp += performance.now() - b; ts += b - a;
  }
  const wall = (performance.now() - t) / N;
  const plan = await be.stepPlan(B);
  ctx.replay(plan); ctx.flush();
  let t1 = performance.now(); for (let i = 0; i < N; i++) ctx.replay(plan); ctx.flush();
  const rep = (performance.now() - t1) / N;
  t1 = performance.now(); for (let i = 0; i < N; i++) { ctx.replay(plan); await ctx.flushAsync(); }
  const repAsync = (performance.now() - t1) / N;
  t1 = performance.now(); for (let i = 0; i < N; i++) { ctx.replay(plan); ctx.flush(); }
  const repSync = (performance.now() - t1) / N;
  console.log(`B=${B}: wall ${wall.toFixed(3)} ms/step (step() JS ${(ts / N).toFixed(3)}, pick ${(tp / N).toFixed(3)}); replay b2b ${rep.toFixed(3)}, replay+flush ${repSync.toFixed(3)}, replay+flushAsync ${repAsync.toFixed(3)}; ${(1000 * B / wall).toFixed(0)} tok/s`);
  for (const s of slots) be.release(s);
}
await model.runtime.releaseEngine(be);
await model.dispose();
