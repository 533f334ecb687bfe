/**
 * Readers for GLM-4's two tokenizer layouts. Both end in the same `TokenizerData`.
 *
 * - original (THUDM/glm-4-9b-chat): `tokenizer.model` holds tiktoken ranks, one `base64(bytes) rank` line
 *   per ordinary token (a token's id is its rank); special tokens and their ids come from
 *   `tokenizer_config.json` (`added_tokens_decoder`). The split regex is GLM-4's (tokenization_chatglm.py
 *   hard-codes it, so does this reader).
 * - HF (glm-4-9b-chat-hf): `tokenizer.json` (HF tokenizers): a BPE model over GPT-2 byte-level strings with
 *   its merges list, `added_tokens` for the specials, pre_tokenizer Split(GLM-4 regex) + ByteLevel. Only that
 *   shape is accepted; anything else is refused rather than half-supported. `tokenizer_config.json` is
 *   optional there (eos_token, cross-check of the special ids).
 *
 * `generation_config.json`, when it sits in the same folder, adds its `eos_token_id`s to the stop ids.
 * Files are hostile input: sizes are capped, every line / entry is checked, errors name the file.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Glm4Error, type Glm4ErrorCode } from "../../errors.js";
import { FileProblem, readRegularFile } from "../../files.js";
import { bytesToUnicode, type PairRanker } from "./bpe.js";
import { GLM4_PAT_STR } from "./split.js";

/** Special tokens that GLM-4 chat needs; a tokenizer without them is refused at load. */
export const REQUIRED_SPECIAL_TOKENS = [
  "<|endoftext|>",
  "[gMASK]",
  "<sop>",
  "<|system|>",
  "<|user|>",
  "<|assistant|>",
  "<|observation|>",
] as const;

/** Largest tokenizer file read (GLM-4's tokenizer.model is 2.6 MB, its tokenizer.json about 20 MB). */
const MAX_FILE_BYTES = 64 * 2 ** 20;
/** Largest tokenizer_config.json / generation_config.json read (GLM-4's are a few KB). */
const MAX_CONFIG_BYTES = 4 * 2 ** 20;
/** Ids above this are refused (GLM-4 uses 151552; the cap keeps arrays indexed by id small). */
const MAX_TOKEN_ID = (1 << 24) - 1;

export type TokenizerFormat = "tiktoken" | "tokenizer.json";

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

export interface TokenizerData {
  format: TokenizerFormat;
  /** The files that were read, for messages. */
  files: string[];
  /** Bytes (latin1 string) of every ordinary token by id; undefined for ids that are not ordinary tokens. */
  tokenBytes: (string | undefined)[];
  /** Id of each single byte 0..255. */
  byteIds: Int32Array;
  /** How adjacent symbols merge. */
  ranker: PairRanker;
  /** Whole-piece lookup before merging (tiktoken always does it; HF only with `ignore_merges`). */
  wholePiece: Map<string, number> | null;
  /** Added (special) tokens by content. */
  added: Map<string, AddedToken>;
  /** Stop ids in order of appearance: tokenizer_config's eos_token, then generation_config's eos_token_id. */
  eosIds: number[];
  /** Largest id + 1. */
  vocabSize: number;
  /** The file the special tokens' ids come from (for messages). */
  specialsFile: string;
}

function fail(code: Glm4ErrorCode, file: string, what: string, todo: string): never {
  throw new Glm4Error(code, `${file}: ${what}. ${todo}`);
}

const REDOWNLOAD = "Re-download the tokenizer files of the model (THUDM/glm-4-9b-chat or glm-4-9b-chat-hf).";

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

async function readText(path: string, what: string, maxBytes = MAX_FILE_BYTES): Promise<string> {
  try {
    return (await readRegularFile(path, maxBytes)).toString("utf8");
  } catch (e) {
    if (!(e instanceof FileProblem)) throw e;
    if (e.reason === "missing") fail("ERR_GLM4_FILE_NOT_FOUND", path, `${what} not found`, REDOWNLOAD);
    if (e.reason === "io") throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", `${path}: ${what} ${e.message}. Check the file's permissions.`, { cause: e });
    fail("ERR_GLM4_BAD_TOKENIZER", path, `${what} ${e.message}`, REDOWNLOAD);
  }
}

async function readJsonObject(path: string, what: string, code: Glm4ErrorCode = "ERR_GLM4_BAD_TOKENIZER", maxBytes = MAX_FILE_BYTES): Promise<Record<string, unknown>> {
  const text = await readText(path, what, maxBytes);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Glm4Error(code, `${path}: ${what} is not valid JSON (${(e as Error).message}). ${REDOWNLOAD}`, { cause: e });
  }
  if (!isObject(value)) fail(code, path, `${what} must hold a JSON object`, REDOWNLOAD);
  return value;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isTokenId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_TOKEN_ID;
}

// ---------------------------------------------------------------------------------------------------------
// tokenizer_config.json / generation_config.json

interface TokenizerConfig {
  path: string;
  /** added_tokens_decoder, or null when the file has none. */
  added: Map<string, AddedToken> | null;
  eosToken: string | null;
}

function parseTokenizerConfig(path: string, json: Record<string, unknown>): TokenizerConfig {
  let added: Map<string, AddedToken> | null = null;
  const atd = json["added_tokens_decoder"];
  if (atd !== undefined) {
    if (!isObject(atd)) fail("ERR_GLM4_BAD_TOKENIZER", path, "added_tokens_decoder must be an object of id -> token", REDOWNLOAD);
    added = new Map();
    for (const [key, entry] of Object.entries(atd)) {
      const id = /^\d+$/.test(key) ? Number(key) : -1;
      if (!isTokenId(id)) fail("ERR_GLM4_BAD_TOKENIZER", path, `added_tokens_decoder key ${JSON.stringify(key)} is not a token id`, REDOWNLOAD);
      if (!isObject(entry) || typeof entry["content"] !== "string" || entry["content"] === "") {
        fail("ERR_GLM4_BAD_TOKENIZER", path, `added_tokens_decoder[${key}] has no "content" string`, REDOWNLOAD);
      }
      addAdded(added, { id, content: entry["content"] as string, special: entry["special"] !== false }, path, "added_tokens_decoder");
    }
  }
  let eosToken: string | null = null;
  const eos = json["eos_token"];
  if (typeof eos === "string") eosToken = eos;
  else if (isObject(eos) && typeof eos["content"] === "string") eosToken = eos["content"];
  else if (eos !== undefined && eos !== null) fail("ERR_GLM4_BAD_TOKENIZER", path, "eos_token must be a string or {content}", REDOWNLOAD);
  return { path, added, eosToken };
}

function addAdded(map: Map<string, AddedToken>, tok: AddedToken, path: string, where: string): void {
  const prev = map.get(tok.content);
  if (prev !== undefined && prev.id !== tok.id) {
    fail("ERR_GLM4_BAD_TOKENIZER", path, `${where} lists ${JSON.stringify(tok.content)} twice, with ids ${prev.id} and ${tok.id}`, REDOWNLOAD);
  }
  for (const other of map.values()) {
    if (other.id === tok.id && other.content !== tok.content) {
      fail("ERR_GLM4_BAD_TOKENIZER", path, `${where} gives id ${tok.id} to both ${JSON.stringify(other.content)} and ${JSON.stringify(tok.content)}`, REDOWNLOAD);
    }
  }
  map.set(tok.content, tok);
}

async function readGenerationEosIds(dir: string, files: string[]): Promise<number[]> {
  const path = join(dir, "generation_config.json");
  if (!(await exists(path))) return [];
  files.push(path);
  const json = await readJsonObject(path, "generation_config.json", "ERR_GLM4_BAD_CONFIG", MAX_CONFIG_BYTES);
  const v = json["eos_token_id"];
  if (v === undefined || v === null) return [];
  const ids = Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (!isTokenId(id)) fail("ERR_GLM4_BAD_CONFIG", path, `eos_token_id ${JSON.stringify(v)} is not a token id or a list of them`, "Fix or remove generation_config.json.");
  }
  return ids as number[];
}

// ---------------------------------------------------------------------------------------------------------
// original format: tokenizer.model

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function parseTiktokenModel(path: string, text: string): { tokenBytes: (string | undefined)[]; ranks: Map<string, number> } {
  const ranks = new Map<string, number>();
  const tokenBytes: (string | undefined)[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue; // tiktoken's loader skips empty lines (the file ends in one)
    const where = `line ${i + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length !== 2) {
      fail("ERR_GLM4_BAD_TOKENIZER", path, `${where} is not "base64 rank" (${fields.length} fields: ${JSON.stringify(line.slice(0, 80))})`, REDOWNLOAD);
    }
    const [b64, rankStr] = fields;
    if (!BASE64.test(b64)) fail("ERR_GLM4_BAD_TOKENIZER", path, `${where}: ${JSON.stringify(b64.slice(0, 80))} is not base64`, REDOWNLOAD);
    if (!/^\d{1,9}$/.test(rankStr) || !isTokenId(Number(rankStr))) {
      fail("ERR_GLM4_BAD_TOKENIZER", path, `${where}: rank ${JSON.stringify(rankStr.slice(0, 80))} is not a token id`, REDOWNLOAD);
    }
    const rank = Number(rankStr);
    const bytes = Buffer.from(b64, "base64").toString("latin1");
    if (bytes.length === 0) fail("ERR_GLM4_BAD_TOKENIZER", path, `${where}: empty token`, REDOWNLOAD);
    if (tokenBytes[rank] !== undefined) fail("ERR_GLM4_BAD_TOKENIZER", path, `${where}: duplicate rank ${rank}`, REDOWNLOAD);
    const prev = ranks.get(bytes);
    if (prev !== undefined) fail("ERR_GLM4_BAD_TOKENIZER", path, `${where}: the token of rank ${rank} repeats the bytes of rank ${prev}`, REDOWNLOAD);
    ranks.set(bytes, rank);
    tokenBytes[rank] = bytes;
  }
  if (ranks.size === 0) fail("ERR_GLM4_BAD_TOKENIZER", path, "no ranks", REDOWNLOAD);
  return { tokenBytes, ranks };
}

function singleByteIds(path: string, lookup: (bytes: string) => number | undefined): Int32Array {
  const ids = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    const id = lookup(String.fromCharCode(b));
    if (id === undefined) {
      fail("ERR_GLM4_BAD_TOKENIZER", path, `byte 0x${b.toString(16).padStart(2, "0")} has no token of its own, so some text cannot be encoded`, REDOWNLOAD);
    }
    ids[b] = id;
  }
  return ids;
}

async function loadOriginal(dir: string, modelPath: string): Promise<TokenizerData> {
  const files = [modelPath];
  const { tokenBytes, ranks } = parseTiktokenModel(modelPath, await readText(modelPath, "tokenizer.model"));
  const configPath = join(dir, "tokenizer_config.json");
  files.push(configPath);
  const config = parseTokenizerConfig(configPath, await readJsonObject(configPath, "tokenizer_config.json (it holds the special token ids)", undefined, MAX_CONFIG_BYTES));
  if (config.added === null) {
    fail("ERR_GLM4_BAD_TOKENIZER", configPath, "no added_tokens_decoder, so the special token ids are unknown", REDOWNLOAD);
  }
  for (const tok of config.added.values()) {
    if (tokenBytes[tok.id] !== undefined) {
      fail("ERR_GLM4_BAD_TOKENIZER", configPath, `special token ${JSON.stringify(tok.content)} has id ${tok.id}, which ${modelPath} gives to an ordinary token`, REDOWNLOAD);
    }
  }
  const ranker: PairRanker = {
    rank: (a, b) => ranks.get((tokenBytes[a] as string) + (tokenBytes[b] as string)) ?? -1,
    merged: (_a, _b, rank) => rank,
  };
  const byteIds = singleByteIds(modelPath, (s) => ranks.get(s));
  return finish(dir, "tiktoken", files, tokenBytes, byteIds, ranker, ranks, config.added, config);
}

// ---------------------------------------------------------------------------------------------------------
// HF format: tokenizer.json

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 160 ? `${s.slice(0, 160)}...` : s;
}

function checkPreTokenizer(path: string, pre: unknown): void {
  const expected =
    'Sequence[Split(Regex = GLM-4 pattern, behavior "Isolated", invert false), ByteLevel(add_prefix_space false, use_regex false)]';
  const unsupported: (what: string) => never = (what) =>
    fail("ERR_GLM4_UNSUPPORTED", path, `pre_tokenizer ${what}; this reader supports GLM-4's ${expected} only`, "Use the model's own tokenizer.json or its original tokenizer.model.");
  if (!isObject(pre) || pre["type"] !== "Sequence" || !Array.isArray(pre["pretokenizers"]) || pre["pretokenizers"].length !== 2) {
    unsupported(`is ${describe(pre)}`);
  }
  const [split, bytes] = pre["pretokenizers"] as unknown[];
  if (!isObject(split) || split["type"] !== "Split" || !isObject(split["pattern"])) unsupported(`starts with ${describe(split)}`);
  const pattern = (split as Record<string, Record<string, unknown>>)["pattern"]["Regex"];
  if (pattern !== GLM4_PAT_STR) unsupported(`splits with ${describe((split as Record<string, unknown>)["pattern"])}, not GLM-4's regex`);
  if (String((split as Record<string, unknown>)["behavior"]).toLowerCase() !== "isolated" || (split as Record<string, unknown>)["invert"] === true) {
    unsupported(`Split has behavior ${describe((split as Record<string, unknown>)["behavior"])}, invert ${describe((split as Record<string, unknown>)["invert"])}`);
  }
  if (!isObject(bytes) || bytes["type"] !== "ByteLevel" || bytes["add_prefix_space"] === true || bytes["use_regex"] !== false) {
    unsupported(`ends with ${describe(bytes)}`);
  }
}

async function loadHf(dir: string, jsonPath: string): Promise<TokenizerData> {
  const files = [jsonPath];
  const json = await readJsonObject(jsonPath, "tokenizer.json");
  const bad: (what: string) => never = (what) => fail("ERR_GLM4_BAD_TOKENIZER", jsonPath, what, REDOWNLOAD);
  const unsupported: (what: string) => never = (what) =>
    fail("ERR_GLM4_UNSUPPORTED", jsonPath, what, "This reader supports GLM-4's byte-level BPE tokenizer.json only.");

  const model = json["model"];
  if (!isObject(model)) bad('no "model" object');
  if (model["type"] !== undefined && model["type"] !== "BPE") unsupported(`model type ${describe(model["type"])} is not BPE`);
  if (model["byte_fallback"] === true) unsupported("byte_fallback is on");
  if (typeof model["dropout"] === "number" && model["dropout"] > 0) unsupported("BPE dropout is on");
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    if (model[key] !== undefined && model[key] !== null && model[key] !== "") unsupported(`${key} is ${describe(model[key])}`);
  }
  if (json["normalizer"] !== undefined && json["normalizer"] !== null) unsupported(`normalizer ${describe(json["normalizer"])} is not null`);
  checkPreTokenizer(jsonPath, json["pre_tokenizer"]);

  // Vocabulary: GPT-2 byte-level strings -> bytes.
  const u2b = new Map<number, number>();
  bytesToUnicode().forEach((ch, b) => u2b.set(ch.charCodeAt(0), b));
  const vocabJson = model["vocab"];
  if (!isObject(vocabJson)) bad('model has no "vocab" object');
  const vocab = new Map<string, number>(); // byte-level string -> id
  const byBytes = new Map<string, number>(); // latin1 bytes -> id
  const tokenBytes: (string | undefined)[] = [];
  for (const [key, id] of Object.entries(vocabJson)) {
    if (!isTokenId(id)) bad(`vocab entry ${describe(key)} has id ${describe(id)}, not a token id`);
    let bytes = "";
    for (let i = 0; i < key.length; i++) {
      const b = u2b.get(key.charCodeAt(i));
      if (b === undefined) bad(`vocab entry ${describe(key)} is not a byte-level string (character U+${key.charCodeAt(i).toString(16).toUpperCase().padStart(4, "0")})`);
      bytes += String.fromCharCode(b);
    }
    if (bytes === "") bad("vocab has an empty entry");
    if (tokenBytes[id] !== undefined) bad(`vocab gives id ${id} twice`);
    vocab.set(key, id);
    byBytes.set(bytes, id);
    tokenBytes[id] = bytes;
  }
  if (vocab.size === 0) bad("vocab is empty");

  // Merges: priority = position in the list; the pair must merge into a vocabulary entry.
  const mergesJson = model["merges"];
  if (!Array.isArray(mergesJson)) bad('model has no "merges" list');
  const stride = tokenBytes.length;
  const pairPrio = new Map<number, number>();
  const mergedId = new Int32Array(mergesJson.length);
  for (let i = 0; i < mergesJson.length; i++) {
    const m = mergesJson[i];
    let pair: unknown[];
    if (typeof m === "string") pair = m.split(" ");
    else if (Array.isArray(m)) pair = m;
    else pair = [];
    if (pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") bad(`merges[${i}] ${describe(m)} is not a pair`);
    const [l, r] = pair as [string, string];
    const a = vocab.get(l);
    const b = vocab.get(r);
    const c = vocab.get(l + r);
    if (a === undefined || b === undefined || c === undefined) bad(`merges[${i}] ${describe(m)} names a token missing from vocab`);
    const key = a * stride + b;
    if (!pairPrio.has(key)) pairPrio.set(key, i); // a repeated merge keeps its first (highest) priority
    mergedId[i] = c;
  }
  const ranker: PairRanker = {
    rank: (a, b) => pairPrio.get(a * stride + b) ?? -1,
    merged: (_a, _b, prio) => mergedId[prio],
  };
  const byteIds = singleByteIds(jsonPath, (s) => byBytes.get(s));

  // Added tokens from tokenizer.json, cross-checked against tokenizer_config.json when that exists.
  const added = new Map<string, AddedToken>();
  const addedJson = json["added_tokens"] ?? [];
  if (!Array.isArray(addedJson)) bad("added_tokens is not a list");
  for (const [i, t] of addedJson.entries()) {
    if (!isObject(t) || !isTokenId(t["id"]) || typeof t["content"] !== "string" || t["content"] === "") {
      bad(`added_tokens[${i}] ${describe(t)} needs an "id" and a "content"`);
    }
    addAdded(added, { id: t["id"] as number, content: t["content"] as string, special: t["special"] !== false }, jsonPath, "added_tokens");
  }
  let config: TokenizerConfig | null = null;
  const configPath = join(dir, "tokenizer_config.json");
  if (await exists(configPath)) {
    files.push(configPath);
    config = parseTokenizerConfig(configPath, await readJsonObject(configPath, "tokenizer_config.json", undefined, MAX_CONFIG_BYTES));
    for (const tok of config.added?.values() ?? []) {
      const mine = added.get(tok.content);
      if (mine !== undefined && mine.id !== tok.id) {
        fail("ERR_GLM4_BAD_TOKENIZER", configPath, `${JSON.stringify(tok.content)} has id ${tok.id} here but ${mine.id} in ${jsonPath}`, REDOWNLOAD);
      }
      if (mine === undefined) addAdded(added, tok, configPath, "added_tokens_decoder");
    }
  }
  const ignoreMerges = model["ignore_merges"] === true;
  return finish(dir, "tokenizer.json", files, tokenBytes, byteIds, ranker, ignoreMerges ? byBytes : null, added, config);
}

// ---------------------------------------------------------------------------------------------------------

async function finish(
  dir: string,
  format: TokenizerFormat,
  files: string[],
  tokenBytes: (string | undefined)[],
  byteIds: Int32Array,
  ranker: PairRanker,
  wholePiece: Map<string, number> | null,
  added: Map<string, AddedToken>,
  config: TokenizerConfig | null,
): Promise<TokenizerData> {
  const specialsFile = config?.path ?? files[0];
  for (const name of REQUIRED_SPECIAL_TOKENS) {
    if (!added.has(name)) {
      fail(
        "ERR_GLM4_BAD_TOKENIZER",
        specialsFile,
        `the special token ${JSON.stringify(name)} is missing (GLM-4 lists ${REQUIRED_SPECIAL_TOKENS.join(" ")} among its added tokens)`,
        REDOWNLOAD,
      );
    }
  }
  let vocabSize = tokenBytes.length;
  for (const t of added.values()) vocabSize = Math.max(vocabSize, t.id + 1);

  const eosIds: number[] = [];
  const addEos = (id: number) => {
    if (!eosIds.includes(id)) eosIds.push(id);
  };
  if (config?.eosToken != null) {
    const id = added.get(config.eosToken)?.id;
    if (id === undefined) fail("ERR_GLM4_BAD_TOKENIZER", config.path, `eos_token ${JSON.stringify(config.eosToken)} is not one of the added tokens`, REDOWNLOAD);
    addEos(id);
  }
  const genIds = await readGenerationEosIds(dir, files);
  for (const id of genIds) {
    if (id >= vocabSize) {
      fail("ERR_GLM4_BAD_CONFIG", join(dir, "generation_config.json"), `eos_token_id ${id} is outside the vocabulary (size ${vocabSize})`, "Fix or remove generation_config.json.");
    }
    addEos(id);
  }
  if (eosIds.length === 0) addEos((added.get("<|endoftext|>") as AddedToken).id);
  return { format, files, tokenBytes, byteIds, ranker, wholePiece, added, eosIds, vocabSize, specialsFile };
}

/**
 * Loads the tokenizer in `dir`: the original layout when `tokenizer.model` exists, else `tokenizer.json`.
 */
export async function loadTokenizerData(dir: string): Promise<TokenizerData> {
  const modelPath = join(dir, "tokenizer.model");
  if (await exists(modelPath)) return loadOriginal(dir, modelPath);
  const jsonPath = join(dir, "tokenizer.json");
  if (await exists(jsonPath)) return loadHf(dir, jsonPath);
  throw new Glm4Error(
    "ERR_GLM4_FILE_NOT_FOUND",
    `${dir}: no tokenizer found: neither ${modelPath} nor ${jsonPath} exists. Point to the model folder (it holds tokenizer.model + tokenizer_config.json, or tokenizer.json).`,
  );
}
