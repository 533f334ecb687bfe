#!/usr/bin/env node
// prebuildify's "node-gyp" for this package (`npm run build:prebuilds` sets PREBUILD_NODE_GYP to this file).
//
// prebuildify 6 runs `$PREBUILD_NODE_GYP rebuild --target=<node> --devdir=... --arch=x64 --release`, then strips
// and moves the first .node file of build/Release to prebuilds/<platform>-<arch>/. The node-gyp arguments do not
// apply here (an N-API addon does not depend on the Node version), so they are ignored and the SAME CMake
// build as a source install runs instead: scripts/build-native.mjs with the full release architecture set
// (CMakeLists.txt's default: sm_80, 86, 89, 90a real code + compute_90 PTX, static CUDA runtime, stripped).
// It reuses an already-configured build/ (CI's `npm install` has just built it: nothing is recompiled).
// A prebuild without CUDA would be worse than none, so this fails unless the result has the CUDA backend
// with every release architecture.
//
//   node scripts/prebuild-gyp.mjs --cpu-only
// builds the CPU-only fallback (GLM4_CUDA=0, in build/cpu-only/) and copies it to
// prebuilds/<platform>-<arch>/cpu-only/<same name as the main prebuild>. node-gyp-build never picks a file in a
// subfolder (it only parses file names directly under prebuilds/<platform>-<arch>/), so only lib/engine/native-binary.ts's
// loader uses it: as the last resort when no other binary passes its check.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const platform = process.env.PREBUILD_PLATFORM || os.platform();
const arch = process.env.PREBUILD_ARCH || os.arch();
const say = (m) => console.log(`[glm4-int4-native prebuild] ${m}`);
function fail(m) {
  console.error(`[glm4-int4-native prebuild] ${m}`);
  process.exit(1);
}
if (platform !== os.platform() || arch !== os.arch()) fail(`cross-building (${platform}-${arch} on ${os.platform()}-${os.arch()}) is not supported`);

const releaseArchs = /set\(GLM4_CUDA_ARCHS "([^"]+)" CACHE/.exec(readFileSync(path.join(root, "CMakeLists.txt"), "utf8"))[1];
// The names buildInfo().cudaArchitectures reports for them ("90a-real" -> "90a", "90-virtual" -> "90+ptx").
const wantArchs = releaseArchs.split(";").map((a) => a.replace("-real", "").replace("-virtual", "+ptx"));

/** Runs build-native.mjs with `extra` in the environment. */
function buildNative(extra) {
  const env = { ...process.env, ...extra };
  delete env.GLM4_BUILD; // always the CMake build
  if (!("GLM4_CUDA_ARCHS" in extra)) delete env.GLM4_CUDA_ARCHS;
  const r = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs")], { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) fail(`scripts/build-native.mjs failed (${r.signal ?? `status ${r.status}`})`);
}

/** buildInfo() of `file`, read in a child process (a binary that crashes must not take this script down). */
function buildInfoOf(file) {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(JSON.stringify(require(process.argv[1]).buildInfo()))", file], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) fail(`${file} does not load: ${r.signal ?? r.stderr.trim().split("\n").pop()}`);
  return JSON.parse(r.stdout);
}

const version = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")).version;

if (process.argv.includes("--cpu-only")) {
  const dir = path.join(root, "build", "cpu-only");
  buildNative({ GLM4_CUDA: "0", GLM4_BUILD_DIR: dir, GLM4_DEBUG: "0" });
  const built = path.join(dir, "Release", "glm4_native.node");
  const info = buildInfoOf(built);
  if (info.version !== version) fail(`${built} reports version ${info.version}, package.json says ${version}`);
  const folder = path.join(root, "prebuilds", `${platform}-${arch}`);
  const main = existsSync(folder) ? readdirSync(folder).filter((f) => f.endsWith(".node")) : [];
  if (main.length !== 1) fail(`expected exactly one prebuild in ${folder} (run prebuildify first), found ${main.length}`);
  const out = path.join(folder, "cpu-only");
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  copyFileSync(built, path.join(out, main[0]));
  spawnSync("strip", ["--strip-all", path.join(out, main[0])], { stdio: "inherit" });
  say(`CPU-only fallback: ${path.relative(root, path.join(out, main[0]))} (backends ${info.backends.join(", ")})`);
} else {
  // This run replaces the folder's prebuilds: drop stale ones (another name, an old CPU fallback).
  rmSync(path.join(root, "prebuilds", `${platform}-${arch}`), { recursive: true, force: true });
  mkdirSync(path.join(root, "prebuilds", `${platform}-${arch}`), { recursive: true });
  // prebuildify takes the FIRST .node of build/Release: make sure ours is the only one there.
  const release = path.join(root, "build", "Release");
  if (existsSync(release)) for (const f of readdirSync(release)) if (f.endsWith(".node") && f !== "glm4_native.node") rmSync(path.join(release, f));
  buildNative({ GLM4_CUDA: "1", GLM4_REQUIRE_CUDA: "1", GLM4_DEBUG: "0" });
  const built = path.join(release, "glm4_native.node");
  const info = buildInfoOf(built);
  const missing = wantArchs.filter((a) => !info.cudaArchitectures.includes(a));
  if (!info.backends.includes("cuda") || missing.length) {
    fail(`${built} lacks the CUDA backend or architectures ${missing.join(", ")} (backends ${info.backends.join(", ")}, ` +
      `archs ${info.cudaArchitectures.join(", ") || "none"}); is nvcc on PATH?`);
  }
  if (info.version !== version) fail(`${built} reports version ${info.version}, package.json says ${version}`);
  say(`CUDA prebuild ready: ${path.relative(root, built)} (archs ${info.cudaArchitectures.join(", ")}, CUDA runtime ${info.cudaRuntimeVersion})`);
}
