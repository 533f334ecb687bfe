import { mkdir, symlink, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { Glm4Error } from "../lib/errors.js";
import { findDuplicateKey, MAX_HEADER_BYTES, SafetensorsFile } from "../lib/checkpoint/safetensors.js";
import { Checkpoint } from "../lib/checkpoint/checkpoint.js";
import { cleanupTempDirs, encodeRaw, encodeSafetensors, randomTensor, tempDir, writeSafetensors, writeSharded, type StTensor } from "./helpers/st-writer.js";

afterAll(cleanupTempDirs);

/** Expect `p` to reject with a Glm4Error of `code` whose message contains every string in `parts`. */
async function expectGlm4(p: Promise<unknown>, code: string, ...parts: (string | RegExp)[]): Promise<Glm4Error> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, "expected a rejection").toBeInstanceOf(Glm4Error);
  const g = err as Glm4Error;
  expect(g.code, g.message).toBe(code);
  for (const s of parts) {
    if (typeof s === "string") expect(g.message).toContain(s);
    else expect(g.message).toMatch(s);
  }
  return g;
}

const SAMPLE: StTensor[] = [
  randomTensor("w.f32", "F32", [2, 3], 1),
  randomTensor("w.bf16", "BF16", [4], 2),
  randomTensor("empty", "I64", [0, 5], 3),
  randomTensor("scalar", "U8", [], 4),
  randomTensor("mask", "BOOL", [3], 5),
  randomTensor("x.f16", "F16", [1, 1, 2], 6),
  randomTensor("fp8", "F8_E4M3", [2, 2], 7),
];

describe("SafetensorsFile: valid files", () => {
  it("round-trips names, dtypes, shapes, offsets, metadata and bytes", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "a.safetensors");
    await writeSafetensors(file, SAMPLE, { format: "pt", note: "héllo" });
    const f = await SafetensorsFile.open(file);
    try {
      expect([...f.tensors.keys()]).toEqual(SAMPLE.map((t) => t.name)); // file order
      expect(f.metadata).toEqual({ format: "pt", note: "héllo" });
      let off = 8 + f.headerLength;
      for (const t of SAMPLE) {
        const info = f.tensors.get(t.name)!;
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        expect(info.byteOffset).toBe(off);
        expect(info.byteLength).toBe(t.data.byteLength);
        off += t.data.byteLength;
        const r = await f.read(t.name);
        expect(r.dtype).toBe(t.dtype);
        expect(r.shape).toEqual(t.shape);
        expect(Buffer.compare(r.data, Buffer.from(t.data))).toBe(0);
      }
      expect(off).toBe(f.fileSize);
      const dest = Buffer.alloc(30, 0xee);
      await f.readInto("w.f32", dest, 5);
      expect(Buffer.compare(dest.subarray(5, 29), Buffer.from(SAMPLE[0].data))).toBe(0);
      expect(dest[4]).toBe(0xee);
      expect(dest[29]).toBe(0xee);
      await expectGlm4(f.readInto("w.f32", dest, 10), "ERR_GLM4_INVALID_ARGUMENT", file);
      await expectGlm4(f.read("nope"), "ERR_GLM4_MISSING_TENSOR", file, '"nope"');
    } finally {
      await f.close();
    }
    expect(f.closed).toBe(true);
    await expectGlm4(f.read("w.f32"), "ERR_GLM4_DISPOSED", file);
  });

  it("accepts an empty header and no data", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "empty.safetensors");
    await writeFile(file, encodeRaw("{}", Buffer.alloc(0)));
    const f = await SafetensorsFile.open(file);
    expect(f.tensors.size).toBe(0);
    await f.close();
  });

  it("accepts several zero-length tensors at the same offset", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "z.safetensors");
    const hdr = { a: { dtype: "F32", shape: [0], data_offsets: [0, 0] }, b: { dtype: "U8", shape: [2], data_offsets: [0, 2] }, c: { dtype: "F16", shape: [3, 0], data_offsets: [2, 2] } };
    await writeFile(file, encodeRaw(JSON.stringify(hdr), Buffer.from([7, 9])));
    const f = await SafetensorsFile.open(file);
    expect((await f.read("a")).data.length).toBe(0);
    expect([...(await f.read("b")).data]).toEqual([7, 9]);
    await f.close();
  });
});

describe("findDuplicateKey", () => {
  it("finds repeats at any depth, comparing decoded keys", () => {
    expect(findDuplicateKey('{"a":1,"b":{"a":2}}')).toBeUndefined();
    expect(findDuplicateKey('{"a":1,"\\u0061":2}')).toEqual({ key: "a", parents: [] });
    expect(findDuplicateKey('{"t":{"x":[{"k":1,"k":2}]}}')).toEqual({ key: "k", parents: ["t", "x"] });
    expect(findDuplicateKey('{"s":"a\\"b","a\\"b":1}')).toBeUndefined();
    expect(findDuplicateKey('[{"a":1},{"a":1}]')).toBeUndefined();
    expect(findDuplicateKey("[".repeat(100000) + "]".repeat(100000))).toBeUndefined(); // no recursion
  });
});

// ---------------------------------------------------------------------------------------------------------
// The malformed-file corpus: each case must fail with its own code and a message naming the file.
// ---------------------------------------------------------------------------------------------------------

const entry = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });
const hdr = (o: Record<string, unknown>) => JSON.stringify(o);
const VALID = encodeSafetensors([randomTensor("a", "F32", [2, 2], 11), randomTensor("b", "BF16", [3], 12)]);

interface BadCase {
  name: string;
  bytes: () => Buffer;
  code: string;
  match: RegExp;
}

const BAD_FILES: BadCase[] = [
  { name: "empty file", bytes: () => Buffer.alloc(0), code: "ERR_GLM4_BAD_SAFETENSORS", match: /0 bytes long/ },
  { name: "file shorter than the length field", bytes: () => Buffer.from([1, 0, 0]), code: "ERR_GLM4_BAD_SAFETENSORS", match: /shorter than the 8-byte/ },
  { name: "truncated inside the header", bytes: () => VALID.subarray(0, 20), code: "ERR_GLM4_BAD_SAFETENSORS", match: /only 12 bytes follow/ },
  { name: "truncated inside the data", bytes: () => VALID.subarray(0, VALID.length - 3), code: "ERR_GLM4_BAD_SAFETENSORS", match: /tensor "b".*past the end of the data region/ },
  {
    name: "header length larger than the file",
    bytes: () => encodeRaw(hdr({}), Buffer.alloc(0), { headerLength: 4096n }),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /says 4096 bytes but only 8 bytes follow/,
  },
  {
    name: "header length claiming a terabyte",
    bytes: () => encodeRaw(hdr({}), Buffer.alloc(0), { headerLength: 1n << 40n }),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: new RegExp(`1099511627776 bytes, more than the ${MAX_HEADER_BYTES}-byte limit`),
  },
  {
    name: "header length 2^64-1",
    bytes: () => encodeRaw(hdr({}), Buffer.alloc(0), { headerLength: (1n << 64n) - 1n }),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /18446744073709551615 bytes/,
  },
  { name: "bad JSON", bytes: () => encodeRaw('{"a": {"dtype": "F32",', Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /not valid JSON/ },
  { name: "JSON array header", bytes: () => encodeRaw("[1, 2]", Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /must be an object, got an array/ },
  { name: "JSON null header", bytes: () => encodeRaw("null", Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /must be an object/ },
  {
    name: "header not UTF-8",
    bytes: () => {
      const b = encodeRaw('{"__metadata__": {"k": "xx"}}', Buffer.alloc(0));
      b[8 + 21] = 0xff;
      return b;
    },
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /not valid UTF-8/,
  },
  { name: "unknown dtype", bytes: () => encodeRaw(hdr({ a: entry("Q4_K", [2], [0, 2]) }), Buffer.alloc(2)), code: "ERR_GLM4_UNKNOWN_DTYPE", match: /tensor "a" has dtype "Q4_K"/ },
  { name: "dtype not a string", bytes: () => encodeRaw(hdr({ a: entry(7 as unknown as string, [2], [0, 2]) }), Buffer.alloc(2)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /"dtype" must be a string/ },
  { name: "dtype inherited from Object.prototype", bytes: () => encodeRaw(hdr({ a: entry("toString", [2], [0, 2]) }), Buffer.alloc(2)), code: "ERR_GLM4_UNKNOWN_DTYPE", match: /"toString"/ },
  { name: "offsets out of bounds", bytes: () => encodeRaw(hdr({ a: entry("U8", [100], [0, 100]) }), Buffer.alloc(10)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /tensor "a".*\[0, 100\] reach past the end of the data region \(10 bytes/ },
  { name: "begin after end", bytes: () => encodeRaw(hdr({ a: entry("U8", [0], [4, 2]) }), Buffer.alloc(4)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /ends before it begins/ },
  {
    name: "overlapping offsets",
    bytes: () => encodeRaw(hdr({ a: entry("U8", [8], [0, 8]), b: entry("U8", [8], [4, 12]) }), Buffer.alloc(12)),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /tensor "b".*overlaps tensor "a"/,
  },
  {
    name: "two tensors aliasing the same bytes",
    bytes: () => encodeRaw(hdr({ a: entry("U8", [8], [0, 8]), b: entry("U8", [8], [0, 8]) }), Buffer.alloc(8)),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /overlaps/,
  },
  {
    name: "gap between tensors",
    bytes: () => encodeRaw(hdr({ a: entry("U8", [4], [0, 4]), b: entry("U8", [4], [6, 10]) }), Buffer.alloc(10)),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /tensor "b" begins at data offset 6.*"a" ends at 4: 2 bytes are not covered/,
  },
  { name: "gap before the first tensor", bytes: () => encodeRaw(hdr({ a: entry("U8", [4], [2, 6]) }), Buffer.alloc(6)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /begins at data offset 2/ },
  { name: "trailing bytes after the last tensor", bytes: () => encodeRaw(hdr({ a: entry("U8", [4], [0, 4]) }), Buffer.alloc(7)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /3 trailing bytes after tensor "a"/ },
  { name: "length != shape * dtype size", bytes: () => encodeRaw(hdr({ a: entry("F32", [2], [0, 4]) }), Buffer.alloc(4)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /shape \[2\] of F32 needs 8 bytes but .* span 4/ },
  { name: "negative dimension", bytes: () => encodeRaw(hdr({ a: entry("U8", [-1], [0, 0]) }), Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /tensor "a": "shape" \[-1\] has -1/ },
  { name: "fractional dimension", bytes: () => encodeRaw(hdr({ a: entry("U8", [1.5], [0, 1]) }), Buffer.alloc(1)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /has 1.5/ },
  { name: "string dimension", bytes: () => encodeRaw(hdr({ a: entry("U8", ["2"], [0, 2]) }), Buffer.alloc(2)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /non-negative integer/ },
  { name: "dimension beyond 2^53", bytes: () => encodeRaw('{"a":{"dtype":"U8","shape":[18014398509481984],"data_offsets":[0,0]}}', Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /non-negative integer/ },
  {
    name: "shape whose product overflows 2^64",
    bytes: () => encodeRaw(hdr({ a: entry("F32", [2 ** 40, 2 ** 40, 2 ** 40], [0, 0]) }), Buffer.alloc(0)),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /needs 5316911983139663491615228241121378304 bytes/,
  },
  { name: "shape not an array", bytes: () => encodeRaw(hdr({ a: entry("U8", 2, [0, 2]) }), Buffer.alloc(2)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /"shape" must be an array/ },
  { name: "data_offsets with one number", bytes: () => encodeRaw(hdr({ a: entry("U8", [2], [0]) }), Buffer.alloc(2)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /must be \[begin, end\]/ },
  { name: "negative offset", bytes: () => encodeRaw(hdr({ a: entry("U8", [0], [-2, -2]) }), Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /two non-negative integers/ },
  { name: "missing data_offsets", bytes: () => encodeRaw(hdr({ a: { dtype: "U8", shape: [2] } }), Buffer.alloc(2)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /"data_offsets" must be/ },
  { name: "entry not an object", bytes: () => encodeRaw(hdr({ a: 5 }), Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /tensor "a": the header entry must be an object/ },
  { name: "metadata value not a string", bytes: () => encodeRaw(hdr({ __metadata__: { step: 5 } }), Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /"__metadata__" entry "step" must be a string/ },
  { name: "metadata not an object", bytes: () => encodeRaw(hdr({ __metadata__: "x" }), Buffer.alloc(0)), code: "ERR_GLM4_BAD_SAFETENSORS", match: /"__metadata__" must be an object/ },
  {
    name: "duplicate tensor names",
    bytes: () => encodeRaw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}', Buffer.alloc(4)),
    code: "ERR_GLM4_DUPLICATE_TENSOR",
    match: /tensor name "a" appears more than once/,
  },
  {
    name: "duplicate tensor names spelled differently (\\u escape)",
    bytes: () => encodeRaw('{"ab":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"\\u0061b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', Buffer.alloc(2)),
    code: "ERR_GLM4_DUPLICATE_TENSOR",
    match: /"ab"/,
  },
  {
    name: "duplicate key inside an entry",
    bytes: () => encodeRaw('{"a":{"dtype":"U8","dtype":"F32","shape":[2],"data_offsets":[0,2]}}', Buffer.alloc(2)),
    code: "ERR_GLM4_BAD_SAFETENSORS",
    match: /key "dtype" appears twice in the header entry "a"/,
  },
];

describe("SafetensorsFile: malformed files", () => {
  it.each(BAD_FILES)("$name -> $code", async ({ name, bytes, code, match }) => {
    const dir = await tempDir();
    const file = path.join(dir, `${name.replace(/[^a-z0-9]+/gi, "_")}.safetensors`);
    await writeFile(file, bytes());
    await expectGlm4(SafetensorsFile.open(file), code, file, match);
  });

  it("never allocates what a huge header length claims", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "huge.safetensors");
    await writeFile(file, encodeRaw(hdr({}), Buffer.alloc(64), { headerLength: 50n * 1024n * 1024n * 1024n * 1024n }));
    const allocUnsafe = vi.spyOn(Buffer, "allocUnsafe");
    const alloc = vi.spyOn(Buffer, "alloc");
    try {
      await expectGlm4(SafetensorsFile.open(file), "ERR_GLM4_BAD_SAFETENSORS", file);
      for (const c of [...allocUnsafe.mock.calls, ...alloc.mock.calls]) expect(c[0] as number).toBeLessThan(1 << 20);
    } finally {
      allocUnsafe.mockRestore();
      alloc.mockRestore();
    }
  });

  it("reports a missing file and a directory", async () => {
    const dir = await tempDir();
    await expectGlm4(SafetensorsFile.open(path.join(dir, "nope.safetensors")), "ERR_GLM4_FILE_NOT_FOUND", "nope.safetensors");
    await expectGlm4(SafetensorsFile.open(dir), "ERR_GLM4_BAD_SAFETENSORS", dir, "not a regular file");
  });

  it("reports a file truncated after it was opened", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "shrink.safetensors");
    await writeFile(file, VALID);
    const f = await SafetensorsFile.open(file);
    await writeFile(file, VALID.subarray(0, VALID.length - 6));
    await expectGlm4(f.read("b"), "ERR_GLM4_BAD_SAFETENSORS", file, 'tensor "b"', "truncated");
    await f.close();
  });
});

// ---------------------------------------------------------------------------------------------------------
// Checkpoint directories
// ---------------------------------------------------------------------------------------------------------

function shardTensors(nShards: number, perShard: number, seed: number): StTensor[][] {
  return Array.from({ length: nShards }, (_, s) =>
    Array.from({ length: perShard }, (_, i) => randomTensor(`s${s}.t${i}`, i % 2 ? "BF16" : "F32", [i + 1, 3], seed + s * 100 + i)),
  );
}

async function expectAllTensors(ck: Checkpoint, shards: StTensor[][]): Promise<void> {
  const all = shards.flat();
  expect(ck.names().sort()).toEqual(all.map((t) => t.name).sort());
  for (const t of all) {
    const r = await ck.read(t.name);
    expect(r.dtype).toBe(t.dtype);
    expect(r.shape).toEqual(t.shape);
    expect(Buffer.compare(r.data, Buffer.from(t.data))).toBe(0);
  }
}

describe("Checkpoint", () => {
  it("opens a single model.safetensors", async () => {
    const dir = await tempDir();
    await writeSafetensors(path.join(dir, "model.safetensors"), SAMPLE);
    const ck = await Checkpoint.open(dir);
    expect(ck.layout).toBe("single");
    expect(ck.shards).toEqual(["model.safetensors"]);
    await expectAllTensors(ck, [SAMPLE]);
    expect(ck.info("w.f32").file).toBe(path.join(dir, "model.safetensors"));
    await expectGlm4(ck.read("nope"), "ERR_GLM4_MISSING_TENSOR", dir, '"nope"');
    await ck.close();
    await expectGlm4(ck.read("w.f32"), "ERR_GLM4_DISPOSED", dir);
  });

  it("opens a sharded checkpoint with an index, opening shards lazily and keeping few open", async () => {
    const dir = await tempDir();
    const shards = shardTensors(5, 3, 1000);
    const names = await writeSharded(dir, shards);
    const ck = await Checkpoint.open(dir, { maxOpenFiles: 2 });
    try {
      expect(ck.layout).toBe("indexed");
      expect(ck.shards).toEqual(names);
      expect(ck.indexMetadata).toEqual({ total_size: shards.flat().reduce((a, t) => a + t.data.byteLength, 0) });
      expect(ck.openFiles).toBe(0);
      expect(ck.info("s3.t1").shard).toBe(names[3]);
      for (const t of shards.flat()) {
        const r = await ck.read(t.name);
        expect(Buffer.compare(r.data, Buffer.from(t.data))).toBe(0);
        expect(ck.openFiles).toBeLessThanOrEqual(2);
      }
      // Concurrent reads across every shard: right bytes, and the cache shrinks back afterwards.
      const all = shards.flat();
      const results = await Promise.all([...all, ...all.reverse()].map((t) => ck.read(t.name).then((r) => [t, r] as const)));
      for (const [t, r] of results) expect(Buffer.compare(r.data, Buffer.from(t.data))).toBe(0);
      await new Promise((r) => setTimeout(r, 10));
      expect(ck.openFiles).toBeLessThanOrEqual(2);
    } finally {
      await ck.close();
    }
    expect(ck.openFiles).toBe(0);
  });

  it("opens several *.safetensors without an index", async () => {
    const dir = await tempDir();
    const shards = shardTensors(3, 2, 2000);
    await writeSharded(dir, shards, { index: false });
    await writeFile(path.join(dir, "config.json"), "{}");
    const ck = await Checkpoint.open(dir);
    expect(ck.layout).toBe("multi");
    expect(ck.shards.length).toBe(3);
    await expectAllTensors(ck, shards);
    await ck.close();
  });

  it("rejects a missing directory and one without weights", async () => {
    const dir = await tempDir();
    await expectGlm4(Checkpoint.open(path.join(dir, "nope")), "ERR_GLM4_FILE_NOT_FOUND", "nope");
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_FILE_NOT_FOUND", dir, "no model.safetensors");
  });

  it("names the missing shard", async () => {
    const dir = await tempDir();
    await writeSharded(dir, shardTensors(2, 2, 3000));
    const index = JSON.parse(await import("node:fs/promises").then((fs) => fs.readFile(path.join(dir, "model.safetensors.index.json"), "utf8")));
    index.weight_map["extra"] = "model-00003-of-00003.safetensors";
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_MISSING_SHARD", "model-00003-of-00003.safetensors", dir);
  });

  it("rejects an index naming a tensor its shard does not hold", async () => {
    const dir = await tempDir();
    const shards = shardTensors(2, 2, 4000);
    const names = await writeSharded(dir, shards);
    const wm: Record<string, string> = {};
    for (const t of shards[0]) wm[t.name] = names[0];
    for (const t of shards[1]) wm[t.name] = names[1];
    wm["s1.t0"] = names[0]; // wrong shard
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: wm }));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_BAD_INDEX", path.join(dir, "model.safetensors.index.json"), '"s1.t0"', names[0], `(it is in ${names[1]})`);
    wm["s1.t0"] = names[1];
    wm["ghost"] = names[1];
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: wm }));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_BAD_INDEX", '"ghost"');
  });

  it("rejects a tensor stored in two shards", async () => {
    const dir = await tempDir();
    const shards = shardTensors(2, 2, 5000);
    shards[1].push(randomTensor("s0.t1", "F32", [1], 9));
    await writeSharded(dir, shards);
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_DUPLICATE_TENSOR", dir, '"s0.t1"', "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    // Same without an index.
    const dir2 = await tempDir();
    await writeSharded(dir2, shards, { index: false });
    await expectGlm4(Checkpoint.open(dir2), "ERR_GLM4_DUPLICATE_TENSOR", dir2, '"s0.t1"');
  });

  it("rejects an index listing a tensor twice", async () => {
    const dir = await tempDir();
    const names = await writeSharded(dir, shardTensors(2, 1, 6000));
    await writeFile(path.join(dir, "model.safetensors.index.json"), `{"weight_map": {"s0.t0": "${names[0]}", "s1.t0": "${names[1]}", "s0.t0": "${names[1]}"}}`);
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_DUPLICATE_TENSOR", "model.safetensors.index.json", '"s0.t0"');
  });

  it.each([
    ["not JSON", "{weight_map: 1", /not valid JSON/],
    ["not an object", "[]", /must hold a JSON object/],
    ["weight_map missing", "{}", /"weight_map" must be an object/],
    ["weight_map an array", '{"weight_map": ["a"]}', /"weight_map" must be an object/],
    ["shard not a string", '{"weight_map": {"a": 1}}', /entry for tensor "a" must be a file name string/],
    ["empty weight_map", '{"weight_map": {}}', /is empty/],
  ])("rejects a bad index: %s", async (_n, text, match) => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "model.safetensors.index.json"), text);
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_BAD_INDEX", path.join(dir, "model.safetensors.index.json"), match);
  });

  it.each([
    ["../ in the shard name", "../outside.safetensors", /not a plain file name/],
    ["an absolute shard path", "/etc/passwd", /absolute path/],
    ["a sub-directory", "sub/model.safetensors", /not a plain file name/],
    ["a backslash", "..\\outside.safetensors", /not a plain file name/],
    ["the directory itself", "..", /not a file name/],
    ["an empty name", "", /empty file name/],
  ])("rejects %s", async (_n, shard, match) => {
    const root = await tempDir();
    const dir = path.join(root, "model");
    await mkdir(path.join(dir, "sub"), { recursive: true });
    await writeSafetensors(path.join(root, "outside.safetensors"), [randomTensor("a", "F32", [1], 1)]);
    await writeSafetensors(path.join(dir, "sub", "model.safetensors"), [randomTensor("a", "F32", [1], 1)]);
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: shard } }));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_UNSAFE_PATH", path.join(dir, "model.safetensors.index.json"), match);
  });

  it("rejects a shard symlink that resolves outside the directory, accepts one inside", async () => {
    const root = await tempDir();
    const dir = path.join(root, "model");
    await mkdir(dir);
    await writeSafetensors(path.join(root, "secret.safetensors"), [randomTensor("a", "F32", [1], 1)]);
    await symlink(path.join(root, "secret.safetensors"), path.join(dir, "model-00001-of-00001.safetensors"));
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "model-00001-of-00001.safetensors" } }));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_UNSAFE_PATH", "model-00001-of-00001.safetensors", "outside the model directory");

    // Without an index the same link is found by listing the directory: still rejected.
    const dir2 = path.join(root, "model2");
    await mkdir(dir2);
    await symlink("../secret.safetensors", path.join(dir2, "weights.safetensors"));
    await expectGlm4(Checkpoint.open(dir2), "ERR_GLM4_UNSAFE_PATH", "weights.safetensors");

    // model.safetensors itself as an escaping symlink.
    const dir3 = path.join(root, "model3");
    await mkdir(dir3);
    await symlink("../secret.safetensors", path.join(dir3, "model.safetensors"));
    await expectGlm4(Checkpoint.open(dir3), "ERR_GLM4_UNSAFE_PATH", "model.safetensors");
    // ... unless the caller allows that root explicitly.
    const ok = await Checkpoint.open(dir3, { allowedRoots: [root] });
    expect(ok.names()).toEqual(["a"]);
    await ok.close();

    // A link to a file inside the directory is fine.
    const dir4 = path.join(root, "model4");
    await mkdir(path.join(dir4, "real"), { recursive: true });
    const t = randomTensor("a", "F32", [2], 5);
    await writeSafetensors(path.join(dir4, "real", "x.safetensors"), [t]);
    await symlink("real/x.safetensors", path.join(dir4, "model.safetensors"));
    const ck = await Checkpoint.open(dir4);
    expect(Buffer.compare((await ck.read("a")).data, Buffer.from(t.data))).toBe(0);
    await ck.close();
  });

  it("accepts the Hugging Face cache layout (snapshots/<rev> linking to ../../blobs)", async () => {
    const root = await tempDir();
    const repo = path.join(root, "models--THUDM--glm-4-9b-chat");
    const snap = path.join(repo, "snapshots", "0123abcd");
    await mkdir(snap, { recursive: true });
    await mkdir(path.join(repo, "blobs"));
    const shards = shardTensors(2, 2, 7000);
    const names = await writeSharded(path.join(repo, "blobs"), shards);
    for (const n of [...names, "model.safetensors.index.json"]) await symlink(`../../blobs/${n}`, path.join(snap, n));
    const ck = await Checkpoint.open(snap);
    await expectAllTensors(ck, shards);
    await ck.close();
  });

  it("reports a bad shard with the shard's path", async () => {
    const dir = await tempDir();
    const names = await writeSharded(dir, shardTensors(2, 1, 8000));
    await writeFile(path.join(dir, names[1]), encodeRaw(hdr({ x: entry("U8", [1], [0, 1]) }), Buffer.alloc(3)));
    await expectGlm4(Checkpoint.open(dir), "ERR_GLM4_BAD_SAFETENSORS", path.join(dir, names[1]), "trailing bytes");
  });
});
