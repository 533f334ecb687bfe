// Issue 14 figures on the synthetic GLM-4-9B INT4 g128 (dist/ built, the addon carried); one JSON line on stdout.
//   node scripts/gpu/serve-bench.mjs decode 1,8,32,64,128   batched decode at context 128: B sequences prefilled with
//        128 different random tokens in one engine, then timed steps (one greedy pick of all B rows and one batched
//        step a token): aggregate tok/s = B * steps / s; also the captured step replayed back to back (device time).
//   node scripts/gpu/serve-bench.mjs memory 64 2048          B sequences of L tokens resident in the paged cache (each
//        prefilled, then 16 batched steps): the allocator's peak and the process's whole GPU memory (nvidia-smi).
// Every figure is also checked for sanity (finite logits rows, distinct sequences) before it is printed.
import { execFileSync } from "node:child_process";
import { loadGlm4 } from "../../dist/index.js";
import { runRounds } from "../../dist/engine/generation.js";

const [mode, arg1, arg2] = process.argv.slice(2);
// SERVE_DRY=1: the same code on the tiny checkpoint on the CPU (a check of the script where there is no GPU).
const DRY = process.env.SERVE_DRY === "1";
const load = () => (DRY ? loadGlm4(new URL("../../fixtures/tiny-glm4/original", import.meta.url).pathname, { device: "cpu", maxContext: 256, prefillChunk: 2048 }) : loadGlm4(null, { synthetic: "glm-4-9b", device: "cuda", maxContext: 256, prefillChunk: 2048 }));
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
const ROUNDS = runRounds(DRY ? "cpu" : "cuda:0");
const log = (s) => process.stderr.write(s + "\n");

function randomIds(n, seed) {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s % (DRY ? 500 : 150000)));
}

function processGpuMemory() {
  try {
    const out = execFileSync("nvidia-smi", ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], { encoding: "utf8", timeout: 10_000 });
    for (const line of out.trim().split("\n")) {
      const [pid, mib] = line.split(",").map((x) => x.trim());
      if (Number(pid) === process.pid) return Number(mib) * 2 ** 20;
    }
  } catch {
    /* no nvidia-smi */
  }
  return null;
}

function checkRows(e, slots) {
  for (const s of slots.slice(0, 4)) {
    const l = e.readLogits(s);
    if (!l.every(Number.isFinite)) throw new Error(`slot ${s}: logits not finite`);
  }
}

async function decode(batches) {
  const maxB = Math.max(...batches);
  const t0 = performance.now();
  const model = await load();
  log(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const rt = model.runtime;
  const ctx = rt.ctx;
  const ctxLen = 128, steps = 64, warm = 8;
  const e = rt.newEngine({ maxBatch: maxB, maxContext: ctxLen + steps + warm + 8 });
  const out = [];
  try {
    for (const B of batches) {
      const r = await rt.exclusive(async () => {
        const slots = Array.from({ length: B }, () => e.admit());
        const tp = performance.now();
        for (const [i, s] of slots.entries()) await e.prefill(s, randomIds(ctxLen, 5000 + 17 * i));
        const prefillS = (performance.now() - tp) / 1000;
        // As the scheduler decodes when every slot is decoding: Engine.run, ROUNDS (GLM4_RUN_ROUNDS, 8 on CUDA)
        // rounds of pick + step queued at once
        const rows = slots.map((slot) => ({ slot, params: GREEDY }));
        for (let i = 0; i < warm; i += ROUNDS) await e.run(rows, Math.min(ROUNDS, warm - i));
        checkRows(e, slots);
        const t = performance.now();
        for (let i = 0; i < steps; i += ROUNDS) await e.run(rows, Math.min(ROUNDS, steps - i));
        const sec = (performance.now() - t) / 1000;
        checkRows(e, slots);
        // the captured step alone, replayed back to back (its inputs still hold the last step's rows)
        const plan = await e.stepPlan(B);
        ctx.replay(plan);
        ctx.flush();
        const reps = 20, tr = performance.now();
        for (let i = 0; i < reps; i++) ctx.replay(plan);
        ctx.flush();
        const replayMs = (performance.now() - tr) / reps;
        for (const s of slots) e.release(s);
        return { batch: B, context: ctxLen, tokensPerSecond: (B * steps) / sec, msPerStep: (1000 * sec) / steps, replayMsPerStep: replayMs, replayTokensPerSecond: (1000 * B) / replayMs, prefillSeconds: prefillS };
      });
      log(`B=${B}: ${r.tokensPerSecond.toFixed(0)} tok/s in all, ${r.msPerStep.toFixed(2)} ms a step (replay alone ${r.replayMsPerStep.toFixed(2)} ms: ${r.replayTokensPerSecond.toFixed(0)} tok/s)`);
      out.push(r);
    }
  } finally {
    await rt.releaseEngine(e);
    await model.dispose();
  }
  return { mode: "decode", batched: out };
}

async function memory(B, L) {
  const model = await load();
  const rt = model.runtime;
  const weightsAndSolo = rt.ctx.memory().inUse;
  const steps = 16;
  const e = rt.newEngine({ maxBatch: B, maxContext: L + steps + 8 });
  try {
    return await rt.exclusive(async () => {
      // The pool is claimed at once (every sequence can reach L + steps); the sequences fill it one by one. A time
      // budget (SERVE_MEM_BUDGET_S, default 40 s) stops the filling early on a slow prefill: the peak memory is then
      // the same (the pool, the weights and the prefill scratch are all there), the figures say how many were filled.
      const budget = Number(process.env.SERVE_MEM_BUDGET_S ?? 40) * 1000;
      const all = Array.from({ length: B }, () => e.admit());
      const slots = [];
      const tp = performance.now();
      for (const [i, s] of all.entries()) {
        if (performance.now() - tp > budget) break;
        await e.prefill(s, randomIds(L, 9000 + 31 * i));
        slots.push(s);
        if ((i + 1) % 16 === 0) log(`  ${i + 1} sequences of ${L} tokens resident (${((performance.now() - tp) / 1000).toFixed(1)} s)`);
      }
      const prefillS = (performance.now() - tp) / 1000;
      let next = await e.pick(slots.map((slot) => ({ slot, params: GREEDY })));
      const t = performance.now();
      for (let i = 0; i < steps; i++) {
        await e.step(slots.map((slot, j) => ({ slot, token: next[j] })));
        next = await e.pick(slots.map((slot) => ({ slot, params: GREEDY })));
      }
      const sec = (performance.now() - t) / 1000;
      checkRows(e, slots);
      const kv = e.kvStats();
      const mem = rt.ctx.memory();
      const r = {
        mode: "memory",
        sequences: B,
        sequencesFilled: slots.length,
        tokensEach: L,
        prefillSeconds: prefillS,
        prefillTokensPerSecond: (slots.length * L) / prefillS,
        decodeTokensPerSecond: (slots.length * steps) / sec,
        kvBlocks: kv.blocks,
        kvBlocksInUse: kv.inUse,
        kvPoolBytes: e.kv.nbytes,
        weightsAndSoloBytes: weightsAndSolo,
        allocatorInUseBytes: mem.inUse,
        allocatorPeakBytes: mem.peak,
        processGpuBytes: processGpuMemory(),
      };
      const gib = (b) => (b == null ? "n/a" : `${(b / 2 ** 30).toFixed(2)} GiB`);
      log(`${slots.length} (of ${B}) x ${L} tokens resident: ${kv.inUse} of ${kv.blocks} blocks; pool ${gib(r.kvPoolBytes)}, weights+solo ${gib(weightsAndSolo)}, allocator peak ${gib(mem.peak)}, process in all ${gib(r.processGpuBytes)}; prefill ${r.prefillTokensPerSecond.toFixed(0)} tok/s, decode at ~${L} ${r.decodeTokensPerSecond.toFixed(0)} tok/s in all`);
      for (const s of all) e.release(s);
      return r;
    });
  } finally {
    await rt.releaseEngine(e);
    await model.dispose();
  }
}

const result = mode === "decode" ? await decode((arg1 ?? "1,8,32,64,128").split(",").map(Number)) : await memory(Number(arg1 ?? 64), Number(arg2 ?? 2048));
process.stdout.write(JSON.stringify(result) + "\n");
