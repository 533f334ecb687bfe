#!/usr/bin/env node
// Builds the addon into build/Release/glm4_native.node for this machine.
//   - cmake + cmake-js available: the CMake build, with CUDA when a CUDA compiler is found
//     (GLM4_CUDA=0 forces CPU only; GLM4_CUDA_ARCHS="90a-real" narrows the architectures for a dev build;
//     GLM4_BUILD_DIR=DIR builds in DIR instead of build/, the binary landing in DIR/Release).
//     An already-configured build dir is reused (incremental: nothing is recompiled when nothing changed); it is
//     reconfigured only when its cached GLM4_CUDA, GLM4_CUDA_ARCHS or build type differ from this run's.
//   - otherwise, or with GLM4_BUILD=gyp: node-gyp with binding.gyp (CPU backend only, always in build/).
// A failed CUDA build falls back to a CPU-only build with a loud warning, unless GLM4_REQUIRE_CUDA=1 (CI sets
// it, so that a CUDA compile error fails CI) — then it fails.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const env = process.env;

// Build against this Node's own headers where they are installed (offline machines cannot download them);
// npm passes its `nodedir` setting as npm_config_nodedir, which cmake-js and node-gyp both read.
if (!env.npm_config_nodedir) {
  const prefix = path.resolve(path.dirname(process.execPath), "..");
  if (existsSync(path.join(prefix, "include", "node", "node.h"))) env.npm_config_nodedir = prefix;
}

function run(cmd, args, extraEnv = {}) {
  console.log(`[glm4-int4-native] ${cmd} ${args.join(" ")}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env: { ...env, ...extraEnv } });
  return r.status === 0;
}
function has(cmd) {
  return spawnSync(cmd, ["--version"], { stdio: "ignore" }).status === 0;
}
function findNvcc() {
  if (env.CUDACXX && existsSync(env.CUDACXX)) return env.CUDACXX;
  if (has("nvcc")) return "nvcc";
  for (const p of ["/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc"]) if (existsSync(p)) return p;
  return null;
}

function gypBuild() {
  let gyp;
  try {
    gyp = require.resolve("node-gyp/bin/node-gyp.js");
  } catch {
    gyp = null;
  }
  return gyp ? run(process.execPath, [gyp, "rebuild"]) : run("node-gyp", ["rebuild"]);
}

const buildDir = path.resolve(root, env.GLM4_BUILD_DIR || "build");

/** The release architecture list: CMakeLists.txt's GLM4_CUDA_ARCHS default (one place says it). */
function defaultArchs() {
  const m = /set\(GLM4_CUDA_ARCHS "([^"]+)" CACHE/.exec(readFileSync(path.join(root, "CMakeLists.txt"), "utf8"));
  if (!m) throw new Error("CMakeLists.txt: no GLM4_CUDA_ARCHS default found");
  return m[1];
}

/** NAME:TYPE=VALUE lines of DIR/CMakeCache.txt, or null when DIR was never configured. */
function cmakeCache(dir) {
  let text;
  try {
    text = readFileSync(path.join(dir, "CMakeCache.txt"), "utf8");
  } catch {
    return null;
  }
  const vars = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z0-9_]+):[A-Z]+=(.*)$/.exec(line);
    if (m) vars[m[1]] = m[2];
  }
  return vars;
}

function cmakeBuild(cuda) {
  const cmakeJs = require.resolve("cmake-js/bin/cmake-js");
  const jobs = String(Math.max(1, os.cpus().length));
  // Always say every knob explicitly: cmake-js only configures a build dir that has no CMakeCache.txt, so a
  // value left out would silently keep whatever an earlier build cached (e.g. a narrowed arch list).
  const want = {
    GLM4_CUDA: cuda ? "ON" : "OFF",
    GLM4_CUDA_ARCHS: env.GLM4_CUDA_ARCHS || defaultArchs(),
    CMAKE_BUILD_TYPE: env.GLM4_DEBUG === "1" ? "Debug" : "Release",
  };
  const common = ["--out", buildDir];
  if (env.GLM4_DEBUG === "1") common.push("--debug");
  const defs = [`--CDGLM4_CUDA=${want.GLM4_CUDA}`, `--CDGLM4_CUDA_ARCHS=${want.GLM4_CUDA_ARCHS}`];
  const extra = {};
  const nvcc = cuda ? findNvcc() : null;
  if (nvcc && nvcc !== "nvcc") extra.CUDACXX = nvcc;
  const cache = cmakeCache(buildDir);
  const stale = cache && Object.entries(want).filter(([k, v]) => cache[k] !== v).map(([k, v]) => `${k} ${cache[k] ?? "unset"} -> ${v}`);
  if (stale && stale.length) {
    console.log(`[glm4-int4-native] reconfiguring ${path.relative(root, buildDir) || "."}: ${stale.join(", ")}`);
    if (!run(process.execPath, [cmakeJs, "configure", ...common, ...defs], extra)) return false;
  } else if (cache) {
    console.log(`[glm4-int4-native] reusing the configured ${path.relative(root, buildDir) || "."} (incremental build)`);
  }
  return run(process.execPath, [cmakeJs, "compile", "--parallel", jobs, ...common, ...defs], extra);
}

const wantGyp = env.GLM4_BUILD === "gyp";
const cudaWanted = env.GLM4_CUDA !== "0" && findNvcc() !== null;
let ok;
if (wantGyp || !has("cmake")) {
  if (!wantGyp) console.warn("[glm4-int4-native] cmake not found: building the CPU backend with node-gyp");
  ok = gypBuild();
} else {
  ok = cmakeBuild(cudaWanted);
  if (!ok && cudaWanted) {
    if (env.GLM4_REQUIRE_CUDA === "1") {
      console.error("[glm4-int4-native] the CUDA build failed (GLM4_REQUIRE_CUDA=1, no fallback)");
      process.exit(1);
    }
    console.warn("\n[glm4-int4-native] WARNING: the CUDA build failed; building the CPU backend only.\n" +
      "  The library will run on the CPU. Set GLM4_REQUIRE_CUDA=1 to make this an error.\n");
    rmSync(buildDir, { recursive: true, force: true });
    ok = cmakeBuild(false);
  }
  if (!ok) {
    console.warn("[glm4-int4-native] the CMake build failed; trying node-gyp (CPU backend only)");
    ok = gypBuild();
  }
}
process.exit(ok ? 0 : 1);
