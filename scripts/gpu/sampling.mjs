// The sampling kernels on the GPU (issue 12 sampling point, batched sampling of issue 14); run by
// scripts/gpu/sampling.sh, which says what it prints. Loads the addon directly (build/Release, sm_90a).
//   1. validate: for every kernel variant (GLM4_SAMPLING_BLOCKS = auto, single, 4, 8), every setting and
//      B = 1, 8, 64 rows of GLM-4's vocabulary (151552), the picks against the CPU backend on the same inputs
//      (poisoned outputs). Peaked rows must agree exactly; flat rows (the deep path: picks thousands of tokens
//      deep, each token ~7e-6 of the mass) may differ where u or the top-p cut lies within 1e-5 of a boundary:
//      such a pick is checked against the CPU's sorted order and counted as "near".
//   2. copy bandwidth (a 512 MB device copy) and the time to read B rows of logits at that bandwidth.
//   3. time: each op captured 20 times in one plan, replayed as a CUDA graph (wall clock over the replays / 20:
//      device time without the host's launch cost), and the op alone through profile() (with launch cost).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const N = require(path.resolve("build/Release/glm4_native.node"));
const OUT = process.env.OUT || "/tmp/sampling-out";
fs.mkdirSync(OUT, { recursive: true });

// SAMPLING_DRY=1: the same script on the CPU backend at V = 4096 (checks the script itself, here).
const DRY = process.env.SAMPLING_DRY === "1";
const V = DRY ? 4096 : 151552;
const BS = DRY ? [1, 8] : [1, 8, 64];
const VARIANTS = ["auto", "single", "4", "8"];
const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1);

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function normals(rnd, n, std) {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = rnd() || 1e-12, u2 = rnd();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    x[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) x[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return x;
}
// LLM-like rows: normal(0, 2) with 30 tokens lifted by 6..12 (a peaked head over a long flat tail).
function peaked(rnd, b) {
  const x = normals(rnd, b * V, 2);
  for (let i = 0; i < b; ++i) for (let j = 0; j < 30; ++j) x[i * V + Math.floor(rnd() * V)] += 6 + 6 * rnd();
  return x;
}
const flat = (rnd, b) => normals(rnd, b * V, 0.3);

const SETTINGS = [
  { name: "greedy: argmax op", op: "argmax" },
  { name: "greedy: sample t=0", t: 0 },
  { name: "t=0.8 top-p 0.8", t: 0.8, topP: 0.8 },
  { name: "top-k 40", t: 1, topK: 40 },
  { name: "min-p 0.05", t: 1, minP: 0.05 },
  { name: "t=0.8 top-p 0.8 + penalty 1.2 (257 ids)", t: 0.8, topP: 0.8, pen: 1.2 },
  { name: "flat logits, t=1 (no cut)", t: 1, flat: true },
  { name: "flat logits, top-p 0.9", t: 1, topP: 0.9, flat: true },
];

const gpu = new N.Context(DRY ? "cpu" : "cuda");
const cpu = new N.Context("cpu", 16);
const rnd = mulberry32(12345);
const rowsPeaked = peaked(rnd, 64), rowsFlat = flat(rnd, 64);
const dev = { peaked: gpu.fromBuffer("f32", [64, V], rowsPeaked), flat: gpu.fromBuffer("f32", [64, V], rowsFlat) };
const host = { peaked: cpu.fromBuffer("f32", [64, V], rowsPeaked), flat: cpu.fromBuffer("f32", [64, V], rowsFlat) };

// Inputs of one (setting, B): params [B,5], topK [B], penalty ids [B,257] (256 random + the row's maximum), lengths.
function inputs(s, b) {
  const r = mulberry32(1000 * b + SETTINGS.indexOf(s));
  const pv = new Float32Array(b * 5), kv = new Int32Array(b), ids = new Int32Array(b * 257), len = new Int32Array(b);
  const src = s.flat ? rowsFlat : rowsPeaked;
  for (let i = 0; i < b; ++i) {
    pv.set([s.t ?? 0, s.topP ?? 1, s.minP ?? 0, r(), s.pen ?? 1], i * 5);
    kv[i] = s.topK ?? 0;
    let best = 0;
    for (let j = 1; j < V; ++j) if (src[i * V + j] > src[i * V + best]) best = j;
    for (let j = 0; j < 256; ++j) ids[i * 257 + j] = Math.floor(r() * V);
    ids[i * 257 + 256] = best;
    len[i] = s.pen ? 257 : 0;
  }
  return { pv, kv, ids, len };
}
function tensors(ctx, s, b, inp) {
  const logits = (ctx === gpu ? dev : host)[s.flat ? "flat" : "peaked"].slice0(0, b);
  const t = {
    logits,
    out: ctx.fromBuffer("i32", [b], new Int32Array(b).fill(-1)),
    params: ctx.fromBuffer("f32", [b, 5], inp.pv),
    topK: ctx.fromBuffer("i32", [b], inp.kv),
    ids: s.pen ? ctx.fromBuffer("i32", [b, 257], inp.ids) : null,
    len: s.pen ? ctx.fromBuffer("i32", [b], inp.len) : null,
  };
  t.run = () => (s.op === "argmax" ? ctx.argmax(t.out, logits) : ctx.sample(t.out, logits, t.params, t.topK, t.ids, t.len));
  t.dispose = () => Object.values(t).forEach((x) => x && typeof x === "object" && x.dispose?.());
  return t;
}
function setVariant(v) {
  if (v === "auto") delete process.env.GLM4_SAMPLING_BLOCKS;
  else process.env.GLM4_SAMPLING_BLOCKS = v;
}

// Whether `id` is an acceptable pick when every cumulative boundary (top-p, min-p floor, inverse CDF) may be
// misjudged by up to delta in probability (test/helpers/reference.ts samplePickWithin, for plain node).
function pickWithin(row, p, id, delta) {
  const v = row.length;
  let mx = -Infinity;
  for (let j = 0; j < v; ++j) mx = Math.max(mx, row[j] / p.temperature);
  const pr = new Float64Array(v);
  let sum = 0;
  for (let j = 0; j < v; ++j) sum += pr[j] = Math.exp(row[j] / p.temperature - mx);
  for (let j = 0; j < v; ++j) pr[j] /= sum;
  const order = Array.from({ length: v }, (_, j) => j).sort((a, b) => pr[b] - pr[a] || a - b);
  const cum = new Float64Array(v);
  for (let j = 0, c = 0; j < v; ++j) cum[j] = c += pr[order[j]];
  const keepWith = (slack) => {
    let keep = p.topK > 0 ? Math.min(v, p.topK) : v;
    if (p.minP > 0) {
      const floor = p.minP * pr[order[0]] - slack;
      let n = 1;
      while (n < keep && pr[order[n]] >= floor) ++n;
      keep = n;
    }
    if (p.topP > 0 && p.topP < 1) {
      let n = 0;
      while (n < keep && !(cum[n] >= p.topP + slack)) ++n;
      keep = Math.max(Math.min(n + 1, keep), 1);
    }
    return keep;
  };
  const lo = keepWith(-delta), hi = keepWith(delta);
  const r = order.indexOf(id);
  if (r < 0 || r >= hi) return `rank ${r} not kept (${hi} kept at most)`;
  const before = r > 0 ? cum[r - 1] : 0, after = cum[r];
  const tLo = p.u * cum[lo - 1] - delta, tHi = p.u * cum[hi - 1] + delta;
  return after < tLo || before > tHi ? `rank ${r} covers [${before}, ${after}), u * mass in [${tLo + delta}, ${tHi - delta}]` : null;
}

const log = [];
const say = (s) => {
  console.log(s);
  log.push(s);
};
const result = { card: N.devices()[0]?.name, V, validation: [], timing: [], copyGBs: null };

// ---------------------------------------------------------------- 1. validation
say(`== validation vs the CPU backend (${elapsed()} s)`);
let failures = 0;
const cpuPicks = new Map();
for (const s of SETTINGS)
  for (const b of BS) {
    const inp = inputs(s, b);
    const tc = tensors(cpu, s, b, inp);
    tc.run();
    cpuPicks.set(`${s.name}|${b}`, { picks: Array.from(tc.out.read()), inp });
    tc.dispose();
  }
say(`cpu picks done (${elapsed()} s)`);
for (const variant of VARIANTS) {
  setVariant(variant);
  for (const s of SETTINGS)
    for (const b of BS) {
      const { picks: want, inp } = cpuPicks.get(`${s.name}|${b}`);
      const tg = tensors(gpu, s, b, inp);
      let got;
      try {
        tg.run();
        got = Array.from(tg.out.read());
      } catch (e) {
        say(`FAIL ${variant} | ${s.name} | B=${b}: ${e.message}`);
        failures++;
        tg.dispose();
        continue;
      }
      tg.dispose();
      let exact = 0, near = 0, bad = [];
      for (let i = 0; i < b; ++i) {
        if (got[i] === want[i]) exact++;
        else if (s.flat && got[i] >= 0 && got[i] < V) {
          const row = rowsFlat.subarray(i * V, (i + 1) * V);
          const p = { temperature: s.t, topP: s.topP ?? 1, minP: s.minP ?? 0, topK: s.topK ?? 0, u: inp.pv[i * 5 + 3] };
          const e = pickWithin(row, p, got[i], 1e-5);
          if (e === null) near++;
          else bad.push(`row ${i}: ${got[i]} want ${want[i]} (${e})`);
        } else bad.push(`row ${i}: ${got[i]} want ${want[i]}`);
      }
      const ok = bad.length === 0;
      if (!ok) failures++;
      result.validation.push({ variant, setting: s.name, B: b, exact, near, bad: bad.slice(0, 5) });
      say(`${ok ? "ok  " : "FAIL"} ${variant.padEnd(6)} | ${s.name.padEnd(40)} | B=${String(b).padStart(2)}: ${exact}/${b} equal${near ? `, ${near} near a boundary` : ""}${ok ? "" : ` | ${bad.slice(0, 3).join("; ")}`}`);
    }
}
setVariant("auto");
say(`validation: ${failures} failing (${elapsed()} s)`);
result.validationFailures = failures;

// ---------------------------------------------------------------- 2. copy bandwidth
{
  const n = DRY ? 1 << 20 : 128 << 20; // 512 MB of f32
  const a = gpu.empty("f32", [n]), b = gpu.empty("f32", [n]);
  gpu.fillRandom(a, 1, 0, 1);
  gpu.flush();
  gpu.beginCapture();
  gpu.copy(b, a);
  const plan = gpu.endCapture();
  const ms = gpu.profile(plan, 20)[0].ms;
  result.copyGBs = (2 * n * 4) / (ms * 1e6);
  say(`copy bandwidth (read + write): ${result.copyGBs.toFixed(0)} GB/s`);
  plan.dispose();
  a.dispose();
  b.dispose();
}

// ---------------------------------------------------------------- 3. timing
say(`== timing (${elapsed()} s)`);
const K = 20;
for (const variant of VARIANTS) {
  setVariant(variant);
  for (const s of SETTINGS)
    for (const b of BS) {
      if (result.validation.find((x) => x.variant === variant && x.setting === s.name && x.B === b && x.bad.length)) continue;
      const inp = cpuPicks.get(`${s.name}|${b}`).inp;
      const tg = tensors(gpu, s, b, inp);
      try {
        gpu.beginCapture();
        for (let k = 0; k < K; ++k) tg.run();
        const plan = gpu.endCapture();
        gpu.replay(plan); // records the CUDA graph (the variant is chosen now)
        gpu.flush();
        const reps = 10;
        const w0 = process.hrtime.bigint();
        for (let r = 0; r < reps; ++r) gpu.replay(plan);
        gpu.flush();
        const us = Number(process.hrtime.bigint() - w0) / 1e3 / (reps * K);
        const prof = gpu.profile(plan, 2);
        const usLaunch = (prof.reduce((a, x) => a + x.ms, 0) / prof.length) * 1e3;
        const readUs = (b * V * 4) / (result.copyGBs * 1e3);
        result.timing.push({ variant, setting: s.name, B: b, us, usWithLaunch: usLaunch, readUs });
        plan.dispose();
      } catch (e) {
        say(`timing failed: ${variant} | ${s.name} | B=${b}: ${e.message}`);
      }
      tg.dispose();
    }
  if ((Date.now() - t0) / 1000 > 45) {
    say(`stopping the timing early at ${elapsed()} s (budget)`);
    break;
  }
}
setVariant("auto");
fs.writeFileSync(path.join(OUT, "sampling.json"), JSON.stringify(result, null, 1));

// ---------------------------------------------------------------- table
say(`\n== sampling on ${result.card}: us per call (graph replay, device time); V = ${V}; copy ${result.copyGBs?.toFixed(0)} GB/s`);
const head = ["setting", "B", ...VARIANTS.map((v) => v.padStart(8)), "read@copy", "auto+launch"];
say(head.join(" | "));
for (const s of SETTINGS)
  for (const b of BS) {
    const cell = (v) => {
      const x = result.timing.find((t) => t.variant === v && t.setting === s.name && t.B === b);
      return x ? x.us.toFixed(1).padStart(8) : "       -";
    };
    const a = result.timing.find((t) => t.variant === "auto" && t.setting === s.name && t.B === b);
    say([s.name.padEnd(40), String(b).padStart(2), ...VARIANTS.map(cell), a ? a.readUs.toFixed(1).padStart(9) : "        -", a ? a.usWithLaunch.toFixed(1).padStart(11) : "          -"].join(" | "));
  }
say(`validation failures: ${failures}; total ${elapsed()} s`);
gpu.dispose();
cpu.dispose();
process.exit(failures ? 1 : 0);
