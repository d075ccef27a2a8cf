#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all tests, the wasm32 build of
# the consensus core, the independent Python implementation against the committed
# test vectors, and a short fuzzing run of the decoders.
#
# Installs what it needs (rustup target, Python packages, cargo-fuzz) into caches
# under ${TPOW_CACHE:-$HOME/.cache/tpow}, so a second run only rebuilds what changed.
#   TPOW_FUZZ_SECS=N   seconds of fuzzing per target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TPOW_CACHE:-$HOME/.cache/tpow}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
FUZZ_SECS="${TPOW_FUZZ_SECS:-20}"
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32 target, rustfmt, clippy"
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "system packages: Mesa lavapipe (Vulkan on the CPU) for the GPU tests"
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# Compiled shaders survive between runs: the GPU tests drop from ~110 s to ~35 s.
export MESA_SHADER_CACHE_DIR="$CACHE/mesa-shader-cache"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "consensus core and GPU crate build for wasm32"
cargo build -p tpow-core --target wasm32-unknown-unknown --no-default-features --release --locked
cargo build -p tpow-core -p tpow-gpu --target wasm32-unknown-unknown --release --locked

step "independent Python implementation reproduces tests/vectors"
if [ ! -x "$CACHE/venv/bin/python" ]; then
  python3 -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/vectors/requirements.txt
"$CACHE/venv/bin/python" tests/vectors/reference.py

if [ "$FUZZ_SECS" != "0" ]; then
  step "fuzzing the decoders for ${FUZZ_SECS}s each"
  export PATH="$CACHE/bin:$PATH"
  if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked --root "$CACHE" cargo-fuzz --version 0.13.2
  fi
  for target in header_decode mmr_proof_decode; do
    # cargo-fuzz needs nightly-only rustc flags; the stable toolchain accepts them
    # with RUSTC_BOOTSTRAP. Only the fuzz build sees it.
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" -- \
      -max_total_time="$FUZZ_SECS" -max_len=4096
  done
fi

step "cargo test (workspace)"
# tpow-bench has no tests; skipping it saves building candle a second time.
cargo test --workspace --exclude tpow-bench --locked
