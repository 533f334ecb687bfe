/**
 * Property test: random bytes, mutations of a valid file and random headers thrown at SafetensorsFile.open.
 * Whatever happens, the only failure allowed is a Glm4Error naming the file; no other exception, no hang
 * (the test's timeout is the guard: no clock is read, so a loaded machine passes); and a file that opens must
 * satisfy the format's invariants and read back.
 */
import { writeFile } from "node:fs/promises";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Glm4Error } from "../lib/errors.js";
import { SafetensorsFile } from "../lib/checkpoint/safetensors.js";
import { cleanupTempDirs, encodeRaw, encodeSafetensors, randomTensor, tempDir } from "./helpers/st-writer.js";

const ALLOWED = new Set(["ERR_GLM4_BAD_SAFETENSORS", "ERR_GLM4_UNKNOWN_DTYPE", "ERR_GLM4_DUPLICATE_TENSOR"]);

let dir = "";
let counter = 0;
beforeAll(async () => {
  dir = await tempDir("glm4-fuzz-");
});
afterAll(cleanupTempDirs);

const BASE = encodeSafetensors(
  [
    randomTensor("transformer.embedding.word_embeddings.weight", "BF16", [10, 4], 1),
    randomTensor("transformer.encoder.layers.0.self_attention.query_key_value.bias", "F32", [6], 2),
    randomTensor("empty", "I64", [0], 3),
    randomTensor("x", "U8", [3, 1], 4),
  ],
  { format: "pt" },
);
const BASE_HEADER_LEN = Number(BASE.readBigUInt64LE(0));

/** Open `bytes` as a file; assert the outcome is either a valid file or a Glm4Error naming it. */
async function check(bytes: Uint8Array): Promise<void> {
  const file = path.join(dir, `case-${counter++}.safetensors`);
  await writeFile(file, bytes);
  let f: SafetensorsFile | undefined;
  try {
    f = await SafetensorsFile.open(file);
  } catch (e) {
    if (!(e instanceof Glm4Error)) throw new Error(`non-Glm4Error escaped: ${String(e)}`, { cause: e });
    if (!ALLOWED.has(e.code)) throw new Error(`unexpected code ${e.code}: ${e.message}`);
    if (!e.message.includes(file)) throw new Error(`message does not name the file: ${e.message}`);
  }
  if (f !== undefined) {
    try {
      // The tensors tile the data region exactly and read back at their stated lengths.
      const dataStart = 8 + f.headerLength;
      let covered = 0;
      for (const [name, t] of f.tensors) {
        if (t.byteOffset < dataStart || t.byteOffset + t.byteLength > f.fileSize) throw new Error(`tensor ${name} out of bounds`);
        covered += t.byteLength;
        const r = await f.read(name);
        if (r.data.length !== t.byteLength) throw new Error(`tensor ${name}: read ${r.data.length} bytes, expected ${t.byteLength}`);
      }
      if (covered !== f.fileSize - dataStart) throw new Error(`tensors cover ${covered} of ${f.fileSize - dataStart} data bytes`);
    } finally {
      await f.close();
    }
  }
}

type Mutation =
  | { kind: "flip"; flips: Array<{ pos: number; bit: number }> }
  | { kind: "truncate"; len: number }
  | { kind: "headerLength"; value: bigint }
  | { kind: "headerDelta"; delta: number }
  | { kind: "headerChar"; pos: number; ch: number }
  | { kind: "append"; extra: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), flips: fc.array(fc.record({ pos: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant("truncate" as const), len: fc.nat() }),
  fc.record({
    kind: fc.constant("headerLength" as const),
    value: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(0n, 1n, 1n << 40n, (1n << 64n) - 1n, BigInt(100 * 1024 * 1024 + 1)), fc.bigInt({ min: 0n, max: 4096n })),
  }),
  fc.record({ kind: fc.constant("headerDelta" as const), delta: fc.integer({ min: -16, max: 16 }) }),
  // Replace one header character with a JSON-significant one: keeps the header often parseable.
  fc.record({ kind: fc.constant("headerChar" as const), pos: fc.nat(), ch: fc.constantFrom(..."0123456789-.,:[]{}\"e \\".split("").map((c) => c.charCodeAt(0))) }),
  fc.record({ kind: fc.constant("append" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
);

function mutate(base: Buffer, muts: Mutation[]): Buffer {
  let b = Buffer.from(base);
  for (const m of muts) {
    switch (m.kind) {
      case "flip":
        for (const { pos, bit } of m.flips) if (b.length) b[pos % b.length] ^= 1 << bit;
        break;
      case "truncate":
        b = b.subarray(0, m.len % (b.length + 1));
        break;
      case "headerLength":
        if (b.length >= 8) b.writeBigUInt64LE(m.value, 0);
        break;
      case "headerDelta":
        if (b.length >= 8) b.writeBigUInt64LE(BigInt.asUintN(64, b.readBigUInt64LE(0) + BigInt(m.delta)), 0);
        break;
      case "headerChar":
        if (b.length > 8) b[8 + (m.pos % Math.min(BASE_HEADER_LEN, b.length - 8))] = m.ch;
        break;
      case "append":
        b = Buffer.concat([b, m.extra]);
        break;
    }
  }
  return b;
}

const DTYPES = ["BF16", "F16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "Q4", "bf16", ""];
const dim = fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constantFrom(-1, 1.5, 2 ** 53, 2 ** 60, "3" as unknown as number));
const headerEntry = fc.record({
  dtype: fc.constantFrom(...DTYPES),
  shape: fc.array(dim, { maxLength: 4 }),
  data_offsets: fc.oneof(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 200 })), fc.array(fc.integer({ min: -5, max: 300 }), { maxLength: 3 })),
});

/** A consistent header (contiguous offsets, exact lengths), then at most one small edit of one field. */
const nearValid = fc.record({
  tensors: fc.array(
    fc.record({
      name: fc.constantFrom("a", "b", "c", "d", "e", "a", "é", "\u0000", "__proto__", "constructor"),
      dtype: fc.constantFrom("BF16", "F16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"),
      shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
    }),
    { maxLength: 5 },
  ),
  edit: fc.option(
    fc.record({
      index: fc.nat(),
      field: fc.constantFrom("begin", "end", "dim", "dtype", "dataLen"),
      delta: fc.integer({ min: -3, max: 3 }),
    }),
  ),
});

describe("SafetensorsFile.open under fuzzing", () => {
  it("survives random bytes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: 8, maxLength: 512 })), async (bytes) => check(bytes)),
      { numRuns: 60, seed: 0x5afe7e45 },
    );
  });

  it("survives mutations of a valid file (flipped bytes, truncation, header length edits)", async () => {
    await check(BASE); // the unmutated file opens
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (muts) => check(mutate(BASE, muts))),
      { numRuns: 160, seed: 0x61a4 },
    );
  });

  it("survives random headers", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom("a", "b", "c", "__metadata__", "a"), headerEntry), { maxLength: 4 }),
        fc.integer({ min: 0, max: 64 }),
        fc.boolean(),
        async (entries, dataLen, raw) => {
          // raw: write the entries as text so repeated names survive into the file.
          const text = raw
            ? `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`
            : JSON.stringify(Object.fromEntries(entries));
          await check(encodeRaw(text, Buffer.alloc(dataLen, 7)));
        },
      ),
      { numRuns: 60, seed: 42 },
    );
  });

  it("survives near-valid headers (one field off by a little)", async () => {
    await fc.assert(
      fc.asyncProperty(nearValid, async ({ tensors, edit }) => {
        const sizes: Record<string, number> = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
        const entries: Array<[string, { dtype: string; shape: number[]; data_offsets: number[] }]> = [];
        let off = 0;
        for (const t of tensors) {
          const n = t.shape.reduce((a, b) => a * b, 1) * sizes[t.dtype];
          entries.push([t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [off, off + n] }]);
          off += n;
        }
        let dataLen = off;
        if (edit !== null) {
          const e = entries.length ? entries[edit.index % entries.length][1] : undefined;
          if (edit.field === "dataLen") dataLen = Math.max(0, dataLen + edit.delta);
          else if (e && edit.field === "begin") e.data_offsets[0] += edit.delta;
          else if (e && edit.field === "end") e.data_offsets[1] += edit.delta;
          else if (e && edit.field === "dim") e.shape.length ? (e.shape[0] += edit.delta) : e.shape.push(edit.delta);
          else if (e && edit.field === "dtype") e.dtype = e.dtype === "F32" ? "BF16" : "F32";
        }
        const text = `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
        await check(encodeRaw(text, Buffer.alloc(dataLen, 3)));
      }),
      { numRuns: 60, seed: 7 },
    );
  });
});
