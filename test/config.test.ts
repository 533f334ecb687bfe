import { writeFile } from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { normalizeConfig, readConfig, type Glm4Config } from "../lib/checkpoint/config.js";
import { checkShapes, expectedShapes } from "../lib/checkpoint/tensors.js";
import { Glm4Error } from "../lib/errors.js";
import { cleanupTempDirs, tempDir } from "./helpers/st-writer.js";

afterAll(cleanupTempDirs);

/** THUDM/glm-4-9b-chat config.json (the fields that matter, as published). */
const GLM4_9B_CHAT_ORIGINAL = {
  _name_or_path: "THUDM/glm-4-9b-chat",
  model_type: "chatglm",
  architectures: ["ChatGLMModel"],
  add_bias_linear: false,
  add_qkv_bias: true,
  apply_query_key_layer_scaling: true,
  apply_residual_connection_post_layernorm: false,
  attention_dropout: 0.0,
  attention_softmax_in_fp32: true,
  bias_dropout_fusion: true,
  ffn_hidden_size: 13696,
  fp32_residual_connection: false,
  hidden_dropout: 0.0,
  hidden_size: 4096,
  kv_channels: 128,
  layernorm_epsilon: 1.5625e-7,
  multi_query_attention: true,
  multi_query_group_num: 2,
  num_attention_heads: 32,
  num_hidden_layers: 40,
  num_layers: 40,
  rope_ratio: 500,
  original_rope: true,
  padded_vocab_size: 151552,
  post_layer_norm: true,
  rmsnorm: true,
  seq_length: 131072,
  use_cache: true,
  torch_dtype: "bfloat16",
  tie_word_embeddings: false,
  eos_token_id: [151329, 151336, 151338],
  pad_token_id: 151329,
};

/** The transformers port (glm-4-9b-chat-hf). */
const GLM4_9B_CHAT_HF = {
  architectures: ["GlmForCausalLM"],
  attention_bias: true,
  attention_dropout: 0.0,
  eos_token_id: [151329, 151336, 151338],
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 13696,
  max_position_embeddings: 131072,
  model_type: "glm",
  num_attention_heads: 32,
  num_hidden_layers: 40,
  num_key_value_heads: 2,
  pad_token_id: 151329,
  partial_rotary_factor: 0.5,
  rms_norm_eps: 1.5625e-7,
  rope_theta: 5000000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 151552,
};

const EXPECTED_9B: Glm4Config = {
  flavour: "chatglm",
  numLayers: 40,
  hiddenSize: 4096,
  numHeads: 32,
  headDim: 128,
  numKvHeads: 2,
  ffnSize: 13696,
  vocabSize: 151552,
  rmsEps: 1.5625e-7,
  ropeTheta: 5_000_000,
  rotaryDim: 64,
  qkvBias: true,
  maxPositions: 131072,
  eosTokenIds: [151329, 151336, 151338],
  padTokenId: 151329,
  torchDtype: "bfloat16",
};

function expectBad(fn: () => unknown, code: string, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, "expected a throw").toBeInstanceOf(Glm4Error);
  expect((err as Glm4Error).code, (err as Error).message).toBe(code);
  for (const p of parts) {
    if (typeof p === "string") expect((err as Error).message).toContain(p);
    else expect((err as Error).message).toMatch(p);
  }
}

describe("normalizeConfig", () => {
  it("normalizes glm-4-9b-chat (original)", () => {
    expect(normalizeConfig(GLM4_9B_CHAT_ORIGINAL, "config.json")).toEqual({ ...EXPECTED_9B, nameOrPath: "THUDM/glm-4-9b-chat" });
  });

  it("normalizes glm-4-9b-chat-hf to the same model", () => {
    expect(normalizeConfig(GLM4_9B_CHAT_HF, "config.json")).toEqual({ ...EXPECTED_9B, flavour: "glm" });
  });

  it("normalizes glm-4-9b-chat-1m (4 kv groups, rope_ratio 10000)", () => {
    const c = normalizeConfig({ ...GLM4_9B_CHAT_ORIGINAL, multi_query_group_num: 4, rope_ratio: 10000, seq_length: 1048576 }, "config.json");
    expect(c.numKvHeads).toBe(4);
    expect(c.ropeTheta).toBe(1e8);
    expect(c.maxPositions).toBe(1048576);
    expect(expectedShapes(c).get("layers.0.qkv")).toEqual([(32 + 8) * 128, 4096]);
  });

  it("applies the reference defaults for omitted flags", () => {
    const {
      rope_ratio: _r,
      multi_query_attention: _m,
      add_qkv_bias: _b,
      layernorm_epsilon: _e,
      seq_length: _s,
      eos_token_id: _eos,
      pad_token_id: _pad,
      torch_dtype: _t,
      ...rest
    } = GLM4_9B_CHAT_ORIGINAL;
    const c = normalizeConfig(rest, "config.json");
    expect(c.ropeTheta).toBe(10000);
    expect(c.numKvHeads).toBe(32);
    expect(c.qkvBias).toBe(false);
    expect(c.rmsEps).toBe(1e-5);
    expect(c.maxPositions).toBe(2048);
    expect(c.eosTokenIds).toEqual([]);
    expect(c.padTokenId).toBeUndefined();
    expect(c.torchDtype).toBeUndefined();
    const { partial_rotary_factor: _p, head_dim: _h, ...hf } = GLM4_9B_CHAT_HF;
    const h = normalizeConfig(hf, "config.json");
    expect(h.headDim).toBe(128);
    expect(h.rotaryDim).toBe(64);
  });

  it("infers the flavour when model_type is absent", () => {
    const { model_type: _a, ...o } = GLM4_9B_CHAT_ORIGINAL;
    expect(normalizeConfig(o).flavour).toBe("chatglm");
    const { model_type: _b, ...h } = GLM4_9B_CHAT_HF;
    expect(normalizeConfig(h).flavour).toBe("glm");
  });

  it("accepts a single eos id and merges generation_config ids", () => {
    const c = normalizeConfig({ ...GLM4_9B_CHAT_ORIGINAL, eos_token_id: 151329, pad_token_id: undefined }, "config.json", { eos_token_id: [151329, 151336, 151338], pad_token_id: 151329 });
    expect(c.eosTokenIds).toEqual([151329, 151336, 151338]);
    expect(c.padTokenId).toBe(151329);
  });

  const BAD: Array<[string, Record<string, unknown>, RegExp]> = [
    ["tied embeddings (chatglm)", { ...GLM4_9B_CHAT_ORIGINAL, tie_word_embeddings: true }, /"tie_word_embeddings" is true/],
    ["tied embeddings (glm)", { ...GLM4_9B_CHAT_HF, tie_word_embeddings: true }, /"tie_word_embeddings" is true/],
    ["add_bias_linear", { ...GLM4_9B_CHAT_ORIGINAL, add_bias_linear: true }, /"add_bias_linear" is true/],
    ["LayerNorm instead of RMSNorm", { ...GLM4_9B_CHAT_ORIGINAL, rmsnorm: false }, /"rmsnorm" is false/],
    ["post-layernorm residual", { ...GLM4_9B_CHAT_ORIGINAL, apply_residual_connection_post_layernorm: true }, /"apply_residual_connection_post_layernorm" is true/],
    ["no final layernorm", { ...GLM4_9B_CHAT_ORIGINAL, post_layer_norm: false }, /"post_layer_norm" is false/],
    ["heads not divisible by kv heads", { ...GLM4_9B_CHAT_ORIGINAL, multi_query_group_num: 3 }, /32 attention heads are not divisible by 3/],
    ["heads not divisible by kv heads (glm)", { ...GLM4_9B_CHAT_HF, num_key_value_heads: 5 }, /not divisible by 5/],
    ["hidden != heads * head_dim", { ...GLM4_9B_CHAT_ORIGINAL, kv_channels: 64 }, /hidden size 4096 != 32 heads \* head dim 64/],
    ["hidden != heads * head_dim (glm)", { ...GLM4_9B_CHAT_HF, head_dim: 96 }, /4096 != 32 heads \* head dim 96/],
    ["missing num_layers", { ...GLM4_9B_CHAT_ORIGINAL, num_layers: undefined, num_hidden_layers: undefined }, /"num_layers" is missing/],
    ["missing hidden_size (glm)", { ...GLM4_9B_CHAT_HF, hidden_size: undefined }, /"hidden_size" is missing/],
    ["non-numeric field", { ...GLM4_9B_CHAT_ORIGINAL, hidden_size: "4096" }, /"hidden_size" must be an integer >= 1, got "4096"/],
    ["fractional field", { ...GLM4_9B_CHAT_HF, intermediate_size: 13696.5 }, /"intermediate_size" must be an integer/],
    ["zero layers", { ...GLM4_9B_CHAT_ORIGINAL, num_layers: 0, num_hidden_layers: 0 }, /"num_layers" must be an integer >= 1, got 0/],
    ["num_layers and num_hidden_layers disagree", { ...GLM4_9B_CHAT_ORIGINAL, num_hidden_layers: 41 }, /disagree/],
    ["non-numeric rope_ratio", { ...GLM4_9B_CHAT_ORIGINAL, rope_ratio: "500" }, /"rope_ratio" must be a positive number/],
    ["negative eps", { ...GLM4_9B_CHAT_HF, rms_norm_eps: -1 }, /"rms_norm_eps" must be a positive number/],
    ["boolean as string", { ...GLM4_9B_CHAT_ORIGINAL, multi_query_attention: "true" }, /"multi_query_attention" must be true or false/],
    ["bad eos id", { ...GLM4_9B_CHAT_ORIGINAL, eos_token_id: ["</s>"] }, /"eos_token_id" must be a token id/],
    ["eos id beyond vocab", { ...GLM4_9B_CHAT_ORIGINAL, eos_token_id: 999999 }, /eos token id 999999 is outside the vocabulary/],
    ["model_type llama", { ...GLM4_9B_CHAT_HF, model_type: "llama" }, /"model_type" is "llama"/],
    ["model_type glm4 (GLM-4-0414)", { ...GLM4_9B_CHAT_HF, model_type: "glm4" }, /GLM-4-0414/],
    ["rope scaling", { ...GLM4_9B_CHAT_HF, rope_scaling: { type: "linear", factor: 2 } }, /"rope_scaling"/],
    ["not silu", { ...GLM4_9B_CHAT_HF, hidden_act: "gelu" }, /"hidden_act" is "gelu"/],
    ["odd rotary dims", { ...GLM4_9B_CHAT_HF, partial_rotary_factor: 0.3 }, /rotary dims; it must be an even integer/],
  ];
  it.each(BAD)("rejects %s", (_n, json, match) => {
    expectBad(() => normalizeConfig(json, "/models/x/config.json"), "ERR_GLM4_BAD_CONFIG", "/models/x/config.json", match);
  });

  it("rejects a config that is not an object, and a bad generation_config", () => {
    expectBad(() => normalizeConfig([1], "c.json"), "ERR_GLM4_BAD_CONFIG", "c.json");
    expectBad(() => normalizeConfig(GLM4_9B_CHAT_ORIGINAL, "c.json", { eos_token_id: "x" }, "g.json"), "ERR_GLM4_BAD_CONFIG", "g.json", "eos_token_id");
  });
});

describe("readConfig", () => {
  it("reads config.json and generation_config.json", async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ ...GLM4_9B_CHAT_ORIGINAL, eos_token_id: 151329 }));
    await writeFile(path.join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [151329, 151336, 151338] }));
    expect(await readConfig(dir)).toEqual({ ...EXPECTED_9B, nameOrPath: "THUDM/glm-4-9b-chat" });
  });

  it("reports a missing file, bad JSON and an unsupported config with the file's path", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "config.json");
    await expect(readConfig(dir)).rejects.toMatchObject({ code: "ERR_GLM4_FILE_NOT_FOUND", message: expect.stringContaining(file) });
    await writeFile(file, '{"model_type": "chatglm", ');
    await expect(readConfig(dir)).rejects.toMatchObject({ code: "ERR_GLM4_BAD_CONFIG", message: expect.stringMatching(/config\.json: is not valid JSON/) });
    await writeFile(file, JSON.stringify({ ...GLM4_9B_CHAT_ORIGINAL, tie_word_embeddings: true }));
    await expect(readConfig(dir)).rejects.toMatchObject({ code: "ERR_GLM4_BAD_CONFIG", message: expect.stringContaining(file) });
    await writeFile(file, JSON.stringify(GLM4_9B_CHAT_ORIGINAL));
    await writeFile(path.join(dir, "generation_config.json"), "{oops");
    await expect(readConfig(dir)).rejects.toMatchObject({ code: "ERR_GLM4_BAD_CONFIG", message: expect.stringContaining("generation_config.json") });
  });
});

describe("expectedShapes / checkShapes", () => {
  it("gives GLM-4-9B's shapes in model order", () => {
    const s = expectedShapes(EXPECTED_9B);
    expect(s.size).toBe(2 + 40 * 7 + 1);
    const keys = [...s.keys()];
    expect(keys.slice(0, 9)).toEqual([
      "embed",
      "layers.0.attn_norm",
      "layers.0.qkv",
      "layers.0.qkv_bias",
      "layers.0.attn_out",
      "layers.0.ffn_norm",
      "layers.0.gate_up",
      "layers.0.down",
      "layers.1.attn_norm",
    ]);
    expect(keys.slice(-2)).toEqual(["final_norm", "output"]);
    expect(s.get("embed")).toEqual([151552, 4096]);
    expect(s.get("layers.39.qkv")).toEqual([4608, 4096]);
    expect(s.get("layers.39.qkv_bias")).toEqual([4608]);
    expect(s.get("layers.39.attn_out")).toEqual([4096, 4096]);
    expect(s.get("layers.39.gate_up")).toEqual([27392, 4096]);
    expect(s.get("layers.39.down")).toEqual([4096, 13696]);
    expect(s.get("final_norm")).toEqual([4096]);
    expect(s.get("output")).toEqual([151552, 4096]);
    expect(expectedShapes({ ...EXPECTED_9B, qkvBias: false }).has("layers.0.qkv_bias")).toBe(false);
  });

  it("checks a list of normalized tensors", () => {
    const cfg = { ...EXPECTED_9B, numLayers: 1 };
    const good = [...expectedShapes(cfg)].map(([name, shape]) => ({ name, shape }));
    expect(() => checkShapes(cfg, good)).not.toThrow();
    expectBad(() => checkShapes(cfg, good.slice(1), "ck"), "ERR_GLM4_MISSING_TENSOR", 'ck: tensor "embed"');
    expectBad(
      () => checkShapes(cfg, good.map((t) => (t.name === "layers.0.down" ? { ...t, shape: [4096, 13695] } : t)), "ck"),
      "ERR_GLM4_SHAPE_MISMATCH",
      '"layers.0.down" has shape [4096, 13695]',
      "needs [4096, 13696]",
    );
    expectBad(() => checkShapes(cfg, [...good, { name: "layers.1.qkv", shape: [1] }], "ck"), "ERR_GLM4_UNEXPECTED_TENSOR", '"layers.1.qkv"', "1 layers");
  });
});
