/**
 * Hostile checkpoint directories, end to end: each one goes through loadGlm4 AND `glm4-int4 inspect` (a child
 * process), and must fail with its specific code, naming the file, without a huge allocation: inspect exits
 * with status 1 and prints one line. test/safetensors.test.ts and test/fuzz-safetensors.test.ts cover the
 * reader's own header checks one by one; this file covers what reaches a user: terabyte claims (in the
 * header, and a sparse file whose header is consistent), INT4 checkpoints with bad scales or a bad
 * glm4_int4.json or wrong codes, GPTQ settings and scales, a missing shard, a symlink out of the directory,
 * shapes that disagree with the config, and a config that is not JSON.
 */
import { cp, open, readFile, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGlm4, Glm4Error } from "../lib/index.js";
import { quantizeCheckpoint } from "../lib/checkpoint/quantize.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import { cleanupTempDirs, encodeRaw, tempDir } from "./helpers/st-writer.js";
import { ensureBuilt, runCli } from "./helpers/cli.js";

const FIX = path.resolve(import.meta.dirname, "../fixtures/tiny-glm4");
const GPTQ = path.resolve(import.meta.dirname, "../fixtures/gptq-tiny");
const SHARD2 = "model-00002-of-00002.safetensors";

let root: string;
let int4: string; // an INT4 checkpoint of the tiny model (group 128)
beforeAll(async () => {
  root = await tempDir("glm4-hostile-");
  int4 = path.join(root, "int4-base");
  await quantizeCheckpoint(path.join(FIX, "original"), int4, { device: "cpu", groupSize: 128 });
  ensureBuilt();
}, 600_000); // a quantize and tsc: room for a loaded machine
afterAll(cleanupTempDirs);

/** A fresh copy of `from` to damage. */
async function copy(from: string, name: string): Promise<string> {
  const d = path.join(root, name);
  await cp(from, d, { recursive: true });
  return d;
}

/** Rewrites a safetensors file's JSON header (the data stays as it is). */
async function rewriteHeader(file: string, edit: (h: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): Promise<void> {
  const buf = await readFile(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  edit(h);
  await writeFile(file, encodeRaw(JSON.stringify(h), buf.subarray(8 + n)));
}

/** Overwrites the bf16 at (row, col) of a [rows, cols] tensor of a checkpoint. */
async function pokeBf16(dir: string, tensor: string, row: number, col: number, bits: number): Promise<string> {
  const ck = await Checkpoint.open(dir);
  const t = ck.info(tensor);
  await ck.close();
  const fh = await open(path.join(dir, t.shard), "r+");
  const b = Buffer.alloc(2);
  b.writeUInt16LE(bits);
  await fh.write(b, 0, 2, t.byteOffset + (row * t.shape[1] + col) * 2);
  await fh.close();
  return t.shard;
}

interface Case {
  name: string;
  make: () => Promise<string>;
  code: string;
  /** What the message must say (it must also name `file`). */
  says: RegExp;
  file: string | (() => string);
}

const cases: Case[] = [
  {
    name: "a header length field that claims a terabyte",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "hdr-tb");
      const fh = await open(path.join(d, SHARD2), "r+");
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(2n ** 40n);
      await fh.write(b, 0, 8, 0);
      await fh.close();
      return d;
    },
    code: "ERR_GLM4_BAD_SAFETENSORS",
    says: /header length field says 1099511627776 bytes, more than the \d+-byte limit/,
    file: SHARD2,
  },
  {
    name: "a tensor whose data_offsets claim a terabyte",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "tensor-tb");
      await rewriteHeader(path.join(d, SHARD2), (h) => {
        const t = h["transformer.output_layer.weight"];
        t.shape = [2 ** 31, 256];
        t.data_offsets = [t.data_offsets[0], t.data_offsets[0] + 2 ** 40];
      });
      return d;
    },
    code: "ERR_GLM4_BAD_SAFETENSORS",
    says: /"transformer\.output_layer\.weight".*reach past the end of the data region/,
    file: SHARD2,
  },
  {
    name: "a sparse 2 TiB file whose header and config agree on a 2^31-row vocabulary",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "sparse-tb");
      const V = 2 ** 31, H = 256;
      const cfg = JSON.parse(await readFile(path.join(d, "config.json"), "utf8"));
      cfg.padded_vocab_size = V;
      cfg.vocab_size = V;
      await writeFile(path.join(d, "config.json"), JSON.stringify(cfg));
      // One file: every real tensor but the two [V, H] ones, then those two as a sparse tail.
      const ck = await Checkpoint.open(d);
      const header: Record<string, unknown> = {};
      const parts: Buffer[] = [];
      let off = 0;
      for (const name of ck.names()) {
        if (name === "transformer.embedding.word_embeddings.weight" || name === "transformer.output_layer.weight") continue;
        const t = await ck.read(name);
        header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
        parts.push(t.data);
        off += t.data.byteLength;
      }
      await ck.close();
      for (const name of ["transformer.embedding.word_embeddings.weight", "transformer.output_layer.weight"]) {
        header[name] = { dtype: "BF16", shape: [V, H], data_offsets: [off, off + V * H * 2] };
        off += V * H * 2;
      }
      for (const f of ["model-00001-of-00002.safetensors", SHARD2, "model.safetensors.index.json"]) await rm(path.join(d, f));
      const head = encodeRaw(JSON.stringify(header), Buffer.concat(parts));
      const fh = await open(path.join(d, "model.safetensors"), "w");
      await fh.write(head, 0, head.length, 0);
      await fh.truncate(head.length - Buffer.concat(parts).length + off);
      await fh.close();
      return d;
    },
    code: "ERR_GLM4_OUT_OF_MEMORY",
    says: /tensor "transformer\.embedding\.word_embeddings\.weight" is 1024\.00 GiB; loading reads a tensor whole into host memory/,
    file: "model.safetensors",
  },
  {
    name: "an INT4 checkpoint with a NaN scale",
    make: async () => {
      const d = await copy(int4, "int4-nan");
      await pokeBf16(d, "layers.1.gate_up.scales", 5, 1, 0x7fc0);
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /tensor "layers\.1\.gate_up\.scales" row 5, group 1 holds NaN; scales must be finite and > 0/,
    file: "model-00001-of-00001.safetensors",
  },
  {
    name: "an INT4 checkpoint with a negative scale",
    make: async () => {
      const d = await copy(int4, "int4-neg");
      await pokeBf16(d, "output.scales", 17, 0, 0xbf80);
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /tensor "output\.scales" row 17, group 0 holds the negative value -1/,
    file: "model-00001-of-00001.safetensors",
  },
  {
    name: "an INT4 checkpoint with an infinite zero point",
    make: async () => {
      const d = await copy(int4, "int4-infzero");
      await pokeBf16(d, "layers.0.qkv.zeros", 0, 0, 0x7f80);
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /tensor "layers\.0\.qkv\.zeros" row 0, group 0 holds Infinity/,
    file: "model-00001-of-00001.safetensors",
  },
  {
    name: "glm4_int4.json that is not JSON",
    make: async () => {
      const d = await copy(int4, "int4-badjson");
      await writeFile(path.join(d, "glm4_int4.json"), '{"format": "glm4-int4-native", "version": 1,');
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /glm4_int4\.json: is not valid JSON/,
    file: "glm4_int4.json",
  },
  {
    name: "glm4_int4.json of a future version",
    make: async () => {
      const d = await copy(int4, "int4-v7");
      const r = JSON.parse(await readFile(path.join(d, "glm4_int4.json"), "utf8"));
      await writeFile(path.join(d, "glm4_int4.json"), JSON.stringify({ ...r, version: 7 }));
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /glm4_int4\.json version 7 is not supported by this release \(1 or 2\)\. Re-quantize the model with `glm4-int4 quantize/,
    file: "glm4_int4.json",
  },
  {
    name: "glm4_int4.json whose group size disagrees with the tensors",
    make: async () => {
      const d = await copy(int4, "int4-group");
      const r = JSON.parse(await readFile(path.join(d, "glm4_int4.json"), "utf8"));
      await writeFile(path.join(d, "glm4_int4.json"), JSON.stringify({ ...r, group_size: 64 }));
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /group_size 64 disagrees with tensor "layers\.0\.qkv\.scales" \[384, 2\] in .*, which holds groups of 128/,
    file: "glm4_int4.json",
  },
  {
    name: "an INT4 checkpoint whose codes are not U8",
    make: async () => {
      const d = await copy(int4, "int4-dtype");
      await rewriteHeader(path.join(d, "model-00001-of-00001.safetensors"), (h) => void (h["layers.1.down.qweight"].dtype = "I8"));
      return d;
    },
    code: "ERR_GLM4_DTYPE_MISMATCH",
    says: /tensor "layers\.1\.down\.qweight" is I8; INT4 codes are stored as U8/,
    file: "model-00001-of-00001.safetensors",
  },
  {
    name: "an INT4 checkpoint whose codes have the wrong shape",
    make: async () => {
      const d = await copy(int4, "int4-shape");
      await rewriteHeader(path.join(d, "model-00001-of-00001.safetensors"), (h) => void (h["layers.0.attn_out.qweight"].shape = [128, 256]));
      return d;
    },
    code: "ERR_GLM4_SHAPE_MISMATCH",
    says: /tensor "layers\.0\.attn_out\.qweight" has shape \[128, 256\], but the config .* needs \[256, 128\]/,
    file: "model-00001-of-00001.safetensors",
  },
  {
    name: "a missing shard",
    make: async () => {
      const d = await copy(path.join(FIX, "hf"), "missing-shard");
      await rm(path.join(d, SHARD2));
      return d;
    },
    code: "ERR_GLM4_MISSING_SHARD",
    says: /shard "model-00002-of-00002\.safetensors" \(listed in model\.safetensors\.index\.json\) does not exist/,
    file: SHARD2,
  },
  {
    name: "a shard that is a symlink out of the directory",
    make: async () => {
      const d = await copy(path.join(FIX, "hf"), "symlink-out");
      const outside = path.join(root, "outside.safetensors");
      await cp(path.join(d, SHARD2), outside);
      await rm(path.join(d, SHARD2));
      await symlink(outside, path.join(d, SHARD2));
      return d;
    },
    code: "ERR_GLM4_UNSAFE_PATH",
    says: /shard "model-00002-of-00002\.safetensors" resolves to .*outside\.safetensors, outside the model directory/,
    file: "model.safetensors.index.json",
  },
  {
    name: "shapes that disagree with the config",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "wrong-shape");
      const cfg = JSON.parse(await readFile(path.join(d, "config.json"), "utf8"));
      await writeFile(path.join(d, "config.json"), JSON.stringify({ ...cfg, ffn_hidden_size: 384 }));
      return d;
    },
    code: "ERR_GLM4_SHAPE_MISMATCH",
    says: /tensor "transformer\.encoder\.layers\.0\.mlp\.dense_h_to_4h\.weight" \(in model-00001-of-00002\.safetensors\) has shape \[1024, 256\], but the config .* expects \[768, 256\]/,
    file: "model-00001-of-00002.safetensors",
  },
  {
    name: "a config.json that is not JSON",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "bad-config");
      await writeFile(path.join(d, "config.json"), '{"model_type": "chatglm", "num_layers": 2,,}');
      return d;
    },
    code: "ERR_GLM4_BAD_CONFIG",
    says: /config\.json: is not valid JSON/,
    file: "config.json",
  },
  {
    name: "a GPTQ checkpoint of 3 bits",
    make: async () => {
      const d = await copy(path.join(GPTQ, "v1-sym-g128-original"), "gptq-3bit");
      const q = JSON.parse(await readFile(path.join(d, "quantize_config.json"), "utf8"));
      await writeFile(path.join(d, "quantize_config.json"), JSON.stringify({ ...q, bits: 3 }));
      return d;
    },
    code: "ERR_GLM4_UNSUPPORTED",
    says: /"bits" is 3; only 4-bit GPTQ checkpoints can be imported/,
    file: "quantize_config.json",
  },
  {
    name: "a GPTQ checkpoint with an infinite scale",
    make: async () => {
      const d = await copy(path.join(GPTQ, "v2-asym-g64-original"), "gptq-inf");
      await pokeBf16(d, "transformer.encoder.layers.0.mlp.dense_4h_to_h.scales", 3, 100, 0x7c00); // f16 +Infinity
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /tensor "transformer\.encoder\.layers\.0\.mlp\.dense_4h_to_h\.scales" group 3, output 100 holds Infinity/,
    file: "model.safetensors",
  },
  {
    name: "a GPTQ checkpoint whose group size disagrees with its scales",
    make: async () => {
      const d = await copy(path.join(GPTQ, "v2-asym-g64-original"), "gptq-group");
      const q = JSON.parse(await readFile(path.join(d, "quantize_config.json"), "utf8"));
      await writeFile(path.join(d, "quantize_config.json"), JSON.stringify({ ...q, group_size: 128 }));
      return d;
    },
    code: "ERR_GLM4_BAD_QUANTIZATION",
    says: /group_size 128 means 2 groups of the 256 input columns of layers\.0\.qkv, but tensor .*query_key_value\.scales" in .* holds 4/,
    file: "quantize_config.json",
  },
];

describe("hostile checkpoints: loadGlm4 and glm4-int4 inspect refuse them by name", () => {
  for (const c of cases) {
    it(c.name, async () => {
      const dir = await c.make();
      const file = typeof c.file === "string" ? c.file : c.file();
      const rss0 = process.memoryUsage().rss;
      let err: unknown;
      try {
        const m = await loadGlm4(dir, { device: "cpu" });
        await m.dispose();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Glm4Error);
      expect((err as Glm4Error).code).toBe(c.code);
      expect((err as Error).message).toMatch(c.says);
      expect((err as Error).message).toContain(file);
      expect((err as Error).message).not.toContain("\n");
      // Nothing near the claimed size was allocated (a real attempt would not even get this far).
      expect(process.memoryUsage().rss - rss0).toBeLessThan(256 * 2 ** 20);

      const cli = runCli(["inspect", "--model", dir]);
      expect(await cli.exited).toBe(1);
      const lines = cli.stderr().trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0].startsWith(`glm4-int4: ${c.code}: `)).toBe(true);
      expect(lines[0]).toMatch(c.says);
      expect(lines[0]).toContain(file);
      expect(cli.stdout()).toBe("");
    });
  }
});
