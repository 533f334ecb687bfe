// The decode step graph of B sequences at context 128 (synthetic GLM-4-9B INT4 g128), replayed 20 times after 3
// warm-up replays: ms a step and tok/s, for B = 32 and 64 (env BS="32,64"). The INT4 GEMM configuration at
// M = 17..64 comes from the environment (GLM4_INT4_GEMM_SMALL=<cfg>, GLM4_INT4_GEMM_PLAN=v3; read once a process),
// so scripts/gpu/smallm.sh runs one process per configuration. Needs dist/ (npx tsc -p tsconfig.build.json).
import { loadGlm4 } from "../../dist/index.js";
const bs = (process.env.BS || "32,64").split(",").map(Number);
const label = process.env.GLM4_INT4_GEMM_SMALL ? `small=${process.env.GLM4_INT4_GEMM_SMALL}` : process.env.GLM4_INT4_GEMM_PLAN === "v3" ? "v3" : "plan";
const model = await loadGlm4(null, { device: "cuda:0", synthetic: "glm-4-9b", quantization: "int4", groupSize: 128, maxContext: 1024 });
const { ctx } = model.runtime;
const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
for (const B of bs) {
  const be = model.runtime.newEngine({ maxBatch: B, maxContext: 400 });
  const slots = Array.from({ length: B }, () => be.admit());
  for (const [i, s] of slots.entries()) await be.prefill(s, Array.from({ length: 128 }, (_, j) => (j * 31 + i * 101) % 150000));
  let next = await be.pick(slots.map((slot) => ({ slot, params: greedy })));
  for (let i = 0; i < 2; i++) {
    await be.step(slots.map((slot, j) => ({ slot, token: next[j] })));
    next = await be.pick(slots.map((slot) => ({ slot, params: greedy })));
  }
  const plan = await be.stepPlan(B);
  for (let i = 0; i < 3; i++) ctx.replay(plan);
  ctx.flush();
  const t = performance.now();
  for (let i = 0; i < 20; i++) ctx.replay(plan);
  ctx.flush();
  const ms = (performance.now() - t) / 20;
  console.log(`STEP ${label} B=${B} ${ms.toFixed(3)} ms ${((B * 1000) / ms).toFixed(0)} tok/s`);
  be.dispose?.();
}
await model.dispose?.();
process.exit(0);
