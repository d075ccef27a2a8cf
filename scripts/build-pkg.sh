#!/usr/bin/env bash
# Builds pkg/, the JS/TypeScript package of the light client (crates/tpow-light):
# two builds of the same crate (cargo, wasm32, release) run through wasm-bindgen
# --target web, plus the hand-written entry point, worker script, package.json and
# README from crates/tpow-light/js/:
#   tpow_light_bg.wasm        portable (no SIMD): the fallback, any engine
#   tpow_light_simd_bg.wasm   -C target-feature=+simd128: tpow-core's simd128 kernels
#   tpow_light_glue.js/.d.ts  wasm-bindgen's glue, shared by both builds (scripts/share-glue.py)
#   tpow_light.js/.d.ts       the entry: the glue's exports, and an `init` that loads the
#                             simd128 build where `WebAssembly.validate` accepts a SIMD
#                             module, else the portable one
# Relaxed SIMD is not shipped: on x86 without AVX-VNNI it is slower than simd128 in
# Chromium, and Node.js 20 computes it wrongly (docs/BENCHMARKS.md).
#
# Reproducible: the same sources and toolchain give the same bytes. Paths are
# remapped so the output does not depend on where the checkout, the target dirs or
# the cargo home are; the profile is pinned here (one codegen unit, fat LTO, no
# debug info).
#   --check   build into a temporary directory and fail if it differs from pkg/
#   TPOW_CACHE          cache root (default ~/.cache/tpow); the simd128 build's target
#                       dir is $TPOW_CACHE/target-wasm-release-simd128 (shared with
#                       scripts/build-web.sh: the same flags, so nothing is built twice)
#   CARGO_TARGET_DIR    the portable build's target dir (default ./target)
#   WASM_BINDGEN=path   the wasm-bindgen CLI (default $TPOW_CACHE/bin/wasm-bindgen;
#                       must be 0.2.130 = Cargo.lock)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${TPOW_CACHE:-$HOME/.cache/tpow}"
WASM_BINDGEN="${WASM_BINDGEN:-$CACHE/bin/wasm-bindgen}"
TARGET_PORTABLE="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGET_SIMD="$CACHE/target-wasm-release-simd128"
OUT="$ROOT/pkg"
JS=crates/tpow-light/js
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
have="$("$WASM_BINDGEN" --version | awk '{print $2}')"
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen CLI $have does not match Cargo.lock's $want" >&2
  exit 1
fi

export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
# rustflags for a target dir: every local path remapped (reproducible bytes).
remap() {
  echo "--remap-path-prefix=$1=/target --remap-path-prefix=$ROOT=/tpow --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${RUSTUP_HOME:-$HOME/.rustup}=/rustup"
}

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# build VARIANT TARGET_DIR EXTRA_RUSTFLAGS: cargo, then wasm-bindgen into $stage/VARIANT.
# The web app's library is built along (`-p tpow-web --lib`): cargo then resolves the
# dependencies' features (web-sys, wgpu, ...) as scripts/build-web.sh's build of the
# app does, so the app reuses them instead of compiling its own copies (about 3 min
# per variant on a cold cache).
build() {
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$(remap "$2")${3:+ $3}" \
    cargo build -p tpow-light -p tpow-web --lib --target wasm32-unknown-unknown --release --locked --target-dir "$2"
  "$WASM_BINDGEN" --target web --out-dir "$stage/$1" --out-name tpow_light_glue \
    "$2/wasm32-unknown-unknown/release/tpow_light.wasm"
}
build portable "$TARGET_PORTABLE" ""
build simd128 "$TARGET_SIMD" "-C target-feature=+simd128"

pkg="$stage/pkg"
mkdir -p "$pkg"
# One glue for both builds: wasm-bindgen writes the same JS and types for them
# except for Rust symbol hashes (the simd128 build enables other dependency
# features); share-glue.py checks that and renames the simd128 module's exports to
# the portable build's names.
p="$stage/portable" s="$stage/simd128"
python3 scripts/share-glue.py "$p/tpow_light_glue.js" "$s/tpow_light_glue.js" \
  "$s/tpow_light_glue_bg.wasm" "$pkg/tpow_light_simd_bg.wasm" \
  "$p/tpow_light_glue.d.ts" "$s/tpow_light_glue.d.ts" "$p/tpow_light_glue_bg.wasm.d.ts" "$s/tpow_light_glue_bg.wasm.d.ts"
cp "$p/tpow_light_glue.js" "$p/tpow_light_glue.d.ts" "$pkg/"
cp "$p/tpow_light_glue_bg.wasm.d.ts" "$pkg/tpow_light_bg.wasm.d.ts"
cp "$p/tpow_light_glue_bg.wasm" "$pkg/tpow_light_bg.wasm"
cp "$JS/tpow_light.js" "$JS/tpow_light.d.ts" "$JS/tpow_light_worker.js" "$JS/package.json" "$JS/README.md" "$pkg/"

if [ "$CHECK" = 1 ]; then
  if ! diff -r "$pkg" "$OUT" >/dev/null; then
    diff -rq "$pkg" "$OUT" || true
    echo "pkg/ is not what scripts/build-pkg.sh builds: rebuild and commit it" >&2
    exit 1
  fi
  echo "pkg/ is up to date"
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  cp -r "$pkg"/. "$OUT"/
  for f in tpow_light_bg.wasm tpow_light_simd_bg.wasm; do
    echo "pkg/$f: $(wc -c <"$OUT/$f") bytes, $(gzip -9n <"$OUT/$f" | wc -c) gzipped"
  done
fi
