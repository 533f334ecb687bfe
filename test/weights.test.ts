import { existsSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { normalizeConfig, readConfig, type Glm4Config } from "../lib/checkpoint/config.js";
import { expectedShapes } from "../lib/checkpoint/tensors.js";
import { Glm4Error } from "../lib/errors.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import {
  checkCheckpoint,
  detectNaming,
  iterateWeights,
  onDiskLayout,
  splitGateUp,
  splitQkv,
  toOnDisk,
  toOnDiskNames,
  type Naming,
  type TensorSource,
  type WeightTensor,
} from "../lib/checkpoint/namings.js";
import { cleanupTempDirs, randomTensor, tempDir, writeSafetensors, writeSharded, type StTensor } from "./helpers/st-writer.js";

afterAll(cleanupTempDirs);

// A tiny GLM-4-shaped model: 2 layers, hidden 64, 4 q heads of 16, 2 kv groups, ffn 96, vocab 100.
const TINY_ORIGINAL_JSON = {
  model_type: "chatglm",
  num_layers: 2,
  hidden_size: 64,
  ffn_hidden_size: 96,
  kv_channels: 16,
  num_attention_heads: 4,
  multi_query_attention: true,
  multi_query_group_num: 2,
  padded_vocab_size: 100,
  layernorm_epsilon: 1.5625e-7,
  rope_ratio: 500,
  add_qkv_bias: true,
  add_bias_linear: false,
  post_layer_norm: true,
  rmsnorm: true,
  apply_residual_connection_post_layernorm: false,
  seq_length: 256,
  eos_token_id: [1, 2],
  pad_token_id: 1,
};
const TINY_HF_JSON = {
  model_type: "glm",
  num_hidden_layers: 2,
  hidden_size: 64,
  intermediate_size: 96,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 100,
  rms_norm_eps: 1.5625e-7,
  rope_theta: 5000000,
  partial_rotary_factor: 0.5,
  attention_bias: true,
  max_position_embeddings: 256,
  tie_word_embeddings: false,
  eos_token_id: [1, 2],
  pad_token_id: 1,
};
const CFG: Glm4Config = normalizeConfig(TINY_ORIGINAL_JSON, "tiny/config.json");
const Q_ROWS = 4 * 16;
const KV_ROWS = 2 * 16;

/** Random normalized tensors (norms in F32, the rest BF16) for `cfg`. */
function normalizedModel(cfg: Glm4Config, seed: number): Map<string, StTensor> {
  const m = new Map<string, StTensor>();
  let s = seed;
  for (const [name, shape] of expectedShapes(cfg)) m.set(name, randomTensor(name, name.endsWith("norm") ? "F32" : "BF16", shape, s++));
  return m;
}

// The on-disk names written out by hand (not through lib/checkpoint/namings.ts), so the mapping is tested independently.
function originalTensors(model: Map<string, StTensor>): StTensor[] {
  const out: StTensor[] = [];
  const put = (name: string, norm: string) => out.push({ ...model.get(norm)!, name });
  put("transformer.embedding.word_embeddings.weight", "embed");
  for (let i = 0; i < 2; i++) {
    const p = `transformer.encoder.layers.${i}.`;
    put(`${p}input_layernorm.weight`, `layers.${i}.attn_norm`);
    put(`${p}self_attention.query_key_value.weight`, `layers.${i}.qkv`);
    put(`${p}self_attention.query_key_value.bias`, `layers.${i}.qkv_bias`);
    put(`${p}self_attention.dense.weight`, `layers.${i}.attn_out`);
    put(`${p}post_attention_layernorm.weight`, `layers.${i}.ffn_norm`);
    put(`${p}mlp.dense_h_to_4h.weight`, `layers.${i}.gate_up`);
    put(`${p}mlp.dense_4h_to_h.weight`, `layers.${i}.down`);
  }
  put("transformer.encoder.final_layernorm.weight", "final_norm");
  put("transformer.output_layer.weight", "output");
  return out;
}

function rowSlice(t: StTensor, from: number, to: number, name: string): StTensor {
  const rowBytes = t.data.byteLength / t.shape[0];
  return { name, dtype: t.dtype, shape: [to - from, ...t.shape.slice(1)], data: t.data.subarray(from * rowBytes, to * rowBytes) };
}

function hfTensors(model: Map<string, StTensor>): StTensor[] {
  const out: StTensor[] = [];
  const put = (name: string, norm: string) => out.push({ ...model.get(norm)!, name });
  put("model.embed_tokens.weight", "embed");
  for (let i = 0; i < 2; i++) {
    const p = `model.layers.${i}.`;
    put(`${p}input_layernorm.weight`, `layers.${i}.attn_norm`);
    for (const [kind, norm] of [["weight", `layers.${i}.qkv`], ["bias", `layers.${i}.qkv_bias`]] as const) {
      const fused = model.get(norm)!;
      out.push(rowSlice(fused, 0, Q_ROWS, `${p}self_attn.q_proj.${kind}`));
      out.push(rowSlice(fused, Q_ROWS, Q_ROWS + KV_ROWS, `${p}self_attn.k_proj.${kind}`));
      out.push(rowSlice(fused, Q_ROWS + KV_ROWS, Q_ROWS + 2 * KV_ROWS, `${p}self_attn.v_proj.${kind}`));
    }
    put(`${p}self_attn.o_proj.weight`, `layers.${i}.attn_out`);
    put(`${p}post_attention_layernorm.weight`, `layers.${i}.ffn_norm`);
    put(`${p}mlp.gate_up_proj.weight`, `layers.${i}.gate_up`);
    put(`${p}mlp.down_proj.weight`, `layers.${i}.down`);
  }
  put("model.norm.weight", "final_norm");
  put("lm_head.weight", "output");
  return out;
}

async function collect(it: AsyncIterable<WeightTensor>): Promise<WeightTensor[]> {
  const out: WeightTensor[] = [];
  for await (const t of it) out.push(t);
  return out;
}

async function expectGlm4(p: Promise<unknown> | (() => unknown), code: string, ...parts: (string | RegExp)[]): Promise<void> {
  let err: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, "expected an error").toBeInstanceOf(Glm4Error);
  expect((err as Glm4Error).code, (err as Error).message).toBe(code);
  for (const s of parts) {
    if (typeof s === "string") expect((err as Error).message).toContain(s);
    else expect((err as Error).message).toMatch(s);
  }
}

async function writeModel(tensors: StTensor[], opts: { shards?: number } = {}): Promise<string> {
  const dir = await tempDir("glm4-w-");
  const n = opts.shards ?? 1;
  if (n === 1) await writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  else {
    // Spread round-robin, so shard order is not model order.
    const shards: StTensor[][] = Array.from({ length: n }, () => []);
    tensors.forEach((t, i) => shards[i % n].push(t));
    await writeSharded(dir, shards);
  }
  return dir;
}

/** Wrap a checkpoint and record every read, to see when data is touched. */
function recording(ck: Checkpoint): { src: TensorSource; reads: string[] } {
  const reads: string[] = [];
  const src: TensorSource = {
    dir: ck.dir,
    tensors: ck.tensors,
    read: (name) => {
      reads.push(name);
      return ck.read(name);
    },
    readInto: (name, dest, off) => {
      reads.push(name);
      return ck.readInto(name, dest, off);
    },
  };
  return { src, reads };
}

describe("naming", () => {
  it("detects both namings and explains when neither matches", async () => {
    const model = normalizedModel(CFG, 1);
    expect(detectNaming(originalTensors(model).map((t) => t.name))).toBe("original");
    expect(detectNaming(hfTensors(model).map((t) => t.name))).toBe("hf");
    await expectGlm4(() => detectNaming(["encoder.weight", "decoder.bias"], "/m"), "ERR_GLM4_UNSUPPORTED", "/m", "match neither", '"encoder.weight"', '"decoder.bias"');
    await expectGlm4(() => detectNaming([], "/m"), "ERR_GLM4_UNSUPPORTED", "no tensors at all");
    await expectGlm4(() => detectNaming(["model.embed_tokens.weight", "transformer.output_layer.weight"], "/m"), "ERR_GLM4_UNSUPPORTED", "mix");
  });

  it("maps normalized names to on-disk names and back", async () => {
    expect(toOnDiskNames("embed", "original")).toEqual(["transformer.embedding.word_embeddings.weight"]);
    expect(toOnDiskNames("embed", "hf")).toEqual(["model.embed_tokens.weight"]);
    expect(toOnDiskNames("layers.7.qkv", "original")).toEqual(["transformer.encoder.layers.7.self_attention.query_key_value.weight"]);
    expect(toOnDiskNames("layers.7.qkv", "hf")).toEqual(["model.layers.7.self_attn.q_proj.weight", "model.layers.7.self_attn.k_proj.weight", "model.layers.7.self_attn.v_proj.weight"]);
    expect(toOnDiskNames("layers.12.qkv_bias", "hf")).toEqual(["model.layers.12.self_attn.q_proj.bias", "model.layers.12.self_attn.k_proj.bias", "model.layers.12.self_attn.v_proj.bias"]);
    expect(toOnDiskNames("layers.0.attn_out", "hf")).toEqual(["model.layers.0.self_attn.o_proj.weight"]);
    expect(toOnDiskNames("layers.0.gate_up", "original")).toEqual(["transformer.encoder.layers.0.mlp.dense_h_to_4h.weight"]);
    expect(toOnDiskNames("layers.0.down", "hf")).toEqual(["model.layers.0.mlp.down_proj.weight"]);
    expect(toOnDiskNames("final_norm", "original")).toEqual(["transformer.encoder.final_layernorm.weight"]);
    expect(toOnDiskNames("output", "hf")).toEqual(["lm_head.weight"]);
    for (const bad of ["layers.x.qkv", "layers.01.qkv", "layers.0.mlp", "lm_head", ""]) {
      await expectGlm4(() => toOnDiskNames(bad, "hf"), "ERR_GLM4_INVALID_ARGUMENT", JSON.stringify(bad));
    }
    // Every on-disk name in the hand-written tables is produced by the mapping.
    const model = normalizedModel(CFG, 2);
    for (const [naming, tensors] of [["original", originalTensors(model)], ["hf", hfTensors(model)]] as const) {
      const mapped = onDiskLayout(CFG, naming).flatMap((e) => e.parts.map((p) => p.onDisk));
      expect(mapped.sort()).toEqual(tensors.map((t) => t.name).sort());
    }
  });
});

describe("iterateWeights", () => {
  it("maps both namings of one model onto byte-identical normalized tensors, in model order", async () => {
    const model = normalizedModel(CFG, 100);
    const orig = [...originalTensors(model), randomTensor("transformer.rotary_pos_emb.inv_freq", "F32", [4], 9)];
    const origDir = await writeModel(orig.reverse(), { shards: 3 });
    const hfDir = await writeModel(hfTensors(model), { shards: 2 });
    const cfgHf = normalizeConfig(TINY_HF_JSON, "tiny-hf/config.json");
    expect({ ...cfgHf, flavour: "chatglm" }).toEqual(CFG);

    const ckO = await Checkpoint.open(origDir, { maxOpenFiles: 1 });
    const ckH = await Checkpoint.open(hfDir);
    const a = await collect(iterateWeights(ckO, CFG));
    const b = await collect(iterateWeights(ckH, cfgHf));
    await ckO.close();
    await ckH.close();

    const order = [...expectedShapes(CFG).keys()];
    expect(a.map((t) => t.name)).toEqual(order);
    expect(b.map((t) => t.name)).toEqual(order);
    for (let i = 0; i < order.length; i++) {
      const want = model.get(order[i])!;
      for (const got of [a[i], b[i]]) {
        expect(got.dtype).toBe(want.dtype);
        expect(got.shape).toEqual(want.shape);
        expect(Buffer.compare(got.data, Buffer.from(want.data)), `${got.name} from ${got.onDisk.join(",")}`).toBe(0);
      }
    }
    expect(b.find((t) => t.name === "layers.1.qkv")!.onDisk).toEqual(toOnDiskNames("layers.1.qkv", "hf"));
  });

  it("fuses HF q/k/v rows in exactly q, k, v order (weights and biases)", async () => {
    // Every element of row r of part p holds the BF16 bit pattern p * 1000 + r.
    const H = 64;
    const mk = (name: string, p: number, rows: number, cols: number): StTensor => {
      const data = Buffer.alloc(rows * Math.max(cols, 1) * 2);
      for (let r = 0; r < rows; r++) for (let c = 0; c < Math.max(cols, 1); c++) data.writeUInt16LE(p * 1000 + r, (r * Math.max(cols, 1) + c) * 2);
      return { name, dtype: "BF16", shape: cols ? [rows, cols] : [rows], data };
    };
    const model = normalizedModel(CFG, 200);
    const tensors = hfTensors(model).map((t) => {
      const m = /^model\.layers\.(\d)\.self_attn\.([qkv])_proj\.(weight|bias)$/.exec(t.name);
      if (!m) return t;
      const p = "qkv".indexOf(m[2]);
      return mk(t.name, p, p === 0 ? Q_ROWS : KV_ROWS, m[3] === "weight" ? H : 0);
    });
    const dir = await writeModel(tensors);
    const ck = await Checkpoint.open(dir);
    const got = await collect(iterateWeights(ck, CFG));
    await ck.close();
    for (const name of ["layers.0.qkv", "layers.1.qkv", "layers.0.qkv_bias"]) {
      const t = got.find((x) => x.name === name)!;
      const cols = name.endsWith("bias") ? 1 : H;
      expect(t.data.length).toBe((Q_ROWS + 2 * KV_ROWS) * cols * 2);
      for (let row = 0; row < Q_ROWS + 2 * KV_ROWS; row++) {
        const want = row < Q_ROWS ? row : row < Q_ROWS + KV_ROWS ? 1000 + row - Q_ROWS : 2000 + row - Q_ROWS - KV_ROWS;
        for (let c = 0; c < cols; c++) expect(t.data.readUInt16LE((row * cols + c) * 2)).toBe(want);
      }
    }
  });

  it("reads one tensor per step, and checks every header before reading any data", async () => {
    const model = normalizedModel(CFG, 300);
    const dir = await writeModel(hfTensors(model), { shards: 2 });
    const ck = await Checkpoint.open(dir);
    const { src, reads } = recording(ck);
    const gen = iterateWeights(src, CFG);
    expect(reads).toEqual([]);
    await gen.next();
    expect(reads).toEqual(["model.embed_tokens.weight"]);
    await gen.next();
    await gen.next();
    expect(reads).toEqual(["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"]);
    await gen.return();

    // A wrong config (3 layers) fails before the first read.
    const r2 = recording(ck);
    await expectGlm4(collect(iterateWeights(r2.src, { ...CFG, numLayers: 3 })), "ERR_GLM4_MISSING_TENSOR", "model.layers.2.input_layernorm.weight", "and 10 more", "3 layers");
    expect(r2.reads).toEqual([]);
    await ck.close();
  });

  it("can be aborted", async () => {
    const dir = await writeModel(originalTensors(normalizedModel(CFG, 400)));
    const ck = await Checkpoint.open(dir);
    const ac = new AbortController();
    const gen = iterateWeights(ck, CFG, { signal: ac.signal });
    await gen.next();
    ac.abort();
    await expectGlm4(gen.next(), "ERR_GLM4_ABORTED", "layers.0.attn_norm");
    await ck.close();
  });

  const cases: Array<{ name: string; naming: Naming; edit: (t: StTensor[]) => StTensor[]; cfg?: Partial<Glm4Config>; code: string; parts: (string | RegExp)[] }> = [
    {
      name: "missing HF k_proj",
      naming: "hf",
      edit: (ts) => ts.filter((t) => t.name !== "model.layers.1.self_attn.k_proj.weight"),
      code: "ERR_GLM4_MISSING_TENSOR",
      parts: ['tensor "model.layers.1.self_attn.k_proj.weight" (HF (glm) naming, part of layers.1.qkv) is missing'],
    },
    {
      name: "missing original output layer",
      naming: "original",
      edit: (ts) => ts.filter((t) => t.name !== "transformer.output_layer.weight"),
      code: "ERR_GLM4_MISSING_TENSOR",
      parts: ['"transformer.output_layer.weight"'],
    },
    {
      name: "wrong k_proj shape",
      naming: "hf",
      edit: (ts) => ts.map((t) => (t.name === "model.layers.0.self_attn.k_proj.weight" ? randomTensor(t.name, "BF16", [16, 64], 5) : t)),
      code: "ERR_GLM4_SHAPE_MISMATCH",
      parts: ['"model.layers.0.self_attn.k_proj.weight"', "has shape [16, 64]", "expects [32, 64] for layers.0.qkv", "model.safetensors"],
    },
    {
      name: "wrong fused qkv shape",
      naming: "original",
      edit: (ts) => ts.map((t) => (t.name === "transformer.encoder.layers.1.self_attention.query_key_value.weight" ? randomTensor(t.name, "BF16", [64, 128], 5) : t)),
      code: "ERR_GLM4_SHAPE_MISMATCH",
      parts: ['"transformer.encoder.layers.1.self_attention.query_key_value.weight"', "[64, 128]", "[128, 64]"],
    },
    {
      name: "vocab mismatch",
      naming: "hf",
      edit: (ts) => ts,
      cfg: { vocabSize: 128 },
      code: "ERR_GLM4_SHAPE_MISMATCH",
      parts: ['"model.embed_tokens.weight"', "[100, 64]", "[128, 64]"],
    },
    {
      name: "a layer more than the config",
      naming: "original",
      edit: (ts) => ts,
      cfg: { numLayers: 1 },
      code: "ERR_GLM4_UNEXPECTED_TENSOR",
      parts: [/"transformer\.encoder\.layers\.1\.[a-z_.]+" \(in model\.safetensors\) and 6 more/, "1 layers"],
    },
    {
      name: "bias present but config says none",
      naming: "hf",
      edit: (ts) => ts,
      cfg: { qkvBias: false },
      code: "ERR_GLM4_UNEXPECTED_TENSOR",
      parts: ['"model.layers.0.self_attn.q_proj.bias"', "qkv bias false"],
    },
    {
      name: "FP8 norm",
      naming: "original",
      edit: (ts) => ts.map((t) => (t.name === "transformer.encoder.final_layernorm.weight" ? randomTensor(t.name, "F8_E4M3", [64], 5) : t)),
      code: "ERR_GLM4_UNSUPPORTED",
      parts: ['"transformer.encoder.final_layernorm.weight"', "F8_E4M3", "BF16, F16 or F32"],
    },
    {
      name: "integer embedding",
      naming: "hf",
      edit: (ts) => ts.map((t) => (t.name === "model.embed_tokens.weight" ? randomTensor(t.name, "I32", [100, 64], 5) : t)),
      code: "ERR_GLM4_UNSUPPORTED",
      parts: ['"model.embed_tokens.weight"', "I32"],
    },
    {
      name: "q BF16 but v F16",
      naming: "hf",
      edit: (ts) => ts.map((t) => (t.name === "model.layers.0.self_attn.v_proj.weight" ? { ...t, dtype: "F16" } : t)),
      code: "ERR_GLM4_DTYPE_MISMATCH",
      parts: ['"model.layers.0.self_attn.q_proj.weight" is BF16 but "model.layers.0.self_attn.v_proj.weight" is F16'],
    },
  ];
  it.each(cases)("rejects $name with $code, naming the on-disk tensor", async ({ naming, edit, cfg, code, parts }) => {
    const model = normalizedModel(CFG, 500);
    const dir = await writeModel(edit(naming === "hf" ? hfTensors(model) : originalTensors(model)));
    const ck = await Checkpoint.open(dir);
    await expectGlm4(collect(iterateWeights(ck, { ...CFG, ...cfg })), code, dir, ...parts);
    await ck.close();
  });

  it("lists unused tensors instead of failing when allowUnused is set", async () => {
    const dir = await writeModel(hfTensors(normalizedModel(CFG, 600)));
    const ck = await Checkpoint.open(dir);
    const cfg1 = { ...CFG, numLayers: 1 };
    const { naming, unused } = checkCheckpoint(ck, cfg1, { allowUnused: true });
    expect(naming).toBe("hf");
    expect(unused.length).toBe(11);
    expect(unused.every((n) => n.startsWith("model.layers.1."))).toBe(true);
    expect((await collect(iterateWeights(ck, cfg1, { allowUnused: true }))).length).toBe(2 + 7 + 1);
    await ck.close();
  });
});

describe("reverse mapping for writers", () => {
  it("splitQkv / splitGateUp cut fused buffers into their row blocks", () => {
    const model = normalizedModel(CFG, 700);
    const qkv = Buffer.from(model.get("layers.0.qkv")!.data);
    const { q, k, v } = splitQkv(qkv, CFG);
    const rb = 64 * 2;
    expect(Buffer.compare(q, qkv.subarray(0, Q_ROWS * rb))).toBe(0);
    expect(Buffer.compare(k, qkv.subarray(Q_ROWS * rb, (Q_ROWS + KV_ROWS) * rb))).toBe(0);
    expect(Buffer.compare(v, qkv.subarray((Q_ROWS + KV_ROWS) * rb))).toBe(0);
    expect(Buffer.compare(Buffer.concat([q, k, v]), qkv)).toBe(0);
    const bias = Buffer.from(model.get("layers.0.qkv_bias")!.data);
    const sb = splitQkv(bias, CFG);
    expect([sb.q.length, sb.k.length, sb.v.length]).toEqual([Q_ROWS * 2, KV_ROWS * 2, KV_ROWS * 2]);
    const gu = Buffer.from(model.get("layers.1.gate_up")!.data);
    const { gate, up } = splitGateUp(gu, CFG);
    expect(Buffer.compare(gate, gu.subarray(0, 96 * rb))).toBe(0);
    expect(Buffer.compare(up, gu.subarray(96 * rb))).toBe(0);
    expect(() => splitQkv(Buffer.alloc(7), CFG)).toThrow(Glm4Error);
  });

  it("writes either naming from normalized tensors, and reads it back identically", async () => {
    const model = normalizedModel(CFG, 800);
    for (const naming of ["original", "hf"] as const) {
      const onDisk = [...model.values()].flatMap((t) => toOnDisk({ ...t, data: Buffer.from(t.data) }, CFG, naming));
      const expected = naming === "hf" ? hfTensors(model) : originalTensors(model);
      expect(onDisk.map((t) => t.name)).toEqual(expected.map((t) => t.name));
      for (let i = 0; i < onDisk.length; i++) {
        expect(onDisk[i].shape).toEqual(expected[i].shape);
        expect(Buffer.compare(onDisk[i].data, Buffer.from(expected[i].data))).toBe(0);
      }
      const dir = await writeModel(onDisk, { shards: 2 });
      const ck = await Checkpoint.open(dir);
      const back = await collect(iterateWeights(ck, CFG));
      await ck.close();
      for (const t of back) expect(Buffer.compare(t.data, Buffer.from(model.get(t.name)!.data))).toBe(0);
    }
    await expectGlm4(() => toOnDisk({ name: "layers.0.qkv", dtype: "BF16", shape: [1, 2], data: Buffer.alloc(4) }, CFG, "hf"), "ERR_GLM4_SHAPE_MISMATCH", "layers.0.qkv");
  });
});

// The committed tiny fixture was written by an independent tool (scripts/, python): both of its namings
// must normalize to the same bytes here.
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "tiny-glm4");
describe.skipIf(!existsSync(path.join(FIXTURE, "original", "config.json")) || !existsSync(path.join(FIXTURE, "hf", "config.json")))("fixtures/tiny-glm4", () => {
  it("original and hf checkpoints normalize to identical configs and tensors", async () => {
    const cfgO = await readConfig(path.join(FIXTURE, "original"));
    const cfgH = await readConfig(path.join(FIXTURE, "hf"));
    expect(cfgO.flavour).toBe("chatglm");
    expect(cfgH.flavour).toBe("glm");
    expect({ ...cfgH, flavour: "chatglm", nameOrPath: cfgO.nameOrPath }).toEqual(cfgO); // _name_or_path is informational
    const ckO = await Checkpoint.open(path.join(FIXTURE, "original"));
    const ckH = await Checkpoint.open(path.join(FIXTURE, "hf"));
    try {
      const a = iterateWeights(ckO, cfgO);
      const b = iterateWeights(ckH, cfgH);
      let n = 0;
      for (;;) {
        const [x, y] = await Promise.all([a.next(), b.next()]);
        expect(x.done).toBe(y.done);
        if (x.done || y.done) break;
        expect(x.value.name).toBe(y.value.name);
        expect(x.value.dtype).toBe(y.value.dtype);
        expect(x.value.shape).toEqual(y.value.shape);
        expect(Buffer.compare(x.value.data, y.value.data), x.value.name).toBe(0);
        n++;
      }
      expect(n).toBe(expectedShapes(cfgO).size);
    } finally {
      await ckO.close();
      await ckH.close();
    }
  });
});
