/**
 * config.json of either GLM-4 flavour -> one normalized Glm4Config, and the tensor shapes it implies.
 *
 * - "chatglm": the original THUDM/glm-4-9b-chat (model_type "chatglm", ChatGLMModel). Rotary on
 *   kv_channels/2 dims of each head (RotaryEmbedding(kv_channels // 2)), base 10000 * rope_ratio.
 * - "glm": the transformers port (model_type "glm", GlmForCausalLM). Rotary on head_dim *
 *   partial_rotary_factor dims, base rope_theta.
 * Both rotate interleaved pairs (x[2i], x[2i+1]) of the first rotaryDim dims.
 *
 * Missing structural numbers are errors; flags that the reference implementations default are defaulted the
 * same way (e.g. chatglm rope_ratio 1, rmsnorm true). Architectures this library cannot run are rejected
 * here, with ERR_GLM4_BAD_CONFIG, so that nothing downstream sees them.
 */
import * as path from "node:path";
import { Glm4Error } from "../errors.js";
import { FileProblem, readRegularFile } from "../files.js";
import { isPlainObject, show } from "../util.js";

export type Glm4Flavour = "chatglm" | "glm";

export interface Glm4Config {
  flavour: Glm4Flavour;
  numLayers: number;
  hiddenSize: number;
  /** Query heads. */
  numHeads: number;
  headDim: number;
  /** Key/value heads (GQA groups): 2 for GLM-4-9B, 4 for the 1M variant. */
  numKvHeads: number;
  ffnSize: number;
  /** Rows of the embedding / output layer (the padded vocabulary). */
  vocabSize: number;
  rmsEps: number;
  /** Rotary base: 10000 * rope_ratio (chatglm) or rope_theta (glm). */
  ropeTheta: number;
  /** Leading dims of each head that are rotated (64 of 128 for GLM-4). */
  rotaryDim: number;
  qkvBias: boolean;
  maxPositions: number;
  /** Stop ids from config.json, then those from generation_config.json not already listed. May be empty. */
  eosTokenIds: number[];
  padTokenId?: number;
  torchDtype?: string;
  /** config.json's `_name_or_path` (the model id it was saved from, e.g. "THUDM/glm-4-9b-chat"), when a string. */
  nameOrPath?: string;
}

export const CONFIG_FILE = "config.json";
export const GENERATION_CONFIG_FILE = "generation_config.json";

function badConfig(file: string, what: string, todo = "Fix the file or re-download it from the model's repository"): Glm4Error {
  return new Glm4Error("ERR_GLM4_BAD_CONFIG", `${file}: ${what}. ${todo}`);
}

const UNSUPPORTED = "Only GLM-4-9B-style checkpoints (glm-4-9b, glm-4-9b-chat, glm-4-9b-chat-1m, or their -hf ports) are supported";

/**
 * Upper bounds on every count and size read from a config, checked before anything is sized from them: a
 * hostile `"num_layers": 1e9` must cost a one-line error, not minutes of work or the process's memory. Each
 * is far above any GLM-4 (40 layers, hidden 4096, 32 heads of 128, FFN 13696, vocab 151552, context 1M)
 * and low enough that the tensor list and the shapes built from it stay small (at most 1024 * 7 entries).
 */
export const CONFIG_LIMITS = {
  numLayers: 1024,
  hiddenSize: 65536,
  numHeads: 1024,
  headDim: 1024,
  ffnSize: 1 << 20,
  vocabSize: 1 << 24,
  maxPositions: 1 << 24,
  /** Token ids listed in eos_token_id. */
  eosIds: 1024,
  /** Bytes of config.json / generation_config.json (GLM-4's are ~1.5 KB). */
  fileBytes: 4 * 2 ** 20,
} as const;

/** Typed access to one JSON object; every complaint names the file and the key. */
class Fields {
  constructor(
    private readonly o: Record<string, unknown>,
    readonly file: string,
  ) {}

  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.o, key) && this.o[key] !== undefined && this.o[key] !== null;
  }

  raw(key: string): unknown {
    return this.has(key) ? this.o[key] : undefined;
  }

  /** Integer in [min, max] (min default 1, max default 2^53 - 1); required unless a default is given. */
  int(key: string, opts: { min?: number; max?: number; def?: number } = {}): number {
    const min = opts.min ?? 1;
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    if (!this.has(key)) {
      if (opts.def !== undefined) return opts.def;
      throw badConfig(this.file, `"${key}" is missing (expected an integer >= ${min})`);
    }
    const v = this.o[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
      throw badConfig(this.file, `"${key}" must be an integer >= ${min}, got ${show(v)}`);
    }
    if (v > max) throw badConfig(this.file, `"${key}" is ${v}, more than the ${max} this library accepts (GLM-4-9B's numbers are far below it)`, UNSUPPORTED);
    return v;
  }

  /** Finite number > 0; required unless a default is given. */
  pos(key: string, def?: number): number {
    if (!this.has(key)) {
      if (def !== undefined) return def;
      throw badConfig(this.file, `"${key}" is missing (expected a positive number)`);
    }
    const v = this.o[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw badConfig(this.file, `"${key}" must be a positive number, got ${show(v)}`);
    return v;
  }

  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.o[key];
    if (typeof v !== "boolean") throw badConfig(this.file, `"${key}" must be true or false, got ${show(v)}`);
    return v;
  }

  /** Token id list: a number or an array of numbers (absent -> []). */
  ids(key: string): number[] {
    if (!this.has(key)) return [];
    const v = this.o[key];
    const list = Array.isArray(v) ? v : [v];
    if (list.length > CONFIG_LIMITS.eosIds) throw badConfig(this.file, `"${key}" lists ${list.length} token ids; at most ${CONFIG_LIMITS.eosIds} are accepted`);
    for (const id of list) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
        throw badConfig(this.file, `"${key}" must be a token id or a list of token ids, got ${show(v)}`);
      }
    }
    return list as number[];
  }

  str(key: string): string | undefined {
    if (!this.has(key)) return undefined;
    const v = this.o[key];
    if (typeof v !== "string") throw badConfig(this.file, `"${key}" must be a string, got ${show(v)}`);
    return v;
  }

  /** The first of `keys` that is present (they must agree when several are). */
  alias(keys: string[]): string {
    const present = keys.filter((k) => this.has(k));
    for (const k of present.slice(1)) {
      if (this.o[k] !== this.o[present[0]]) {
        throw badConfig(this.file, `"${present[0]}" (${show(this.o[present[0]])}) and "${k}" (${show(this.o[k])}) disagree`);
      }
    }
    return present[0] ?? keys[0];
  }

  require(key: string, expected: unknown, why: string): void {
    if (this.has(key) && this.o[key] !== expected) {
      throw badConfig(this.file, `"${key}" is ${show(this.o[key])}, but ${why}`, UNSUPPORTED);
    }
  }
}

/**
 * Normalize a parsed config.json (`file` is used in messages). `generationConfig` (parsed
 * generation_config.json, optional) contributes extra eos ids and a pad id the config lacks.
 */
export function normalizeConfig(json: unknown, file = CONFIG_FILE, generationConfig?: unknown, generationFile = GENERATION_CONFIG_FILE): Glm4Config {
  if (!isPlainObject(json)) throw badConfig(file, `must hold a JSON object, got ${show(json)}`);
  const f = new Fields(json, file);
  const L = CONFIG_LIMITS;

  let modelType = f.raw("model_type");
  if (modelType === undefined) {
    const isChatglm = f.has("num_layers") || f.has("padded_vocab_size") || f.has("kv_channels");
    const isGlm = f.has("num_hidden_layers") && f.has("intermediate_size");
    if (isChatglm === isGlm) throw badConfig(file, `"model_type" is missing and the fields do not say which GLM-4 flavour this is`, `Add "model_type": "chatglm" or "glm"`);
    modelType = isChatglm ? "chatglm" : "glm";
  }
  if (modelType === "glm4") {
    throw badConfig(file, `"model_type" is "glm4" (the GLM-4-0414 family, with extra per-layer norms), which this library does not implement`, UNSUPPORTED);
  }
  if (modelType !== "chatglm" && modelType !== "glm") {
    throw badConfig(file, `"model_type" is ${show(modelType)}; expected "chatglm" (original GLM-4) or "glm" (transformers GlmForCausalLM)`, UNSUPPORTED);
  }

  let cfg: Glm4Config;
  if (modelType === "chatglm") {
    f.require("add_bias_linear", false, "biases on the dense/MLP projections are not supported (GLM-4 has bias on QKV only)");
    f.require("rmsnorm", true, "only RMSNorm is supported (rmsnorm false means LayerNorm)");
    f.require("apply_residual_connection_post_layernorm", false, "the residual must be taken before the layernorm (pre-norm)");
    f.require("post_layer_norm", true, "the model needs its final layernorm");
    f.require("tie_word_embeddings", false, "the output layer must be separate from the embedding");
    const numHeads = f.int("num_attention_heads", { max: L.numHeads });
    const mqa = f.bool("multi_query_attention", false);
    const headDim = f.int("kv_channels", { max: L.headDim });
    if (headDim % 4 !== 0) throw badConfig(file, `"kv_channels" is ${headDim}; the rotary half (${headDim / 2} dims) must be even`, UNSUPPORTED);
    cfg = {
      flavour: "chatglm",
      numLayers: f.int(f.alias(["num_layers", "num_hidden_layers"]), { max: L.numLayers }),
      hiddenSize: f.int("hidden_size", { max: L.hiddenSize }),
      numHeads,
      headDim,
      numKvHeads: mqa ? f.int("multi_query_group_num", { max: L.numHeads }) : numHeads,
      ffnSize: f.int("ffn_hidden_size", { max: L.ffnSize }),
      vocabSize: f.int("padded_vocab_size", { max: L.vocabSize }),
      rmsEps: f.pos("layernorm_epsilon", 1e-5),
      ropeTheta: 10000 * f.pos("rope_ratio", 1),
      // ChatGLM builds RotaryEmbedding(kv_channels // 2): the first half of each head is rotated.
      rotaryDim: headDim / 2,
      qkvBias: f.bool("add_qkv_bias", false),
      maxPositions: f.int("seq_length", { def: 2048, max: L.maxPositions }),
      eosTokenIds: f.ids("eos_token_id"),
    };
  } else {
    f.require("tie_word_embeddings", false, "the output layer must be separate from the embedding");
    f.require("hidden_act", "silu", "the MLP must be SwiGLU (silu)");
    if (f.has("rope_scaling")) throw badConfig(file, `"rope_scaling" is ${show(f.raw("rope_scaling"))}; rope scaling is not supported`, UNSUPPORTED);
    if (f.bool("mlp_bias", false)) throw badConfig(file, `"mlp_bias" is true; biases on the MLP are not supported`, UNSUPPORTED);
    const hiddenSize = f.int("hidden_size", { max: L.hiddenSize });
    const numHeads = f.int("num_attention_heads", { max: L.numHeads });
    const headDim = f.int("head_dim", { max: L.headDim, def: Number.isInteger(hiddenSize / numHeads) ? hiddenSize / numHeads : 0 });
    const prf = f.pos("partial_rotary_factor", 0.5);
    if (prf > 1) throw badConfig(file, `"partial_rotary_factor" is ${prf}; it must be in (0, 1]`);
    const rotaryDim = headDim * prf;
    if (!Number.isInteger(rotaryDim) || rotaryDim % 2 !== 0) {
      throw badConfig(file, `head_dim ${headDim} * partial_rotary_factor ${prf} = ${rotaryDim} rotary dims; it must be an even integer`, UNSUPPORTED);
    }
    cfg = {
      flavour: "glm",
      numLayers: f.int("num_hidden_layers", { max: L.numLayers }),
      hiddenSize,
      numHeads,
      headDim,
      numKvHeads: f.int("num_key_value_heads", { max: L.numHeads }),
      ffnSize: f.int("intermediate_size", { max: L.ffnSize }),
      vocabSize: f.int("vocab_size", { max: L.vocabSize }),
      rmsEps: f.pos("rms_norm_eps", 1.5625e-7),
      ropeTheta: f.pos("rope_theta", 10000),
      rotaryDim,
      qkvBias: f.bool("attention_bias", true),
      maxPositions: f.int("max_position_embeddings", { def: 131072, max: L.maxPositions }),
      eosTokenIds: f.ids("eos_token_id"),
    };
  }

  if (cfg.numHeads % cfg.numKvHeads !== 0) {
    throw badConfig(file, `${cfg.numHeads} attention heads are not divisible by ${cfg.numKvHeads} key/value heads`);
  }
  if (cfg.hiddenSize !== cfg.numHeads * cfg.headDim) {
    throw badConfig(file, `hidden size ${cfg.hiddenSize} != ${cfg.numHeads} heads * head dim ${cfg.headDim}`, UNSUPPORTED);
  }
  if (cfg.rotaryDim <= 0 || cfg.rotaryDim > cfg.headDim) {
    throw badConfig(file, `${cfg.rotaryDim} rotary dims do not fit in a head of ${cfg.headDim}`);
  }

  const pad = f.ids("pad_token_id");
  if (pad.length > 1) throw badConfig(file, `"pad_token_id" must be a single token id, got ${show(f.raw("pad_token_id"))}`);
  if (pad.length === 1) cfg.padTokenId = pad[0];
  const dtype = f.str(f.alias(["torch_dtype", "dtype"]));
  if (dtype !== undefined) cfg.torchDtype = dtype;
  const named = f.raw("_name_or_path"); // informational: anything but a short string is ignored
  if (typeof named === "string" && named.length > 0 && named.length <= 256) cfg.nameOrPath = named;

  if (generationConfig !== undefined) {
    if (!isPlainObject(generationConfig)) throw badConfig(generationFile, `must hold a JSON object, got ${show(generationConfig)}`);
    const g = new Fields(generationConfig, generationFile);
    for (const id of g.ids("eos_token_id")) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
    const gpad = g.ids("pad_token_id");
    if (cfg.padTokenId === undefined && gpad.length === 1) cfg.padTokenId = gpad[0];
  }
  for (const id of cfg.eosTokenIds) {
    if (id >= cfg.vocabSize) throw badConfig(file, `eos token id ${id} is outside the vocabulary of ${cfg.vocabSize}`);
  }
  if (cfg.padTokenId !== undefined && cfg.padTokenId >= cfg.vocabSize) {
    throw badConfig(file, `pad token id ${cfg.padTokenId} is outside the vocabulary of ${cfg.vocabSize}`);
  }
  return cfg;
}

async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = (await readRegularFile(file, CONFIG_LIMITS.fileBytes)).toString("utf8");
  } catch (e) {
    if (!(e instanceof FileProblem)) throw e;
    if (e.reason === "missing") {
      if (!required) return undefined;
      throw new Glm4Error("ERR_GLM4_FILE_NOT_FOUND", `${file}: does not exist. Pass the model directory that holds config.json.`, { cause: e });
    }
    if (e.reason === "io") throw badConfig(file, e.message, "Check the file's permissions");
    throw badConfig(file, e.message, "Replace it with the model's real file");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badConfig(file, `is not valid JSON (${(e as Error).message})`);
  }
}

/** Read `dir/config.json` (and `dir/generation_config.json` when present) and normalize them. */
export async function readConfig(dir: string): Promise<Glm4Config> {
  const file = path.join(dir, CONFIG_FILE);
  const json = await readJson(file, true);
  const genFile = path.join(dir, GENERATION_CONFIG_FILE);
  const gen = await readJson(genFile, false);
  return normalizeConfig(json, file, gen, genFile);
}
