/**
 * `quantize` and INT4 checkpoints: the tiny checkpoint (both namings) quantized at every group size loads to
 * logits bit-identical to a load-time INT4 quantization of the BF16 checkpoint; the codes match the numpy
 * reference (scripts/int4_ref.py) bit for bit; the output is complete and self-describing; and every refusal
 * (source directory, existing output, abort, already quantized) leaves the disk as it was.
 */
import { cp, mkdir, readFile, readdir, stat, symlink, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, Glm4Error } from "../lib/index.js";
import { quantizeCheckpoint } from "../lib/checkpoint/quantize.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import { INT4_RECORD_FILE } from "../lib/checkpoint/int4-format.js";
import { cleanupTempDirs, tempDir } from "./helpers/st-writer.js";
import { ensureBuilt, runCli } from "./helpers/cli.js";

const FIX = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4");
const golden = JSON.parse(readFileSync(path.join(FIX, "golden/logits.json"), "utf8"));
const P1: number[] = golden.prompts.P1;

afterAll(cleanupTempDirs);

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(Glm4Error);
    return (e as Glm4Error).code;
  }
  throw new Error("expected a rejection");
}

async function logitsOf(dir: string, opts: Parameters<typeof loadGlm4>[1]): Promise<Float32Array> {
  const m = await loadGlm4(dir, { device: "cpu", ...opts });
  try {
    return await m.logits(P1);
  } finally {
    await m.dispose();
  }
}

describe("quantize: round trip", () => {
  for (const naming of ["original", "hf"] as const) {
    for (const G of [32, 64, 128] as const) {
      it(`${naming}, group ${G}: loading the INT4 checkpoint gives the same logits, bit for bit, as quantizing at load`, async () => {
        const out = path.join(await tempDir("glm4-q-"), "int4");
        // Small shards for one case so that the index spreads the tensors over several files.
        const r = await quantizeCheckpoint(path.join(FIX, naming), out, { groupSize: G, device: "cpu", maxShardBytes: G === 64 ? 300_000 : undefined });
        expect(r.record.group_size).toBe(G);
        expect(r.shards.length).toBe(G === 64 ? r.shards.length : 1);
        if (G === 64) expect(r.shards.length).toBeGreaterThan(3);
        const want = await logitsOf(path.join(FIX, naming), { quantization: "int4", groupSize: G });
        const m = await loadGlm4(out, { device: "cpu" });
        try {
          expect(m.info.groupSize).toBe(G);
          const got = await m.logits(P1);
          expect(got.every(Number.isFinite)).toBe(true);
          expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
        } finally {
          await m.dispose();
        }
      });
    }
  }

  it("writes what the format says: record, index, shards, dtypes and shapes, copied config and tokenizer files", async () => {
    const out = path.join(await tempDir("glm4-q-"), "int4");
    await quantizeCheckpoint(path.join(FIX, "original"), out, { groupSize: 128, device: "cpu" });
    const files = (await readdir(out)).sort();
    expect(files).toEqual(["config.json", "generation_config.json", INT4_RECORD_FILE, "model-00001-of-00001.safetensors", "model.safetensors.index.json", "tokenizer.model", "tokenizer_config.json"].sort());
    for (const f of ["config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"]) {
      expect((await readFile(path.join(out, f))).equals(await readFile(path.join(FIX, "original", f)))).toBe(true);
    }
    const rec = JSON.parse(await readFile(path.join(out, INT4_RECORD_FILE), "utf8"));
    expect(rec).toMatchObject({ format: "glm4-int4-native", version: 1, bits: 4, group_size: 128, zero_point: "asymmetric-bf16" });
    expect(rec.layout).toMatch(/low nibble = even k/);
    expect(rec.full_precision).toEqual(["embed", "layers.0.attn_norm", "layers.0.qkv_bias", "layers.0.ffn_norm", "layers.1.attn_norm", "layers.1.qkv_bias", "layers.1.ffn_norm", "final_norm"]);
    expect(rec.quantized).toEqual(["layers.0.qkv", "layers.0.attn_out", "layers.0.gate_up", "layers.0.down", "layers.1.qkv", "layers.1.attn_out", "layers.1.gate_up", "layers.1.down", "output"]);
    expect(rec.source).toMatchObject({ naming: "original", flavour: "chatglm" });
    const ck = await Checkpoint.open(out);
    try {
      expect(ck.info("layers.0.qkv.qweight")).toMatchObject({ dtype: "U8", shape: [384, 128] });
      expect(ck.info("layers.0.qkv.scales")).toMatchObject({ dtype: "BF16", shape: [384, 2] });
      expect(ck.info("layers.0.qkv.zeros")).toMatchObject({ dtype: "BF16", shape: [384, 2] });
      expect(ck.info("output.qweight")).toMatchObject({ dtype: "U8", shape: [544, 128] });
      expect(ck.info("embed")).toMatchObject({ dtype: "BF16", shape: [544, 256] });
      // Full-precision tensors are copied byte for byte.
      const src = await Checkpoint.open(path.join(FIX, "original"));
      try {
        expect((await ck.read("embed")).data.equals((await src.read("transformer.embedding.word_embeddings.weight")).data)).toBe(true);
        expect((await ck.read("layers.1.qkv_bias")).data.equals((await src.read("transformer.encoder.layers.1.self_attention.query_key_value.bias")).data)).toBe(true);
      } finally {
        await src.close();
      }
      // The codes, scales and zeros of o_proj's rows 0..63 equal the independent numpy quantizer's, bit for bit.
      const g = (f: string) => readFileSync(path.join(FIX, "golden", `quant_tiny_l0_o_proj_rows0_63_g128_${f}.bin`));
      expect((await ck.read("layers.0.attn_out.qweight")).data.subarray(0, 64 * 128).equals(g("packed"))).toBe(true);
      expect((await ck.read("layers.0.attn_out.scales")).data.subarray(0, 64 * 2 * 2).equals(g("scales"))).toBe(true);
      expect((await ck.read("layers.0.attn_out.zeros")).data.subarray(0, 64 * 2 * 2).equals(g("zeros"))).toBe(true);
    } finally {
      await ck.close();
    }
  });

  it("an INT4 checkpoint refuses quantization \"none\" and another group size, by name", async () => {
    const out = path.join(await tempDir("glm4-q-"), "int4");
    await quantizeCheckpoint(path.join(FIX, "hf"), out, { groupSize: 64, device: "cpu" });
    await expect(loadGlm4(out, { device: "cpu", quantization: "none" })).rejects.toThrow(/already quantized to INT4 \(group 64\).*quantization "none"/);
    await expect(loadGlm4(out, { device: "cpu", groupSize: 128 })).rejects.toMatchObject({ code: "ERR_GLM4_BAD_QUANTIZATION", message: expect.stringMatching(/group 64, but groupSize 128/) });
    // ... and quantize refuses it as a source.
    expect(await code(quantizeCheckpoint(out, path.join(path.dirname(out), "again"), { device: "cpu" }))).toBe("ERR_GLM4_BAD_QUANTIZATION");
  });
});

describe("quantize: refusals leave the disk as it was", () => {
  let src: string;
  let root: string;
  beforeAll(async () => {
    // A copy of the fixture, so that no test can ever touch fixtures/.
    root = await tempDir("glm4-qr-");
    src = path.join(root, "src");
    await cp(path.join(FIX, "original"), src, { recursive: true });
  });
  const listing = async (d: string) => (await readdir(d)).sort();

  it("refuses an output equal to, inside, or (through a symlink) resolving into the source", async () => {
    const before = await listing(src);
    expect(await code(quantizeCheckpoint(src, src, { device: "cpu", force: true }))).toBe("ERR_GLM4_UNSAFE_PATH");
    expect(await code(quantizeCheckpoint(src, path.join(src, "int4"), { device: "cpu", force: true }))).toBe("ERR_GLM4_UNSAFE_PATH");
    expect(await code(quantizeCheckpoint(src, path.join(src, "a", "b"), { device: "cpu" }))).toBe("ERR_GLM4_UNSAFE_PATH");
    await symlink(src, path.join(root, "link-to-src"));
    expect(await code(quantizeCheckpoint(src, path.join(root, "link-to-src"), { device: "cpu", force: true }))).toBe("ERR_GLM4_UNSAFE_PATH");
    expect(await code(quantizeCheckpoint(src, path.join(root, "link-to-src", "x"), { device: "cpu", force: true }))).toBe("ERR_GLM4_UNSAFE_PATH");
    // An output that contains the source would be replaced, source included.
    expect(await code(quantizeCheckpoint(src, root, { device: "cpu", force: true }))).toBe("ERR_GLM4_UNSAFE_PATH");
    expect(await listing(src)).toEqual(before);
    expect(await listing(root)).toEqual(["link-to-src", "src"]);
  });

  it("refuses a non-empty output without force, replaces it with force, accepts an empty one", async () => {
    const out = path.join(root, "out-existing");
    await mkdir(out);
    await writeFile(path.join(out, "keep.txt"), "mine");
    await expect(quantizeCheckpoint(src, out, { device: "cpu" })).rejects.toMatchObject({ code: "ERR_GLM4_OUTPUT_EXISTS", message: expect.stringMatching(/--force/) });
    expect(await listing(out)).toEqual(["keep.txt"]);
    const file = path.join(root, "a-file");
    await writeFile(file, "x");
    expect(await code(quantizeCheckpoint(src, file, { device: "cpu", force: true }))).toBe("ERR_GLM4_OUTPUT_EXISTS");
    await quantizeCheckpoint(src, out, { device: "cpu", force: true });
    expect(await listing(out)).not.toContain("keep.txt");
    expect(await listing(out)).toContain(INT4_RECORD_FILE);
    const empty = path.join(root, "out-empty");
    await mkdir(empty);
    await quantizeCheckpoint(src, empty, { device: "cpu", groupSize: 32 });
    expect(await listing(empty)).toContain(INT4_RECORD_FILE);
    // No temporary directory is left beside the outputs.
    expect((await listing(root)).filter((f) => f.startsWith("."))).toEqual([]);
  });

  it("an abort (AbortSignal) leaves no output and no temporary directory", async () => {
    const parent = await tempDir("glm4-qa-");
    const ac = new AbortController();
    const p = quantizeCheckpoint(src, path.join(parent, "out"), { device: "cpu", signal: ac.signal, onProgress: (x) => x.tensor === "layers.0.qkv" && ac.abort() });
    await expect(p).rejects.toMatchObject({ code: "ERR_GLM4_ABORTED" });
    expect(await readdir(parent)).toEqual([]);
    // An existing output survives an aborted --force run untouched.
    await mkdir(path.join(parent, "out"));
    await writeFile(path.join(parent, "out", "keep.txt"), "mine");
    const ac2 = new AbortController();
    ac2.abort();
    expect(await code(quantizeCheckpoint(src, path.join(parent, "out"), { device: "cpu", force: true, signal: ac2.signal }))).toBe("ERR_GLM4_ABORTED");
    expect(await readdir(path.join(parent, "out"))).toEqual(["keep.txt"]);
    expect(await readdir(parent)).toEqual(["out"]);
  });

  it("a source that fails mid-way (a truncated shard) leaves no output", async () => {
    const bad = path.join(root, "truncated");
    await cp(src, bad, { recursive: true });
    const shard = path.join(bad, "model-00002-of-00002.safetensors");
    const st = await stat(shard);
    const buf = await readFile(shard);
    await writeFile(shard, buf.subarray(0, st.size - 1000));
    const parent = await tempDir("glm4-qt-");
    expect(await code(quantizeCheckpoint(bad, path.join(parent, "out"), { device: "cpu" }))).toBe("ERR_GLM4_BAD_SAFETENSORS");
    expect(await readdir(parent)).toEqual([]);
  });
});

describe("glm4-int4 quantize (command line)", () => {
  beforeAll(() => ensureBuilt(), 600_000); // tsc: room for a loaded machine

  it("writes an INT4 checkpoint that inspect reports, and refuses to overwrite it", async () => {
    const parent = await tempDir("glm4-qc-");
    const out = path.join(parent, "int4");
    const a = runCli(["quantize", "--model", path.join(FIX, "hf"), "--out", out, "--group-size", "64", "--device", "cpu"]);
    expect(await a.exited).toBe(0);
    expect(a.stdout()).toMatch(/^wrote .*int4: INT4 asym g64, 1 shard\(s\)/);
    const b = runCli(["inspect", "--model", out]);
    expect(await b.exited).toBe(0);
    expect(b.stdout()).toMatch(/quantized   glm4-int4-native v1, 4-bit, group 64/);
    expect(b.stdout()).toMatch(/memory      int4 g64/);
    const c = runCli(["quantize", "--model", path.join(FIX, "hf"), "--out", out]);
    expect(await c.exited).toBe(1);
    const lines = c.stderr().trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ERR_GLM4_OUTPUT_EXISTS: .*int4: exists and is not empty; pass --force/);
  });
});
