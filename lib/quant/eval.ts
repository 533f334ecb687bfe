/**
 * `evaluate(dir, options)` (the `glm4-int4 eval` command, lib/cli/eval.ts): how far INT4 models are from the BF16
 * reference, in the statistics llama.cpp's `perplexity --kl-divergence` reports, in one run: the BF16 model and
 * every INT4 variant are loaded side by side in one process (on the GPU where there is one) and run on the same
 * token windows.
 *
 * The text is tokenized and cut into consecutive windows of `context` tokens (each window a fresh sequence); every
 * position t of a window but the last predicts token t + 1, so a window of T tokens scores T - 1 tokens. For each
 * scored position, with P = softmax of the reference's logits and Q = the variant's (all in float64 on the host):
 *   - NLL = -log Q[next token]; perplexity = exp(mean NLL); the ratio PPL(Q) / PPL(P) = exp(mean(NLL_Q - NLL_P));
 *   - KL(P || Q) = sum_i P_i (log P_i - log Q_i): mean, median, 99th percentile, maximum;
 *   - same top token: argmax P == argmax Q (first index on ties), as a share of the scored positions;
 *   - RMS Δp: sqrt(mean (Q[next] - P[next])^2), the change in the probability of the right token.
 * Host cost: one exp() per vocabulary entry, position and model (the reference's probabilities are computed once a
 * window and shared). Measured here on 151552-wide rows, on 2 cores
 * at load average 10: 265 ns an exp() and 38 ns a multiply-add (several times an idle core's), i.e. ~50 ms a
 * position and model; an idle core should take ~1-2 ms, ~0.5-1 s a 512-token window and model, against ~0.05 s for
 * the window's forward pass on an H200: the host statistics dominate eval's time on the GPU (scripts/gpu/quant.sh
 * measures it). If that matters, the next step is the softmaxes on the device (the softmax op) or worker threads.
 */
import path from "node:path";
import { Glm4Error } from "../errors.js";
import { INT4_SCHEMES, describeSettings, int4Settings, type Int4Scheme, type Int4Settings } from "../checkpoint/int4-format.js";
import type { DeviceOption } from "../engine/device.js";
import { detectPrequantized } from "../checkpoint/prequantized.js";
import type { Glm4Model } from "../glm4.js";

/** The statistics of one model against the reference over the scored positions. */
export interface EvalStats {
  /** "asym g128", "nf4 g64 out-bf16", or a compared checkpoint's directory. */
  label: string;
  /** What the model is: load-time quantization of the reference's checkpoint, or another checkpoint. */
  kind: "int4" | "checkpoint";
  /** How it loaded (ModelInfo: quantization, groupSize, scheme, outputLayer, awq). */
  info: Record<string, unknown>;
  ppl: number;
  /** PPL(Q) / PPL(reference), and its log (llama.cpp's "Mean ln(PPL(Q)/PPL(base))"). */
  pplRatio: number;
  lnPplRatio: number;
  klMean: number;
  klMedian: number;
  klP99: number;
  klMax: number;
  /** Share of positions whose most likely token is the reference's (0..1). */
  sameTop: number;
  /** RMS of Q[next] - P[next] (probabilities, 0..1). */
  rmsDp: number;
}

export interface EvalReport {
  model: string;
  device: string;
  context: number;
  windows: number;
  /** Scored positions (each window of T tokens scores T - 1). */
  tokens: number;
  reference: { label: string; ppl: number };
  results: EvalStats[];
  seconds: number;
}

export interface EvalProgress {
  stage: "loading" | "windows" | "done";
  /** Windows done so far, and in all. */
  done: number;
  total: number;
  /** The model that just loaded (stage "loading"). */
  model?: string;
}

export interface EvalOptions {
  /** The text to score (tokenized with the checkpoint's tokenizer); or `tokens`. */
  text?: string;
  tokens?: readonly number[];
  /** Tokens per window (default 512). */
  context?: number;
  /** Score at most this many windows (default: all). */
  maxWindows?: number;
  /**
   * INT4 settings to compare, quantized at load from the reference's checkpoint: objects or names like "asym-g128",
   * "sym-g64", "nf4-g32-out-bf16" (parseSettings). Default: ["asym-g128"] unless `compare` is given.
   */
  settings?: (string | Partial<Int4Settings>)[];
  /**
   * Other checkpoints to compare against the reference: a quantized one (an INT4 checkpoint of `quantize`, a GPTQ
   * export) loads as it is, a full-precision one in full precision (another dtype or export of the same model).
   */
  compare?: string[];
  device?: DeviceOption;
  threads?: number;
  /** Score GLM-4-9B's exact shapes with random weights (dir null; pass tokens): speed and machinery on a GPU. */
  synthetic?: "glm-4-9b";
  signal?: AbortSignal;
  onProgress?: (p: EvalProgress) => void;
}

/**
 * "asym-g128", "sym g64", "nf4-g32-out-bf16", "asym" (group 128) -> settings; ERR_GLM4_INVALID_ARGUMENT otherwise.
 */
export function parseSettings(s: string): Int4Settings {
  const m = /^(asym|sym|nf4)(?:[-_ ]g(32|64|128))?(?:[-_ ](?:out|output)[-_ ](int4|bf16))?$/i.exec(s.trim());
  if (!m) {
    throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `quantization setting ${JSON.stringify(s)} is not <scheme>[-g<group>][-out-<int4|bf16>] with scheme ${INT4_SCHEMES.join("|")} and group 32|64|128 (e.g. asym-g128, nf4-g64-out-bf16)`);
  }
  return int4Settings({ scheme: m[1].toLowerCase() as Int4Scheme, groupSize: m[2] ? Number(m[2]) : 128, outputLayer: (m[3]?.toLowerCase() as "bf16" | undefined) ?? "int4" });
}

/** Consecutive windows of `context` tokens (a last window shorter than 2 tokens scores nothing and is dropped). */
export function splitWindows(tokens: readonly number[], context: number, maxWindows = Infinity): number[][] {
  if (!Number.isInteger(context) || context < 2) throw new RangeError(`context must be an integer >= 2, got ${String(context)}`);
  const out: number[][] = [];
  for (let i = 0; i + 1 < tokens.length && out.length < maxWindows; i += context) out.push(tokens.slice(i, i + context));
  return out;
}

/** Per position of one window: log-sum-exp and argmax in float64; with `probs`, the probabilities too (f32 [T, V]). */
interface RowSummary {
  lse: Float64Array;
  top: Int32Array;
  probs?: Float32Array;
}

function summarize(logits: Float32Array, T: number, V: number, probs = false): RowSummary {
  const lse = new Float64Array(T), top = new Int32Array(T);
  const pr = probs ? new Float32Array(T * V) : undefined;
  for (let t = 0; t < T; t++) {
    const o = t * V;
    let mx = -Infinity, am = 0;
    for (let i = 0; i < V; i++) {
      const x = logits[o + i];
      if (x > mx) {
        mx = x;
        am = i;
      }
    }
    let s = 0;
    if (pr) {
      for (let i = 0; i < V; i++) {
        const e = Math.exp(logits[o + i] - mx);
        pr[o + i] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let i = 0; i < V; i++) pr[o + i] *= inv;
    } else {
      for (let i = 0; i < V; i++) s += Math.exp(logits[o + i] - mx);
    }
    lse[t] = mx + Math.log(s);
    top[t] = am;
  }
  return { lse, top, probs: pr };
}

/** The reference's summary of a window, made once and shared by every model compared with it. */
export function referenceSummary(p: Float32Array, T: number, V: number): RowSummary {
  return summarize(p, T, V, true);
}

/** Accumulates one model's statistics against the reference over windows. */
export class KlAccumulator {
  private nllP = 0;
  private nllQ = 0;
  private readonly kl: number[] = [];
  private same = 0;
  private dp2 = 0;
  constructor(readonly vocab: number) {}

  get count(): number {
    return this.kl.length;
  }

  /** One window: reference logits p and model logits q, both f32 [T, V], and the window's T tokens. */
  add(p: Float32Array, q: Float32Array, tokens: readonly number[], pSummary?: RowSummary): void {
    const V = this.vocab, T = tokens.length;
    if (p.length !== T * V || q.length !== T * V) throw new Glm4Error("ERR_GLM4_INTERNAL", `eval: logits of ${p.length} and ${q.length} values for ${T} tokens x ${V}`);
    const sp = pSummary?.probs ? pSummary : summarize(p, T, V, true);
    const pr = sp.probs!;
    const sq = summarize(q, T, V);
    for (let t = 0; t + 1 < T; t++) {
      const o = t * V, next = tokens[t + 1];
      const lp = sp.lse[t], lq = sq.lse[t];
      // KL = sum P_i ((p_i - lp) - (q_i - lq)) = sum P_i (p_i - q_i) + (lq - lp) sum P_i: no exp() beyond Q's
      // log-sum-exp (P's probabilities are the reference's, computed once a window)
      let acc = 0, mass = 0;
      for (let i = 0; i < V; i++) {
        const w = pr[o + i];
        acc += w * (p[o + i] - q[o + i]);
        mass += w;
      }
      const kl = acc + (lq - lp) * mass;
      const nP = lp - p[o + next], nQ = lq - q[o + next];
      if (!Number.isFinite(kl) || !Number.isFinite(nQ)) {
        throw new Glm4Error("ERR_GLM4_BAD_OUTPUT", `eval: the model's logits at position ${t} are not finite (NaN or Inf); the quantized weights or the kernels are broken`);
      }
      this.kl.push(Math.max(0, kl)); // rounding can leave -1e-17 where P == Q
      this.nllP += nP;
      this.nllQ += nQ;
      if (sp.top[t] === sq.top[t]) this.same++;
      this.dp2 += (Math.exp(-nQ) - Math.exp(-nP)) ** 2;
    }
  }

  /** The statistics so far (label/kind/info are the caller's). */
  stats(): Omit<EvalStats, "label" | "kind" | "info"> & { pplRef: number } {
    const n = this.kl.length;
    if (n === 0) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "eval: nothing was scored: the text needs at least 2 tokens");
    const sorted = Float64Array.from(this.kl).sort();
    const q = (f: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(f * n) - 1))]; // nearest rank
    let sum = 0;
    for (const x of this.kl) sum += x;
    return {
      ppl: Math.exp(this.nllQ / n),
      pplRef: Math.exp(this.nllP / n),
      pplRatio: Math.exp((this.nllQ - this.nllP) / n),
      lnPplRatio: (this.nllQ - this.nllP) / n,
      klMean: sum / n,
      klMedian: q(0.5),
      klP99: q(0.99),
      klMax: sorted[n - 1],
      sameTop: this.same / n,
      rmsDp: Math.sqrt(this.dp2 / n),
    };
  }
}

/** A model to compare with the reference, and how to describe it. */
export interface EvalModel {
  label: string;
  kind: "int4" | "checkpoint";
  model: Glm4Model;
}

/**
 * The core of evaluate: the reference and every model run on each window (the reference once a window); returns
 * the reference's perplexity and each model's statistics.
 */
export async function compareOnWindows(
  reference: Glm4Model,
  models: EvalModel[],
  windows: readonly (readonly number[])[],
  opts: { signal?: AbortSignal; onWindow?: (done: number) => void } = {},
): Promise<{ reference: { ppl: number }; results: EvalStats[]; tokens: number }> {
  const V = reference.config.vocabSize;
  for (const m of models) {
    if (m.model.config.vocabSize !== V) throw new Glm4Error("ERR_GLM4_SHAPE_MISMATCH", `eval: ${m.label} has a vocabulary of ${m.model.config.vocabSize}, the reference ${V}; compare checkpoints of the same model`);
  }
  const acc = models.map(() => new KlAccumulator(V));
  const refAcc = new KlAccumulator(V);
  for (let w = 0; w < windows.length; w++) {
    if (opts.signal?.aborted) throw new Glm4Error("ERR_GLM4_ABORTED", "eval was aborted", { cause: opts.signal.reason });
    const win = windows[w];
    if (win.length < 2) continue;
    const p = await reference.logits(win);
    const sp = referenceSummary(p, win.length, V);
    refAcc.add(p, p, win, sp);
    for (let i = 0; i < models.length; i++) acc[i].add(p, await models[i].model.logits(win), win, sp);
    opts.onWindow?.(w + 1);
  }
  const ref = refAcc.stats();
  return {
    reference: { ppl: ref.ppl },
    tokens: refAcc.count,
    results: models.map((m, i) => {
      const { pplRef: _, ...s } = acc[i].stats();
      return { label: m.label, kind: m.kind, info: { ...m.model.info }, ...s };
    }),
  };
}

/**
 * Scores the BF16 checkpoint in `dir` against INT4 versions of itself (options.settings, quantized at load) and other
 * checkpoints (options.compare) on a text: see the header for what is measured. Everything is loaded at once on one
 * device (options.device, default the GPU when there is one).
 */
export async function evaluate(dir: string | null, options: EvalOptions = {}): Promise<EvalReport> {
  const t0 = performance.now();
  const synthetic = options.synthetic;
  if (synthetic !== undefined && (synthetic !== "glm-4-9b" || dir !== null)) throw new TypeError('evaluate: synthetic must be "glm-4-9b", with dir null');
  if (!synthetic && (typeof dir !== "string" || dir === "")) throw new TypeError("evaluate(dir): dir must be the path of the BF16 checkpoint (the reference)");
  if (synthetic && options.compare?.length) throw new TypeError("evaluate: a synthetic model has no checkpoint to compare with");
  const context = options.context ?? 512;
  if (!Number.isInteger(context) || context < 2) throw new RangeError(`context must be an integer >= 2, got ${String(context)}`);
  if ((options.text === undefined) === (options.tokens === undefined)) throw new TypeError("evaluate: pass exactly one of text and tokens");
  const settings = (options.settings ?? (options.compare?.length ? [] : ["asym-g128"])).map((s) => (typeof s === "string" ? parseSettings(s) : int4Settings(s)));
  const compare = options.compare ?? [];
  const { loadGlm4 } = await import("../glm4.js");
  const common = { device: options.device ?? "auto", threads: options.threads, maxContext: context, signal: options.signal, ...(synthetic ? { synthetic } : {}) };
  const loaded: Glm4Model[] = [];
  const progress = (p: EvalProgress) => options.onProgress?.(p);
  try {
    const reference = await loadGlm4(dir, { ...common, quantization: "none" });
    loaded.push(reference);
    let tokens: readonly number[];
    if (options.tokens !== undefined) tokens = options.tokens;
    else {
      if (!reference.tokenizer) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `${dir ?? "the synthetic model"}: has no tokenizer; pass tokens instead of text`);
      tokens = reference.tokenizer.encode(options.text!);
    }
    const windows = splitWindows(tokens, context, options.maxWindows ?? Infinity);
    if (windows.length === 0) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `eval: the text has ${tokens.length} token(s); it needs at least 2`);
    progress({ stage: "loading", done: 0, total: windows.length, model: "bf16" });
    const models: EvalModel[] = [];
    for (const s of settings) {
      const m = await loadGlm4(dir, { ...common, quantization: "int4", ...s });
      loaded.push(m);
      models.push({ label: describeSettings(s), kind: "int4", model: m });
      progress({ stage: "loading", done: 0, total: windows.length, model: describeSettings(s) });
    }
    for (const c of compare) {
      // a quantized checkpoint (glm4_int4.json, GPTQ) loads as it is; a full-precision one as full precision
      const pre = await detectPrequantized(c).catch(() => null);
      const m = await loadGlm4(c, { ...common, quantization: pre ? "int4" : "none" });
      loaded.push(m);
      models.push({ label: path.resolve(c), kind: "checkpoint", model: m });
      progress({ stage: "loading", done: 0, total: windows.length, model: c });
    }
    const r = await compareOnWindows(reference, models, windows, { signal: options.signal, onWindow: (done) => progress({ stage: "windows", done, total: windows.length }) });
    progress({ stage: "done", done: windows.length, total: windows.length });
    return {
      model: dir === null ? `synthetic ${synthetic}` : path.resolve(dir),
      device: reference.device,
      context,
      windows: windows.length,
      tokens: r.tokens,
      reference: { label: "bf16 (reference)", ppl: r.reference.ppl },
      results: r.results,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    for (const m of loaded.reverse()) await m.dispose().catch(() => undefined);
  }
}

/** The report as a table for people. */
export function formatEvalReport(r: EvalReport): string {
  const head = ["model", "PPL", "PPL ratio", "mean KL", "median KL", "KL p99", "KL max", "same top", "RMS Δp"];
  const f = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : String(x));
  const rows = [
    [r.reference.label, f(r.reference.ppl, 3), "1.0000", "-", "-", "-", "-", "-", "-"],
    ...r.results.map((s) => [s.label, f(s.ppl, 3), f(s.pplRatio), f(s.klMean, 5), f(s.klMedian, 5), f(s.klP99, 5), f(s.klMax, 5), `${(100 * s.sameTop).toFixed(2)} %`, `${(100 * s.rmsDp).toFixed(3)} %`]),
  ];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ");
  return [
    `eval: ${r.model} on ${r.device}: ${r.windows} window(s) of up to ${r.context} tokens, ${r.tokens} scored tokens, ${r.seconds.toFixed(1)} s`,
    line(head),
    line(w.map((n) => "-".repeat(n))),
    ...rows.map(line),
    "KL = KL(bf16 || model) of the next-token distributions (nats); same top = the most likely token agrees; RMS Δp = RMS change of the right token's probability.",
  ].join("\n");
}
