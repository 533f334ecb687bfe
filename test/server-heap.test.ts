/**
 * The server's JS heap does not grow with the number of requests (issue 16: ~4 KB a request, through an
 * AbortSignal.any per request kept alive by the scheduler's shutdown signal). A child process with --expose-gc
 * drives a few thousand requests (plain, streamed, chat, and clients that go away) through createServer on the
 * tiny checkpoint and reports the heap after forced GCs at 1000 and at the end. It measures memory, never time.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { beforeAll, expect, it } from "vitest";
import { ROOT, ensureBuilt } from "./helpers/cli.js";

beforeAll(() => ensureBuilt(), 600_000);

it("heap after 3000 requests is within 1.5 MiB of the heap after 1000 (the leak was ~8 KB a request here: ~16 MiB)", () => {
  const r = spawnSync(process.execPath, ["--expose-gc", path.join(ROOT, "test/helpers/heap-server.mjs"), "1000", "3000"], { encoding: "utf8", timeout: 1_500_000 });
  expect(r.status, r.stderr).toBe(0);
  const { points, health } = JSON.parse(r.stdout.trim().split("\n").pop()!);
  expect(points.map((p: { requests: number }) => p.requests)).toEqual([1000, 3000]);
  const growth = points[1].heap - points[0].heap;
  console.log(`heap after 1000: ${(points[0].heap / 2 ** 20).toFixed(2)} MiB, after 3000: ${(points[1].heap / 2 ** 20).toFixed(2)} MiB (${(growth / 2000).toFixed(0)} bytes a request)`);
  // 1.5 MiB over 2000 requests = 790 bytes a request. Measured on the tiny model (2026-12-03): ~300 bytes a request
  // between 1000 and 2500 after the fix (V8's and the tokenizer's caches still settling), 7.8 KB before it.
  expect(growth).toBeLessThan(1.5 * 2 ** 20);
  expect(health).toMatchObject({ active: 0, waiting: 0 });
}, 1_800_000);
