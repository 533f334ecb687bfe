/**
 * GLM-4's split regex over long text: matched a window at a time (lib/text/tokenizer/split.ts), the pieces must
 * be exactly those of one match over the whole text, and 12 MiB of CJK letters (one run: V8's regex engine
 * overflows its stack on it in one call) must split without an error.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GLM4_PAT_STR, piecesGlm4, splitGlm4 } from "../lib/text/tokenizer/split.js";

/** The reference: one regex call over the whole text (the same source the module builds). */
function whole(text: string): string[] {
  return splitGlm4(text, Number.MAX_SAFE_INTEGER);
}

// Characters that exercise every alternative and the window's edges: letters (ASCII, CJK, astral, the long s
// that folds to s), digits, contractions, punctuation, every kind of whitespace, newlines.
const ALPHABET = ["a", "B", "s", "t", "r", "e", "l", "d", "ſ", "你", "好", "𝒜", "1", "2", "٣", "'", "!", "，", "-", "😀", " ", " ", "\t", "\u3000", "\u00a0", "\u0085", "\n", "\r", "\ufeff"];

describe("splitGlm4 in windows", () => {
  it("equals one match over the whole text (random texts, small windows)", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...ALPHABET), { maxLength: 300 }), fc.integer({ min: 8, max: 40 }), (chars, w) => {
        const text = chars.join("");
        expect(splitGlm4(text, w)).toEqual(whole(text));
      }),
      { numRuns: 3000, seed: 16 },
    );
  });

  it("equals one match over the whole text when runs are longer than the window", () => {
    const runs = ["你", "a", " ", "\n", "!", "1", " \n", "!\n", "\r\n", "，", "\u3000", "'re", " a", "a'", "𝒜", "\t\n ", "12 "];
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...runs), fc.integer({ min: 1, max: 80 })), { maxLength: 12 }), fc.integer({ min: 8, max: 24 }), (parts, w) => {
        const text = parts.map(([c, k]) => c.repeat(k)).join("");
        expect(splitGlm4(text, w)).toEqual(whole(text));
      }),
      { numRuns: 6000, seed: 61 },
    );
  });

  it("12 MiB of CJK letters: one piece, no stack overflow (the whole-text regex throws)", () => {
    const text = "你好世界".repeat(3 * 2 ** 20);
    expect(() => text.match(new RegExp(GLM4_PAT_STR.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)|", ""), "gu"))).toThrow(/call stack/);
    const pieces = splitGlm4(text);
    expect(pieces).toHaveLength(1);
    expect(pieces[0].length).toBe(text.length);
  });

  it("12 MiB runs of ideographic spaces and of fullwidth commas split without an error", () => {
    const spaces = "\u3000".repeat(12 * 2 ** 20) + "a";
    expect(splitGlm4(spaces).map((p) => p.length)).toEqual([12 * 2 ** 20 - 1, 2]);
    const commas = "，".repeat(12 * 2 ** 20);
    expect(splitGlm4(commas).map((p) => p.length)).toEqual([12 * 2 ** 20]);
  });

  it("long mixed text: the pieces concatenate back to the text", () => {
    const text = "GLM-4 你好, world! 123456\n\n  tabs\tand ſpaces ".repeat(20000);
    const pieces = [...piecesGlm4(text)];
    expect(pieces.join("")).toBe(text);
    expect(pieces).toEqual(whole(text));
  });
});
