#!/usr/bin/env node
/**
 * Host memory while loading and quantizing a real-sized checkpoint (not part of `npm test`: it writes about
 * 0.5 GB and takes tens of seconds).
 *
 *   npm run build:ts && node scripts/host-memory.mjs [--keep]
 *
 * Writes a GLM-4-shaped BF16 checkpoint (2 layers, hidden 2048, FFN 13696 as GLM-4-9B, vocab 16384; about
 * 485 MiB in two shards) under os.tmpdir(), then in a fresh child process each:
 *   load-int4   loadGlm4(bf16 dir, { device: "cpu", quantization: "int4" })
 *   load-none   loadGlm4(bf16 dir, { device: "cpu", quantization: "none" })
 *   quantize    quantizeCheckpoint(bf16 dir, int4 dir, { device: "cpu" })
 *   load-q      loadGlm4(int4 dir, { device: "cpu" })
 * and reports the child's peak resident memory (VmHWM from /proc/self/status) above its baseline (after the
 * modules and the addon are loaded), next to the largest single tensor and what the loaded model keeps
 * resident (on the CPU backend the "device" is host memory too). The claim checked: peak - baseline stays
 * within 1.5 GB of (largest tensor + resident model); exit status 1 otherwise. Deletes everything after.
 */
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, openSync, closeSync, writeSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DIST = path.join(ROOT, "dist");

function vmHWM() {
  const s = readFileSync("/proc/self/status", "utf8");
  const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)[1]) * 1024;
  return { hwm: kb("VmHWM"), rss: kb("VmRSS") };
}

async function child(mode, dir, out) {
  const { loadGlm4, quantizeCheckpoint } = await import(pathToFileURL(path.join(DIST, "index.js")).href);
  const { native } = await import(pathToFileURL(path.join(DIST, "engine", "native-binary.js")).href);
  native(); // the addon is part of the baseline
  const base = vmHWM();
  const t0 = performance.now();
  let resident = 0;
  if (mode === "quantize") {
    await quantizeCheckpoint(dir, out, { device: "cpu" });
  } else {
    const m = await loadGlm4(mode === "load-q" ? out : dir, { device: "cpu", quantization: mode === "load-none" ? "none" : "int4", maxContext: 64, prefillChunk: 8 });
    const { ctx, weights } = m.runtime;
    resident = ctx.memory().inUse + weights.embed.nbytes;
    await m.dispose();
  }
  const end = vmHWM();
  process.stdout.write(JSON.stringify({ mode, baseline: base.rss, peak: end.hwm, resident, seconds: (performance.now() - t0) / 1000 }) + "\n");
}

/** A deterministic block of valid bf16 values (about N(0, 0.02)), tiled into every tensor. */
function randomBlock(n) {
  const b = Buffer.alloc(n * 2);
  let s = 12345;
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const a = (s >>> 8) / 2 ** 24;
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const c = (s >>> 8) / 2 ** 24;
    f[0] = 0.02 * Math.sqrt(-2 * Math.log(a + 1e-12)) * Math.cos(2 * Math.PI * c);
    b.writeUInt16LE(u[0] >>> 16, i * 2);
  }
  return b;
}

function writeCheckpoint(dir) {
  const V = 16384, H = 2048, heads = 16, D = 128, kv = 2, F = 13696, L = 2;
  const config = {
    model_type: "chatglm", add_bias_linear: false, add_qkv_bias: true, apply_residual_connection_post_layernorm: false, post_layer_norm: true, rmsnorm: true,
    ffn_hidden_size: F, hidden_size: H, kv_channels: D, layernorm_epsilon: 1.5625e-7, multi_query_attention: true, multi_query_group_num: kv,
    num_attention_heads: heads, num_layers: L, padded_vocab_size: V, rope_ratio: 500, seq_length: 8192, tie_word_embeddings: false, torch_dtype: "bfloat16",
    eos_token_id: [512, 519, 521], pad_token_id: 512,
  };
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  for (const f of ["tokenizer.model", "tokenizer_config.json"]) cpSync(path.join(ROOT, "fixtures/tiny-glm4/original", f), path.join(dir, f));
  const P = "transformer.encoder.layers.";
  const shards = [[["transformer.embedding.word_embeddings.weight", [V, H]]], [["transformer.encoder.final_layernorm.weight", [H]], ["transformer.output_layer.weight", [V, H]]]];
  for (let i = 0; i < L; i++) {
    shards[0].push(
      [`${P}${i}.input_layernorm.weight`, [H]], [`${P}${i}.self_attention.query_key_value.weight`, [(heads + 2 * kv) * D, H]], [`${P}${i}.self_attention.query_key_value.bias`, [(heads + 2 * kv) * D]],
      [`${P}${i}.self_attention.dense.weight`, [H, heads * D]], [`${P}${i}.post_attention_layernorm.weight`, [H]], [`${P}${i}.mlp.dense_h_to_4h.weight`, [2 * F, H]], [`${P}${i}.mlp.dense_4h_to_h.weight`, [H, F]],
    );
  }
  const block = randomBlock(1 << 21);
  const weightMap = {};
  let total = 0, largest = 0;
  shards.forEach((tensors, si) => {
    const name = `model-0000${si + 1}-of-00002.safetensors`;
    const header = {};
    let off = 0;
    for (const [t, shape] of tensors) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 2;
      header[t] = { dtype: "BF16", shape, data_offsets: [off, off + bytes] };
      off += bytes;
      weightMap[t] = name;
      largest = Math.max(largest, bytes);
    }
    total += off;
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const fd = openSync(path.join(dir, name), "w");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, json);
    for (const [t, shape] of tensors) {
      let left = shape.reduce((a, b) => a * b, 1) * 2;
      const isNorm = t.endsWith("layernorm.weight");
      while (left > 0) {
        const n = Math.min(left, block.length);
        // norms 1.0 (bf16 0x3f80); everything else the random block, tiled
        writeSync(fd, isNorm ? Buffer.alloc(n, Buffer.from([0x80, 0x3f])) : block.subarray(0, n), 0, n);
        left -= n;
      }
    }
    closeSync(fd);
  });
  writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }));
  return { total, largest };
}

async function main() {
  if (process.argv[2] === "--child") return child(process.argv[3], process.argv[4], process.argv[5]);
  const keep = process.argv.includes("--keep");
  const tmp = mkdtempSync(path.join(os.tmpdir(), "glm4-hostmem-"));
  const dir = path.join(tmp, "bf16");
  const out = path.join(tmp, "int4");
  const mb = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  let ok = true;
  try {
    mkdirSync(dir);
    const t0 = performance.now();
    const { total, largest } = writeCheckpoint(dir);
    console.log(`checkpoint: ${mb(total)} BF16 in 2 shards, largest tensor ${mb(largest)} (written in ${((performance.now() - t0) / 1000).toFixed(1)} s) at ${dir}`);
    console.log(`machine: ${os.cpus().length} CPUs, ${mb(os.totalmem())} memory, Node ${process.version}`);
    for (const mode of ["load-int4", "load-none", "quantize", "load-q"]) {
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", mode, dir, out], { encoding: "utf8", maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new Error(`${mode} failed: ${r.stderr}`);
      const x = JSON.parse(r.stdout.trim().split("\n").pop());
      const above = x.peak - x.baseline;
      const transient = above - x.resident;
      const pass = above <= largest + x.resident + 1.5e9;
      ok &&= pass;
      console.log(
        `${mode.padEnd(9)} peak RSS ${mb(x.peak)} = baseline ${mb(x.baseline)} + ${mb(above)} (model resident ${mb(x.resident)}, transient ${mb(transient)} = ${(transient / largest).toFixed(2)} x the largest tensor); ${x.seconds.toFixed(1)} s; ${pass ? "within" : "OVER"} largest + resident + 1.5 GB`,
      );
    }
  } finally {
    if (!keep) rmSync(tmp, { recursive: true, force: true });
  }
  process.exitCode = ok ? 0 : 1;
}

await main();
