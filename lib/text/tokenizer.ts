/**
 * GLM-4's tokenizer: tiktoken-exact encoding of plain text, decoding, special tokens, streaming decode.
 *
 * ```ts
 * const tok = await Glm4Tokenizer.fromDir("/models/glm-4-9b-chat");
 * const ids = tok.encode("你好");                // plain text: "<|user|>" in it stays text
 * const userId = tok.specialTokenId("<|user|>"); // ids come from the files, never from this code
 * const dec = tok.createStreamDecoder();
 * for (const id of generated) process.stdout.write(dec.push(id));
 * process.stdout.write(dec.flush());
 * ```
 *
 * Encoding is GLM-4's `tokenizer.encode(text, disallowed_special=())`: split with GLM-4's regex
 * (lib/text/tokenizer/split.ts), then byte-pair merge each piece (lib/text/tokenizer/bpe.ts). Text that looks like a
 * special token is encoded as ordinary text; special tokens enter a prompt only through their ids
 * (lib/text/chat-format.ts does that).
 */
import { Glm4Error } from "../errors.js";
import { bytePairMerge } from "./tokenizer/bpe.js";
import { loadTokenizerData, type TokenizerData, type TokenizerFormat } from "./tokenizer/files.js";
import { piecesGlm4, splitGlm4 } from "./tokenizer/split.js";

export { GLM4_PAT_STR, splitGlm4 } from "./tokenizer/split.js";
export { REQUIRED_SPECIAL_TOKENS, type TokenizerFormat } from "./tokenizer/files.js";

export interface DecodeOptions {
  /** Leave special tokens out of the text (default false: they appear as their names, e.g. "<|user|>"). */
  skipSpecialTokens?: boolean;
}

/** Turns ids into text as they arrive, never splitting a UTF-8 character across two chunks. */
export interface StreamDecoder {
  /** Text completed by this id ("" while a character's bytes are still incomplete). */
  push(id: number): string;
  /** Whatever is still buffered (an incomplete character becomes U+FFFD); the decoder can be reused after. */
  flush(): string;
}

/** Non-streaming UTF-8 decoder; ignoreBOM: a leading U+FEFF is text here, not a byte order mark to drop. */
const UTF8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Pieces cached per tokenizer; the cache is dropped when it reaches this size. */
const PIECE_CACHE_LIMIT = 65536;
/** Longer pieces (long whitespace runs, long words) are not cached: they rarely repeat and cost memory. */
const PIECE_CACHE_MAX_CHARS = 256;

export class Glm4Tokenizer {
  /** "tiktoken" (tokenizer.model + tokenizer_config.json) or "tokenizer.json" (HF). */
  readonly format: TokenizerFormat;
  /** Largest token id + 1 (ordinary and special tokens; the model's embedding may be padded beyond it). */
  readonly vocabSize: number;
  /** Ids that end generation: tokenizer_config's eos_token, then generation_config.json's eos_token_id. */
  readonly eosIds: readonly number[];
  /** Special tokens by name. */
  readonly specialTokens: ReadonlyMap<string, number>;
  /** The files that were read. */
  readonly files: readonly string[];

  readonly #data: TokenizerData;
  readonly #idBytes: (Uint8Array | undefined)[] = [];
  readonly #specialById = new Map<number, string>();
  readonly #addedById = new Map<number, string>();
  #cache = new Map<string, readonly number[]>();
  #maxTokenBytes = 0;

  private constructor(data: TokenizerData) {
    this.#data = data;
    this.format = data.format;
    this.vocabSize = data.vocabSize;
    this.eosIds = Object.freeze([...data.eosIds]);
    this.files = Object.freeze([...data.files]);
    const specials = new Map<string, number>();
    for (const t of data.added.values()) {
      this.#addedById.set(t.id, t.content);
      if (t.special) {
        specials.set(t.content, t.id);
        this.#specialById.set(t.id, t.content);
      }
    }
    this.specialTokens = specials;
  }

  /**
   * Loads the tokenizer in `dir`: GLM-4's original layout (tokenizer.model + tokenizer_config.json) when
   * tokenizer.model exists, else HF's tokenizer.json (+ tokenizer_config.json when present).
   * Throws Glm4Error ERR_GLM4_FILE_NOT_FOUND / ERR_GLM4_BAD_TOKENIZER / ERR_GLM4_UNSUPPORTED naming the file.
   */
  static async fromDir(dir: string): Promise<Glm4Tokenizer> {
    if (typeof dir !== "string" || dir === "") throw new TypeError("Glm4Tokenizer.fromDir: dir must be a non-empty string");
    return new Glm4Tokenizer(await loadTokenizerData(dir));
  }

  /**
   * Refuses a tokenizer whose ids do not all fit the model's `rows` (config.json's vocabulary: the embedding
   * and output rows): a special token past them would load and fail only later, in the middle of a chat.
   * ERR_GLM4_BAD_TOKENIZER names the token, its id and the file.
   */
  checkFitsModel(rows: number, configFile = "config.json"): void {
    if (this.vocabSize <= rows) return;
    const d = this.#data;
    const todo = `Use the tokenizer files that belong to this model's weights (or the config.json that does).`;
    for (const t of d.added.values()) {
      if (t.id >= rows) {
        throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", `${d.specialsFile}: ${t.special ? "special" : "added"} token ${JSON.stringify(t.content)} has id ${t.id}, outside the model's vocabulary of ${rows} rows (${configFile}). ${todo}`);
      }
    }
    throw new Glm4Error("ERR_GLM4_BAD_TOKENIZER", `${d.files[0]}: token id ${d.tokenBytes.length - 1} is outside the model's vocabulary of ${rows} rows (${configFile}). ${todo}`);
  }

  /** Bytes of the longest token (an added token counts as its text's bytes): a text of n bytes has at least n / this many tokens. */
  get maxTokenBytes(): number {
    if (this.#maxTokenBytes === 0) {
      let m = 1;
      for (const b of this.#data.tokenBytes) if (b !== undefined && b.length > m) m = b.length;
      for (const t of this.#data.added.values()) m = Math.max(m, Buffer.byteLength(t.content));
      this.#maxTokenBytes = m;
    }
    return this.#maxTokenBytes;
  }

  /**
   * encode() for long texts without holding the event loop: the pieces are encoded in slices of about
   * `sliceMs` milliseconds, each followed by a turn of the event loop (other requests' tokens, timers, I/O).
   * The ids are exactly encode(text)'s.
   */
  async encodeAsync(text: string, sliceMs = 4): Promise<number[]> {
    if (typeof text !== "string") throw new TypeError(`Glm4Tokenizer.encodeAsync: text must be a string, got ${typeof text}`);
    const out: number[] = [];
    let t0 = performance.now();
    let n = 0;
    for (const piece of piecesGlm4(text)) {
      for (const id of this.#encodeCached(piece)) out.push(id);
      if ((++n & 63) === 0 && performance.now() - t0 > sliceMs) {
        await new Promise<void>((r) => setImmediate(r));
        t0 = performance.now();
      }
    }
    return out;
  }

  #encodeCached(piece: string): readonly number[] {
    let ids = this.#cache.get(piece);
    if (ids === undefined) {
      ids = this.#encodePiece(piece);
      if (piece.length <= PIECE_CACHE_MAX_CHARS) {
        if (this.#cache.size >= PIECE_CACHE_LIMIT) this.#cache = new Map();
        this.#cache.set(piece, ids);
      }
    }
    return ids;
  }

  /** Token ids of `text` as plain text (special-looking text is not turned into special tokens). */
  encode(text: string): number[] {
    if (typeof text !== "string") throw new TypeError(`Glm4Tokenizer.encode: text must be a string, got ${typeof text}`);
    const out: number[] = [];
    for (const piece of splitGlm4(text)) {
      let ids = this.#cache.get(piece);
      if (ids === undefined) {
        ids = this.#encodePiece(piece);
        if (piece.length <= PIECE_CACHE_MAX_CHARS) {
          if (this.#cache.size >= PIECE_CACHE_LIMIT) this.#cache = new Map();
          this.#cache.set(piece, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  #encodePiece(piece: string): number[] {
    // UTF-8 bytes as a latin1 string; lone surrogates become U+FFFD, as TextEncoder does.
    const bytes = Buffer.from(piece, "utf8").toString("latin1");
    const whole = this.#data.wholePiece?.get(bytes);
    if (whole !== undefined) return [whole];
    const symbols: number[] = new Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) symbols[i] = this.#data.byteIds[bytes.charCodeAt(i)];
    return bytePairMerge(symbols, this.#data.ranker);
  }

  /** Text of `ids`. Invalid UTF-8 (e.g. a character cut off at the end) becomes U+FFFD. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const skipSpecial = opts.skipSpecialTokens === true;
    let text = "";
    let chunks: Uint8Array[] = [];
    // Bytes of ordinary tokens run together and are decoded at once; an added token ends the run (GLM-4's
    // convert_tokens_to_string does the same, so a character cut off before a special token is U+FFFD).
    const flush = () => {
      if (chunks.length > 0) text += UTF8.decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
      chunks = [];
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const added = this.#addedById.get(id);
      if (added !== undefined) {
        flush();
        if (!(skipSpecial && this.#specialById.has(id))) text += added;
        continue;
      }
      const bytes = this.tokenBytes(id);
      if (bytes === undefined) throw new RangeError(`token id ${String(id)} is not in the vocabulary (size ${this.vocabSize})`);
      chunks.push(bytes);
    }
    flush();
    return text;
  }

  /** Id of a special token, e.g. "<|user|>". Throws Glm4Error ERR_GLM4_BAD_TOKENIZER when it has none. */
  specialTokenId(name: string): number {
    const id = this.specialTokens.get(name);
    if (id === undefined) {
      throw new Glm4Error(
        "ERR_GLM4_BAD_TOKENIZER",
        `${this.files[0]}: the tokenizer has no special token ${JSON.stringify(name)} (it has ${[...this.specialTokens.keys()].join(" ")}).`,
      );
    }
    return id;
  }

  /** Whether `id` is a special token (listed as special in the tokenizer files). */
  isSpecial(id: number): boolean {
    return this.#specialById.has(id);
  }

  /** The bytes of an ordinary token, or undefined for special tokens and unused ids. */
  tokenBytes(id: number): Uint8Array | undefined {
    let b = this.#idBytes[id];
    if (b === undefined) {
      const s = this.#data.tokenBytes[id];
      if (s === undefined || this.#addedById.has(id)) return undefined;
      b = this.#idBytes[id] = new Uint8Array(Buffer.from(s, "latin1"));
    }
    return b;
  }

  /** A decoder for a stream of ids (see StreamDecoder). */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skipSpecial = opts.skipSpecialTokens === true;
    // ignoreBOM: a leading U+FEFF is text here, not a byte order mark to drop.
    const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
    return {
      push: (id: number): string => {
        const added = this.#addedById.get(id);
        if (added !== undefined) {
          const pending = utf8.decode(); // a cut-off character before a special token becomes U+FFFD
          if (skipSpecial && this.#specialById.has(id)) return pending;
          return pending + added;
        }
        const bytes = this.tokenBytes(id);
        if (bytes === undefined) throw new RangeError(`token id ${String(id)} is not in the vocabulary (size ${this.vocabSize})`);
        return utf8.decode(bytes, { stream: true });
      },
      flush: (): string => utf8.decode(),
    };
  }
}
