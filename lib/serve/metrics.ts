/**
 * The server's Prometheus metrics (prom-client), on a registry of the server's own (two servers in one process do
 * not mix their figures). GET /metrics answers `registry.metrics()` in the Prometheus text format.
 *
 *   glm4_requests_total{outcome}              requests that ended: completed, aborted, failed, rejected (queue full)
 *   glm4_prompt_tokens_total                  prompt tokens of finished requests
 *   glm4_prompt_cached_tokens_total           of which found in the KV cache (shared prompt heads)
 *   glm4_generation_tokens_total              tokens generated
 *   glm4_requests_running / _waiting          sequences in the batch / requests in the queue (now)
 *   glm4_kv_cache_blocks{state}               KV-cache blocks: total, in_use (pad block included), cached
 *   glm4_kv_cache_block_tokens                tokens a block holds
 *   glm4_preemptions_total                    sequences preempted (recomputed later) because the pool ran out
 *   glm4_time_to_first_token_seconds          from the request's arrival to its first token (histogram)
 *   glm4_inter_token_latency_seconds          between two tokens of one request (histogram)
 *   glm4_request_duration_seconds             from arrival to the last token (histogram)
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { GenerateResult, TextChunk } from "../types.js";
import type { SchedulerStats } from "./scheduler.js";

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"outcome">;
  private readonly promptTokens: Counter;
  private readonly cachedTokens: Counter;
  private readonly genTokens: Counter;
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly e2e: Histogram;

  constructor(stats: () => SchedulerStats) {
    const registers = [this.registry];
    this.requests = new Counter({ name: "glm4_requests_total", help: "Requests that ended, by outcome (completed, aborted, failed, rejected)", labelNames: ["outcome"], registers });
    this.promptTokens = new Counter({ name: "glm4_prompt_tokens_total", help: "Prompt tokens of finished requests", registers });
    this.cachedTokens = new Counter({ name: "glm4_prompt_cached_tokens_total", help: "Prompt tokens found in the KV cache (shared prompt heads)", registers });
    this.genTokens = new Counter({ name: "glm4_generation_tokens_total", help: "Tokens generated", registers });
    new Gauge({ name: "glm4_requests_running", help: "Sequences in the batch", registers, collect() { this.set(stats().active); } });
    new Gauge({ name: "glm4_requests_waiting", help: "Requests waiting for a slot or for KV-cache blocks", registers, collect() { this.set(stats().waiting); } });
    new Gauge({
      name: "glm4_kv_cache_blocks",
      help: "KV-cache blocks: total, in_use (held by sequences, the pad block included), cached (prompt heads kept for reuse)",
      labelNames: ["state"],
      registers,
      collect() {
        const kv = stats().kv;
        this.set({ state: "total" }, kv.blocks);
        this.set({ state: "in_use" }, kv.inUse);
        this.set({ state: "cached" }, kv.cached);
      },
    });
    new Gauge({ name: "glm4_kv_cache_block_tokens", help: "Tokens a KV-cache block holds", registers, collect() { this.set(stats().kv.blockSize); } });
    let seen = 0;
    new Counter({
      name: "glm4_preemptions_total",
      help: "Sequences preempted (recomputed later) because the KV cache ran out",
      registers,
      collect() {
        const n = stats().preempted;
        if (n > seen) this.inc(n - seen);
        seen = n;
      },
    });
    const latency = [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40];
    this.ttft = new Histogram({ name: "glm4_time_to_first_token_seconds", help: "From a request's arrival to its first token", buckets: latency, registers });
    this.itl = new Histogram({ name: "glm4_inter_token_latency_seconds", help: "Between two tokens of one request", buckets: [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2.5], registers });
    this.e2e = new Histogram({ name: "glm4_request_duration_seconds", help: "From a request's arrival to its last token", buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320], registers });
  }

  /** A request arrives: returns the chunk observer (TTFT, inter-token latency) and the end observer. */
  track(): { chunk: (c: TextChunk) => void; end: (r: GenerateResult | null, outcome: "completed" | "aborted" | "failed") => void } {
    const t0 = performance.now();
    let last = -1;
    return {
      chunk: (c) => {
        const n = c.tokens.length;
        if (!n) return;
        const now = performance.now();
        if (last < 0) {
          this.ttft.observe((now - t0) / 1000);
          for (let i = 1; i < n; i++) this.itl.observe(0);
        } else for (let i = 0; i < n; i++) this.itl.observe((now - last) / 1000 / n);
        last = now;
      },
      end: (r, outcome) => {
        this.requests.inc({ outcome });
        if (!r) return;
        this.promptTokens.inc(r.usage.promptTokens);
        this.cachedTokens.inc(r.usage.cachedTokens);
        this.genTokens.inc(r.usage.completionTokens);
        this.e2e.observe((performance.now() - t0) / 1000);
      },
    };
  }

  rejected(): void {
    this.requests.inc({ outcome: "rejected" });
  }
}
