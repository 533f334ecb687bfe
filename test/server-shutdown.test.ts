/**
 * Shutdown as operators expect (issue 16), on a spawned `glm4-int4 serve` (tiny checkpoint, CPU) with real
 * signals: SIGTERM stops accepting, answers the queued requests 503 with Retry-After, lets the running stream go
 * on for --shutdown-timeout and then ends it with a final chunk and [DONE], closes idle keep-alive connections,
 * and exits 0; a second signal ends the running stream at once (still with [DONE]); a server whose parent dies
 * (npx killed) stops instead of living on as an orphan. Assertions are on what arrives and in which order; the
 * deadlines only bound a hang.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ROOT, ensureBuilt, runCli, type Cli } from "./helpers/cli.js";

const TINY = path.join(ROOT, "fixtures/tiny-glm4/original");
beforeAll(() => ensureBuilt(), 600_000);

async function serve(extra: string[]): Promise<{ cli: Cli; base: string }> {
  const cli = runCli(["serve", "--model", TINY, "--device", "cpu", "--port", "0", "--max-concurrent", "1", "--max-queue", "4", ...extra]);
  await cli.waitFor((_o, e) => /serve: http:\/\/127\.0\.0\.1:\d+\/v1/.test(e));
  const port = /127\.0\.0\.1:(\d+)\/v1/.exec(cli.stderr())![1];
  return { cli, base: `http://127.0.0.1:${port}` };
}

/** A streamed request read as server-sent events: `first` resolves at the first data event, `done` with all of them. */
function sse(base: string, route: string, body: unknown) {
  const events: string[] = [];
  let firstResolve: () => void;
  const first = new Promise<void>((r) => (firstResolve = r));
  const done = (async () => {
    const res = await fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...(body as object), stream: true }) });
    if (res.status !== 200) {
      firstResolve!();
      return { status: res.status, headers: res.headers, json: await res.json(), events };
    }
    let buf = "";
    const dec = new TextDecoder();
    for await (const part of res.body!) {
      buf += dec.decode(part as Uint8Array, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        events.push(buf.slice(0, i).replace(/^data: /, ""));
        buf = buf.slice(i + 2);
        firstResolve!();
      }
    }
    firstResolve!();
    return { status: 200, headers: res.headers, json: null, events };
  })();
  return { first, done };
}

const story = { messages: [{ role: "user", content: "tell me a story" }], max_tokens: 1000, temperature: 0 };

/** Waits until /health satisfies `pred`. */
async function until(base: string, pred: (h: Record<string, number>) => boolean) {
  for (let i = 0; i < 6000; i++) {
    const h = (await (await fetch(`${base}/health`)).json()) as Record<string, number>;
    if (pred(h)) return h;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("health never got there");
}

/** The stream ended properly: a last chunk with a finish reason, then [DONE]. */
function expectProperEnd(events: string[]) {
  expect(events[events.length - 1]).toBe("[DONE]");
  const last = JSON.parse(events[events.length - 2]);
  expect(last.choices[0].finish_reason).toMatch(/^(stop|length)$/);
}

describe("glm4-int4 serve shutdown", () => {
  it("SIGTERM: queued requests get 503, the running stream ends after the grace period with [DONE], exit 0", async () => {
    const { cli, base } = await serve(["--shutdown-timeout", "1"]);
    const running = sse(base, "/v1/chat/completions", story);
    await running.first;
    const queuedPlain = fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "queued", max_tokens: 4 }) });
    const queuedStream = sse(base, "/v1/completions", { prompt: "queued too", max_tokens: 4 });
    await until(base, (h) => h.active === 1 && h.waiting === 2);

    cli.child.kill("SIGTERM");
    const plain = await queuedPlain;
    expect(plain.status).toBe(503);
    expect(plain.headers.get("retry-after")).toBeTruthy();
    expect(((await plain.json()) as { error: { code: string } }).error.code).toBe("server_shutting_down");
    const qs = await queuedStream.done;
    expect(qs.status).toBe(503);
    expect(qs.events).toEqual([]);

    const r = await running.done;
    expect(r.status).toBe(200);
    expect(r.events.length).toBeGreaterThan(2);
    expectProperEnd(r.events);
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toMatch(/stopping \(SIGTERM\)[\s\S]*stopped/);
    await expect(fetch(`${base}/health`)).rejects.toThrow(); // no longer listening
  });

  it("a second signal ends the running stream at once, still with a final chunk and [DONE]", async () => {
    const { cli, base } = await serve(["--shutdown-timeout", "3600"]);
    const running = sse(base, "/v1/chat/completions", story);
    await running.first;
    cli.child.kill("SIGINT");
    await cli.waitFor((_o, e) => /stopping \(SIGINT\)/.test(e));
    cli.child.kill("SIGINT");
    const r = await running.done;
    expectProperEnd(r.events);
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toMatch(/SIGINT again: ending the running requests now/);
  });

  it("a server whose parent process dies (npx killed with SIGKILL) stops instead of staying an orphan", async () => {
    const wrapper = spawn(
      process.execPath,
      ["-e", `const c = require("child_process").spawn(process.execPath, ${JSON.stringify([path.join(ROOT, "dist/cli.js"), "serve", "--model", TINY, "--device", "cpu", "--port", "0"])}, { stdio: ["ignore", "ignore", "pipe"] }); c.stderr.on("data", (d) => process.stdout.write(d)); process.stdout.write("PID " + c.pid + "\\n");`],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    await new Promise<void>((resolve, reject) => {
      wrapper.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
        if (/PID \d+/.test(out) && /serve: http/.test(out)) resolve();
      });
      wrapper.on("exit", () => reject(new Error(`the wrapper exited: ${out}`)));
    });
    const pid = Number(/PID (\d+)/.exec(out)![1]);
    wrapper.kill("SIGKILL");
    const alive = () => {
      try {
        process.kill(pid, 0);
      } catch {
        return false;
      }
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8")); // a zombie has exited
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 6000 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(alive()).toBe(false);
  });
});
