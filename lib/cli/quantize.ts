/**
 * `glm4-int4 quantize --model DIR --out DIR [--group-size 32|64|128] [--scheme asym|sym|nf4] [--output-layer int4|bf16]
 * [--awq --calibration FILE [--calibration-tokens N]] [--force] [--max-shard-size 2GB]`.
 */
import { parseArgs } from "node:util";
import { Glm4Error } from "../errors.js";
import { numOpt } from "./options.js";
import { quantizeCheckpoint, type QuantizeResult } from "../checkpoint/quantize.js";
import type { DeviceOption } from "../engine/device.js";
import { INT4_SCHEMES, describeSettings, recordSettings, type Int4Scheme } from "../checkpoint/int4-format.js";

function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?$/i.exec(s.trim());
  if (!m) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--max-shard-size must be a size like 2GB, 500MB or a number of bytes, got ${s}`);
  const mult: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30 };
  const n = Math.floor(Number(m[1]) * mult[(m[2] ?? "b").toLowerCase()]);
  if (!(n >= 1 && Number.isSafeInteger(n))) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--max-shard-size must be at least 1 byte, got ${s}`);
  return n;
}

const HELP = `glm4-int4 quantize --model DIR --out DIR [options]

Writes an INT4 checkpoint (glm4_int4.json + safetensors + the tokenizer files) that loads without a BF16 step.
  --model DIR             the BF16 checkpoint to read (original or HF naming)
  --out DIR               where to write; must be empty or absent unless --force
  --group-size 32|64|128  default 128
  --scheme asym|sym|nf4   default asym; --output-layer int4|bf16 (default int4)
  --awq --calibration FILE [--calibration-tokens N]   activation-aware input scales from a calibration text
  --force                 replace --out (atomically: the old one stays until the new one is complete)
  --max-shard-size SIZE   e.g. 2GB (default), 500MB, or bytes
  --device auto|cpu|cuda|cuda:N, --threads N
`;

type Bar = { update: (p: { loaded: number; total: number; stage: string }) => void; stop: () => void };

/** `glm4-int4 quantize`: `bar` makes the progress bar (lib/cli/options.ts's, on stderr when it is a terminal). */
export async function cmdQuantize(argv: string[], bar: (label: string) => Promise<Bar>): Promise<void> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      out: { type: "string" },
      "group-size": { type: "string" },
      scheme: { type: "string" },
      "output-layer": { type: "string" },
      awq: { type: "boolean" },
      calibration: { type: "string" },
      "calibration-tokens": { type: "string" },
      force: { type: "boolean" },
      device: { type: "string" },
      threads: { type: "string" },
      "max-shard-size": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (o.help) return void process.stdout.write(HELP);
  if (typeof o.model !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "quantize needs --model DIR (the BF16 checkpoint to read)");
  if (typeof o.out !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "quantize needs --out DIR (the INT4 checkpoint to write)");
  const g = (numOpt(o, "group-size", { oneOf: [32, 64, 128] }) ?? 128) as 32 | 64 | 128;
  const scheme = o.scheme ?? "asym";
  if (!INT4_SCHEMES.includes(scheme as Int4Scheme)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--scheme must be asym, sym or nf4, got ${scheme}`);
  const outputLayer = o["output-layer"] ?? "int4";
  if (outputLayer !== "int4" && outputLayer !== "bf16") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `--output-layer must be int4 or bf16, got ${outputLayer}`);
  if (o.awq && typeof o.calibration !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--awq needs --calibration FILE (a UTF-8 text like what the model will see, a few hundred tokens or more)");
  if (!o.awq && (o.calibration !== undefined || o["calibration-tokens"] !== undefined)) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "--calibration is for --awq (activation-aware scaling); add --awq");
  const calTokens = numOpt(o, "calibration-tokens", { int: true, min: 16, max: 1 << 24 });
  const threads = numOpt(o, "threads", { int: true, min: 1, max: 1024 });
  const maxShardBytes = o["max-shard-size"] === undefined ? undefined : parseBytes(o["max-shard-size"]);
  const ac = new AbortController();
  const onSig = () => ac.abort(new Error("interrupted (SIGINT)"));
  process.once("SIGINT", onSig);
  const b = await bar("quantizing");
  let r: QuantizeResult;
  try {
    r = await quantizeCheckpoint(o.model, o.out, {
      groupSize: g,
      scheme: scheme as Int4Scheme,
      outputLayer,
      ...(o.awq ? { awq: { calibration: o.calibration as string, tokens: calTokens } } : {}),
      force: Boolean(o.force),
      device: (o.device as DeviceOption | undefined) ?? "auto",
      threads,
      maxShardBytes,
      signal: ac.signal,
      onProgress: b.update,
    });
  } finally {
    b.stop();
    process.removeListener("SIGINT", onSig);
  }
  const gib = (x: number) => `${(x / 2 ** 30).toFixed(2)} GiB`;
  process.stdout.write(`wrote ${r.dir}: INT4 ${describeSettings(recordSettings(r.record))}${r.record.awq ? ` with activation-aware scales (${r.record.awq.tokens} calibration tokens)` : ""}, ${r.shards.length} shard(s), ${gib(r.bytes)} (from ${gib(r.sourceBytes)}), ${r.seconds.toFixed(1)} s on ${r.device}\n`);
}
