/**
 * `glm4-int4 bench` / `npm run bench`: in one run, on one device,
 *   1. the device's copy bandwidth (a large device-to-device copy, bytes read + written),
 *   2. prefill speed for 512- and 2048-token prompts,
 *   3. decode speed at batch 1 (256 new tokens after a warm-up, median of several runs) at contexts 128 and 2048,
 *   4. memory: weights, KV cache, the context's peak, and the process's whole GPU use (CUDA context included),
 *   5. the time of each op in one decode step,
 *   6. the floor in tok/s (bytes a token / measured bandwidth) and the share of it reached,
 *   7. optionally (`--batch 1,4,8`), continuous-batching decode: B sequences at context 128 in one Engine,
 *      one batched step a token for all of them; aggregate tok/s (B tokens a step).
 * Default: the synthetic GLM-4-9B at INT4 on the GPU; `--model DIR` for a checkpoint.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { parseSettings } from "../quant/eval.js";
import type { Int4Scheme, OutputLayer } from "../checkpoint/int4-format.js";
import { Glm4Error } from "../errors.js";
import { readConfig } from "../checkpoint/config.js";
import { glm4_9bConfig } from "../engine/loader.js";
import { listOpt, loadFromOptsChecked, numOpt } from "./options.js";
import { loadGlm4, type Glm4Model } from "../glm4.js";
import { buildInfo, devices, native } from "../engine/native-binary.js";
import { cudaIndex } from "../engine/device.js";
import { packageRoot } from "../util.js";
import type { Glm4Config } from "../checkpoint/config.js";
import { modelTensors } from "../checkpoint/tensors.js";
import type { NativeTensor } from "../engine/native.js";
import { deviceBytes, weightOf, type Linear, type ModelWeights } from "../engine/weights.js";
import { runRounds } from "../engine/generation.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Bytes one decode step must read from device memory: every weight of the tensor list once (the embedding row
 * comes from host memory), the KV cache up to `ctxLen`.
 */
export function bytesPerToken(w: ModelWeights, cfg: Glm4Config, ctxLen: number, kvBytes: number): { weights: number; kv: number; total: number } {
  let weights = 0;
  for (const t of modelTensors(cfg)) if (t.kind !== "embed") weights += deviceBytes(weightOf(w, t) as Linear | NativeTensor);
  const kv = 2 * cfg.numLayers * ctxLen * cfg.numKvHeads * cfg.headDim * kvBytes;
  return { weights, kv, total: weights + kv };
}

function processGpuMemory(): number | null {
  try {
    const out = execFileSync("nvidia-smi", ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 });
    for (const line of out.trim().split("\n")) {
      const [pid, mib] = line.split(",").map((s) => s.trim());
      if (Number(pid) === process.pid) return Number(mib) * 2 ** 20;
    }
  } catch {
    /* no nvidia-smi */
  }
  return null;
}

function randomIds(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % Math.min(vocab, 150000);
  });
}

export interface BenchResult {
  date: string;
  card: string;
  device: string;
  build: ReturnType<typeof buildInfo>;
  model: string;
  quantization: string;
  groupSize: number;
  /** INT4 models: the scheme and the output layer (bench --quant). */
  scheme?: Int4Scheme;
  outputLayer?: OutputLayer;
  copyBandwidthGBs: number | null;
  loadSeconds: number;
  prefill: { tokens: number; tokensPerSecond: number; ms: number }[];
  decode: { context: number; tokensPerSecond: number; msPerToken: number; runs: number[]; bytesPerToken: number; floorTokensPerSecond: number | null; shareOfFloor: number | null }[];
  memory: { weightsBytes: number; kvCacheBytes: number; loadPeakBytes: number; contextPeakBytes: number; processGpuAfterLoadBytes: number | null; processGpuAfterPrefillBytes?: number | null; prefillTokensMax?: number; processGpuBytes: number | null; deviceUsedBytes: number | null; maxContext: number };
  decodeStepOps: { op: string; calls: number; ms: number; share: number }[];
  decodeStepMs: number;
  /** Device time of one captured decode step replayed back to back (no host work between tokens). */
  decodeReplayMs: number;
  /** Rounds of (pick, step) a decode run queues at once (Engine.run; 1: a pick and a step a token). */
  decodeRounds: number;
  /** `--batch`: aggregate decode tok/s of B sequences stepped together (one Engine of B slots), each at `context`. */
  batched?: { batch: number; context: number; tokensPerSecond: number; msPerStep: number; runs: number[] }[];
  /** Which kernel each INT4 linear ran for each row count (tokens) measured: native linearPath() (CUDA only). */
  linearPaths?: { m: number; linear: string; path: string }[];
}

/** The INT4 kernel that matmul_int4 picks (csrc/cuda/gemm_int4.cu) for each linear of layer 0 and the output layer. */
function linearPaths(weights: ModelWeights, device: string, ms: number[]): NonNullable<BenchResult["linearPaths"]> {
  const out: NonNullable<BenchResult["linearPaths"]> = [];
  if (!device.startsWith("cuda")) return out;
  const l0 = weights.layers[0];
  const linears: [string, Linear][] = [["qkv", l0.qkv], ["o", l0.attnOut], ["gate_up", l0.gateUp], ["down", l0.down], ["output", weights.output]];
  for (const m of ms)
    for (const [name, l] of linears)
      if (l.kind === "int4")
        out.push({ m, linear: name, path: native().linearPath(m, l.n, l.k, l.q.groupSize, (l.q.layout ?? 0) as 0 | 1, cudaIndex(device)) });
  return out;
}

async function copyBandwidth(model: Glm4Model): Promise<number> {
  const { ctx } = model.runtime;
  const n = 256 * 2 ** 20; // 1 GiB of f32
  const a = ctx.empty("f32", [n]);
  const b = ctx.empty("f32", [n]);
  try {
    ctx.fillRandom(a, 7, 0, 1);
    ctx.copy(b, a);
    ctx.flush(); // warm-up
    const reps = 10;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) ctx.copy(i % 2 ? a : b, i % 2 ? b : a);
    ctx.flush();
    const s = (performance.now() - t0) / 1000;
    return (2 * 4 * n * reps) / s / 1e9;
  } finally {
    a.dispose();
    b.dispose();
  }
}

/**
 * The contexts, prompt lengths and KV-cache length of a bench run that fit a model of `maxPositions` tokens.
 * Defaults (contexts 128 and 2048, prompts 512 and 2048, maxContext 8192) shrink to what fits a small model
 * (the tiny fixture has 1024 positions); lengths asked for that do not fit are an ERR_GLM4_INVALID_ARGUMENT.
 */
export function fitBench(maxPositions: number, o: { contexts?: number[]; prefills?: number[]; maxContext?: number; newTokens: number }): { contexts: number[]; prefills: number[]; maxContext: number } {
  const room = maxPositions - o.newTokens - 16; // a decode run prefills `context` then writes newTokens more
  const tooLong = (what: string, n: number) =>
    new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `bench: ${what} ${n} does not fit this model's ${maxPositions} positions with ${o.newTokens} new tokens; use at most ${Math.max(room, 0)}${o.newTokens > 16 ? " (or fewer --new-tokens)" : ""}`);
  if (room < 1) throw tooLong("--new-tokens", o.newTokens);
  const pick = (given: number[] | undefined, defaults: number[], what: string) => {
    if (given) {
      for (const n of given) if (n > room) throw tooLong(what, n);
      return given;
    }
    const fit = defaults.filter((n) => n <= room);
    return fit.length ? fit : [Math.min(defaults[0], room)];
  };
  const contexts = pick(o.contexts, [128, 2048], "--contexts");
  const prefills = pick(o.prefills, [512, 2048], "--prefills");
  const needed = Math.max(...contexts, ...prefills) + o.newTokens + 16;
  if (o.maxContext !== undefined && o.maxContext > maxPositions) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `bench: --max-context ${o.maxContext} is more than this model's ${maxPositions} positions`);
  const maxContext = Math.min(Math.max(o.maxContext ?? 8192, needed), maxPositions);
  return { contexts, prefills, maxContext };
}

export async function runBench(o: { model?: string; device?: string; quantization?: "int4" | "none"; groupSize?: 32 | 64 | 128; scheme?: Int4Scheme; outputLayer?: OutputLayer; runs?: number; newTokens?: number; contexts?: number[]; prefills?: number[]; maxContext?: number; batches?: number[]; log?: (s: string) => void }): Promise<BenchResult> {
  const log = o.log ?? (() => undefined);
  const newTokens = o.newTokens ?? 256;
  const runs = o.runs ?? 3;
  const { contexts, prefills, maxContext } = fitBench(o.model ? (await readConfig(o.model)).maxPositions : glm4_9bConfig().maxPositions, { ...o, newTokens });
  const t0 = performance.now();
  log(`loading ${o.model ?? "synthetic GLM-4-9B"} ...`);
  const model = await loadGlm4(o.model ?? null, { device: (o.device as "auto") ?? "auto", quantization: o.quantization ?? "int4", groupSize: o.groupSize ?? 128, scheme: o.scheme, outputLayer: o.outputLayer, maxContext, synthetic: o.model ? undefined : "glm-4-9b", prefillChunk: 2048 });
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const { ctx, engine, weights, solo: seq } = model.runtime;
    const cfg = model.config;
    const onGpu = model.device.startsWith("cuda");
    const kvBytes = onGpu ? 2 : 4;
    const weightsBytes = ctx.memory().inUse - engine.kv.nbytes;
    // The process's whole GPU use right after the load (weights, cache, CUDA context), before the bench's own
    // 2 GiB copy buffers and prefill scratch inflate it.
    const loadPeak = ctx.memory().peak;
    const processAfterLoad = onGpu ? processGpuMemory() : null;
    log("measuring copy bandwidth ...");
    const bw = onGpu ? await copyBandwidth(model) : null;
    ctx.trimCache(); // the 2 GiB of copy buffers go back to the driver, not into the process's cached blocks

    const prefill: BenchResult["prefill"] = [];
    for (const n of prefills) {
      const ids = randomIds(n, cfg.vocabSize, n);
      const times: number[] = [];
      for (let r = 0; r < runs + 1; r++) {
        seq.reset();
        const t = performance.now();
        await seq.prefill(ids);
        ctx.flush();
        if (r > 0) times.push(performance.now() - t); // the first run is the warm-up
      }
      const ms = median(times);
      prefill.push({ tokens: n, ms, tokensPerSecond: n / (ms / 1000) });
      log(`prefill ${n}: ${(n / (ms / 1000)).toFixed(0)} tok/s`);
    }
    // The whole process after the longest prompt (weights, cache, CUDA context, one chunk's scratch kept cached).
    const processAfterPrefill = onGpu && prefills.length ? processGpuMemory() : null;

    const decode: BenchResult["decode"] = [];
    const rounds = runRounds(ctx.device);
    const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
    for (const L of contexts) {
      const ids = randomIds(L, cfg.vocabSize, 1000 + L);
      const rates: number[] = [];
      for (let r = 0; r < runs + 1; r++) {
        seq.reset();
        await seq.prefill(ids);
        const steps = r === 0 ? 16 : newTokens; // warm-up run: short
        const t = performance.now();
        // As a Generation decodes (Engine.run): rounds of (pick, step) queued back to back, `rounds` at a time
        for (let i = 0; i < steps; i += rounds) await seq.run(greedy, [], Math.min(rounds, steps - i));
        const s = (performance.now() - t) / 1000;
        if (r > 0) rates.push(steps / s);
      }
      const tps = median(rates);
      const bpt = bytesPerToken(weights, cfg, L + newTokens / 2, kvBytes);
      const floor = bw ? (bw * 1e9) / bpt.total : null;
      decode.push({ context: L, tokensPerSecond: tps, msPerToken: 1000 / tps, runs: rates, bytesPerToken: bpt.total, floorTokensPerSecond: floor, shareOfFloor: floor ? tps / floor : null });
      log(`decode at ${L}: ${tps.toFixed(1)} tok/s${floor ? ` (${((100 * tps) / floor).toFixed(1)}% of ${floor.toFixed(0)} tok/s floor)` : ""}`);
    }

    // The device time of one decode step alone: the captured step replayed back to back, one flush, no host
    // round trip between tokens. Wall time per token minus this is what the host side (embedding gather,
    // input writes, the flush through the worker thread, reading the token) costs.
    const plan = await engine.stepPlan(1);
    ctx.replay(plan);
    ctx.flush();
    const reps = 50;
    const tr = performance.now();
    for (let i = 0; i < reps; i++) ctx.replay(plan);
    ctx.flush();
    const replayMs = (performance.now() - tr) / reps;

    // Per-op profile of one decode step at the last context measured.
    const prof = await ctx.profileAsync(plan, 5);
    const byOp = new Map<string, { calls: number; ms: number }>();
    for (const p of prof) {
      const e = byOp.get(p.op) ?? { calls: 0, ms: 0 };
      e.calls++;
      e.ms += p.ms;
      byOp.set(p.op, e);
    }
    const stepMs = prof.reduce((a, p) => a + p.ms, 0);
    const decodeStepOps = [...byOp.entries()].map(([op, e]) => ({ op, calls: e.calls, ms: e.ms, share: e.ms / stepMs })).sort((a, b) => b.ms - a.ms);

    const batched = o.batches?.length ? await batchedDecode(model, o.batches, newTokens, runs, log) : undefined;

    const paths = linearPaths(weights, model.device, [...new Set([1, ...(o.batches ?? []), ...prefills])]);
    for (const m of [...new Set(paths.map((p) => p.m))])
      log(`INT4 linears at M=${m}: ${paths.filter((p) => p.m === m).map((p) => `${p.linear} ${p.path}`).join(", ")}`);

    const dev = onGpu ? devices()[Number(model.device.slice(5))] : undefined;
    const mem = ctx.memory();
    const result: BenchResult = {
      date: new Date().toISOString(),
      card: dev?.name ?? "cpu",
      device: model.device,
      build: buildInfo(),
      model: o.model ?? "synthetic glm-4-9b",
      quantization: model.info.quantization,
      groupSize: model.info.groupSize,
      scheme: model.info.scheme,
      outputLayer: model.info.outputLayer,
      copyBandwidthGBs: bw,
      loadSeconds,
      prefill,
      decode,
      ...(paths.length ? { linearPaths: paths } : {}),
      memory: {
        weightsBytes,
        kvCacheBytes: engine.kv.nbytes,
        loadPeakBytes: loadPeak,
        contextPeakBytes: mem.peak,
        processGpuAfterLoadBytes: processAfterLoad,
        processGpuAfterPrefillBytes: processAfterPrefill,
        prefillTokensMax: prefills.length ? Math.max(...prefills) : 0,
        processGpuBytes: onGpu ? processGpuMemory() : null,
        deviceUsedBytes: dev ? dev.totalMemory - dev.freeMemory : null,
        maxContext,
      },
      decodeStepOps,
      decodeStepMs: stepMs,
      decodeReplayMs: replayMs,
      decodeRounds: rounds,
      batched,
    };
    return result;
  } finally {
    await model.dispose();
  }
}

/**
 * Continuous-batching decode: for each B, B sequences prefilled with different 128-token prompts in one
 * Engine of max(B) slots, then `newTokens` batched steps (greedy pick of all B rows in one flush, one step for all B);
 * aggregate tok/s = B * steps / s, median of `runs` after a 16-step warm-up run.
 */
async function batchedDecode(model: Glm4Model, batches: number[], newTokens: number, runs: number, log: (s: string) => void): Promise<NonNullable<BenchResult["batched"]>> {
  const context = 128;
  for (const b of batches) if (!Number.isInteger(b) || b < 1 || b > 128) throw new RangeError(`--batch: ${b} is not an integer in [1, 128]`);
  const be = model.runtime.newEngine({ maxBatch: Math.max(...batches), maxContext: context + newTokens + 16 });
  const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, u: 0 };
  const rounds = runRounds(model.runtime.ctx.device);
  const out: NonNullable<BenchResult["batched"]> = [];
  try {
    for (const B of batches) {
      const rates: number[] = [];
      for (let r = 0; r < runs + 1; r++) {
        const slots = Array.from({ length: B }, () => be.admit());
        for (const [i, s] of slots.entries()) {
          be.reset(s);
          await be.prefill(s, randomIds(context, model.config.vocabSize, 5000 + 17 * i));
        }
        const steps = r === 0 ? 16 : newTokens;
        const t = performance.now();
        // As the server's scheduler decodes when every slot is decoding (Engine.run, `rounds` at a time)
        for (let i = 0; i < steps; i += rounds) await be.run(slots.map((slot) => ({ slot, params: greedy })), Math.min(rounds, steps - i));
        const sec = (performance.now() - t) / 1000;
        if (r > 0) rates.push((B * steps) / sec);
        for (const s of slots) be.release(s);
      }
      const tps = median(rates);
      out.push({ batch: B, context, tokensPerSecond: tps, msPerStep: (1000 * B) / tps, runs: rates });
      log(`batched decode B=${B} at ${context}: ${tps.toFixed(1)} tok/s in all (${((1000 * B) / tps).toFixed(2)} ms a step)`);
    }
  } finally {
    await model.runtime.releaseEngine(be);
  }
  return out;
}

export function formatBench(r: BenchResult): string {
  const gib = (b: number | null) => (b === null ? "n/a" : `${(b / 2 ** 30).toFixed(2)} GiB`);
  const lines = [
    `bench: ${r.model}, ${r.quantization}${r.quantization === "int4" ? ` ${r.scheme ?? "asym"} g${r.groupSize}${r.outputLayer === "bf16" ? " out-bf16" : ""}` : ""} on ${r.device} (${r.card}), ${r.date}`,
    `copy bandwidth (read+write): ${r.copyBandwidthGBs ? `${r.copyBandwidthGBs.toFixed(0)} GB/s` : "n/a"}; load ${r.loadSeconds.toFixed(1)} s`,
    "",
    "prefill   tokens   tok/s      ms",
    ...r.prefill.map((p) => `          ${String(p.tokens).padStart(6)} ${p.tokensPerSecond.toFixed(0).padStart(7)} ${p.ms.toFixed(1).padStart(7)}`),
    "",
    `decode    context  tok/s   ms/tok  MB/tok  floor tok/s  share of floor   (${(r.decodeRounds ?? 1) > 1 ? `Engine.run: ${r.decodeRounds} rounds of pick + step queued at once` : "a pick and a step a token"})`,
    ...r.decode.map((d) => `          ${String(d.context).padStart(7)} ${d.tokensPerSecond.toFixed(1).padStart(6)} ${d.msPerToken.toFixed(2).padStart(8)} ${(d.bytesPerToken / 1e6).toFixed(0).padStart(7)} ${d.floorTokensPerSecond ? d.floorTokensPerSecond.toFixed(0).padStart(12) : "         n/a"} ${d.shareOfFloor ? `${(100 * d.shareOfFloor).toFixed(1)}%`.padStart(15) : "            n/a"}`),
    "",
    `memory: weights ${gib(r.memory.weightsBytes)}, KV cache ${gib(r.memory.kvCacheBytes)} (maxContext ${r.memory.maxContext}), allocator peak during load ${gib(r.memory.loadPeakBytes)}`,
    `        process GPU total (CUDA context included) after load ${gib(r.memory.processGpuAfterLoadBytes)}${r.memory.processGpuAfterPrefillBytes != null ? `, after the ${r.memory.prefillTokensMax}-token prompt ${gib(r.memory.processGpuAfterPrefillBytes)}` : ""}, at the end ${gib(r.memory.processGpuBytes)} (freed blocks kept for reuse included; allocator peak ${gib(r.memory.contextPeakBytes)}, the bench's 2 GiB copy buffers included)`,
    "",
    `one decode step as a graph replayed back to back: ${r.decodeReplayMs?.toFixed(3) ?? "n/a"} ms (device time; wall time per token above minus this is host work)`,
    `one decode step, ops timed one by one (sum ${r.decodeStepMs.toFixed(3)} ms; the graph replay overlaps launch gaps):`,
    ...r.decodeStepOps.map((o) => `  ${o.op.padEnd(16)} x${String(o.calls).padEnd(4)} ${o.ms.toFixed(3).padStart(8)} ms ${(100 * o.share).toFixed(1).padStart(5)}%`),
    ...(r.linearPaths?.length
      ? ["", "INT4 kernels (linearPath) by rows M:", ...[...new Set(r.linearPaths.map((p) => p.m))].map((m) => `  M=${String(m).padEnd(5)} ${r.linearPaths!.filter((p) => p.m === m).map((p) => `${p.linear}: ${p.path}`).join("; ")}`)]
      : []),
  ];
  if (r.batched?.length) {
    lines.push("", "batched decode (one engine)    B  context  tok/s in all  ms/step");
    for (const b of r.batched) lines.push(`                         ${String(b.batch).padStart(6)} ${String(b.context).padStart(8)} ${b.tokensPerSecond.toFixed(1).padStart(13)} ${b.msPerStep.toFixed(2).padStart(8)}`);
  }
  return lines.join("\n") + "\n";
}

const HELP = `glm4-int4 bench [--model DIR] [options]

Prefill and decode speed, memory and the share of the hardware limit, in one run on one device. Default: the
synthetic GLM-4-9B (random weights) at INT4 on the GPU; --model DIR benches a checkpoint (on the CPU too, e.g.
--model fixtures/tiny-glm4/original: lengths shrink to fit a small model's context).
  --contexts 128,2048      decode contexts (default: those of 128, 2048 that fit)
  --prefills 512,2048      prompt lengths timed (default: those of 512, 2048 that fit)
  --new-tokens N           tokens a decode run (default 256)
  --runs N                 timed runs, median reported (default 3)
  --batch 1,4,8            also batched decode of B sequences in one engine
  --max-context N          the KV cache (default max(8192, what the lengths need), at most the model's)
  --json                   the result as JSON; --save also writes it under bench/results/
  --quant SETTING          an INT4 setting such as asym-g128 or nf4-g64-out-bf16
  --device auto|cpu|cuda|cuda:N, --quantization int4|none, --group-size 32|64|128
`;

export async function cmdBench(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      device: { type: "string" },
      quantization: { type: "string" },
      "group-size": { type: "string" },
      quant: { type: "string" },
      runs: { type: "string" },
      "new-tokens": { type: "string" },
      contexts: { type: "string" },
      prefills: { type: "string" },
      "max-context": { type: "string" },
      batch: { type: "string" },
      json: { type: "boolean" },
      save: { type: "boolean" },
      synthetic: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  const lo = loadFromOptsChecked(o);
  const runs = numOpt(o, "runs", { int: true, min: 1, max: 1000 });
  const newTokens = numOpt(o, "new-tokens", { int: true, min: 1, max: 1 << 20 });
  const contexts = listOpt(o, "contexts", 1, 1 << 24);
  const prefills = listOpt(o, "prefills", 1, 1 << 24);
  const batches = listOpt(o, "batch", 1, 64);
  if (!o.model && (lo.device === "cpu" || !(buildInfo().backends.includes("cuda") && devices().length > 0))) {
    throw new Glm4Error("ERR_GLM4_NO_CUDA", "bench: the default (synthetic GLM-4-9B) needs a GPU and none is usable here; give --model DIR (e.g. fixtures/tiny-glm4/original) to bench a checkpoint on the CPU");
  }
  // --quant nf4-g64[-out-bf16]: the INT4 setting to bench (lib/quant/eval.ts parseSettings); one setting a run
  const q = typeof o.quant === "string" ? parseSettings(o.quant) : undefined;
  const r = await runBench({
    model: o.model,
    device: lo.device,
    quantization: lo.quantization,
    groupSize: q?.groupSize ?? lo.groupSize,
    scheme: q?.scheme,
    outputLayer: q?.outputLayer,
    runs,
    newTokens,
    contexts,
    prefills,
    maxContext: lo.maxContext,
    batches,
    log: o.json ? undefined : (s) => process.stderr.write(s + "\n"),
  });
  if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + "\n");
  else process.stdout.write(formatBench(r));
  if (o.save) {
    const dir = path.join(packageRoot(), "bench", "results");
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${r.card.replace(/[^A-Za-z0-9]+/g, "-")}_${r.date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify(r, null, 2) + "\n");
    process.stderr.write(`saved ${file}\n`);
  }
}
