/**
 * Hostile checkpoint directories, end to end: each one goes through loadGlm4 AND `glm4-int4 inspect` (a child
 * process), and must fail with its specific code, naming the file, without a huge allocation: inspect exits
 * with status 1 and prints one line. test/safetensors.test.ts and test/fuzz-safetensors.test.ts cover the
 * reader's own header checks one by one; this file covers what reaches a user: terabyte claims (in the
 * header, and a sparse file whose header is consistent), INT4 checkpoints with bad scales or a bad
 * glm4_int4.json or wrong codes, GPTQ settings and scales, a missing shard, a symlink out of the directory,
 * shapes that disagree with the config, and a config that is not JSON; counts in a config far beyond any
 * model (each must cost a one-line error and little memory: the checks are linear in the tensor count); a FIFO
 * (named pipe) in place of each file the loader opens (opening one must not block); special tokens beyond the
 * model's vocabulary.
 */
import { execFileSync } from "node:child_process";
import { cp, open, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { constants as bufferConstants } from "node:buffer";
import { totalmem } from "node:os";
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

/** A copy of `from` whose `file` is replaced by a FIFO nobody writes to (open() of it blocks unless non-blocking). */
async function withFifo(from: string, name: string, file: string): Promise<string> {
  const d = await copy(from, name);
  await rm(path.join(d, file), { force: true });
  execFileSync("mkfifo", [path.join(d, file)]);
  return d;
}

/** A copy of the tiny checkpoint with `edit` applied to its config.json. */
async function withConfig(name: string, edit: (c: Record<string, unknown>) => void, from = path.join(FIX, "original")): Promise<string> {
  const d = await copy(from, name);
  const cfg = JSON.parse(await readFile(path.join(d, "config.json"), "utf8"));
  edit(cfg);
  await writeFile(path.join(d, "config.json"), JSON.stringify(cfg));
  return d;
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
    // The largest vocabulary a config may claim (2^24 rows, CONFIG_LIMITS): 8 GiB a [V, H] table, more than one
    // Node Buffer holds on Node 20 (4 GiB), so the check from the headers must refuse it before reading.
    name: "a sparse 16 GiB file whose header and config agree on a 2^24-row vocabulary",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "sparse-tb");
      const V = 2 ** 24, H = 256;
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
    says: /tensor "transformer\.embedding\.word_embeddings\.weight" is 8\.00 GiB; loading reads a tensor whole into host memory/,
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
  // Counts far beyond any model: refused by their bound before anything is sized from them.
  ...(
    [
      ["num_layers", 1e9, 1024],
      ["num_layers", 10000, 1024],
      ["hidden_size", 2 ** 40, 65536],
      ["padded_vocab_size", 2 ** 31, 16777216],
      ["ffn_hidden_size", 1e12, 1048576],
      ["num_attention_heads", 1e9, 1024],
      ["kv_channels", 2 ** 30, 1024],
      ["seq_length", 2 ** 50, 16777216],
    ] as const
  ).map(
    ([key, value, max]): Case => ({
      name: `config.json with "${key}": ${value}`,
      // num_layers and num_hidden_layers must agree, so both get the value.
      make: () => withConfig(`huge-${key}-${value}`, (c) => void ((c[key] = value), key === "num_layers" && (c.num_hidden_layers = value))),
      code: "ERR_GLM4_BAD_CONFIG",
      says: new RegExp(`"${key}" is ${value}, more than the ${max} this library accepts`),
      file: "config.json",
    }),
  ),
  {
    name: "HF config.json with num_hidden_layers 1e9",
    make: () => withConfig("huge-hf-layers", (c) => void (c.num_hidden_layers = 1e9), path.join(FIX, "hf")),
    code: "ERR_GLM4_BAD_CONFIG",
    says: /"num_hidden_layers" is 1000000000, more than the 1024/,
    file: "config.json",
  },
  {
    name: "config.json with 1000 layers (within the bound) for a 2-layer checkpoint",
    make: () => withConfig("layers-1000", (c) => void ((c.num_layers = 1000), (c.num_hidden_layers = 1000))),
    code: "ERR_GLM4_MISSING_TENSOR",
    says: /tensor "transformer\.encoder\.layers\.2\.input_layernorm\.weight" .* and 6985 more are missing; the config describes 1000 layers/,
    file: "layers-1000",
  },
  {
    name: "generation_config.json listing a million eos ids",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "eos-million");
      await writeFile(path.join(d, "generation_config.json"), JSON.stringify({ eos_token_id: Array.from({ length: 1e6 }, () => 1) }));
      return d;
    },
    code: "ERR_GLM4_BAD_CONFIG",
    says: /"eos_token_id" lists 1000000 token ids; at most 1024 are accepted/,
    file: "generation_config.json",
  },
  // A FIFO in place of each file the loader opens: refused at once (an open() of it would block for ever).
  ...(
    [
      ["config.json", "original", "ERR_GLM4_BAD_CONFIG"],
      ["generation_config.json", "original", "ERR_GLM4_BAD_CONFIG"],
      [SHARD2, "original", "ERR_GLM4_BAD_SAFETENSORS"],
      ["model.safetensors.index.json", "original", "ERR_GLM4_BAD_INDEX"],
      ["tokenizer.model", "original", "ERR_GLM4_BAD_TOKENIZER"],
      ["tokenizer_config.json", "original", "ERR_GLM4_BAD_TOKENIZER"],
      ["tokenizer.json", "hf", "ERR_GLM4_BAD_TOKENIZER"],
      ["glm4_int4.json", "int4", "ERR_GLM4_BAD_QUANTIZATION"],
      ["quantize_config.json", "gptq", "ERR_GLM4_BAD_QUANTIZATION"],
    ] as const
  ).map(
    ([file, from, code]): Case => ({
      name: `a FIFO in place of ${file} (${from})`,
      make: () => withFifo(from === "int4" ? int4 : from === "gptq" ? path.join(GPTQ, "v1-sym-g128-original") : path.join(FIX, from), `fifo-${from}-${file}`, file),
      code,
      says: /is a FIFO \(named pipe\), not a regular file/,
      file,
    }),
  ),
  {
    name: "a tokenizer whose special tokens lie beyond the model's vocabulary",
    make: async () => {
      const d = await copy(path.join(FIX, "original"), "specials-beyond");
      const t = JSON.parse(await readFile(path.join(d, "tokenizer_config.json"), "utf8"));
      const atd = t.added_tokens_decoder as Record<string, unknown>;
      // <|observation|> moves from its id to one past the model's 544 rows.
      const [id] = Object.entries(atd).find(([, v]) => (v as { content: string }).content === "<|observation|>")!;
      atd["600"] = atd[id];
      delete atd[id];
      await writeFile(path.join(d, "tokenizer_config.json"), JSON.stringify(t));
      return d;
    },
    code: "ERR_GLM4_BAD_TOKENIZER",
    says: /special token "<\|observation\|>" has id 600, outside the model's vocabulary of 544 rows/,
    file: "tokenizer_config.json",
  },
];

// Where one Buffer may hold 8 GiB and the machine has that much memory, the 2^24-row table is loadable in
// principle, and the sparse case does not apply.
const bigTableFits = Math.min(totalmem(), bufferConstants.MAX_LENGTH) >= 8 * 2 ** 30;

describe("hostile checkpoints: loadGlm4 and glm4-int4 inspect refuse them by name", () => {
  for (const c of cases) {
    if (bigTableFits && c.name.startsWith("a sparse")) continue;
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
