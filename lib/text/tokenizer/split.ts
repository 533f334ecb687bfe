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

/** Characters matched by one regex call at most: V8's backtracking stack overflows on a letter run of ~1M. */
export const SPLIT_WINDOW = 1 << 14;
/** A match ending this close to a window's end may read past it ('re is 3 characters; \p{N}{1,3}; a lookahead). */
const MARGIN = 4;

const LETTER = /\p{L}/u;
const LOW_SURROGATE = /[\udc00-\udfff]/;
const PUNCT_END = new RegExp(`[^${WS}\\p{L}\\p{N}]$`, "u");
const CONTRACTION = /^'(?:[sS\u017f]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])$/;
const NOT_LETTER = /\P{L}/gu;
const PUNCT = new RegExp(`[^${WS}\\p{L}\\p{N}]`, "u");
const NOT_PUNCT = new RegExp(`[${WS}\\p{L}\\p{N}]`, "gu");
const NOT_NEWLINE = /[^\r\n]/g;
const NOT_SPACE = new RegExp(`[^${WS}]`, "gu");
const ALL_SPACE = new RegExp(`^[${WS}]*$`, "u");
const SPACE = new RegExp(`[${WS}]`, "u");

/** Whether the UTF-16 unit at `i` is Unicode White_Space (all of it is in the BMP). */
function isSpace(text: string, i: number): boolean {
  return SPACE.test(text[i]);
}

/** The index of the first character at or after `from` that `re` (global, one character) matches; `text.length` if none. */
function nextOf(re: RegExp, text: string, from: number): number {
  re.lastIndex = from;
  const m = re.exec(text);
  return m ? m.index : text.length;
}

/**
 * Where a piece that starts at `start` and spans a whole window (matched up to `end`, in the window's last
 * characters) really ends: the window cut a long run that the regex would take whole. Such a piece is a letter run (with its one-character
 * prefix), a punctuation run with its newlines, or a whitespace run; each is extended by a one-character
 * class search, which needs no backtracking stack.
 */
function extendPiece(text: string, start: number, end: number, piece: string): number {
  if (CONTRACTION.test(piece)) return end; // bounded: never longer
  const lastChar = String.fromCodePoint(piece.codePointAt(piece.length - (piece.length > 1 && LOW_SURROGATE.test(piece[piece.length - 1]) ? 2 : 1))!);
  if (LETTER.test(lastChar)) return nextOf(NOT_LETTER, text, end);
  if (!ALL_SPACE.test(piece)) {
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`: the rest of the punctuation run, then its newlines; a digit piece is whole.
    if (PUNCT.test(lastChar)) return nextOf(NOT_NEWLINE, text, nextOf(NOT_PUNCT, text, end));
    if (lastChar === "\n" || lastChar === "\r") return nextOf(NOT_NEWLINE, text, end);
    return end;
  }
  // Whitespace: `\s*[\r\n]+` up to the run's last newline if it has one; else `\s+(?!\S)` (all but the last
  // character before a non-space), or the whole run at the end of the text.
  const runEnd = nextOf(NOT_SPACE, text, end);
  for (let i = runEnd - 1; i >= start; i--) {
    const c = text.charCodeAt(i);
    if (c === 10 || c === 13) return i + 1;
  }
  return runEnd === text.length ? runEnd : runEnd - 1;
}

/**
 * The pieces GLM-4's regex cuts `text` into, in order, one at a time. The pattern matches at every position,
 * so the pieces concatenate back to `text`. Long text is matched a window of `window` characters at a time
 * (a match that reaches the window's last characters is matched again in the next window), so no single
 * regex call sees more than a window: the result is the same as one match over the whole text, without the
 * stack overflow V8's regex engine hits on a long run of letters (12 MiB of CJK text).
 */
export function* piecesGlm4(text: string, window = SPLIT_WINDOW): Generator<string, void, undefined> {
  const n = text.length;
  if (n <= window) {
    yield* text.match(GLM4_SPLIT) ?? [];
    return;
  }
  const re = new RegExp(GLM4_SPLIT_SOURCE, "gu");
  let pos = 0; // always the start of a piece
  while (pos < n) {
    let end = Math.min(n, pos + window);
    const hi = text.charCodeAt(end - 1);
    if (end < n && hi >= 0xd800 && hi <= 0xdbff) end++; // never cut a surrogate pair
    if (end < n && isSpace(text, end - 1) && isSpace(text, end)) {
      // Never cut a whitespace run: `\s*[\r\n]+` and `\s+(?!\S)` decide by the whole run. Cut before it, or, when
      // the run starts here, take its pieces by hand (the regex would overflow on a long one).
      let rs = end - 1;
      while (rs > pos && isSpace(text, rs - 1)) rs--;
      if (rs > pos) {
        // The window now ends just before whitespace: every piece in it is whole (no piece runs from a
        // non-space into a space) except that punctuation takes the newlines after it.
        const win = text.slice(pos, rs);
        let next = rs;
        re.lastIndex = 0;
        for (let m = re.exec(win); m !== null; m = re.exec(win)) {
          const e = m.index + m[0].length;
          if (e === win.length && PUNCT_END.test(m[0]) && !CONTRACTION.test(m[0])) {
            next = nextOf(NOT_NEWLINE, text, rs);
            yield m[0] + text.slice(rs, next);
          } else yield m[0];
        }
        pos = next;
        continue;
      } else {
        // A run of two or more whitespace characters at a piece start: `\s*[\r\n]+` takes it up to its last
        // newline; without one, `\s+(?!\S)` takes all but the last character (which may start the next piece),
        // or all of it at the end of the text.
        const runEnd = nextOf(NOT_SPACE, text, pos);
        let cut = runEnd === n ? n : runEnd - 1;
        for (let i = runEnd - 1; i >= pos; i--) {
          const c = text.charCodeAt(i);
          if (c === 10 || c === 13) {
            cut = i + 1;
            break;
          }
        }
        yield text.slice(pos, cut);
        pos = cut;
        continue;
      }
    }
    const win = text.slice(pos, end);
    re.lastIndex = 0;
    let next = pos;
    for (let m = re.exec(win); m !== null; m = re.exec(win)) {
      const s = m.index, e = s + m[0].length;
      if (end < n && e > win.length - MARGIN) {
        if (s > 0) break; // may read past the window: match it again at the start of the next one
        // The piece spans (nearly) the whole window: extend it by its kind.
        next = extendPiece(text, pos, pos + e, m[0]);
        yield text.slice(pos, next);
        break;
      }
      yield m[0];
      next = pos + e;
    }
    if (next === pos) throw new Error("splitGlm4: no progress (internal error)");
    pos = next;
  }
}

/** The pieces GLM-4's regex cuts `text` into, in order (see piecesGlm4). */
export function splitGlm4(text: string, window = SPLIT_WINDOW): string[] {
  return text.length <= window ? (text.match(GLM4_SPLIT) ?? []) : [...piecesGlm4(text, window)];
}
