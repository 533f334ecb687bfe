/**
 * One sequence's generation, as a state machine that a caller drives token by token:
 *
 *   const g = new Generation(engine, tokenizer, eosIds, promptIds, checkGenerateOptions(o));
 *   await g.prefill(reuse);                 // feeds the prompt (only what the cache lacks when reuse)
 *   for (let t; (t = await g.sample()) !== null; ) await g.feed(t);
 *   const result = g.result();
 *
 * `sample` reads the logits of the last token fed, picks the next token and hands out its text; `feed`
 * runs one decode step. They are separate so that a scheduler serving many sequences can sample all of them
 * and then feed all of them in one batched decode step (the seam where a batched engine slots in).
 * `Glm4Model.generate` and sessions run one Generation from start to end; the server's scheduler interleaves
 * several (lib/serve/scheduler.ts).
 */
import { Glm4Error } from "../errors.js";
import type { PickParams } from "./engine.js";
import type { Glm4Tokenizer, StreamDecoder } from "../text/tokenizer.js";
import type { FinishReason, GenerateOptions, GenerateResult, TextChunk } from "../types.js";

/** A small seeded generator (mulberry32) for the sampler's uniforms. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type CheckedGenerateOptions = Required<Omit<GenerateOptions, "signal" | "onTextChunk" | "seed" | "stop">> &
  Pick<GenerateOptions, "signal" | "onTextChunk" | "seed" | "stop">;

/** Validates generation options (TypeError/RangeError naming the option) and fills in the defaults. */
export function checkGenerateOptions(o: GenerateOptions): CheckedGenerateOptions {
  const num = (name: string, v: unknown, def: number, lo: number, hi: number, int = false): number => {
    if (v === undefined) return def;
    if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi || (int && !Number.isInteger(v))) {
      throw new RangeError(`${name} must be ${int ? "an integer" : "a number"} in [${lo}, ${hi}], got ${String(v)}`);
    }
    return v;
  };
  if (o.stop !== undefined && (!Array.isArray(o.stop) || o.stop.some((s) => typeof s !== "string" && !(typeof s === "number" && Number.isInteger(s))))) {
    throw new TypeError("stop must be an array of strings and token ids");
  }
  if (o.seed !== undefined && (!Number.isInteger(o.seed) || o.seed < 0)) throw new RangeError(`seed must be a non-negative integer, got ${String(o.seed)}`);
  return {
    maxNewTokens: num("maxNewTokens", o.maxNewTokens, 256, 0, 1 << 20, true),
    temperature: num("temperature", o.temperature, 0, 0, 100),
    topK: num("topK", o.topK, 0, 0, 1 << 20, true),
    topP: num("topP", o.topP, 1, 0, 1),
    minP: num("minP", o.minP, 0, 0, 1),
    repetitionPenalty: num("repetitionPenalty", o.repetitionPenalty, 1, 0.01, 100),
    seed: o.seed,
    stop: o.stop,
    signal: o.signal,
    onTextChunk: o.onTextChunk,
  };
}

/** The documented sampling algorithm on the host (same as csrc/cpu/sampling.cc). */
export function sampleHost(logits: Float32Array, p: { temperature: number; topK: number; topP: number; minP: number; u: number }): number {
  const V = logits.length;
  if (!(p.temperature > 0)) {
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[j] > logits[best]) best = j;
    return best;
  }
  let mx = -Infinity;
  for (let j = 0; j < V; j++) mx = Math.max(mx, logits[j] / p.temperature);
  const pr = new Float64Array(V);
  let sum = 0;
  for (let j = 0; j < V; j++) sum += pr[j] = Math.exp(logits[j] / p.temperature - mx);
  for (let j = 0; j < V; j++) pr[j] /= sum;
  const idx = Array.from({ length: V }, (_, j) => j).sort((a, b) => pr[b] - pr[a] || a - b);
  let keep = V;
  if (p.topK > 0) keep = Math.min(keep, p.topK);
  if (p.minP > 0) {
    const floor = p.minP * pr[idx[0]];
    let n = 1;
    while (n < keep && pr[idx[n]] >= floor) n++;
    keep = n;
  }
  if (p.topP > 0 && p.topP < 1) {
    let cum = 0, n = 0;
    while (n < keep) {
      cum += pr[idx[n++]];
      if (cum >= p.topP) break;
    }
    keep = Math.max(n, 1);
  }
  let mass = 0;
  for (let j = 0; j < keep; j++) mass += pr[idx[j]];
  const target = p.u * mass;
  let cum = 0;
  for (let j = 0; j < keep; j++) {
    cum += pr[idx[j]];
    if (target < cum) return idx[j];
  }
  return idx[keep - 1];
}

export interface GenerationCallbacks {
  /** Each new piece of text (never a split UTF-8 character; held back while a stop string may be forming). */
  onText?: (text: string) => void;
  /** Each piece of text with the token ids that produced it. */
  onChunk?: (c: TextChunk) => void;
}

/** What a Generation drives: one sequence's KV cache and logits (a Sequence: one slot of an Engine). */
export interface SequenceEngine {
  readonly length: number;
  readonly maxContext: number;
  reset(): void;
  reusePrefix(prompt: readonly number[]): number;
  prefill(ids: readonly number[]): Promise<unknown>;
  step(id: number): Promise<unknown>;
  pick(p: PickParams): Promise<number>;
  readLogits(): Float32Array;
  /** Keeps the first n tokens of the cache. */
  truncate(n: number): void;
  /** k rounds of (pick, step) at once (Engine.run; us[j]: round j's uniform); absent: one pick and step a token. */
  run?(p: PickParams, us: readonly number[], k: number): Promise<number[]>;
  /** Rounds a run takes at most (runRounds of the engine's device). */
  readonly rounds?: number;
}

/**
 * Rounds of (pick, step) a generation takes at once through Engine.run where the engine is device-fed (CUDA): 8,
 * or GLM4_RUN_ROUNDS (1 = a pick and a step a token, the path before). Tokens then reach the caller in bursts of up
 * to that many (8 x ~4.5 ms on an H200 at batch 1); a sequence that stops inside a run has its cache cut back to
 * where the token-by-token loop leaves it.
 */
export function runRounds(device: string): number {
  const env = process.env.GLM4_RUN_ROUNDS;
  if (env !== undefined && env.trim() !== "") {
    const r = Number(env);
    if (!Number.isInteger(r) || r < 1 || r > 64) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `GLM4_RUN_ROUNDS must be an integer in 1..64, got ${JSON.stringify(env)}`);
    return r;
  }
  return device.startsWith("cuda") ? 8 : 1;
}

export class Generation {
  /** Generated ids (stop tokens excluded). */
  readonly tokens: number[] = [];
  text = "";
  finishReason: FinishReason | null = null;
  /** Prompt tokens found in the KV cache and not fed again. */
  cachedTokens = 0;
  private readonly stopIds: Set<number>;
  private readonly stopStrings: string[] = [];
  private readonly holdBack: number;
  private readonly random: () => number;
  private readonly dec?: StreamDecoder;
  private readonly seen: Set<number>;
  private readonly pending: number[] = [];
  private emitted = 0; // characters of `text` already handed out
  private t0 = 0;
  private t1 = 0;
  private t2 = 0;

  constructor(
    /** The sequence it runs on (a scheduler moves a preempted generation to another slot: `moveTo`). */
    public engine: SequenceEngine,
    private readonly tokenizer: Glm4Tokenizer | null,
    eosTokenIds: readonly number[],
    readonly prompt: readonly number[],
    private readonly o: CheckedGenerateOptions,
    private readonly cb: GenerationCallbacks = {},
  ) {
    if (prompt.length === 0) throw new RangeError("the prompt is empty: give at least one token");
    this.stopIds = new Set<number>(eosTokenIds);
    for (const s of o.stop ?? []) (typeof s === "number" ? this.stopIds.add(s) : s.length && this.stopStrings.push(s));
    this.holdBack = this.stopStrings.reduce((a, s) => Math.max(a, s.length - 1), 0);
    this.random = rng(o.seed ?? Math.floor(Math.random() * 2 ** 31));
    this.dec = tokenizer?.createStreamDecoder();
    this.seen = new Set<number>(prompt);
  }

  get done(): boolean {
    return this.finishReason !== null;
  }

  /**
   * Feeds the prompt. With `reuse`, the longest prefix already in the engine's cache is kept and only the
   * rest is prefilled (`cachedTokens` says how many were kept); otherwise the cache is cleared first.
   */
  async prefill(reuse = false): Promise<void> {
    const e = this.engine;
    this.t0 = performance.now();
    if (reuse) this.cachedTokens = e.reusePrefix(this.prompt);
    else e.reset();
    try {
      await e.prefill(this.prompt.slice(this.cachedTokens));
    } catch (err) {
      e.reset();
      throw err;
    }
    this.t1 = performance.now();
  }

  /**
   * For a caller that feeds the prompt itself in chunks (the scheduler): keeps what the cache holds of `ids` (the
   * prompt, or after a preemption the prompt and the tokens generated so far; reusePrefix) and returns the ids
   * still to feed. The first call sets `cachedTokens` and starts the prefill clock; endPrefill() stops it.
   */
  startPrefill(ids: readonly number[] = this.prompt): number[] {
    const first = this.t0 === 0;
    if (first) this.t0 = performance.now();
    const kept = this.engine.reusePrefix(ids);
    if (first) this.cachedTokens = kept;
    return ids.slice(kept);
  }

  /** The prompt and the tokens generated so far: what a preempted sequence's cache must hold again to go on. */
  resumeIds(): number[] {
    return [...this.prompt, ...this.tokens];
  }

  endPrefill(): void {
    if (this.t1 === 0) this.t1 = performance.now();
  }

  /**
   * Picks the next token from the logits of the last token fed and hands out its text. Returns the token to
   * feed next, or null when the sequence has ended (then `finishReason` says why).
   */
  async sample(): Promise<number | null> {
    const r = this.beginSample();
    if (r === null) return null;
    return this.acceptSample(await this.engine.pick(r));
  }

  /**
   * The first half of sample(), for a caller that picks many sequences' tokens at once (the scheduler): null when
   * the sequence has ended; else the parameters of a device pick (this draws the sampler's uniform; with a
   * repetition penalty, the tokens seen so far, prompt included, as in HF). Then call acceptSample(token).
   */
  beginSample(u?: number): PickParams | null {
    if (this.done) return null;
    const o = this.o;
    if (this.tokens.length >= o.maxNewTokens) return this.finish("length");
    if (o.signal?.aborted) return this.finish("abort");
    const p: PickParams = { temperature: o.temperature, topK: o.topK, topP: o.topP, minP: o.minP, u: u ?? this.random() };
    if (o.repetitionPenalty !== 1) {
      p.repetitionPenalty = o.repetitionPenalty;
      p.penaltyIds = Int32Array.from(this.seen);
    }
    return p;
  }

  /**
   * The sampler's next n uniforms, in the order n beginSample() calls would draw them: rounds 1..k-1 of a run, whose
   * beginSample(u) then draws nothing (the same tokens as the token-by-token loop).
   */
  drawUniforms(n: number): number[] {
    return Array.from({ length: n }, () => this.random());
  }

  /**
   * Whether k rounds may run at once from here: rounds where the engine has them, no repetition penalty (its list
   * grows a token a round, on the host), more than one round left.
   */
  roundsFor(p: PickParams, most: number): number {
    if (!this.engine.run || most <= 1 || p.repetitionPenalty !== undefined) return 1;
    return Math.max(1, Math.min(most, this.engine.maxContext - this.engine.length, this.o.maxNewTokens - this.tokens.length));
  }

  /**
   * Takes the k tokens of a run that started from beginSample()'s `p` (rounds: from Engine.run, cache at len0 before
   * it): round by round the checks of beginSample and acceptSample, as the loop would make them. Returns how many
   * rounds the sequence used (k when it goes on; the caller cuts the cache back to len0 + used otherwise) and whether
   * it goes on.
   */
  acceptRun(tokens: readonly number[], us: readonly number[], len0: number): { used: number; goesOn: boolean } {
    for (let j = 0; j < tokens.length; j++) {
      if (j > 0 && this.beginSample(us[j]) === null) return { used: j, goesOn: false };
      if (this.acceptSample(tokens[j], len0 + j) === null) return { used: j, goesOn: false };
    }
    return { used: tokens.length, goesOn: true };
  }

  /**
   * The second half of sample(): takes the picked token; returns it to feed next, or null when the sequence ended.
   * cacheLength: tokens in the cache before this one is fed (a run's round passes its own).
   */
  acceptSample(next: number, cacheLength = this.engine.length): number | null {
    const o = this.o;
    if (this.stopIds.has(next)) return this.finish("stop");
    this.tokens.push(next);
    this.seen.add(next);
    this.pending.push(next);
    // Ids past the tokenizer's vocabulary (the padding rows of the output layer) decode to nothing.
    if (this.dec && next < this.tokenizer!.vocabSize) {
      this.text += this.dec.push(next);
      const hit = this.stopStrings.map((s) => this.text.indexOf(s, Math.max(0, this.emitted - s.length))).filter((x) => x >= 0);
      if (hit.length) {
        this.text = this.text.slice(0, Math.min(...hit));
        return this.finish("stop");
      }
    }
    this.emit(false);
    if (this.tokens.length === o.maxNewTokens) return this.finish("length");
    if (cacheLength >= this.engine.maxContext) return this.finish("length");
    return next;
  }

  /** One decode step with the token `sample` returned. */
  async feed(token: number): Promise<void> {
    await this.engine.step(token);
  }

  /** Prefill, then sample and feed until the end. */
  async run(reuse = false): Promise<GenerateResult> {
    await this.prefill(reuse);
    const most = this.engine.run ? (this.engine.rounds ?? 1) : 1;
    for (;;) {
      const p = this.beginSample();
      if (p === null) break;
      const k = this.roundsFor(p, most);
      if (k === 1) {
        const t = this.acceptSample(await this.engine.pick(p));
        if (t === null) break;
        await this.feed(t);
        continue;
      }
      const us = [p.u, ...this.drawUniforms(k - 1)];
      const len0 = this.engine.length;
      const toks = await this.engine.run!(p, us, k);
      const r = this.acceptRun(toks, us, len0);
      if (!r.goesOn) {
        this.engine.truncate(len0 + r.used); // where the token-by-token loop leaves the cache
        break;
      }
    }
    return this.result();
  }

  /** Ends the sequence (idempotent): flushes the decoder and hands out what was held back. */
  finish(reason: FinishReason): null {
    if (this.done) return null;
    this.finishReason = reason;
    if (this.dec && reason !== "stop") this.text += this.dec.flush();
    this.emit(true);
    this.t2 = performance.now();
    return null;
  }

  result(): GenerateResult {
    if (!this.done) throw new Error("Generation.result() before the sequence ended");
    const n = this.prompt.length, out = this.tokens.length;
    const prefillMs = this.t1 - this.t0, decodeMs = this.t2 - this.t1;
    const fed = n - this.cachedTokens;
    return {
      text: this.text,
      tokens: this.tokens.slice(),
      finishReason: this.finishReason!,
      usage: { promptTokens: n, completionTokens: out, totalTokens: n + out, cachedTokens: this.cachedTokens },
      timings: {
        prefillMs,
        decodeMs,
        prefillTokensPerSecond: fed / (prefillMs / 1000),
        decodeTokensPerSecond: out > 1 ? (out - 1) / (decodeMs / 1000) : 0,
      },
    };
  }

  private emit(final: boolean): void {
    const upto = final ? this.text.length : Math.max(this.emitted, this.text.length - this.holdBack);
    // Without a tokenizer (a synthetic model) there is no text: each token is a chunk of its own.
    if (upto > this.emitted || (this.pending.length && (final || !this.dec))) {
      const piece = this.text.slice(this.emitted, upto);
      this.emitted = upto;
      if (piece) this.cb.onText?.(piece);
      this.cb.onChunk?.({ text: piece, tokens: this.pending.splice(0) });
    }
  }
}

/**
 * Turns a generation that reports chunks through a callback into an async iterable of those chunks whose
 * return value is the GenerateResult (errors are thrown from the iteration).
 */
export async function* streamChunks(start: (onChunk: (c: TextChunk) => void) => Promise<GenerateResult>): AsyncGenerator<TextChunk, GenerateResult, undefined> {
  const chunks: TextChunk[] = [];
  let wake: (() => void) | null = null;
  let done = false;
  const result = start((c) => {
    chunks.push(c);
    wake?.();
  }).finally(() => {
    done = true;
    wake?.();
  });
  result.catch(() => undefined);
  for (;;) {
    while (chunks.length) yield chunks.shift()!;
    if (done) break;
    await new Promise<void>((r) => (wake = r));
    wake = null;
  }
  return await result;
}
