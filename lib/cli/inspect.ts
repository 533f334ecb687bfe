/**
 * `glm4-int4 inspect --model DIR`: what a checkpoint holds (format, naming, config, dtypes, tensors, bytes,
 * parameters) and the device memory an INT4 load needs; every problem found is listed, and a malformed
 * directory exits with status 1 and a one-line error naming the file and the problem.
 * `glm4-int4 inspect gpu`: the binary in use and why (and those skipped, with the reason), its CUDA
 * architectures, the CUDA runtime and driver, each GPU with the code that runs on it and its free memory, and
 * whether the GPU path will be used; `--json` prints the same as JSON. Exit status 1 when no binary loads.
 */
import { parseArgs } from "node:util";
import { inspectCheckpoint } from "../checkpoint/inspect.js";
import { native, nativeSelection, runnableCode, type NativeSource } from "../engine/native-binary.js";
import type { BuildInfo, DeviceInfo } from "../engine/native.js";
import { resolveDevice } from "../engine/device.js";
import { Glm4Error } from "../errors.js";
import { numOpt } from "./options.js";

const HELP = `glm4-int4 inspect --model DIR [--max-context N] [--json]
glm4-int4 inspect gpu [--json]

  --model DIR        what a checkpoint holds (format, naming, config, tokenizer, dtypes, tensors, bytes) and the
                     device memory a load needs; a malformed checkpoint exits with status 1 and one line
  --max-context N    the KV-cache length of the memory estimate (default min(8192, the model's context))
  gpu                the addon binary in use, its CUDA architectures, the driver and each GPU
  --json             the same as JSON
`;

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export async function cmdInspect(argv: string[]): Promise<void> {
  const { values: o, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { model: { type: "string" }, "max-context": { type: "string" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  if (o.help) return void process.stdout.write(HELP);
  if (positionals[0] === "gpu") return inspectGpu(Boolean(o.json));
  if (positionals.length) throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", `inspect takes --model DIR or \`gpu\`, not ${JSON.stringify(positionals[0])}; run glm4-int4 inspect --help`);
  if (typeof o.model !== "string") throw new Glm4Error("ERR_GLM4_INVALID_ARGUMENT", "inspect needs --model DIR (or `inspect gpu`)");
  const maxContext = numOpt(o, "max-context", { int: true, min: 1, max: 1 << 24 });
  const r = await inspectCheckpoint(o.model, maxContext);
  if (o.json) return void process.stdout.write(JSON.stringify(r, null, 2) + "\n");
  const c = r.config as Record<string, number | string | boolean>;
  const lines = [
    `model       ${r.dir}`,
    `format      ${r.format}, naming ${r.naming} (${c.flavour})`,
    ...(r.quantization ? [`quantized   ${r.quantization}`] : []),
    `shape       ${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads of ${c.headDim}, ${c.numKvHeads} KV groups, FFN ${c.ffnSize}, vocab ${c.vocabSize}`,
    `rotary      first ${c.rotaryDim} dims, base ${c.ropeTheta}; context ${c.maxPositions}; rms eps ${c.rmsEps}`,
    `tokenizer   ${r.tokenizer.format}, ${r.tokenizer.vocabSize} ids (${r.tokenizer.specialTokens} special), stop ids ${r.tokenizer.eosIds.join(", ")}`,
    `tensors     ${r.tensors} (${Object.entries(r.dtypes).map(([k, v]) => `${v} ${k}`).join(", ")}), ${(r.parameters / 1e9).toFixed(3)} B parameters, ${gib(r.bytes)} on disk`,
    ...Object.entries(r.memory).map(([k, m]) => `memory      ${k}: ${gib(m.total)} at maxContext ${c.maxContextForEstimate} (weights ${gib(m.weights)}, KV cache ${gib(m.kvCache)}, scratch ${gib(m.scratch)}, in flight ${gib(m.transient)})`),
    r.problems.length ? `problems    ${r.problems.join("; ")}` : "problems    none found",
  ];
  process.stdout.write(lines.join("\n") + "\n");
}

export interface GpuReport {
  /** The binary in use (null when none could be loaded), where it came from and why it was chosen. */
  binary: { file: string | null; source: NativeSource | null; why: string; checkMs: number | null; cachedVerdict: boolean };
  /** Binaries passed over, each with the reason (crashed, timed out, does not load, wrong version, ...). */
  skipped: { file: string; source: NativeSource; reason: string }[];
  /** Every place looked at, in order. */
  candidates: { file: string; source: NativeSource; present: boolean }[];
  buildInfo: BuildInfo | null;
  devices: (DeviceInfo & { runs: string | null })[];
  /** What device "auto" resolves to ("cuda:0" or "cpu"), and whether that is the GPU path. */
  autoDevice: string | null;
  gpuPathUsed: boolean;
  why: string;
}

/** What `inspect gpu` reports; never throws (a missing or broken binary is part of the report). */
export function gpuReport(): GpuReport {
  const sel = nativeSelection();
  let info: BuildInfo | null = null;
  let devs: DeviceInfo[] = [];
  let auto: string | null = null;
  let err = "";
  try {
    const m = native();
    info = m.buildInfo();
    devs = info.backends.includes("cuda") ? m.devices() : [];
    auto = resolveDevice("auto");
  } catch (e) {
    err = (e as Error).message;
  }
  const archs = info?.cudaArchitectures ?? [];
  const devices = devs.map((d) => ({ ...d, runs: runnableCode(d.computeCapability, archs) }));
  const gpu0 = devices[0];
  let why: string;
  if (!info) why = `no usable addon: ${err}`;
  else if (!info.backends.includes("cuda")) why = "this binary was built without the CUDA backend";
  else if (!devices.length) why = info.cudaStatus;
  else if (!gpu0!.runs) why = `GPU 0 (compute ${gpu0!.computeCapability}) has no code in this binary (architectures ${archs.join(", ")})`;
  else why = `CUDA backend and ${devices.length} GPU(s): device "auto" is ${auto}, running ${gpu0!.runs} code`;
  return {
    binary: { file: sel.file, source: sel.source, why: sel.why, checkMs: sel.check && !sel.check.cached ? sel.check.ms : null, cachedVerdict: Boolean(sel.check?.cached) },
    skipped: sel.skipped,
    candidates: sel.candidates.map(({ file, source, present }) => ({ file, source, present })),
    buildInfo: info,
    devices,
    autoDevice: auto,
    gpuPathUsed: Boolean(auto?.startsWith("cuda") && gpu0?.runs),
    why,
  };
}

function inspectGpu(json: boolean): void {
  const r = gpuReport();
  if (!r.buildInfo) process.exitCode = 1;
  if (json) return void process.stdout.write(JSON.stringify(r, null, 2) + "\n");
  const info = r.buildInfo;
  const lines = [
    `binary       ${r.binary.file ?? "none"}`,
    `             ${r.binary.why}`,
    ...r.skipped.map((s) => `skipped      ${s.file} (${s.source}): ${s.reason}`),
    `looked at    ${r.candidates.map((c) => `${c.source}${c.present ? "" : " (absent)"}`).join(", ")}`,
  ];
  if (info) {
    lines.push(
      `addon        version ${info.version}, N-API ${info.napiVersion}, ${info.compiler ?? "?"}; backends ${info.backends.join(", ")}`,
      `CUDA archs   ${info.cudaArchitectures.join(", ") || "none"}`,
      `CUDA         runtime ${info.cudaRuntimeVersion ?? "none"}, driver ${info.cudaDriverVersion ?? "none"} (${info.cudaStatus})`,
      ...r.devices.map((d) => `GPU ${d.index}        ${d.name}, compute ${d.computeCapability} (${d.runs ? `runs ${d.runs}` : "NO compiled code for it"}), ${d.multiprocessors} SMs, ${gib(d.freeMemory)} free of ${gib(d.totalMemory)}`),
    );
  }
  lines.push(`GPU path     ${r.gpuPathUsed ? "yes" : "no"}: ${r.why}`);
  process.stdout.write(lines.join("\n") + "\n");
}
