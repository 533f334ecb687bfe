// The native loader (lib/engine/native-binary.ts, "Choosing the binary"): each candidate binary is checked in a child process
// before this process loads it; a binary that does not load, crashes, hangs or reports another version is
// skipped with a warning on stderr, and the library goes on with the next one. The bad binaries here are real
// files: a truncated copy of the addon, a text file, and small shared objects compiled by the test (one that
// aborts in its constructor, one that never returns, one N-API module that reports another version); the
// compiled ones are skipped where no C compiler is on PATH.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { checkNative, native, nativeCandidates, nativeSelection, runnableCode, selectNative } from "../lib/engine/native-binary.js";
import { packageRoot } from "../lib/util.js";
import { loadGlm4 } from "../lib/glm4.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "glm4-native-loader-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const version = (JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { version: string }).version;
const noCache = { cacheFile: null };

/** The binary this checkout would use without GLM4_NATIVE_PATH (the CUDA or CPU source build, or a prebuild). */
function realBinary(): string {
  const env = { ...process.env };
  delete env.GLM4_NATIVE_PATH;
  const found = nativeCandidates(packageRoot(), env).find((c) => checkNative(c.file, noCache).ok);
  if (!found) throw new Error("no working glm4_native.node in this checkout: run `npm install` first");
  return found.file;
}
const real = process.env.GLM4_NATIVE_PATH ?? realBinary();

const cc = ["cc", "gcc", "g++"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
/** Compiles C `code` into a shared object named `name` in the temp dir. */
function sharedObject(name: string, code: string, includeDir?: string): string {
  const src = path.join(tmp, `${name}.c`);
  const out = path.join(tmp, name);
  writeFileSync(src, code);
  const args = ["-shared", "-fPIC", "-x", "c", src, "-o", out];
  if (includeDir) args.unshift(`-I${includeDir}`);
  const r = spawnSync(cc!, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cc} failed: ${r.stderr}`);
  return out;
}
const nodeInclude = path.join(path.dirname(process.execPath), "..", "include", "node");
const haveNodeHeaders = (() => {
  try {
    readFileSync(path.join(nodeInclude, "node_api.h"));
    return true;
  } catch {
    return false;
  }
})();

describe("the process-wide loader", () => {
  it("skips a broken binary named by GLM4_NATIVE_PATH with one warning and runs the model on the next one", async () => {
    // A truncated copy of the real addon: the ELF header is fine, the rest is missing. dlopen maps the segments
    // the header promises and touches pages past the end of the file: SIGBUS (glibc 2.36 here), or an error,
    // depending on where the cut falls. Loaded in-process, the SIGBUS would kill the test runner.
    const broken = path.join(tmp, "truncated.node");
    writeFileSync(broken, readFileSync(real).subarray(0, 4096));
    const saved = { path: process.env.GLM4_NATIVE_PATH, cache: process.env.GLM4_NATIVE_CHECK_CACHE };
    process.env.GLM4_NATIVE_PATH = broken;
    process.env.GLM4_NATIVE_CHECK_CACHE = "0";
    const writes: string[] = [];
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    try {
      const m = native();
      native(); // a second call warns no more
      expect(typeof m.buildInfo).toBe("function");
    } finally {
      spy.mockRestore();
      for (const [k, v] of [["GLM4_NATIVE_PATH", saved.path], ["GLM4_NATIVE_CHECK_CACHE", saved.cache]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const warning = writes.join("");
    expect(writes).toHaveLength(1);
    expect(warning).toContain("warning: 1 native binary skipped");
    expect(warning).toMatch(new RegExp(`skipped ${broken} \\(GLM4_NATIVE_PATH\\): (does not load|crashed while loading)`));
    const sel = nativeSelection();
    expect(sel.skipped).toEqual([{ file: broken, source: "GLM4_NATIVE_PATH", reason: expect.stringMatching(/^(does not load: |crashed while loading \(SIG)/) }]);
    expect(sel.file).not.toBe(broken);
    expect(warning).toContain(`using ${sel.file}`);

    const model = await loadGlm4(path.join(packageRoot(), "fixtures/tiny-glm4/original"), { device: "cpu" });
    try {
      const r = await model.generate("你好", { maxNewTokens: 4 });
      expect(r.tokens.length).toBeGreaterThan(0);
    } finally {
      await model.dispose();
    }
  });
});

describe("checkNative: one binary, in a child process", () => {
  it("accepts the real addon and reports what it saw", () => {
    const c = checkNative(real, noCache);
    expect(c).toMatchObject({ ok: true, cached: false });
    expect(c.buildInfo!.version).toBe(version);
    expect(Array.isArray(c.devices)).toBe(true);
  });

  it("rejects a file that is not a shared object", () => {
    const text = path.join(tmp, "text.node");
    writeFileSync(text, "this is not an ELF file\n".repeat(100));
    expect(checkNative(text, noCache)).toMatchObject({ ok: false, reason: expect.stringMatching(/^does not load: .*(invalid ELF header|file too short)/) });
  });

  it("rejects a missing file", () => {
    expect(checkNative(path.join(tmp, "nothing.node"), noCache)).toMatchObject({ ok: false, reason: "no such file" });
  });

  it.skipIf(!cc)("survives a binary that aborts while loading (the crash stays in the child)", () => {
    const crash = sharedObject("abort.node", "#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n");
    expect(checkNative(crash, noCache)).toMatchObject({ ok: false, reason: expect.stringMatching(/^crashed while loading \(SIGABRT\)/) });
    // and a selection over [crashing, real] lands on the real one
    const { module, selection } = selectNative([{ file: crash, source: "GLM4_NATIVE_PATH" }, { file: real, source: "build/Release" }], noCache);
    expect(module).not.toBeNull();
    expect(selection.file).toBe(real);
    expect(selection.skipped.map((s) => s.file)).toEqual([crash]);
  });

  it.skipIf(!cc)("kills a binary that hangs while loading after the time limit", () => {
    const hang = sharedObject("hang.node", "#include <unistd.h>\n__attribute__((constructor)) static void stuck(void) { for (;;) pause(); }\n");
    // The reason shows the 1.5 s limit killed it (no clock read here: a loaded machine must pass too; a check that
    // never returned would hit the test's own timeout).
    expect(checkNative(hang, { ...noCache, timeoutMs: 1500 })).toMatchObject({ ok: false, reason: expect.stringMatching(/timed out after 1.5 s/) });
  });

  describe.skipIf(!cc || !haveNodeHeaders)("a working N-API module from another version", () => {
    const other = () =>
      sharedObject(
        "other-version.node",
        `#include <node_api.h>
static napi_value info(napi_env env, napi_callback_info ci) {
  napi_value o, v, a; napi_create_object(env, &o);
  napi_create_string_utf8(env, "0.0.0-other", NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "version", v);
  napi_create_array(env, &a); napi_set_named_property(env, o, "backends", a);
  return o;
}
static napi_value devs(napi_env env, napi_callback_info ci) { napi_value a; napi_create_array(env, &a); return a; }
NAPI_MODULE_INIT() {
  napi_value f; napi_create_function(env, "buildInfo", NAPI_AUTO_LENGTH, info, NULL, &f); napi_set_named_property(env, exports, "buildInfo", f);
  napi_create_function(env, "devices", NAPI_AUTO_LENGTH, devs, NULL, &f); napi_set_named_property(env, exports, "devices", f);
  return exports;
}
`,
        nodeInclude,
      );

    it("is skipped: its buildInfo().version is not package.json's", () => {
      const c = checkNative(other(), noCache);
      expect(c).toMatchObject({ ok: false, reason: expect.stringMatching(new RegExp(`^reports version 0\\.0\\.0-other but the package is ${version.replace(/\./g, "\\.")}`)) });
    });

    it("has its verdict cached on disk, keyed by size and mtime", () => {
      const file = other();
      const cacheFile = path.join(tmp, "cache", "native-check.json");
      const first = checkNative(file, { cacheFile });
      const second = checkNative(file, { cacheFile });
      expect(first.cached).toBe(false);
      expect(second).toMatchObject({ ok: false, cached: true, reason: first.reason });
      utimesSync(file, new Date(), new Date(Date.now() + 5000)); // a rebuilt file: checked again
      expect(checkNative(file, { cacheFile }).cached).toBe(false);
    });
  });
});

describe("candidates", () => {
  it("are GLM4_NATIVE_PATH, the prebuild, build/Release (first when newer), build/Debug, then the CPU-only prebuild; node-gyp-build never picks the CPU-only one", () => {
    const root = path.join(tmp, "pkg");
    const tuple = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
    mkdirSync(path.join(tuple, "cpu-only"), { recursive: true });
    mkdirSync(path.join(root, "build", "Release"), { recursive: true });
    const main = path.join(tuple, "glm4-int4-native.glibc.node");
    const cpu = path.join(tuple, "cpu-only", "glm4-int4-native.glibc.node");
    const release = path.join(root, "build", "Release", "glm4_native.node");
    for (const f of [main, cpu, release]) copyFileSync(real, f);
    const old = new Date("2020-01-01"), now = new Date();
    utimesSync(release, old, old);
    const list = nativeCandidates(root, { GLM4_NATIVE_PATH: "/x/y.node" });
    expect(list.map((c) => [c.source, c.file])).toEqual([
      ["GLM4_NATIVE_PATH", "/x/y.node"],
      ["prebuild", main],
      ["build/Release", release],
      ["build/Debug", path.join(root, "build", "Debug", "glm4_native.node")],
      ["cpu-only prebuild", cpu],
    ]);
    // a source build newer than the prebuild (npm rebuild --build-from-source, a developer's rebuild) goes first
    utimesSync(main, old, old);
    utimesSync(release, now, now);
    expect(nativeCandidates(root, {}).map((c) => c.source)).toEqual(["build/Release", "prebuild", "build/Debug", "cpu-only prebuild"]);
    // node-gyp-build (what other tools use) takes build/Release, else the main prebuild, never cpu-only/.
    const ngb = createRequire(import.meta.url)("node-gyp-build") as { resolve: (dir: string) => string };
    rmSync(path.join(root, "build"), { recursive: true });
    expect(ngb.resolve(root)).toBe(main);
    rmSync(main);
    expect(() => ngb.resolve(root)).toThrow(/No native build was found/);
  });
});

describe("runnableCode", () => {
  const archs = ["80", "86", "89", "90a", "90+ptx"];
  it.each([
    ["8.0", "sm_80"],
    ["8.6", "sm_86"],
    ["8.7", "sm_86"],
    ["8.9", "sm_89"],
    ["9.0", "sm_90a"],
    ["10.0", "compute_90 PTX (JIT-compiled by the driver)"],
    ["12.0", "compute_90 PTX (JIT-compiled by the driver)"],
    ["7.5", null],
  ])("compute %s runs %s", (capability, want) => {
    expect(runnableCode(capability, archs)).toBe(want);
  });
  it("an 'a' target runs only on its own chip", () => {
    expect(runnableCode("9.0", ["90a"])).toBe("sm_90a");
    expect(runnableCode("10.0", ["90a"])).toBeNull();
  });
});
