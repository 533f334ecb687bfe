/**
 * The command line's rough edges (issue 16): --version, --help for every command, numbers checked before any
 * output with one coded line and status 1 (never a doubled code), a one-token reply's speed, `bench` on the
 * tiny checkpoint (the advice the bench gives on a machine without a GPU), devices and threads the library
 * refuses by name.
 */
import path from "node:path";
import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { Glm4Error, loadGlm4 } from "../lib/index.js";
import { ensureBuilt, ROOT, runCli } from "./helpers/cli.js";

const TINY = path.join(ROOT, "fixtures/tiny-glm4/original");

beforeAll(() => ensureBuilt(), 300_000);

/** Runs the CLI to its end. */
async function run(args: string[]) {
  const cli = runCli(args);
  const status = await cli.exited;
  return { status, out: cli.stdout(), err: cli.stderr() };
}

/** One line `glm4-int4: CODE: message` on stderr, nothing on stdout, status 1, the code once. */
function expectOneCodedLine(r: { status: number | null; out: string; err: string }, code: string, says: RegExp) {
  expect(r.status).toBe(1);
  expect(r.out).toBe("");
  const lines = r.err.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0].startsWith(`glm4-int4: ${code}: `)).toBe(true);
  expect(lines[0]).toMatch(says);
  // Exactly one code on the line (never "ENOENT: ENOENT" or "ERR_X: ERR_X").
  expect(lines[0].match(/\b(ERR_[A-Z0-9_]+|E[A-Z]{3,}):/g)).toHaveLength(1);
}

describe("glm4-int4 command line", () => {
  it("--version prints the package's version", async () => {
    const version = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version;
    for (const flag of ["--version", "-v", "version"]) {
      const r = await run([flag]);
      expect(r.status).toBe(0);
      expect(r.out).toBe(`glm4-int4 ${version}\n`);
    }
  });

  it("--help for every command prints that command's usage", async () => {
    for (const cmd of ["generate", "chat", "serve", "inspect", "quantize", "bench"]) {
      for (const flag of ["--help", "-h"]) {
        const r = await run([cmd, flag]);
        expect(r.status, `${cmd} ${flag}: ${r.err}`).toBe(0);
        expect(r.out.startsWith(`glm4-int4 ${cmd} `)).toBe(true);
        expect(r.err).toBe("");
      }
    }
  });

  it("bad numbers are refused before any output, with one coded line", async () => {
    const cases: [string[], RegExp][] = [
      [["inspect", "--model", TINY, "--max-context", "abc"], /--max-context must be an integer in \[1, \d+\], got "abc"/],
      [["inspect", "--model", TINY, "--max-context=-5"], /--max-context must be an integer in \[1, \d+\], got "-5"/],
      [["inspect", "--model", TINY, "--max-context", "-5"], /max-context/],
      [["inspect", "--model", TINY, "--max-context", "4096"], /maxContext must be an integer in \[1, 1024\], got 4096/],
      [["generate", "--model", TINY, "--prompt", "hi", "--top-p", "2"], /--top-p must be a number in \[0, 1\], got "2"/],
      [["generate", "--model", TINY, "--prompt", "hi", "--temperature=-1"], /--temperature must be a number in \[0, 100\]/],
      [["generate", "--model", TINY, "--prompt", "hi", "--threads", "0"], /--threads must be an integer in \[1, 1024\], got "0"/],
      [["generate", "--model", TINY, "--prompt", "hi", "--device", "tpu"], /--device must be auto, cpu, cuda or cuda:N, got "tpu"/],
      [["generate", "--model", TINY, "--prompt", "hi", "--group-size", "100"], /--group-size must be one of 32, 64, 128, got "100"/],
      [["quantize", "--model", TINY, "--out", "/tmp/x", "--group-size", "7"], /--group-size must be one of 32, 64, 128/],
      [["bench", "--model", TINY, "--runs", "0"], /--runs must be an integer in \[1, 1000\], got "0"/],
      [["bench", "--model", TINY, "--contexts", "128,abc"], /--contexts must be an integer/],
      [["serve", "--model", TINY, "--port", "70000"], /--port must be at most 65535/],
      [["generate", "--no-such-option"], /Unknown option '--no-such-option'/],
      [["nonsense"], /unknown command "nonsense"/],
    ];
    for (const [args, says] of cases) {
      const r = await run(args);
      expectOneCodedLine(r, "ERR_GLM4_INVALID_ARGUMENT", says);
    }
  });

  it("a missing directory gives one code, not a doubled one", async () => {
    expectOneCodedLine(await run(["inspect", "--model", "/no/such/dir"]), "ERR_GLM4_FILE_NOT_FOUND", /\/no\/such\/dir/);
    expectOneCodedLine(await run(["generate", "--model", "/no/such/dir", "--prompt", "x"]), "ERR_GLM4_FILE_NOT_FOUND", /\/no\/such\/dir/);
  });

  it("a one-token reply prints n/a, not 0.0 tok/s", async () => {
    const r = await run(["generate", "--model", TINY, "--prompt", "hi", "--max-new-tokens", "1", "--device", "cpu"]);
    expect(r.status).toBe(0);
    expect(r.err).toMatch(/generated 1 tokens at n\/a tok\/s/);
    // a rate of exactly zero, not any rate whose digits end in "0.0" (a prefill of 250.0 tok/s is fine)
    expect(r.err).not.toMatch(/(^|[^0-9.])0\.0 tok\/s/);
  });

  it("bench --model fixtures/tiny-glm4/original runs on the CPU (the lengths shrink to the model's 1024 positions)", async () => {
    const r = await run(["bench", "--model", "fixtures/tiny-glm4/original", "--device", "cpu", "--runs", "1", "--new-tokens", "8", "--json"]);
    expect(r.status, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.memory.maxContext).toBeLessThanOrEqual(1024);
    expect(j.prefill.map((p: { tokens: number }) => p.tokens)).toEqual([512]);
    expect(j.decode.map((d: { context: number }) => d.context)).toEqual([128]);
    expect(j.decode[0].tokensPerSecond).toBeGreaterThan(0);
    // Lengths asked for that cannot fit are refused by name.
    expectOneCodedLine(await run(["bench", "--model", "fixtures/tiny-glm4/original", "--device", "cpu", "--contexts", "2048"]), "ERR_GLM4_INVALID_ARGUMENT", /--contexts 2048 does not fit this model's 1024 positions/);
  });

  it("the library refuses an unknown device and bad thread counts by name", async () => {
    const codeOf = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        return [(e as Glm4Error).code, (e as Error).message];
      }
      return ["no error", ""];
    };
    const [code, msg] = await codeOf(loadGlm4(TINY, { device: "tpu" as "cpu" }));
    expect(code).toBe("ERR_GLM4_INVALID_ARGUMENT");
    expect(msg).toMatch(/device must be "auto", "cpu", "cuda" or "cuda:N", got "tpu"/);
    for (const threads of [0, -1, 1.5, 1e6, Number.NaN]) {
      const [c, m] = await codeOf(loadGlm4(TINY, { device: "cpu", threads }));
      expect(c).toBe("ERR_GLM4_INVALID_ARGUMENT");
      expect(m).toMatch(/threads must be an integer in \[1, 1024\]/);
    }
  });
});
