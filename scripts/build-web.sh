#!/usr/bin/env bash
# Builds the web app (www/, yew) with Trunk into www/dist, which is committed so the
# node can serve it and the README's run command needs only cargo. Offline: trunk
# 0.21.14 and wasm-bindgen-cli (the Cargo.lock version) must be on PATH (scripts/test.sh
# installs both into ~/.cache/tpow/bin); Trunk.toml forbids downloads.
#
# Reproducible: paths are remapped and the profile pinned, so the same sources and
# toolchain give the same bytes wherever the checkout and cargo home are.
#   --check   build into a temporary directory and fail if it differs from www/dist
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PATH="${TPOW_CACHE:-$HOME/.cache/tpow}/bin:$PATH"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$TARGET_DIR=/target --remap-path-prefix=$ROOT=/tpow --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${RUSTUP_HOME:-$HOME/.rustup}=/rustup"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
trunk build --release --offline --dist "$stage/dist"

if [ "$CHECK" = 1 ]; then
  if ! diff -r "$stage/dist" www/dist >/dev/null; then
    diff -rq "$stage/dist" www/dist || true
    echo "www/dist is not what scripts/build-web.sh builds: rebuild and commit it" >&2
    exit 1
  fi
  echo "www/dist is up to date"
else
  rm -rf www/dist
  cp -r "$stage/dist" www/dist
  for f in www/dist/*.wasm; do echo "$f: $(wc -c <"$f") bytes, $(gzip -9n <"$f" | wc -c) gzipped"; done
fi
