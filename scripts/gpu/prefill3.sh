#!/usr/bin/env bash
# prefill3 (issues 13/14): the A/B of branch prefill's parts on the H200, one process per setting (~25 s each):
#   new    = everything (bf16 activations, one QKV GEMM, the cheap embedding rows)
#   old    = GLM4_LAYER_PATH=none GLM4_EMBED_GATHER=js (the path before, same binary)
#   bf16   = part 1 only;  packed = part 2 only;  jsgather = parts 1 + 2 with the old embedding gather (part 3's share)
# Run from the repo root after `. .gpu/prelude.sh`, with build/Release (sm_90a) and dist/ carried.
# Writes $OUT/prefill3.log; the summary (walls, replays, op sums) is printed last. Budget ~150 s.
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
log="$out/prefill3.log"
: > "$log"
one() {
  local name=$1; shift
  echo "=== $name" >> "$log"
  env "$@" timeout 60 node scripts/gpu/prefill3.mjs 2048 32,64 >> "$log" 2>&1
  echo "=== $name rc=$?" >> "$log"
}
one new
one old GLM4_LAYER_PATH=none GLM4_EMBED_GATHER=js
one bf16 GLM4_LAYER_PATH=bf16
one packed GLM4_LAYER_PATH=packed
one jsgather GLM4_EMBED_GATHER=js
grep -E "^=== |wall|replayed|replay|ops one by one|layer 1 in order|Error|error" "$log"
