/** The transformers goldens of the tiny checkpoint (fixtures/tiny-glm4/golden) and the logit error measure. */
import { readFileSync } from "node:fs";
import path from "node:path";

export const TINY = path.resolve(import.meta.dirname, "../../fixtures/tiny-glm4");
export const golden = JSON.parse(readFileSync(path.join(TINY, "golden/logits.json"), "utf8"));
export const V: number = golden.vocab;
export const prompts: Record<string, number[]> = golden.prompts;

/** A golden .bin file (float32, little-endian, row-major). */
export function goldenBin(file: string): Float32Array {
  const b = readFileSync(path.join(TINY, "golden", file));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** ‖a−b‖² / ‖b‖²; NaN/Inf anywhere in `a` → Infinity so that an assertion on it fails. */
export function nerr(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`nerr: lengths differ (${a.length} vs ${b.length})`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return num / den;
}
