/**
 * `glm4-int4 bench-serve`: a load benchmark of a RUNNING OpenAI-compatible server (ours or any other), driven
 * through the official `openai` client, as vLLM's serving benchmark does:
 *   - `--num-prompts` requests of random token ids (a /v1/completions prompt may be an array of ids), prompt and
 *     output lengths drawn from a distribution (fixed, uniform or normal around --input-len / --output-len,
 *     seeded);
 *   - arrivals as a Poisson process at `--rate` requests a second (default: all at once), and/or at most
 *     `--concurrency` requests in flight;
 *   - every request streams; the time to first token (TTFT) is the first chunk's arrival, the inter-token
 *     latencies (ITL) the gaps between chunks, TPOT (latency - TTFT) / (output tokens - 1);
 *   - the report: request throughput, output and total token throughput, TTFT / TPOT / ITL mean, p50 and p99;
 *     a table for people, or JSON (`--json`).
 */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { rng } from "../engine/generation.js";

export interface BenchServeOptions {
  baseUrl: string;
  apiKey?: string;
  /** The model name sent in each request (default: the first of /v1/models). */
  model?: string;
  numPrompts: number;
  inputLen: number;
  outputLen: number;
  /** How lengths spread around inputLen/outputLen: fixed; uniform in [len (1 - s), len (1 + s)]; normal, sd = s len. */
  lenDist?: "fixed" | "uniform" | "normal";
  lenSpread?: number;
  /** Requests a second, Poisson arrivals (Infinity: all at once). */
  rate?: number;
  /** Requests in flight at most (default: no limit). */
  concurrency?: number;
  seed?: number;
  /** Token ids of the prompts are drawn from [0, vocab) (default 500: every GLM-4 tokenizer has them). */
  vocab?: number;
  /** Per-request timeout in ms (default 600000). */
  timeoutMs?: number;
  log?: (s: string) => void;
}

interface Stat {
  mean: number;
  p50: number;
  p99: number;
}

export interface BenchServeResult {
  date: string;
  baseUrl: string;
  model: string;
  numPrompts: number;
  rate: number | null;
  concurrency: number | null;
  lenDist: string;
  inputLen: number;
  outputLen: number;
  seed: number;
  durationS: number;
  completed: number;
  failed: number;
  errors: string[];
  totalInputTokens: number;
  totalOutputTokens: number;
  requestThroughput: number;
  outputThroughput: number;
  totalTokenThroughput: number;
  ttftMs: Stat;
  tpotMs: Stat;
  itlMs: Stat;
  e2eLatencyMs: Stat;
}

/** Percentile by linear interpolation between closest ranks (numpy's default), of a non-empty list. */
export function percentile(xs: readonly number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const r = (p / 100) * (s.length - 1);
  const lo = Math.floor(r), hi = Math.ceil(r);
  return s[lo] + (s[hi] - s[lo]) * (r - lo);
}

/** Mean, p50 and p99 of the finite values (a request that generated nothing has no TTFT). */
const stat = (all: readonly number[]): Stat => {
  const xs = all.filter(Number.isFinite);
  return { mean: xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN, p50: percentile(xs, 50), p99: percentile(xs, 99) };
};

/** n lengths around `len` from the distribution (integers >= 1), seeded. */
export function drawLengths(n: number, len: number, dist: "fixed" | "uniform" | "normal", spread: number, random: () => number): number[] {
  return Array.from({ length: n }, () => {
    let x = len;
    if (dist === "uniform") x = len * (1 - spread + 2 * spread * random());
    else if (dist === "normal") {
      const u = Math.max(random(), 1e-12), v = random();
      x = len + spread * len * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
    return Math.max(1, Math.round(x));
  });
}

export async function runBenchServe(o: BenchServeOptions): Promise<BenchServeResult> {
  const log = o.log ?? (() => undefined);
  const dist = o.lenDist ?? "fixed";
  const spread = o.lenSpread ?? 0.25;
  const seed = o.seed ?? 0;
  const vocab = o.vocab ?? 500;
  const rate = o.rate ?? Infinity;
  const { default: OpenAI } = await import("openai");
  const client = new OpenAI({ baseURL: o.baseUrl, apiKey: o.apiKey ?? "none", maxRetries: 0, timeout: o.timeoutMs ?? 600_000 });
  const model = o.model ?? (await client.models.list()).data[0]?.id ?? "default";
  const random = rng(seed);
  const inLens = drawLengths(o.numPrompts, o.inputLen, dist, spread, random);
  const outLens = drawLengths(o.numPrompts, o.outputLen, dist, spread, random);
  const prompts = inLens.map((n) => Array.from({ length: n }, () => Math.floor(random() * vocab)));
  // Poisson arrivals: exponential gaps of mean 1 / rate, from the same seed.
  const arrivals: number[] = [];
  let t = 0;
  for (let i = 0; i < o.numPrompts; i++) {
    arrivals.push(t);
    if (Number.isFinite(rate)) t += -Math.log(1 - random()) / rate;
  }
  log(`bench-serve: ${o.numPrompts} requests to ${o.baseUrl} (model ${model}), input ${dist} ~${o.inputLen}, output ${dist} ~${o.outputLen}, rate ${Number.isFinite(rate) ? `${rate}/s` : "inf"}, concurrency ${o.concurrency ?? "unlimited"}`);

  interface Rec {
    ok: boolean;
    error?: string;
    start: number;
    ttft: number;
    latency: number;
    itl: number[];
    outTokens: number;
    inTokens: number;
  }
  const recs: Rec[] = [];
  let inFlight = 0;
  const waiters: (() => void)[] = [];
  const acquire = async () => {
    if (o.concurrency === undefined) return;
    while (inFlight >= o.concurrency) await new Promise<void>((r) => waiters.push(r));
    inFlight++;
  };
  const releaseSlot = () => {
    if (o.concurrency === undefined) return;
    inFlight--;
    waiters.shift()?.();
  };

  const one = async (i: number): Promise<void> => {
    await acquire();
    const rec: Rec = { ok: false, start: performance.now(), ttft: NaN, latency: NaN, itl: [], outTokens: 0, inTokens: prompts[i].length };
    try {
      const stream = await client.completions.create({ model, prompt: prompts[i], max_tokens: outLens[i], temperature: 0, stream: true, stream_options: { include_usage: true } });
      let last = -1, chunks = 0;
      for await (const c of stream) {
        if (c.usage) {
          rec.outTokens = c.usage.completion_tokens;
          rec.inTokens = c.usage.prompt_tokens;
        }
        const ch = c.choices?.[0];
        if (!ch || ch.finish_reason) continue;
        const now = performance.now();
        if (last < 0) rec.ttft = now - rec.start;
        else rec.itl.push(now - last);
        last = now;
        chunks++;
      }
      rec.latency = performance.now() - rec.start;
      if (!rec.outTokens) rec.outTokens = chunks;
      rec.ok = true;
    } catch (e) {
      rec.error = (e as Error).message;
    } finally {
      releaseSlot();
    }
    recs.push(rec);
  };

  const t0 = performance.now();
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < o.numPrompts; i++) {
    const wait = t0 + arrivals[i] * 1000 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    jobs.push(one(i));
  }
  await Promise.all(jobs);
  const durationS = (performance.now() - t0) / 1000;

  const ok = recs.filter((r) => r.ok);
  const outTotal = ok.reduce((a, r) => a + r.outTokens, 0), inTotal = ok.reduce((a, r) => a + r.inTokens, 0);
  const tpot = ok.filter((r) => r.outTokens > 1).map((r) => (r.latency - r.ttft) / (r.outTokens - 1));
  const errors = [...new Set(recs.filter((r) => !r.ok).map((r) => r.error!))].slice(0, 5);
  return {
    date: new Date().toISOString(),
    baseUrl: o.baseUrl,
    model,
    numPrompts: o.numPrompts,
    rate: Number.isFinite(rate) ? rate : null,
    concurrency: o.concurrency ?? null,
    lenDist: dist,
    inputLen: o.inputLen,
    outputLen: o.outputLen,
    seed,
    durationS,
    completed: ok.length,
    failed: recs.length - ok.length,
    errors,
    totalInputTokens: inTotal,
    totalOutputTokens: outTotal,
    requestThroughput: ok.length / durationS,
    outputThroughput: outTotal / durationS,
    totalTokenThroughput: (inTotal + outTotal) / durationS,
    ttftMs: stat(ok.map((r) => r.ttft)),
    tpotMs: stat(tpot),
    itlMs: stat(ok.flatMap((r) => r.itl)),
    e2eLatencyMs: stat(ok.map((r) => r.latency)),
  };
}

export function formatBenchServe(r: BenchServeResult): string {
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
  const row = (k: string, v: string) => `${k.padEnd(36)}${v.padStart(14)}`;
  const st = (name: string, s: Stat) => [row(`Mean ${name} (ms):`, f(s.mean)), row(`Median ${name} (ms):`, f(s.p50)), row(`P99 ${name} (ms):`, f(s.p99))];
  return (
    [
      "============ Serving Benchmark Result ============",
      row("Model:", r.model),
      row("Request rate (req/s):", r.rate === null ? "inf" : f(r.rate)),
      row("Max concurrency:", r.concurrency === null ? "none" : String(r.concurrency)),
      row("Successful requests:", String(r.completed)),
      row("Failed requests:", String(r.failed)),
      row("Benchmark duration (s):", f(r.durationS)),
      row("Total input tokens:", String(r.totalInputTokens)),
      row("Total generated tokens:", String(r.totalOutputTokens)),
      row("Request throughput (req/s):", f(r.requestThroughput)),
      row("Output token throughput (tok/s):", f(r.outputThroughput)),
      row("Total token throughput (tok/s):", f(r.totalTokenThroughput)),
      "---------------Time to First Token----------------",
      ...st("TTFT", r.ttftMs),
      "-----Time per Output Token (excl. 1st token)------",
      ...st("TPOT", r.tpotMs),
      "---------------Inter-token Latency----------------",
      ...st("ITL", r.itlMs),
      "==================================================",
      ...r.errors.map((e) => `error: ${e}`),
    ].join("\n") + "\n"
  );
}

const HELP = `glm4-int4 bench-serve --base-url URL [options]   (a load benchmark of a running server)

  --base-url URL          the server's OpenAI base URL (default http://127.0.0.1:8000/v1)
  --api-key KEY           sent as the bearer key (default: GLM4_API_KEY or none)
  --model NAME            model name in the requests (default: the first of /v1/models)
  --num-prompts N         requests (default 100)
  --input-len N           prompt tokens, random ids (default 128)
  --output-len N          max_tokens of each request (default 128)
  --len-dist D            fixed | uniform | normal lengths around those (default fixed)
  --len-spread S          uniform: +-S of the length; normal: sd S of the length (default 0.25)
  --rate R                requests a second, Poisson arrivals (default inf: all at once)
  --concurrency C         requests in flight at most (default: no limit)
  --seed N                seed of the lengths, ids and arrivals (default 0)
  --vocab N               prompt ids are drawn from [0, N) (default 500)
  --json                  print the result as JSON
`;

export async function cmdBenchServe(argv: string[]): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      "base-url": { type: "string" },
      "api-key": { type: "string" },
      model: { type: "string" },
      "num-prompts": { type: "string" },
      "input-len": { type: "string" },
      "output-len": { type: "string" },
      "len-dist": { type: "string" },
      "len-spread": { type: "string" },
      rate: { type: "string" },
      concurrency: { type: "string" },
      seed: { type: "string" },
      vocab: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  const bad = (m: string) => new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", m);
  const int = (name: string, def: number | undefined, min: number): number | undefined => {
    const v = o[name as keyof typeof o];
    if (v === undefined) return def;
    const n = Number(v);
    if (typeof v !== "string" || !/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw bad(`--${name} must be an integer >= ${min}, got ${String(v)}`);
    return n;
  };
  const num = (name: string, def: number, ok: (x: number) => boolean, what: string): number => {
    const v = o[name as keyof typeof o];
    if (v === undefined) return def;
    const n = v === "inf" ? Infinity : Number(v);
    if (typeof v !== "string" || v.trim() === "" || Number.isNaN(n) || !ok(n)) throw bad(`--${name} must be ${what}, got ${String(v)}`);
    return n;
  };
  const dist = (o["len-dist"] as string | undefined) ?? "fixed";
  if (!["fixed", "uniform", "normal"].includes(dist)) throw bad(`--len-dist must be fixed, uniform or normal, got ${dist}`);
  const baseUrl = (o["base-url"] as string | undefined) ?? "http://127.0.0.1:8000/v1";
  if (!/^https?:\/\//.test(baseUrl)) throw bad(`--base-url must be an http(s) URL, got ${baseUrl}`);
  const r = await runBenchServe({
    baseUrl,
    apiKey: (o["api-key"] as string | undefined) ?? (process.env.GLM4_API_KEY || undefined),
    model: o.model as string | undefined,
    numPrompts: int("num-prompts", 100, 1)!,
    inputLen: int("input-len", 128, 1)!,
    outputLen: int("output-len", 128, 1)!,
    lenDist: dist as "fixed",
    lenSpread: num("len-spread", 0.25, (x) => x >= 0 && x <= 1, "a number in [0, 1]"),
    rate: num("rate", Infinity, (x) => x > 0, "a positive number or inf"),
    concurrency: int("concurrency", undefined, 1),
    seed: int("seed", 0, 0),
    vocab: int("vocab", 500, 1),
    log: o.json ? undefined : (s) => process.stderr.write(s + "\n"),
  });
  process.stdout.write(o.json ? JSON.stringify(r, null, 2) + "\n" : formatBenchServe(r));
  if (r.completed === 0) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `bench-serve: no request succeeded (${r.errors[0] ?? "no error text"})`);
}
