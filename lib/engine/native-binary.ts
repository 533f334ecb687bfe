/**
 * Which addon binary this process loads (`native()`), and the checks that choose it. The typed surface of what
 * it exports is lib/engine/native.ts.
 *
 * `native()` checks each candidate in a child process before this process loads it (see "Choosing the binary"
 * below), so a binary that crashes, hangs or does not load (a broken CUDA setup, a truncated file, a leftover
 * from another version) is skipped with a warning instead of taking the user's process down.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { Glm4Error } from "../errors.js";
import { packageRoot, packageVersion } from "../util.js";
import type { BuildInfo, DeviceInfo, NativeModule } from "./native.js";

// ---------------------------------------------------------------------------------------------------------
// Choosing the binary
//
// Candidates, in order (absent files are passed over silently):
//   1. GLM4_NATIVE_PATH                                   (a binary you name)
//   2. the prebuild  prebuilds/<platform>-<arch>/*.node   (prebuildify's; node-gyp-build's tag rules pick it)
//   3. build/Release/glm4_native.node, build/Debug/...    (a source build: `npm install` from a clone, or
//                                                          an install where no prebuild loaded; Release goes
//                                                          before 2 when it is the newer file)
//   4. the CPU-only prebuild  prebuilds/<platform>-<arch>/cpu-only/*.node   (last resort; node-gyp-build
//                                                          never picks a file in a subfolder)
// Each present candidate is checked in a child process (spawnSync of this Node with a tiny script that
// requires it and prints buildInfo() and devices() as JSON; GLM4_NATIVE_CHECK_TIMEOUT_MS, default 20 s). The
// first that loads, answers and reports this package's version is loaded here; the others are skipped with
// one warning on stderr per process naming each file and why. The verdict is kept for the process, and on
// disk (GLM4_NATIVE_CHECK_CACHE: default ~/.cache/glm4-int4-native/native-check.json, a folder to put it
// elsewhere, 0 to turn it off) keyed by the file's path, size and mtime, the package and Node versions, the
// NVIDIA kernel driver (/proc/driver/nvidia/version) and CUDA_VISIBLE_DEVICES: a later process with the same
// key loads the binary without the ~0.1-1 s child process. Timeouts are never cached (they may be a busy
// machine). GLM4_NATIVE_CHECK=0 skips the checks and loads the first present candidate (the old behaviour).
// ---------------------------------------------------------------------------------------------------------

export type NativeSource = "GLM4_NATIVE_PATH" | "prebuild" | "build/Release" | "build/Debug" | "cpu-only prebuild";

export interface NativeCandidate {
  file: string;
  source: NativeSource;
}

export interface NativeCheck {
  ok: boolean;
  /** Why the candidate was rejected; for an accepted one, how it was accepted. */
  reason: string;
  /** What the child process saw (absent when the verdict came from the disk cache or the check failed). */
  buildInfo?: BuildInfo;
  devices?: DeviceInfo[];
  /** The verdict came from the on-disk cache: no child process was started. */
  cached: boolean;
  /** Time the check took (ms). */
  ms: number;
}

export interface NativeSelection {
  /** The binary in use, or null when none passed its check. */
  file: string | null;
  source: NativeSource | null;
  /** Why this one (its check's outcome); or why none could be used. */
  why: string;
  /** Present candidates that were passed over, each with the reason. */
  skipped: { file: string; source: NativeSource; reason: string }[];
  /** Every candidate looked for, in order, with whether the file exists. */
  candidates: (NativeCandidate & { present: boolean })[];
  check: NativeCheck | null;
}

export interface NativeCheckOptions {
  /** Child-process time limit (default GLM4_NATIVE_CHECK_TIMEOUT_MS or 20 000). */
  timeoutMs?: number;
  /** The version buildInfo() must report (default: package.json's). */
  expectedVersion?: string;
  /** On-disk cache file, or null for none (default: from GLM4_NATIVE_CHECK_CACHE). */
  cacheFile?: string | null;
}

type NgbTags = { file: string } | undefined;
interface NodeGypBuild {
  parseTags?: (file: string) => NgbTags;
  matchTags?: (runtime: string, abi: string) => (t: NgbTags) => boolean;
  compareTags?: (runtime: string) => (a: NgbTags, b: NgbTags) => number;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The prebuild node-gyp-build would choose among the files of `dir` (its own tag rules), or null. */
function pickPrebuild(dir: string): string | null {
  const files = listDir(dir).filter((f) => f.endsWith(".node"));
  if (!files.length) return null;
  let ngb: NodeGypBuild = {};
  try {
    ngb = createRequire(import.meta.url)("node-gyp-build") as NodeGypBuild;
  } catch {
    // not installed: take the files in name order below
  }
  if (ngb.parseTags && ngb.matchTags && ngb.compareTags) {
    const winner = files.map(ngb.parseTags).filter(ngb.matchTags("node", process.versions.modules)).sort(ngb.compareTags("node"))[0];
    return winner ? path.join(dir, winner.file) : null;
  }
  return path.join(dir, files.sort()[0]!);
}

function exists(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function mtime(file: string): number {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** The candidates for `root` (the package folder), in the order they are tried, present or not. */
export function nativeCandidates(root: string = packageRoot(), env: NodeJS.ProcessEnv = process.env): NativeCandidate[] {
  const out: NativeCandidate[] = [];
  if (env.GLM4_NATIVE_PATH) out.push({ file: path.resolve(env.GLM4_NATIVE_PATH), source: "GLM4_NATIVE_PATH" });
  const tuple = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
  const pre: NativeCandidate = { file: pickPrebuild(tuple) ?? path.join(tuple, "<none>.node"), source: "prebuild" };
  const release: NativeCandidate = { file: path.join(root, "build", "Release", "glm4_native.node"), source: "build/Release" };
  // A source build newer than the prebuild was made on purpose (`npm rebuild --build-from-source`, an install
  // where the prebuild failed, a developer's rebuild after `npm run build:prebuilds`): it goes first.
  out.push(...(mtime(release.file) > mtime(pre.file) ? [release, pre] : [pre, release]));
  out.push({ file: path.join(root, "build", "Debug", "glm4_native.node"), source: "build/Debug" });
  const cpu = pickPrebuild(path.join(tuple, "cpu-only"));
  out.push({ file: cpu ?? path.join(tuple, "cpu-only", "<none>.node"), source: "cpu-only prebuild" });
  return out;
}

const MARK = "@@glm4-native-check@@";
// Runs in the child: load, ask, print one marked JSON line. A crash or a hang here costs only the child.
const CHECK_SCRIPT = `
const say = (o) => process.stdout.write("\\n${MARK}" + JSON.stringify(o) + "\\n");
let m, stage = "load";
try {
  m = require(process.argv[1]);
  stage = "buildInfo()"; const buildInfo = m.buildInfo();
  stage = "devices()"; const devices = m.devices();
  say({ buildInfo, devices });
} catch (e) {
  say({ stage, error: String((e && e.message) || e).split("\\n")[0] });
}
`;

/** The default on-disk cache file (GLM4_NATIVE_CHECK_CACHE), or null when turned off. */
export function defaultCheckCacheFile(env: NodeJS.ProcessEnv = process.env): string | null {
  const v = env.GLM4_NATIVE_CHECK_CACHE;
  if (v === "0" || v === "off" || v === "false") return null;
  const dir = v && v !== "1" ? v : path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "glm4-int4-native");
  return path.join(dir, "native-check.json");
}

function driverFingerprint(): string {
  try {
    return readFileSync("/proc/driver/nvidia/version", "utf8").split("\n")[0]!.trim();
  } catch {
    return "no NVIDIA kernel driver";
  }
}

interface CacheEntry {
  ok: boolean;
  reason: string;
  buildInfo?: BuildInfo;
  at: number;
}
const CACHE_ENTRIES = 64;

function readCache(file: string): Record<string, CacheEntry> {
  try {
    const j = JSON.parse(readFileSync(file, "utf8")) as unknown;
    return j && typeof j === "object" ? (j as Record<string, CacheEntry>) : {};
  } catch {
    return {};
  }
}

function writeCache(file: string, key: string, entry: CacheEntry): void {
  try {
    const all = readCache(file);
    all[key] = entry;
    const keep = Object.entries(all).sort((a, b) => b[1].at - a[1].at).slice(0, CACHE_ENTRIES);
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(Object.fromEntries(keep)));
    renameSync(tmp, file); // atomic: concurrent processes never read half a file
  } catch {
    // a read-only home is fine: the cache is only a shortcut
  }
}

const lastLine = (s: string) => s.trim().split("\n").filter(Boolean).pop() ?? "";

/**
 * Checks one binary in a child process: does it load, answer buildInfo() and devices(), and report
 * `expectedVersion`? Never throws and never loads the binary into this process.
 */
export function checkNative(file: string, options: NativeCheckOptions = {}): NativeCheck {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const expected = options.expectedVersion ?? packageVersion();
  const timeoutMs = options.timeoutMs ?? (Number(process.env.GLM4_NATIVE_CHECK_TIMEOUT_MS) || 20_000);
  const cacheFile = options.cacheFile === undefined ? defaultCheckCacheFile() : options.cacheFile;
  let key = "";
  if (cacheFile) {
    try {
      const st = statSync(file);
      key = JSON.stringify([file, st.size, st.mtimeMs, expected, process.version, process.arch, driverFingerprint(), process.env.CUDA_VISIBLE_DEVICES ?? null]);
      const hit = readCache(cacheFile)[key];
      if (hit && typeof hit.ok === "boolean") return { ok: hit.ok, reason: hit.reason, buildInfo: hit.buildInfo, cached: true, ms: ms() };
    } catch {
      key = "";
    }
  }
  const verdict = (ok: boolean, reason: string, extra: Partial<NativeCheck> = {}, cache = true): NativeCheck => {
    if (cache && key && cacheFile) writeCache(cacheFile, key, { ok, reason, buildInfo: extra.buildInfo, at: Date.now() });
    return { ok, reason, cached: false, ms: ms(), ...extra };
  };
  if (!exists(file)) return { ok: false, reason: "no such file", cached: false, ms: ms() };
  const r = spawnSync(process.execPath, ["-e", CHECK_SCRIPT, file], {
    encoding: "utf8",
    timeout: timeoutMs,
    killSignal: "SIGKILL", // a process stuck in a driver call may ignore SIGTERM
    maxBuffer: 16 << 20,
    windowsHide: true,
  });
  const err = r.error as NodeJS.ErrnoException | undefined;
  if (err?.code === "ETIMEDOUT") return verdict(false, `the check timed out after ${timeoutMs / 1000} s (hung while loading or in buildInfo()/devices())`, {}, false);
  if (err) return verdict(true, `unchecked: could not start the check process (${err.message})`, {}, false);
  const stderr = lastLine(r.stderr ?? "");
  if (r.signal) return verdict(false, `crashed while loading (${r.signal})${stderr ? `: ${stderr}` : ""}`);
  const line = (r.stdout ?? "").split("\n").find((l) => l.startsWith(MARK));
  if (r.status !== 0 || !line) return verdict(false, `the check exited with status ${r.status}${stderr ? `: ${stderr}` : ""}`);
  const res = JSON.parse(line.slice(MARK.length)) as { buildInfo?: BuildInfo; devices?: DeviceInfo[]; stage?: string; error?: string };
  if (res.error !== undefined) return verdict(false, res.stage === "load" ? `does not load: ${res.error}` : `${res.stage} threw: ${res.error}`);
  const info = res.buildInfo!;
  if (info.version !== expected) {
    return verdict(false, `reports version ${info.version} but the package is ${expected} (a binary from another version; rebuild: npm rebuild glm4-int4-native --build-from-source)`, { buildInfo: info, devices: res.devices });
  }
  return verdict(true, `loaded in a child process: version ${info.version}, backends ${info.backends.join("+")}, ${res.devices?.length ?? 0} GPU(s)`, { buildInfo: info, devices: res.devices });
}

/**
 * Tries `candidates` in order: checks each present one (checkNative) and loads the first that passes into this
 * process. Returns the module (null when none could be used) and what happened. Prints nothing.
 */
export function selectNative(candidates: NativeCandidate[], options: NativeCheckOptions & { check?: boolean } = {}): { module: NativeModule | null; selection: NativeSelection } {
  const require = createRequire(import.meta.url);
  const listed = candidates.map((c) => ({ ...c, present: exists(c.file) }));
  const sel: NativeSelection = { file: null, source: null, why: "", skipped: [], candidates: listed, check: null };
  for (const c of listed) {
    if (!c.present) {
      if (c.source === "GLM4_NATIVE_PATH") sel.skipped.push({ file: c.file, source: c.source, reason: "no such file" });
      continue;
    }
    const check: NativeCheck = options.check === false ? { ok: true, reason: "not checked (GLM4_NATIVE_CHECK=0)", cached: false, ms: 0 } : checkNative(c.file, options);
    if (!check.ok) {
      sel.skipped.push({ file: c.file, source: c.source, reason: check.reason });
      continue;
    }
    try {
      const m = require(c.file) as NativeModule;
      Object.assign(sel, { file: c.file, source: c.source, why: `${c.source}: the first candidate that passed its check (${check.cached ? "cached verdict" : check.reason})`, check });
      return { module: m, selection: sel };
    } catch (e) {
      sel.skipped.push({ file: c.file, source: c.source, reason: `passed its check but failed to load here: ${lastLine((e as Error).message)}` });
    }
  }
  sel.why = sel.skipped.length ? "every binary found was skipped" : "no binary found";
  return { module: null, selection: sel };
}

let cached: NativeModule | null = null;
let loadError: unknown = null;
let selection: NativeSelection | null = null;

function selectOnce(): void {
  if (selection) return;
  const { module, selection: sel } = selectNative(nativeCandidates(), { check: process.env.GLM4_NATIVE_CHECK !== "0" });
  selection = sel;
  cached = module;
  if (sel.skipped.length) {
    const lines = sel.skipped.map((s) => `  skipped ${s.file} (${s.source}): ${s.reason}`);
    lines.push(sel.file ? `  using ${sel.file} (${sel.source})` : "  no usable binary is left");
    // Straight to stderr (not process.emitWarning, which --no-warnings would hide): a skipped GPU binary is
    // something the user must be able to see.
    process.stderr.write(`glm4-int4-native: warning: ${sel.skipped.length} native binar${sel.skipped.length === 1 ? "y" : "ies"} skipped\n${lines.join("\n")}\n`);
  }
  if (!module) {
    const tried = sel.skipped.map((s) => `${s.file} (${s.source}): ${s.reason}`).join("; ");
    loadError = new Glm4Error(
      "ERR_GLM4_NATIVE_LOAD",
      `could not load the glm4-int4-native addon: ${tried || `none found (looked for ${sel.candidates.map((c) => c.file).join(", ")})`}. ` +
        "Run `npm rebuild glm4-int4-native --build-from-source` (needs cmake and a C++ compiler; nvcc for the GPU backend), " +
        "or point GLM4_NATIVE_PATH at a glm4_native.node; `npx glm4-int4 inspect gpu` shows what was tried.",
    );
  }
}

/** Which binary `native()` uses and why, with the candidates skipped (and why). Never throws. */
export function nativeSelection(): NativeSelection {
  selectOnce();
  return selection!;
}

/** Loads the addon once (see "Choosing the binary"). Throws Glm4Error(ERR_GLM4_NATIVE_LOAD) with what to do when none can be loaded. */
export function native(): NativeModule {
  if (cached) return cached;
  if (loadError) throw loadError;
  selectOnce();
  if (cached) return cached;
  throw loadError;
}

export function buildInfo(): BuildInfo {
  return native().buildInfo();
}

export function devices(): DeviceInfo[] {
  return native().devices();
}

/**
 * Which compiled code of `archs` (buildInfo().cudaArchitectures: "80", "90a", "90+ptx", ...) runs on a GPU of
 * compute capability `cc` ("8.6"): "sm_86" (a cubin: same major, minor not above the GPU's; an "a" target only
 * on its exact chip), "compute_90 PTX (JIT)" (PTX of a capability not above the GPU's), or null (nothing).
 */
export function runnableCode(cc: string, archs: string[]): string | null {
  const [maj, min] = cc.split(".").map(Number) as [number, number];
  let best: { v: number; name: string } | null = null;
  for (const a of archs) {
    const m = /^(\d+)(\d)(a?)(\+ptx)?$/.exec(a);
    if (!m) continue;
    const [am, an, suffix, ptx] = [Number(m[1]), Number(m[2]), m[3], m[4]];
    if (ptx) continue;
    const fits = suffix === "a" ? am === maj && an === min : am === maj && an <= min;
    if (fits && (!best || am * 10 + an > best.v)) best = { v: am * 10 + an, name: `sm_${am}${an}${suffix}` };
  }
  if (best) return best.name;
  for (const a of archs) {
    const m = /^(\d+)(\d)\+ptx$/.exec(a);
    if (m && Number(m[1]) * 10 + Number(m[2]) <= maj * 10 + min) return `compute_${m[1]}${m[2]} PTX (JIT-compiled by the driver)`;
  }
  return null;
}
