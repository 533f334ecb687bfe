// One decode step of B (env, default 1) sequences at context 128, replayed twice at the very end: under ncu the last
// kernels of the CSV are the step graph's nodes, e.g. (H200, run7):
//   ncu --clock-control none --cache-control none -k "regex:gemv|decode|rotary|argmax|embed|sample" \
//     --metrics gpu__time_duration.sum --csv env B=8 node scripts/gpu/ncu-step.mjs
import { loadGlm4 } from "../../dist/index.js";
const B = Number(process.env.B || 1);
const model = await loadGlm4(null, { device: "cuda:0", synthetic: "glm-4-9b", quantization: "int4", groupSize: 128, maxContext: 1024 });
const { ctx } = model.runtime;
const be = model.runtime.newEngine({ maxBatch: Math.max(B, 1), maxContext: 400 });
const slots = Array.from({ length: B }, () => be.admit());
for (const [i, s] of slots.entries()) await be.prefill(s, Array.from({ length: 128 }, (_, j) => (j * 31 + i * 101) % 150000));
const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
let next = await be.pick(slots.map((slot) => ({ slot, params: greedy })));
for (let i = 0; i < 2; i++) { await be.step(slots.map((slot, j) => ({ slot, token: next[j] }))); next = await be.pick(slots.map((slot) => ({ slot, params: greedy }))); }
const plan = await be.stepPlan(B);
const t = performance.now();
for (let i = 0; i < 2; i++) ctx.replay(plan);
ctx.flush();
console.log(`MARK B=${B} two replays ${(performance.now() - t).toFixed(2)} ms`);
process.exit(0);
