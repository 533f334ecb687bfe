/**
 * The op perf harness: each case of bench/ops/cases.ts is set up, run once and checked against the float64
 * reference, and only then timed. Timing: `calls` back-to-back calls (rotating through cold copies of the weights
 * or KV cache) are captured into one plan, instantiated (a CUDA graph on CUDA), replayed once to warm up, then
 * replayed `reps` times, each replay timed on its own with device events (the context's profile of a one-op plan
 * that replays it). The figure is the median replay over `calls`: a call's time including the ~1 us a graph node
 * costs, which is what a captured decode step pays.
 *
 * Ceilings measured in the same run: the device copy bandwidth (read + write, this harness's own copy op), and
 * where python3 with torch is present, cuBLAS BF16 on the same GEMM shapes and torch's scaled_dot_product_attention
 * on the prefill attention shapes (bench/ops/torch_ceilings.py, timed the same way: a CUDA graph of back-to-back
 * calls). Without torch the cuBLAS columns are empty and the report says why.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";

import type { DeviceInfo, NativeContext, NativeModule, NativePlan } from "../../lib/engine/native.js";
import { Rng } from "../../test/helpers/rng.js";
import { type Dims, GLM4_9B, type PerfCase, PerfEnv, type PerfRun, perfCases } from "./cases.js";

export interface OpsBenchOptions {
  device: string;
  dims: Dims;
  /** Only cases whose name matches. */
  filter?: RegExp;
  /** Timed replays per case (median reported). */
  reps: number;
  /** Aim for this much device time per timed replay (calls per graph chosen from a first estimate). */
  targetMs: number;
  /** python3 with torch for the cuBLAS / SDPA ceilings; null skips them. */
  python: string | null;
  /** The repository root (for the torch helper's path). */
  root: string;
  /** The cases to run instead of perfCases(dims) (tests). */
  cases?: PerfCase[];
  /** Called with the result so far after each case (to save partial results of a run cut short). */
  onProgress?: (partial: OpsBenchResult) => void;
  log: (line: string) => void;
}

export interface CaseFigure {
  name: string;
  op: string;
  phase: PerfCase["phase"];
  bytes: number;
  flop: number;
  /** "ok", or what disagreed with the reference (the case is then not timed). */
  check: string;
  /** Calls per timed replay, and cold input copies rotated through. */
  calls?: number;
  copies?: number;
  /** Per call: median and fastest of the timed replays (ms). */
  ms?: number;
  msMin?: number;
  gbps?: number;
  tflops?: number;
  /** Share of the copy bandwidth (bytes / time over the measured read + write bandwidth). */
  shareCopy?: number;
  /** cuBLAS BF16 on the same [M, N, K] (ms) and our share of its speed (its time over ours). */
  cublasMs?: number;
  shareCublas?: number;
  /** torch SDPA (flash) on the same prefill attention (ms) and our share of its speed. */
  sdpaMs?: number;
  shareSdpa?: number;
  error?: string;
}

export interface OpsBenchResult {
  kind: "glm4-int4-native ops bench";
  date: string;
  device: string;
  card: string;
  deviceInfo: DeviceInfo | null;
  dims: "glm4-9b" | "tiny";
  options: { filter: string | null; reps: number; targetMs: number };
  ceilings: {
    /** Device copy, read + write (GB/s), this run. */
    copyGBs: number | null;
    torch: { ok: boolean; note: string; version?: string; device?: string };
  };
  cases: CaseFigure[];
  /** Ops of opList() that no perf case exercises. */
  opsWithoutCase: string[];
}

// ------------------------------------------------------------------ timing

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Device time (ms) of each of `reps` replays of plan, each timed on its own. */
function timeReplays(ctx: NativeContext, plan: NativePlan, reps: number): number[] {
  // A one-op plan whose op replays `plan`: profile() times that op with events around it (never replayed itself:
  // a replay inside a graph capture is not allowed).
  ctx.beginCapture();
  ctx.replay(plan);
  const outer = ctx.endCapture();
  try {
    const out: number[] = [];
    for (let r = 0; r < reps; ++r) out.push(ctx.profile(outer, 1)[0].ms);
    return out;
  } finally {
    outer.dispose();
  }
}

async function capture(ctx: NativeContext, run: PerfRun, calls: number): Promise<NativePlan> {
  ctx.beginCapture();
  try {
    for (let i = 0; i < calls; ++i) run.record(i);
  } catch (e) {
    (await ctx.endCaptureAsync()).dispose();
    throw e;
  }
  const plan = await ctx.endCaptureAsync(); // the CUDA graph instantiated off the JS thread
  ctx.replay(plan); // warm-up replay
  await ctx.flushAsync();
  return plan;
}

/** Per-call device time of a case: { ms (median), msMin, calls }. */
async function timeRun(ctx: NativeContext, run: PerfRun, reps: number, targetMs: number): Promise<{ ms: number; msMin: number; calls: number }> {
  const one = await capture(ctx, run, 1);
  let est: number;
  try {
    est = median(timeReplays(ctx, one, 3));
  } finally {
    one.dispose();
  }
  const calls = Math.max(1, Math.min(200, Math.round(targetMs / Math.max(est, 1e-4))));
  const plan = await capture(ctx, run, calls);
  try {
    const t = timeReplays(ctx, plan, reps);
    return { ms: median(t) / calls, msMin: Math.min(...t) / calls, calls };
  } finally {
    plan.dispose();
  }
}

// ------------------------------------------------------------------ torch ceilings

interface TorchResult {
  error?: string;
  torch?: string;
  device?: string;
  gemm?: { m: number; n: number; k: number; ms: number }[];
  sdpa?: { t: number; hq: number; hkv: number; d: number; ms: number }[];
}

function torchCeilings(opts: OpsBenchOptions, cases: PerfCase[]): TorchResult {
  if (!opts.python) return { error: "skipped (--no-torch)" };
  const gemm = [...new Map(cases.filter((c) => c.gemm).map((c) => [c.gemm!.join("x"), c.gemm!])).values()];
  const sdpa = [...new Map(cases.filter((c) => c.sdpa).map((c) => [JSON.stringify(c.sdpa), c.sdpa!])).values()];
  if (gemm.length === 0 && sdpa.length === 0) return { error: "no case needs it" };
  const script = path.join(opts.root, "bench", "ops", "torch_ceilings.py");
  const r = spawnSync(opts.python, [script], {
    input: JSON.stringify({ gemm, sdpa, targetMs: opts.targetMs, reps: opts.reps }),
    encoding: "utf8",
    timeout: 60_000,
    maxBuffer: 16 << 20,
  });
  if (r.error) return { error: `${opts.python} did not run: ${r.error.message}` };
  const lines = (r.stdout ?? "").trim().split("\n");
  try {
    return JSON.parse(lines[lines.length - 1]) as TorchResult;
  } catch {
    return { error: `the torch helper gave no result (exit ${r.status}): ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}` };
  }
}

// ------------------------------------------------------------------ the run

function cardOf(name: string): string {
  return name.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "") || "unknown";
}

export async function runOpsBench(N: NativeModule, opts: OpsBenchOptions): Promise<OpsBenchResult> {
  const onCuda = opts.device.startsWith("cuda");
  // On CUDA the INT4 linears are timed in the kernel layout once the addon can repack to it (repack_int4).
  const repacked = onCuda && N.opList().some((o) => o.name === "repack_int4" && o.args.length === 2);
  const all = opts.cases ?? perfCases(opts.dims, { repacked });
  const cases = opts.filter ? all.filter((c) => opts.filter!.test(c.name)) : all;
  const info = onCuda ? (N.devices()[Number(opts.device.split(":")[1] ?? 0)] ?? null) : null;
  if (onCuda && !info) throw new Error(`no CUDA device for ${opts.device} (${N.buildInfo().cudaStatus})`);
  const log = opts.log;
  const date = new Date().toISOString();

  // cuBLAS / SDPA first, while this process holds no GPU memory.
  let torch: TorchResult = { error: "not on CUDA" };
  if (onCuda) {
    log(`torch ceilings: ${opts.python ?? "skipped"} ...`);
    torch = torchCeilings(opts, cases);
    log(torch.error ? `torch ceilings: none (${torch.error})` : `torch ceilings: torch ${torch.torch} on ${torch.device}`);
  }

  const ctx = new N.Context(opts.device);
  const l2 = info?.l2CacheBytes ?? 0;
  const figures: CaseFigure[] = [];
  let copyGBs: number | null = null;
  try {
    // The copy ceiling: this harness's own device copy, read + write.
    {
      const bytes = opts.dims === GLM4_9B ? 2 ** 30 : 2 ** 20;
      const env = new PerfEnv(ctx, new Rng("copy ceiling"), l2, onCuda ? "gpu" : "cpu");
      try {
        const a = env.randn("f32", [bytes / 4]);
        const b = env.empty("f32", [bytes / 4]);
        const run: PerfRun = { copies: 1, record: () => ctx.copy(b, a), check: () => [] };
        run.record(0);
        await ctx.flushAsync();
        const t = await timeRun(ctx, run, opts.reps, opts.targetMs * 4);
        copyGBs = (2 * bytes) / (t.ms * 1e6);
        log(`copy ceiling: ${copyGBs.toFixed(0)} GB/s read + write (${(bytes / 2 ** 20).toFixed(0)} MiB)`);
      } finally {
        env.dispose();
      }
    }

    for (const c of cases) {
      const f: CaseFigure = { name: c.name, op: c.op, phase: c.phase, bytes: c.bytes, flop: c.flop, check: "not run" };
      figures.push(f);
      const env = new PerfEnv(ctx, new Rng(c.name), l2, onCuda ? "gpu" : "cpu");
      try {
        const run = c.setup(env);
        run.record(0);
        await ctx.flushAsync();
        const fails = run.check();
        f.check = fails.length ? fails.join("; ") : "ok";
        f.copies = run.copies;
        if (fails.length) {
          log(`${c.name}: CHECK FAILED, not timed: ${f.check}`);
          continue;
        }
        const t = await timeRun(ctx, run, opts.reps, opts.targetMs);
        f.calls = t.calls;
        f.ms = t.ms;
        f.msMin = t.msMin;
        f.gbps = c.bytes / (t.ms * 1e6);
        if (c.flop) f.tflops = c.flop / (t.ms * 1e9);
        if (copyGBs) f.shareCopy = f.gbps / copyGBs;
        const g = c.gemm && torch.gemm?.find((x) => x.m === c.gemm![0] && x.n === c.gemm![1] && x.k === c.gemm![2]);
        if (g) {
          f.cublasMs = g.ms;
          f.shareCublas = g.ms / t.ms;
        }
        const s = c.sdpa && torch.sdpa?.find((x) => x.t === c.sdpa!.t && x.hq === c.sdpa!.hq && x.d === c.sdpa!.d);
        if (s) {
          f.sdpaMs = s.ms;
          f.shareSdpa = s.ms / t.ms;
        }
        log(`${c.name}: ${(t.ms * 1e3).toFixed(2)} us (${f.gbps.toFixed(0)} GB/s${f.tflops !== undefined ? `, ${f.tflops.toFixed(1)} TFLOP/s` : ""})`);
      } catch (e) {
        f.error = (e as Error).message;
        log(`${c.name}: ERROR ${f.error}`);
      } finally {
        env.dispose();
        await ctx.flushAsync().catch(() => undefined);
        opts.onProgress?.(result());
      }
    }
  } finally {
    ctx.dispose();
  }

  return result();

  function result(): OpsBenchResult {
    const covered = new Set(all.map((c) => c.op));
    return {
      kind: "glm4-int4-native ops bench",
      date,
      device: info ? info.name : opts.device,
      card: info ? cardOf(info.name) : opts.device,
      deviceInfo: info,
      dims: opts.dims === GLM4_9B ? "glm4-9b" : "tiny",
      options: { filter: opts.filter ? opts.filter.source : null, reps: opts.reps, targetMs: opts.targetMs },
      ceilings: {
        copyGBs,
        torch: torch.error ? { ok: false, note: torch.error } : { ok: true, note: "cuBLAS BF16 via torch.matmul, SDPA via torch", version: torch.torch, device: torch.device },
      },
      cases: figures,
      opsWithoutCase: N.opList()
        .map((o) => o.name)
        .filter((n) => !covered.has(n)),
    };
  }
}

// ------------------------------------------------------------------ report

function pct(x: number | undefined): string {
  return x === undefined ? "" : `${(100 * x).toFixed(0)} %`;
}
function num(x: number | undefined, digits: number): string {
  if (x === undefined) return "";
  return x !== 0 && Math.abs(x) < 10 ** -digits * 100 ? x.toPrecision(2) : x.toFixed(digits);
}

/** The text report: one table per phase, then the failures. */
export function formatOpsBench(r: OpsBenchResult): string {
  const lines: string[] = [];
  lines.push(`glm4-int4-native op bench: ${r.device} (${r.dims} shapes), ${r.date}`);
  lines.push(
    `ceilings in this run: device copy ${r.ceilings.copyGBs ? `${r.ceilings.copyGBs.toFixed(0)} GB/s (read + write)` : "not measured"}; ` +
      (r.ceilings.torch.ok ? `cuBLAS BF16 / SDPA through torch ${r.ceilings.torch.version}` : `cuBLAS BF16: none (${r.ceilings.torch.note})`),
  );
  lines.push(`per call: median of ${r.options.reps} replays of a graph of back-to-back calls; cold copies of weights / KV cache rotate (copies column)`);
  const phases: PerfCase["phase"][] = ["decode", "prefill", "sampling", "load"];
  const head = ["case", "us/call", "best", "GB/s", "of copy", "TFLOP/s", "cuBLAS us", "of cuBLAS", "calls x copies", "check"];
  for (const ph of phases) {
    const rows = r.cases.filter((c) => c.phase === ph);
    if (!rows.length) continue;
    const body = rows.map((c) => [
      c.name,
      c.ms !== undefined ? num(c.ms * 1e3, 2) : c.error ? "error" : "-",
      c.msMin !== undefined ? num(c.msMin * 1e3, 2) : "",
      num(c.gbps, 0),
      pct(c.shareCopy),
      c.flop ? num(c.tflops, 1) : "",
      c.cublasMs !== undefined ? num(c.cublasMs * 1e3, 2) : c.sdpaMs !== undefined ? `sdpa ${num(c.sdpaMs * 1e3, 2)}` : "",
      c.shareCublas !== undefined ? pct(c.shareCublas) : pct(c.shareSdpa),
      c.calls !== undefined ? `${c.calls} x ${c.copies}` : "",
      c.error ? "error" : c.check === "ok" ? "ok" : "FAILED",
    ]);
    const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    lines.push("", `## ${ph}`, "");
    const fmtRow = (cells: string[]) => cells.map((x, i) => (i === 0 ? x.padEnd(w[i]) : x.padStart(w[i]))).join("  ").trimEnd();
    lines.push(fmtRow(head), fmtRow(w.map((n) => "-".repeat(n))));
    for (const b of body) lines.push(fmtRow(b));
  }
  const bad = r.cases.filter((c) => c.error || c.check !== "ok");
  if (bad.length) {
    lines.push("", "## failures", "");
    for (const c of bad) lines.push(`${c.name}: ${c.error ?? c.check}`);
  }
  if (r.opsWithoutCase.length) lines.push("", `ops without a perf case: ${r.opsWithoutCase.join(", ")}`);
  return lines.join("\n") + "\n";
}

/** One line a case: its time and its share of the ceiling that bounds it (for a GPU script's last lines). */
export function formatOpsBrief(r: OpsBenchResult): string {
  const lines = [`${r.device}: copy ${r.ceilings.copyGBs ? r.ceilings.copyGBs.toFixed(0) : "?"} GB/s; ${r.ceilings.torch.ok ? `torch ${r.ceilings.torch.version}` : `no cuBLAS (${r.ceilings.torch.note})`}`];
  const w = Math.max(...r.cases.map((c) => c.name.length));
  for (const c of r.cases) {
    // Decode, sampling and load ops are bound by memory: their share of the copy bandwidth first.
    const parts = [
      c.shareCopy !== undefined ? `${pct(c.shareCopy)} of copy BW` : "",
      c.shareCublas !== undefined ? `${pct(c.shareCublas)} of cuBLAS` : "",
      c.shareSdpa !== undefined ? `${pct(c.shareSdpa)} of SDPA` : "",
    ].filter(Boolean);
    if (c.phase === "prefill") parts.reverse();
    const share = parts.join(", ");
    const t = c.ms !== undefined ? `${num(c.ms * 1e3, 2)} us` : c.error ? "ERROR" : "CHECK FAILED";
    lines.push(`${c.name.padEnd(w)}  ${t.padStart(10)}  ${share}`);
  }
  return lines.join("\n") + "\n";
}
