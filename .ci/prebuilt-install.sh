#!/usr/bin/env bash
# The package as a user gets it: `npm pack` (after `npm run build:prebuilds`), then `npm install <tarball>` into
# an empty project whose PATH holds only node and npm (no nvcc, cmake, c++, cc, make, python3) with
# PREBUILDS_ONLY=1, so the install must take the prebuild and can compile nothing. Then, through the installed
# package: `import { loadGlm4 } from "glm4-int4-native"` generates from the tiny checkpoint it ships, and
# `glm4-int4 inspect gpu --json` must name the CUDA prebuild as the binary in use. Dependencies come from the
# npm registry (or whatever npm is configured to use).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[prebuilt-install] $*"; }
fail() { echo "[prebuilt-install] FAIL: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tuple="$(node -p 'process.platform + "-" + process.arch')"

say "npm pack"
tgz="$work/$(npm pack --silent --pack-destination "$work" | tail -n 1)"
tar tzf "$tgz" >"$work/files.txt"
say "$(wc -l <"$work/files.txt") files, $(du -h "$tgz" | cut -f1)"
grep -q "^package/prebuilds/$tuple/[^/]*\.node$" "$work/files.txt" || fail "no prebuild in the tarball"
grep -q "^package/prebuilds/$tuple/cpu-only/[^/]*\.node$" "$work/files.txt" || fail "no CPU-only prebuild in the tarball"
grep -q "^package/fixtures/tiny-glm4/original/config.json$" "$work/files.txt" || fail "the tiny checkpoint is not in the tarball"
grep -q "^package/scripts/install.mjs$" "$work/files.txt" || fail "scripts/install.mjs is not in the tarball"
if grep -E "^package/(fixtures/tiny-glm4/golden|build|node_modules|test)/" "$work/files.txt"; then fail "the tarball holds files it should not (above)"; fi

# A PATH with node and npm only.
mkdir -p "$work/bin" "$work/app"
ln -s "$(command -v node)" "$work/bin/node"
ln -s "$(command -v npm)" "$work/bin/npm"
for tool in nvcc cmake c++ g++ gcc cc clang make ninja python3 python; do
  if PATH="$work/bin" command -v "$tool" >/dev/null; then fail "$tool is on the restricted PATH"; fi
done

cd "$work/app"
echo '{ "name": "smoke", "private": true, "type": "module" }' >package.json
say "npm install <tarball> with PATH=$work/bin and PREBUILDS_ONLY=1"
# npm runs scripts through `sh`, looked up on PATH unless script-shell names it: name it, keep PATH bare.
PATH="$work/bin" PREBUILDS_ONLY=1 GLM4_NATIVE_CHECK_CACHE=0 npm_config_script_shell=/bin/sh \
  npm install --no-audit --no-fund --foreground-scripts "$tgz" 2>&1 | tee "$work/install.log"
grep -q "using the prebuilt binary prebuilds/$tuple/" "$work/install.log" || fail "the install did not take the CUDA prebuild"
pkg="$work/app/node_modules/glm4-int4-native"
[ ! -e "$pkg/build" ] || fail "the install built something: $pkg/build exists"

cat >smoke.mjs <<'EOF'
import { createRequire } from "node:module";
import path from "node:path";
import { loadGlm4 } from "glm4-int4-native";

const pkg = path.dirname(createRequire(import.meta.url).resolve("glm4-int4-native/package.json"));
const model = await loadGlm4(path.join(pkg, "fixtures/tiny-glm4/original"));
const r = await model.generate("你好, GLM-4!", { maxNewTokens: 12 });
console.log(`generated ${r.tokens.length} tokens on ${model.device}: ${JSON.stringify(r.text)}`);
await model.dispose();
if (r.tokens.length === 0) process.exit(1);
EOF
say "generate through the installed package"
PATH="$work/bin" GLM4_NATIVE_CHECK_CACHE=0 node smoke.mjs 2>&1 | tee "$work/smoke.log"
if grep -q "warning:" "$work/smoke.log"; then fail "the loader skipped a binary (above)"; fi

say "glm4-int4 inspect gpu"
PATH="$work/bin" GLM4_NATIVE_CHECK_CACHE=0 ./node_modules/.bin/glm4-int4 inspect gpu
PATH="$work/bin" GLM4_NATIVE_CHECK_CACHE=0 ./node_modules/.bin/glm4-int4 inspect gpu --json >"$work/gpu.json"
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (r.binary.source !== "prebuild" || !r.buildInfo.backends.includes("cuda")) { console.error("expected the CUDA prebuild, got", r.binary); process.exit(1); }
' "$work/gpu.json"
say "ok"
