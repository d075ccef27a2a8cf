#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all tests (consensus core, GPU
# kernels on Mesa's lavapipe, node processes, chat with the real model, the official
# OpenAI Python client), the wasm32 builds and tests of the light client in Node.js
# and headless Chromium (WebGPU and CPU), the committed pkg/ and www/dist checked
# against a fresh build, the web app end to end in Chromium against a real devnet,
# the independent Python implementation against the committed test vectors, and a
# short fuzzing run of the decoders.
#
# Installs what it needs (rustup target, Debian packages, wasm-bindgen-cli, trunk,
# Python packages, npm packages, cargo-fuzz, the chat model) into caches under
# ${TPOW_CACHE:-$HOME/.cache/tpow}, so a second run only rebuilds what changed.
#   TPOW_FUZZ_SECS=N   seconds of fuzzing per target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TPOW_CACHE:-$HOME/.cache/tpow}"
export TPOW_CACHE="$CACHE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
FUZZ_SECS="${TPOW_FUZZ_SECS:-20}"
mkdir -p "$CACHE/bin"
export PATH="$CACHE/bin:$PATH"

# Each stage's duration is printed at the end (also when a stage fails).
STAGES=()
STAGE_NAME=""
STAGE_START=$SECONDS
RUN_START=$SECONDS
end_stage() {
  if [ -n "$STAGE_NAME" ]; then
    STAGES+=("$(printf '%6ds  %s' $((SECONDS - STAGE_START)) "$STAGE_NAME")")
  fi
}
summary() {
  local rc=$?
  end_stage
  printf '\n==> stage durations (%s)\n' "$([ $rc = 0 ] && echo passed || echo "FAILED, exit $rc")"
  printf '%s\n' "${STAGES[@]}"
  printf '%6ds  total\n' $((SECONDS - RUN_START))
}
trap summary EXIT
step() {
  end_stage
  STAGE_NAME="$*"
  STAGE_START=$SECONDS
  printf '\n==> %s (%s)\n' "$*" "$(date +%T)"
}

# Build profile for the tools installed from crates.io: optimised a little (opt-level
# TOOL_OPT_LEVEL, default 1), no LTO, many codegen units, no debug info.
tool_profile() {
  CARGO_PROFILE_RELEASE_OPT_LEVEL="${TOOL_OPT_LEVEL:-1}" CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=64 CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_INCREMENTAL=false "$@"
}

step "toolchain: wasm32 target, rustfmt, clippy"
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "system packages: Mesa lavapipe (Vulkan on the CPU), Chromium and its WebDriver"
PACKAGES="mesa-vulkan-drivers libvulkan1 chromium chromium-driver"
if ! dpkg -s $PACKAGES >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PACKAGES >/dev/null
fi

step "tools: wasm-bindgen-cli (the Cargo.lock version) and trunk, built from crates.io (in the background)"
# They are first needed for pkg/; until then they build alongside the model download
# and clippy, which leave a core idle much of the time.
install_tools() {
  WASM_BINDGEN_VERSION="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    # Not --locked: the CLI's own lock file names a yanked crate.
    # The tools' speed does not matter here (they process a few MB); their build time
    # does: a light profile cuts the cold install to about half.
    tool_profile cargo install --root "$CACHE" wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
  if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
    # Trunk only runs cargo and wasm-bindgen and rewrites index.html here: unoptimised,
    # and without its TLS stacks and update check (Trunk.toml forbids downloads).
    TOOL_OPT_LEVEL=0 tool_profile cargo install --locked --root "$CACHE" \
      --no-default-features trunk --version 0.21.14
  fi
}
TOOLS_LOG="$(mktemp)"
install_tools >"$TOOLS_LOG" 2>&1 &
TOOLS_PID=$!
wait_for_tools() {
  if ! wait "$TOOLS_PID"; then
    cat "$TOOLS_LOG" >&2
    echo "installing wasm-bindgen-cli or trunk failed (log above)" >&2
    exit 1
  fi
  tail -n 3 "$TOOLS_LOG"
}

step "chat model (SmolLM2-135M-Instruct GGUF, hash-checked)"
./scripts/fetch-model.sh

step "Python packages (reference implementation, OpenAI client, Prometheus parser)"
if [ ! -x "$CACHE/venv/bin/python" ]; then
  python3 -m venv "$CACHE/venv"
fi
"$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
  -r tests/vectors/requirements.txt -r tests/openai/requirements.txt -r tests/metrics/requirements.txt
# The tests that drive Python clients fail (rather than skip) without them.
export TPOW_PYTHON="$CACHE/venv/bin/python" TPOW_OPENAI_TEST=1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# Compiled shaders survive between runs (the tpow-gpu tests: 218 s cold, 109 s warm).
export MESA_SHADER_CACHE_DIR="$CACHE/mesa-shader-cache"
# lavapipe without LLVM's optimisation passes: the kernel tests compile many shader
# variants once and run most of them briefly. From an empty shader cache the tpow-gpu
# tests took 301 s, 218 s with this; with a warm one about 110 s either way.
export GALLIVM_PERF="${GALLIVM_PERF:-nopt}"
# Every SIMD backend the CPU advertises must run end to end (tpow-core tests/backends.rs):
# a detection bug that silently falls back to the scalar loop fails the test command.
TPOW_REQUIRE_BACKENDS="$(grep -o -w 'avx2\|avx512vnni' /proc/cpuinfo 2>/dev/null | sort -u | sed 's/avx512vnni/avx512-vnni/' | paste -sd, - || true)"
export TPOW_REQUIRE_BACKENDS

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy, wasm32 (the light client and the web app, all targets, warnings are errors)"
# The native workspace is linted by clippy as it compiles for the tests (below).
cargo clippy -p tpow-light -p tpow-web --all-targets --target wasm32-unknown-unknown --locked -- -D warnings

step "consensus core builds for wasm32 without std"
# With std (and tpow-gpu) it is built below, as part of pkg/ and www/dist.
cargo check -p tpow-core --target wasm32-unknown-unknown --no-default-features --locked

step "wasm32 SIMD kernels (portable, simd128, relaxed SIMD): clippy, then bit-exact against the scalar loop in Node.js and headless Chromium"
# A package of its own: tpow-core's dev-dependencies (proptest) do not build for
# wasm32, so its unit tests cannot run there. This package runs the same
# comparisons plus the committed vectors. Each variant gets its own target dir,
# because the RUSTFLAGS differ.
WASM_CHECK=crates/tpow-core/examples/wasm_simd
rustfmt --edition 2021 --check "$WASM_CHECK/src/main.rs"
for variant in portable simd128 relaxed; do
  case "$variant" in
    portable) flags="" ;;
    simd128) flags="-C target-feature=+simd128" ;;
    relaxed) flags="-C target-feature=+simd128,+relaxed-simd" ;;
  esac
  dir="$CACHE/target-wasm-$variant"
  RUSTFLAGS="$flags" cargo clippy -p tpow-core --target wasm32-unknown-unknown --locked --target-dir "$dir" -- -D warnings
  RUSTFLAGS="$flags" cargo clippy --manifest-path "$WASM_CHECK/Cargo.toml" --target wasm32-unknown-unknown --locked --target-dir "$dir" -- -D warnings
  RUSTFLAGS="$flags" cargo build --manifest-path "$WASM_CHECK/Cargo.toml" --target wasm32-unknown-unknown --locked --release --target-dir "$dir"
done
wasm_check() { echo "$CACHE/target-wasm-$1/wasm32-unknown-unknown/release/tpow-wasm-simd-check.wasm"; }
node "$WASM_CHECK/run.mjs" "$(wasm_check portable)" check
node "$WASM_CHECK/run.mjs" "$(wasm_check simd128)" check
node "$WASM_CHECK/run.mjs" --chromium "$(wasm_check simd128)" check
# Relaxed SIMD only in Chromium: Node.js 20 (V8 11.3) has it only behind a flag,
# and there the relaxed dot product computes wrong sums.
node "$WASM_CHECK/run.mjs" --chromium "$(wasm_check relaxed)" check

# Until here and in the next three stages the tools build in the background (the
# fuzzing stage installs cargo-fuzz, so it waits: two installs into one root).
step "independent Python implementation reproduces tests/vectors"
"$CACHE/venv/bin/python" tests/vectors/reference.py

step "conformance suite (tests/vectors/README.md): tpow-core and the Python reference, every vector file"
cargo build -q --release --locked -p tpow-core --example conformance
"$CACHE/venv/bin/python" tests/vectors/conformance.py --quiet -- "$CARGO_TARGET_DIR/release/examples/conformance"
"$CACHE/venv/bin/python" tests/vectors/conformance.py --quiet -- "$CACHE/venv/bin/python" tests/vectors/reference.py --serve

step "mutation check: every rule mutation of reference.py fails at least one vector"
"$CACHE/venv/bin/python" tests/vectors/mutations.py

step "waiting for the tools (wasm-bindgen-cli, trunk)"
wait_for_tools

step "committed builds are reproducible: pkg/ (light client) and www/dist (web app)"
./scripts/build-pkg.sh --check
./scripts/build-web.sh --check

if [ "$FUZZ_SECS" != "0" ]; then
  step "fuzzing the decoders for ${FUZZ_SECS}s each"
  export PATH="$CACHE/bin:$PATH"
  if ! command -v cargo-fuzz >/dev/null; then
    TOOL_OPT_LEVEL=0 tool_profile cargo install --locked --root "$CACHE" cargo-fuzz --version 0.13.2
  fi
  for target in header_decode mmr_proof_decode; do
    # cargo-fuzz needs nightly-only rustc flags; the stable toolchain accepts them
    # with RUSTC_BOOTSTRAP. Only the fuzz build sees it.
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" -- \
      -max_total_time="$FUZZ_SECS" -max_len=4096
  done
fi

step "cargo test (workspace, all targets), linted by clippy as it compiles (warnings are errors)"
# clippy-driver wraps rustc for the workspace's own crates, so the test build is also
# the clippy run (`cargo clippy --workspace --all-targets -- -D warnings`): the
# dependencies are compiled once instead of once more in clippy's check mode (about
# ten minutes of a cold run on two cores). Exported: every later native build of
# the test profile is the same build.
export RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver" RUSTFLAGS="-D warnings"
# The node without chat compiles and lints clean: library, binaries (the hostile
# peer's too) and the sync benchmark, which is built without chat. Its test targets
# are built and run with chat only (the next command), which saves the dozen test
# binaries' second build and link.
cargo build --profile test -p tpow-node --no-default-features --features attack --lib --bins \
  --example sync_bench --locked
cargo test --workspace --all-targets --locked --no-run
# clippy-driver also turns off rustc's debug-assertion checks of raw-pointer
# dereferences (alignment, null) and MIR optimisations: tpow-core, whose SIMD
# kernels are the unsafe code that matters, runs its tests from a rustc build of
# its own (a small target dir: its dependencies are few).
env -u RUSTC_WORKSPACE_WRAPPER cargo test -p tpow-core --all-targets --locked --target-dir "$CACHE/target-core"
cargo test --workspace --all-targets --exclude tpow-core --locked
cargo test --workspace --doc --locked
# The browser tests below run the node binary `cargo test` built (with chat).
"$CARGO_TARGET_DIR/debug/tpow-node" run --help | grep -q -- '--model' \
  || { echo "target/debug/tpow-node is not the node with chat" >&2; exit 1; }

step "light client in wasm32: test vectors in Node.js and in headless Chromium (WebGPU)"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test -p tpow-light --target wasm32-unknown-unknown --locked --test vectors_node
# wasm-bindgen-test's default limit is 20 s per test; WebGPU over SwiftShader on a
# loaded 2-core machine takes 14-18 s, so the limit would make the result depend on
# the machine's speed.
TPOW_REQUIRE_WEBGPU=1 WASM_BINDGEN_TEST_TIMEOUT=300 CHROMEDRIVER=/usr/bin/chromedriver \
  WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/tests/light/webdriver.json" \
  cargo test -p tpow-light --target wasm32-unknown-unknown --locked --test vectors_browser

step "browser tests against real devnet nodes: light client (tests/light), web app (tests/e2e)"
# The node as `cargo test` built it (test profile: optimised), not a slow dev build.
npm ci --prefix tests/light --no-audit --no-fund --silent
node tests/light/run.mjs --require-webgpu --node-bin "$CARGO_TARGET_DIR/debug/tpow-node"
npm ci --prefix tests/e2e --no-audit --no-fund --silent
node tests/e2e/run.mjs --node "$CARGO_TARGET_DIR/debug/tpow-node" --dist www/dist --served-by-node
