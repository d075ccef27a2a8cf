#!/usr/bin/env bash
# Builds pkg/, the JS/TypeScript package of the light client (crates/tpow-light):
# cargo (wasm32, release) then wasm-bindgen --target web, plus the hand-written
# worker script, package.json and README from crates/tpow-light/js/.
#
# Reproducible: the same sources and toolchain give the same bytes. Paths are
# remapped so the output does not depend on where the checkout or the cargo home
# is; the profile is pinned here (one codegen unit, fat LTO, no debug info).
#   --check   build into a temporary directory and fail if it differs from pkg/
#   WASM_BINDGEN=path   the wasm-bindgen CLI (default $TPOW_CACHE/bin/wasm-bindgen, TPOW_CACHE
#                       defaulting to ~/.cache/tpow;
#                       must be 0.2.130 = Cargo.lock)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WASM_BINDGEN="${WASM_BINDGEN:-${TPOW_CACHE:-$HOME/.cache/tpow}/bin/wasm-bindgen}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$ROOT/pkg"
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
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$TARGET_DIR=/target --remap-path-prefix=$ROOT=/tpow --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${RUSTUP_HOME:-$HOME/.rustup}=/rustup"
cargo build -p tpow-light --target wasm32-unknown-unknown --release --locked

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
"$WASM_BINDGEN" --target web --out-dir "$stage" --out-name tpow_light \
  "$TARGET_DIR/wasm32-unknown-unknown/release/tpow_light.wasm"
cp crates/tpow-light/js/tpow_light_worker.js crates/tpow-light/js/package.json crates/tpow-light/js/README.md "$stage/"

if [ "$CHECK" = 1 ]; then
  if ! diff -r "$stage" "$OUT" >/dev/null; then
    diff -rq "$stage" "$OUT" || true
    echo "pkg/ is not what scripts/build-pkg.sh builds: rebuild and commit it" >&2
    exit 1
  fi
  echo "pkg/ is up to date"
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  cp -r "$stage"/. "$OUT"/
  echo "pkg/: $(wc -c <"$OUT/tpow_light_bg.wasm") bytes wasm, $(gzip -9n <"$OUT/tpow_light_bg.wasm" | wc -c) gzipped"
fi
