/** Runs the built CLI (dist/cli.js) as a child process; rebuilds dist first when a lib/ source is newer. */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");

/** Builds dist/ with tsc when it is missing or older than a file in lib/ (tests must run the current code). */
export function ensureBuilt(): void {
  const cli = path.join(ROOT, "dist/cli.js");
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)));
  if (existsSync(cli) && statSync(cli).mtimeMs >= newest(path.join(ROOT, "lib"))) return;
  execFileSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "inherit" });
}

export interface Cli {
  child: ChildProcessWithoutNullStreams;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when stdout/stderr satisfy `pred`; rejects after `ms` with what was printed. */
  waitFor: (pred: (out: string, err: string) => boolean, ms?: number) => Promise<void>;
  exited: Promise<number | null>;
}

export function runCli(args: string[]): Cli {
  const child = spawn(process.execPath, [path.join(ROOT, "dist/cli.js"), ...args], { cwd: ROOT, stdio: "pipe" });
  let out = "", err = "";
  const waiters: (() => void)[] = [];
  const poke = () => waiters.splice(0).forEach((w) => w());
  child.stdout.setEncoding("utf8").on("data", (d: string) => ((out += d), poke()));
  child.stderr.setEncoding("utf8").on("data", (d: string) => ((err += d), poke()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => (poke(), resolve(code))));
  let running = true;
  void exited.then(() => (running = false));
  // The deadline is for an event that is expected (a prompt, a line): generous, so a loaded machine still passes.
  const waitFor = (pred: (o: string, e: string) => boolean, ms = 120_000) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out; stdout:\n${out}\nstderr:\n${err}`)), ms);
      const check = () => {
        if (pred(out, err)) {
          clearTimeout(timer);
          resolve();
        } else if (!running) {
          clearTimeout(timer);
          reject(new Error(`the CLI exited; stdout:\n${out}\nstderr:\n${err}`));
        } else waiters.push(check);
      };
      check();
    });
  return { child, stdout: () => out, stderr: () => err, waitFor, exited };
}
