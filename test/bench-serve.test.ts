/**
 * `glm4-int4 bench-serve` (lib/cli/bench-serve.ts) against the tiny model's server on the CPU: a few streamed
 * requests through the openai client at a fixed concurrency and at a Poisson rate; the seeded length draws.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { loadGlm4, type Glm4Model } from "../lib/index.js";
import { createServer } from "../lib/serve/server.js";
import { cmdBenchServe, drawLengths, formatBenchServe, percentile, runBenchServe } from "../lib/cli/bench-serve.js";
import { rng } from "../lib/engine/generation.js";

const DIR = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4/original");

let model: Glm4Model;
let app: FastifyInstance;
let base = "";
beforeAll(async () => {
  model = await loadGlm4(DIR, { device: "cpu", maxContext: 256 });
  app = createServer(model, { maxConcurrent: 4 });
  await app.listen({ host: "127.0.0.1", port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/v1`;
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

describe("bench-serve", () => {
  it("6 requests at concurrency 3: all complete; throughput, TTFT, TPOT and ITL come out; the table and JSON carry them", async () => {
    const r = await runBenchServe({ baseUrl: base, numPrompts: 6, inputLen: 12, outputLen: 6, lenDist: "uniform", lenSpread: 0.5, concurrency: 3, seed: 3 });
    expect(r).toMatchObject({ completed: 6, failed: 0, model: "tiny-glm4", concurrency: 3, rate: null, lenDist: "uniform" });
    expect(r.totalOutputTokens).toBeGreaterThan(0);
    expect(r.totalOutputTokens).toBeLessThanOrEqual(6 * 9);
    expect(r.totalInputTokens).toBe(drawLengths(6, 12, "uniform", 0.5, rng(3)).reduce((a, b) => a + b, 0));
    for (const s of [r.ttftMs, r.e2eLatencyMs]) for (const x of [s.mean, s.p50, s.p99]) expect(Number.isFinite(x) && x > 0).toBe(true);
    expect(r.ttftMs.p99).toBeGreaterThanOrEqual(r.ttftMs.p50);
    expect(r.outputThroughput).toBeCloseTo(r.totalOutputTokens / r.durationS, 6);
    const table = formatBenchServe(r);
    for (const k of ["Successful requests:", "Output token throughput (tok/s):", "P99 TTFT (ms):", "Median ITL (ms):"]) expect(table).toContain(k);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it("Poisson arrivals at a rate: all requests complete", async () => {
    const r = await runBenchServe({ baseUrl: base, numPrompts: 4, inputLen: 5, outputLen: 3, rate: 200, seed: 1 });
    expect(r).toMatchObject({ completed: 4, failed: 0, rate: 200, concurrency: null });
  });

  it("length draws are seeded, at least 1, and spread as asked; percentiles interpolate", () => {
    expect(drawLengths(5, 100, "fixed", 0.25, rng(1))).toEqual([100, 100, 100, 100, 100]);
    const u = drawLengths(400, 100, "uniform", 0.25, rng(2));
    expect(u).toEqual(drawLengths(400, 100, "uniform", 0.25, rng(2)));
    expect(Math.min(...u)).toBeGreaterThanOrEqual(75);
    expect(Math.max(...u)).toBeLessThanOrEqual(125);
    const n = drawLengths(400, 100, "normal", 0.25, rng(3));
    expect(n).not.toEqual(drawLengths(400, 100, "normal", 0.25, rng(4)));
    expect(Math.min(...drawLengths(400, 2, "normal", 1, rng(5)))).toBe(1);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([5], 99)).toBe(5);
  });

  it("bad options fail with ERR_GLM4_INVALID_ARGUMENT naming the option", async () => {
    await expect(cmdBenchServe(["--len-dist", "zipf"])).rejects.toMatchObject({ code: "ERR_GLM4_INVALID_ARGUMENT", message: expect.stringMatching(/--len-dist/) });
    await expect(cmdBenchServe(["--rate=-1"])).rejects.toThrow(/--rate must be a positive number or inf/);
    await expect(cmdBenchServe(["--concurrency", "0"])).rejects.toThrow(/--concurrency must be an integer >= 1/);
    await expect(cmdBenchServe(["--base-url", "ftp://x"])).rejects.toThrow(/--base-url must be an http/);
  });
});
