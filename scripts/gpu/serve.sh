#!/usr/bin/env bash
# serve (issue 14): the paged KV cache, batched decode up to 128 rows, the scheduler and the server on the H200.
#   1. GPU tests: test/gpu/serve.test.ts (batched steps of 16..128 rows vs solo within tolerance, full pool, preemption)
#      and the tiny/scheduler parts of test/gpu/batch.test.ts (rows <= 8 still bit for bit with the step buckets);
#   2. batched decode on the synthetic GLM-4-9B INT4 g128 at context 128, B = 1, 2, 4, ..., 128: aggregate tok/s
#      (wall: pick + step a token) and the captured step replayed alone; the ceiling in the same run: cuBLAS BF16
#      (torch) of one step's linears at M = B (40 layers of qkv/o/gate_up/down + the output layer);
#   3. memory: 64 sequences x 2,048 tokens resident in the paged cache (+16 steps): the allocator's peak and the
#      process's whole GPU memory (target <= 22 GiB);
#   4. the server on the synthetic 9B (--max-concurrent 64, pool 0.5 of the GPU) driven by bench-serve at 1, 8, 32
#      and 64 concurrent users (input 128, output 128 tokens; 8/32/64/128 requests).
# Run from the repo root on the GPU machine after `. .gpu/prelude.sh`, with build/Release (sm_90a) and dist/ carried
# (and node_modules with prom-client + openai: `npm install` after pulling main). Writes $OUT/serve.log (everything)
# and $OUT/serve.json (the figures); the table last. At most ~240 s (the time limits below add up to 205 s before the
# server part, which gets what is left of 235 s; typically the whole script takes ~2 minutes).
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/serve.log"
tmp=$(mktemp -d)
port=18123
srv=""
trap '[[ -n "$srv" ]] && kill "$srv" 2>/dev/null; rm -rf "$tmp"' EXIT
start=$(date +%s)
since() { echo "$(( $(date +%s) - start )) s"; }
get() { node -e 'fetch(process.argv[1]).then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); }, () => process.exit(1))' "$1"; }
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
  echo "== GPU tests ($(since))"
  timeout 70 npx vitest run --config vitest.gpu.config.ts --reporter=verbose test/gpu/serve.test.ts test/gpu/batch.test.ts -t "tiny|scheduler|full pool|preempts"
  echo "gpu tests exit $? ($(since))"

  echo "== batched decode, synthetic GLM-4-9B INT4 g128, context 128 ($(since))"
  timeout 45 node scripts/gpu/serve-bench.mjs decode 1,2,4,8,16,32,64,128 >"$tmp/decode.json"
  echo "decode exit $? ($(since))"
  echo "== the same with B = 5..8 on the GEMM (GLM4_STEP_BUCKETS=1,2,4,16,...: bucket 16) ($(since))"
  GLM4_STEP_BUCKETS=1,2,4,16,32,64,128 timeout 20 node scripts/gpu/serve-bench.mjs decode 6,8 >"$tmp/decode_gemm8.json"
  echo "decode (gemm for 5..8) exit $? ($(since))"
  echo "== cuBLAS BF16 ceiling of one step's linears at M = B (torch) ($(since))"
  timeout 20 python3 - >"$tmp/cublas.json" <<'PY'
import json, torch
shapes = [(4608, 4096), (4096, 4096), (27392, 4096), (4096, 13696)]  # qkv, o, gate_up, down (x40) ; output 151552x4096
out = {}
for m in [1, 2, 4, 8, 16, 32, 64, 128]:
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for n, k in shapes]
    wo = torch.randn(151552, 4096, device="cuda", dtype=torch.bfloat16)
    xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _, k in shapes]
    xo = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    def step():
        for _ in range(40):
            for x, w in zip(xs, ws):
                torch.matmul(x, w.t())
        torch.matmul(xo, wo.t())
    step(); torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(5): step()
    b.record(); torch.cuda.synchronize()
    ms = a.elapsed_time(b) / 5
    out[m] = {"msPerStep": ms, "tokensPerSecond": 1000 * m / ms}
print(json.dumps(out))
PY
  echo "cublas exit $? ($(since))"

  echo "== memory: 64 x 2048 tokens resident ($(since))"
  SERVE_MEM_BUDGET_S=30 timeout 50 node scripts/gpu/serve-bench.mjs memory 64 2048 >"$tmp/memory.json"
  echo "memory exit $? ($(since))"

  echo "== server on the synthetic 9B + bench-serve ($(since))"
  node dist/cli.js serve --synthetic glm-4-9b --port $port --max-concurrent 64 --max-context 1024 --gpu-memory-utilization 0.5 >"$tmp/server.out" 2>&1 &
  srv=$!
  for i in $(seq 1 60); do
    get "http://127.0.0.1:$port/health" >"$tmp/health0.json" 2>/dev/null && break
    sleep 1
  done
  echo "health: $(cat "$tmp/health0.json" 2>/dev/null)"
  left=$(( 235 - ($(date +%s) - start) ))
  for c in 1 8 32 64; do
    n=$(( c < 8 ? 8 : 2 * c ))
    budget=$(( left / 4 )); (( budget < 10 )) && budget=10
    echo "-- bench-serve concurrency $c, $n requests (limit ${budget} s) ($(since))"
    timeout "$budget" node dist/cli.js bench-serve --base-url "http://127.0.0.1:$port/v1" --num-prompts $n --concurrency $c --input-len 128 --output-len 128 --seed $c --vocab 150000 --json >"$tmp/bs_$c.json"
    echo "bench-serve $c exit $? ($(since))"
  done
  get "http://127.0.0.1:$port/metrics" | grep -E "^glm4_" | grep -v "_bucket" | head -40
  kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null; srv=""
  cat "$tmp/server.out" | tail -5
} >"$log" 2>&1
node --input-type=module - "$tmp" "$out/serve.json" >>"$log" 2>&1 <<'EOF'
import fs from "node:fs";
import path from "node:path";
const [dir, outFile] = process.argv.slice(2);
const read = (f) => {
  try {
    const t = fs.readFileSync(path.join(dir, f), "utf8").trim();
    try { return JSON.parse(t); } catch { return JSON.parse(t.split("\n").pop()); }
  } catch { return null; }
};
const decode = read("decode.json"), gemm8 = read("decode_gemm8.json"), cublas = read("cublas.json"), memory = read("memory.json");
const serve = [1, 8, 32, 64].map((c) => ({ concurrency: c, r: read(`bs_${c}.json`) }));
const goal = { 8: 2000, 32: 7000, 64: 12000 };
const rows = (decode?.batched ?? []).map((b) => ({ ...b, goal: goal[b.batch] ?? null, cublasBf16TokensPerSecond: cublas?.[b.batch]?.tokensPerSecond ?? null }));
fs.writeFileSync(outFile, JSON.stringify({ batched: rows, batchedGemmFor5to8: gemm8?.batched ?? null, cublas, memory, serve: serve.map((s) => ({ concurrency: s.concurrency, ...s.r })) }, null, 2) + "\n");
const f = (x, d = 0) => (x == null || !Number.isFinite(x) ? "n/a" : x.toFixed(d));
console.log("\nbatched decode (synthetic GLM-4-9B INT4 g128, context 128)");
console.log("    B   tok/s wall  ms/step  replay tok/s  goal    cuBLAS BF16 linears tok/s  share");
for (const r of rows) console.log(`${String(r.batch).padStart(5)} ${f(r.tokensPerSecond).padStart(12)} ${f(r.msPerStep, 2).padStart(8)} ${f(r.replayTokensPerSecond).padStart(13)} ${String(r.goal ?? "-").padStart(6)} ${f(r.cublasBf16TokensPerSecond).padStart(26)} ${r.cublasBf16TokensPerSecond ? f((100 * r.tokensPerSecond) / r.cublasBf16TokensPerSecond, 1) + "%" : "n/a"}`);
for (const r of gemm8?.batched ?? []) console.log(`${String(r.batch).padStart(5)} ${f(r.tokensPerSecond).padStart(12)} ${f(r.msPerStep, 2).padStart(8)} ${f(r.replayTokensPerSecond).padStart(13)}   (B = ${r.batch} on the GEMM: bucket 16, GLM4_STEP_BUCKETS)`);
if (memory) console.log(`\nmemory: ${memory.sequencesFilled} (pool for ${memory.sequences}) x ${memory.tokensEach} tokens resident: allocator peak ${f(memory.allocatorPeakBytes / 2 ** 30, 2)} GiB, process in all ${memory.processGpuBytes ? f(memory.processGpuBytes / 2 ** 30, 2) : "n/a"} GiB (target <= 22), pool ${f(memory.kvPoolBytes / 2 ** 30, 2)} GiB; prefill ${f(memory.prefillTokensPerSecond)} tok/s, decode at 2K ${f(memory.decodeTokensPerSecond)} tok/s in all`);
console.log("\nbench-serve (input 128, output 128)   users  req/s  out tok/s  TTFT p50/p99 ms   ITL p50/p99 ms  failed");
for (const s of serve) { const r = s.r; console.log(`${"".padStart(38)}${String(s.concurrency).padStart(5)} ${r ? f(r.requestThroughput, 2).padStart(6) : "   n/a"} ${r ? f(r.outputThroughput).padStart(10) : "       n/a"} ${r ? `${f(r.ttftMs.p50)}/${f(r.ttftMs.p99)}`.padStart(16) : "             n/a"} ${r ? `${f(r.itlMs.p50, 1)}/${f(r.itlMs.p99, 1)}`.padStart(16) : "             n/a"} ${r ? String(r.failed).padStart(7) : ""}`); }
EOF
grep -E "Tests |gpu tests exit|exit [1-9]|FAIL|×" "$log" | tail -12
tail -14 "$log"
