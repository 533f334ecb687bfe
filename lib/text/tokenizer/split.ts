/**
 * GLM-4's pre-tokenizer split, as a JavaScript RegExp that cuts text exactly where tiktoken (fancy-regex over
 * Rust's regex crate) and HF tokenizers (Oniguruma) cut it.
 *
 * The pattern, as THUDM's tokenization_chatglm.py gives it to tiktoken (and as tokenizer.json's Split
 * pre-tokenizer carries it):
 *
 *     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Three rewrites keep V8 in step with those engines:
 * - `(?i:...)`: Node 20's V8 has no inline modifiers. Each letter becomes a class of its simple case-folding
 *   equivalents; only `s` has one beyond ASCII (U+017F LATIN SMALL LETTER LONG S folds to `s`).
 * - `\s`: JavaScript's \s includes U+FEFF and lacks U+0085; the Rust regex crate and Oniguruma use Unicode
 *   White_Space, which is the other way round. `\s`/`\S` are spelled out as that class.
 * - the `u` flag, so that `\p{L}`/`\p{N}` work and astral characters (emoji) are single characters.
 */

/** The split regex exactly as GLM-4's tokenization_chatglm.py and tokenizer.json spell it. */
export const GLM4_PAT_STR =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Unicode White_Space (PropList.txt), the `\s` of Rust's regex crate and of Oniguruma, as class contents. */
const WS = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

const GLM4_SPLIT_SOURCE = [
  "'(?:[sS\\u017f]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])",
  "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+",
  "\\p{N}{1,3}",
  ` ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*`,
  `[${WS}]*[\\r\\n]+`,
  `[${WS}]+(?![^${WS}])`,
  `[${WS}]+`,
].join("|");

const GLM4_SPLIT = new RegExp(GLM4_SPLIT_SOURCE, "gu");

/**
 * The pieces GLM-4's regex cuts `text` into, in order. The pattern matches at every position, so the pieces
 * concatenate back to `text`.
 */
export function splitGlm4(text: string): string[] {
  return text.match(GLM4_SPLIT) ?? [];
}
