/**
 * `glm4-int4 chat` driven through stdin of a child process (the tiny checkpoint on the CPU): replies stream,
 * the conversation is kept (the second turn comes from the cache), /reset and /exit work, Ctrl-C stops a
 * reply without ending the program and exits at the prompt. And `glm4-int4 serve` as a process: it binds
 * 127.0.0.1, answers, and stops on SIGINT.
 */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { ensureBuilt, runCli, type Cli } from "./helpers/cli.js";

const ARGS = ["chat", "--model", "fixtures/tiny-glm4/original", "--device", "cpu", "--temperature", "0", "--stats"];
const prompts = (s: string) => s.split("> ").length - 1;
const statLines = (e: string) => e.split("\n").filter((l) => l.startsWith("["));

let cli: Cli | undefined;
beforeAll(() => ensureBuilt(), 600_000); // tsc: room for a loaded machine
afterEach(() => {
  if (cli && cli.child.exitCode === null) cli.child.kill("SIGKILL");
  cli = undefined;
});

describe("glm4-int4 chat", () => {
  it("keeps the conversation, /reset starts over, /exit leaves", async () => {
    cli = runCli([...ARGS, "--max-new-tokens", "6"]);
    const c = cli;
    await c.waitFor((o) => prompts(o) === 1);
    c.child.stdin.write("hello\n");
    await c.waitFor((o) => prompts(o) === 2);
    c.child.stdin.write("second turn\n");
    await c.waitFor((o) => prompts(o) === 3);
    c.child.stdin.write("/reset\n");
    await c.waitFor((o) => prompts(o) === 4);
    expect(c.stdout()).toContain("(new conversation)");
    c.child.stdin.write("hello\n");
    await c.waitFor((o) => prompts(o) === 5);
    c.child.stdin.write("/exit\n");
    expect(await c.exited).toBe(0);
    const stats = statLines(c.stderr());
    expect(stats).toHaveLength(3);
    expect(stats[0]).toMatch(/^\[6 tokens .*prompt \d+ tokens, 0 from the cache\]$/);
    // Turn 2 reuses turn 1 (its prompt and the reply's tokens); after /reset nothing is reused.
    const cached = stats.map((l) => Number(/(\d+) from the cache/.exec(l)![1]));
    expect(cached[1]).toBeGreaterThan(5);
    expect(cached[2]).toBe(0);
    // The same first message after /reset gives the same greedy reply.
    const replies = c.stdout().split("> ").slice(1, -1).map((r) => r.trimEnd());
    expect(replies[0]).toBe(replies[3].replace(/^\(new conversation\)\n/, ""));
  });

  it("Ctrl-C stops the reply being written, the program goes on; Ctrl-C at the prompt exits", async () => {
    // Greedy, this prompt makes the tiny model write ~580 tokens (a second or more on the CPU): time enough
    // to interrupt it once the first piece of the reply is out.
    cli = runCli([...ARGS, "--max-new-tokens", "1000"]);
    const c = cli;
    await c.waitFor((o) => prompts(o) === 1);
    c.child.stdin.write("tell me a story\n");
    await c.waitFor((o) => o.length > "> ".length + 2);
    c.child.kill("SIGINT");
    await c.waitFor((o, e) => prompts(o) === 2 && statLines(e).length === 1);
    expect(c.stdout()).toContain(" [stopped]\n");
    expect(statLines(c.stderr())[0]).toMatch(/, abort;/);
    c.child.stdin.write("hello\n");
    await c.waitFor((o, e) => prompts(o) === 3 && statLines(e).length === 2);
    expect(statLines(c.stderr())[1]).toMatch(/, (stop|length);/);
    c.child.kill("SIGINT");
    expect(await c.exited).toBe(0);
  });

  it("a bad option fails with one line and status 1", async () => {
    cli = runCli([...ARGS, "--max-new-tokens", "lots"]);
    expect(await cli.exited).toBe(1);
    expect(cli.stderr()).toMatch(/--max-new-tokens must be an integer in \[0, 1048576\], got "lots"/);
  });
});

describe("glm4-int4 serve", () => {
  it("listens on 127.0.0.1 (port 0: any free one), answers with the key, stops cleanly on SIGINT", async () => {
    cli = runCli(["serve", "--model", "fixtures/tiny-glm4/original", "--device", "cpu", "--port", "0", "--api-key", "k1", "--max-tokens", "4"]);
    const c = cli;
    await c.waitFor((_, e) => /serve: http:\/\/\S+\/v1/.test(e));
    const base = /serve: (http:\/\/\S+)\/v1/.exec(c.stderr())![1];
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${base}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer k1" },
      body: JSON.stringify({ prompt: "hi", max_tokens: 4, temperature: 0 }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
    expect((await fetch(`${base}/v1/models`)).status).toBe(401);
    c.child.kill("SIGINT");
    expect(await c.exited).toBe(0);
    expect(c.stderr()).toContain("stopping");
  });

  it("a bad option fails with one line and status 1", async () => {
    cli = runCli(["serve", "--model", "fixtures/tiny-glm4/original", "--device", "cpu", "--port", "eighty"]);
    expect(await cli.exited).toBe(1);
    expect(cli.stderr()).toMatch(/--port must be a non-negative integer/);
  });
});
