/**
 * Small helpers with one home each: package paths and version, how a value is shown in an error message, path
 * containment, bf16/f16 bits. Nothing here depends on the rest of lib/.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The package root (the folder with package.json), from dist/ or lib/ (this file sits directly in either). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
}

/** package.json's version, or "unknown" when it cannot be read. */
export function packageVersion(): string {
  try {
    return String((JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { version: unknown }).version);
  } catch {
    return "unknown";
  }
}

/** A JSON object (not null, not an array). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A value as an error message shows it: JSON, cut to 60 characters (never throws, also on a cycle or a BigInt). */
export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Whether the resolved path `p` is `root` or inside it. */
export function isInside(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

// ---------------------------------------------------------------------------------------------------------
// bf16 / f16 bit helpers (host side)
// ---------------------------------------------------------------------------------------------------------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** bf16 bits -> number (exact). */
export function bf16ToF32(b: number): number {
  u32buf[0] = (b & 0xffff) << 16;
  return f32buf[0];
}

/** number -> float32 -> bf16 bits, round to nearest, ties to even (NaN stays a quiet NaN). */
export function f32ToBf16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE half bits -> number (exact). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** A Uint16Array over a buffer's bytes (copied when the buffer is not 2-byte aligned). */
export function u16View(b: Uint8Array): Uint16Array {
  if (b.byteOffset % 2 === 0) return new Uint16Array(b.buffer, b.byteOffset, b.byteLength >> 1);
  return new Uint16Array(new Uint8Array(b).buffer);
}

/** A Uint32Array over a buffer's bytes (copied when the buffer is not 4-byte aligned). */
export function u32View(b: Uint8Array): Uint32Array {
  if (b.byteOffset % 4 === 0) return new Uint32Array(b.buffer, b.byteOffset, b.byteLength >> 2);
  return new Uint32Array(new Uint8Array(b).buffer);
}
