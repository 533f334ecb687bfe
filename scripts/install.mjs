#!/usr/bin/env node
// npm's "install" script. Compiles nothing where a prebuilt binary works:
//   1. the prebuild for this platform (prebuilds/<platform>-<arch>/, chosen by node-gyp-build's tag rules) is
//      checked in a child process (it must load, answer buildInfo() and devices(), and report this package's
//      version; a crash or a hang costs only the child). It passes: done.
//   2. otherwise, build from source: scripts/build-native.mjs (CMake with CUDA where nvcc is, else CPU only;
//      node-gyp with binding.gyp where cmake is missing).
//      - PREBUILDS_ONLY=1: no compiling; without a working prebuild, the CPU-only prebuild
//        (prebuilds/<platform>-<arch>/cpu-only/) is accepted with a warning, and with neither, install fails.
//      - a failed source build is not fatal where the CPU-only prebuild works (warning: the library will run
//        on the CPU), unless GLM4_REQUIRE_CUDA=1.
//   `npm rebuild glm4-int4-native --build-from-source` (or GLM4_BUILD_FROM_SOURCE=1) skips step 1.
// A clone of the repository has no prebuilds/ (git-ignored), so `npm install` there builds from source.
// The runtime loader (lib/engine/native-binary.ts) checks binaries the same way again, so an install-time verdict that
// later goes stale (a driver update, a moved GPU) never crashes the user's process either.
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const env = process.env;
const on = (v) => v !== undefined && v !== "" && v !== "0" && v !== "false";
const say = (m) => console.log(`[glm4-int4-native] ${m}`);
const warn = (m) => console.warn(`[glm4-int4-native] WARNING: ${m}`);
const version = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")).version;
const tuple = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);

function list(dir) {
  try {
    return readdirSync(dir).filter((f) => f.endsWith(".node"));
  } catch {
    return [];
  }
}

/** The prebuild node-gyp-build would pick in `dir`, or null. */
function pick(dir) {
  const files = list(dir);
  if (!files.length) return null;
  try {
    const ngb = require("node-gyp-build");
    const w = files.map(ngb.parseTags).filter(ngb.matchTags("node", process.versions.modules)).sort(ngb.compareTags("node"))[0];
    return w ? path.join(dir, w.file) : null;
  } catch {
    return path.join(dir, files.sort()[0]);
  }
}

/** Loads `file` in a child process; returns null when it works, else why not. */
function check(file) {
  const script =
    "const m=require(process.argv[1]);const b=m.buildInfo();const d=m.devices();" +
    "process.stdout.write('\\n@@'+JSON.stringify({v:b.version,backends:b.backends,archs:b.cudaArchitectures,status:b.cudaStatus,gpus:d.map(x=>x.name+' '+x.computeCapability)}))";
  const timeout = Number(env.GLM4_NATIVE_CHECK_TIMEOUT_MS) || 20_000;
  const r = spawnSync(process.execPath, ["-e", script, file], { encoding: "utf8", timeout, killSignal: "SIGKILL" });
  const last = (s) => (s || "").trim().split("\n").filter(Boolean).pop() || "";
  if (r.error?.code === "ETIMEDOUT") return `timed out after ${timeout / 1000} s`;
  if (r.error) return `could not start a check: ${r.error.message}`;
  if (r.signal) return `crashed while loading (${r.signal})`;
  const line = (r.stdout || "").split("\n").find((l) => l.startsWith("@@"));
  if (r.status !== 0 || !line) return `does not load: ${last(r.stderr)}`;
  const j = JSON.parse(line.slice(2));
  if (j.v !== version) return `reports version ${j.v}, the package is ${version}`;
  say(`${path.relative(root, file)}: backends ${j.backends.join("+")}, CUDA archs ${j.archs.join(", ") || "none"}; ` +
    `${j.gpus.length ? `GPUs: ${j.gpus.join(", ")}` : `no GPU (${j.status})`}`);
  return null;
}

/** Accepts the CPU-only prebuild, if it works, with a warning; returns whether it did. */
function cpuFallback(why) {
  const cpu = pick(path.join(tuple, "cpu-only"));
  const bad = cpu ? check(cpu) : "none shipped for this platform";
  if (bad) {
    console.error(`[glm4-int4-native] CPU-only prebuild: ${bad}`);
    return false;
  }
  warn(`${why}; using the CPU-only prebuild ${path.relative(root, cpu)}: the library will run on the CPU only.`);
  return true;
}

const fromSource = on(env.GLM4_BUILD_FROM_SOURCE) || env.npm_config_build_from_source === "true";
const prebuildsOnly = on(env.PREBUILDS_ONLY);
if (!fromSource) {
  const pre = pick(tuple);
  if (pre) {
    const bad = check(pre);
    if (!bad) {
      say(`using the prebuilt binary ${path.relative(root, pre)} (nothing to compile)`);
      process.exit(0);
    }
    warn(`the prebuilt binary ${path.relative(root, pre)} cannot be used: ${bad}`);
  } else {
    say(`no prebuilt binary for ${process.platform}-${process.arch}`);
  }
  if (prebuildsOnly) {
    if (cpuFallback("PREBUILDS_ONLY=1 and no usable CUDA prebuild")) process.exit(0);
    console.error(`[glm4-int4-native] PREBUILDS_ONLY=1: no usable prebuilt binary for ${process.platform}-${process.arch}, and compiling is off. ` +
      "Unset PREBUILDS_ONLY to build from source (needs cmake or python3 + make, and a C++ compiler; nvcc for the GPU backend).");
    process.exit(1);
  }
}

say("building from source");
const r = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs")], { cwd: root, stdio: "inherit" });
if (r.status === 0) process.exit(0);
if (!on(env.GLM4_REQUIRE_CUDA) && cpuFallback("the source build failed")) process.exit(0);
process.exit(r.status ?? 1);
