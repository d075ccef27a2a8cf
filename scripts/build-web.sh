#!/usr/bin/env bash
# Builds the web app (www/, yew) with Trunk into www/dist, which is committed so the
# node can serve it and the README's run command needs only cargo. Offline: trunk
# 0.21.14 and wasm-bindgen-cli (the Cargo.lock version) must be on PATH (scripts/test.sh
# installs both into ~/.cache/tpow/bin); Trunk.toml forbids downloads.
#
# Two Trunk builds of the same sources: portable (no SIMD) and simd128
# (`-C target-feature=+simd128`: tpow-core's simd128 kernels for the chain view's
# verifier and the miner worker). Their JS glue is shared (scripts/share-glue.py
# renames the simd128 modules' exports to the portable names, after checking that
# the glue differs in nothing else), so www/dist holds one glue per binary and two
# modules each:
#   tpow-web_bg.wasm, miner_worker_bg.wasm             portable: the fallback
#   tpow-web_simd_bg.wasm, miner_worker_simd_bg.wasm   simd128
# The page (index.html) and the worker (miner_worker_loader.js) load the simd128
# module where `WebAssembly.validate` accepts a small SIMD module, else the portable
# one; `?kernel=portable` in the page's URL forces the portable modules (the page
# then starts its workers with it too).
#
# Reproducible: paths are remapped and the profile pinned, so the same sources and
# toolchain give the same bytes wherever the checkout, target dirs and cargo home are.
#   --check   build into a temporary directory and fail if it differs from www/dist
#   TPOW_CACHE          cache root (default ~/.cache/tpow); the simd128 build's target
#                       dir is $TPOW_CACHE/target-wasm-release-simd128 (shared with
#                       scripts/build-pkg.sh)
#   CARGO_TARGET_DIR    the portable build's target dir (default ./target)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${TPOW_CACHE:-$HOME/.cache/tpow}"
export PATH="$CACHE/bin:$PATH"
TARGET_PORTABLE="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGET_SIMD="$CACHE/target-wasm-release-simd128"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
remap() {
  echo "--remap-path-prefix=$1=/target --remap-path-prefix=$ROOT=/tpow --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=${RUSTUP_HOME:-$HOME/.rustup}=/rustup"
}

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# build DIST TARGET_DIR EXTRA_RUSTFLAGS
build() {
  CARGO_TARGET_DIR="$2" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$(remap "$2")${3:+ $3}" \
    trunk build --release --offline --dist "$1"
}
build "$stage/dist" "$TARGET_PORTABLE" ""
build "$stage/simd128" "$TARGET_SIMD" "-C target-feature=+simd128"

dist="$stage/dist"
for bin in tpow-web miner_worker; do
  python3 scripts/share-glue.py "$dist/$bin.js" "$stage/simd128/$bin.js" \
    "$stage/simd128/${bin}_bg.wasm" "$dist/${bin}_simd_bg.wasm"
done
# The loaders: Trunk's, with the module chosen at run time. Each replaced text must
# be there exactly once (a Trunk that writes something else fails the build).
python3 - "$dist" <<'EOF'
import pathlib, sys
dist = pathlib.Path(sys.argv[1])
# A module whose one function uses simd128 (i8x16.splat, i32x4.dot_i16x8_s): valid
# only where the engine supports WebAssembly SIMD.
probe = "[0,97,115,109,1,0,0,0,1,5,1,96,0,1,123,3,2,1,0,10,15,1,13,0,65,0,253,15,65,0,253,15,253,186,1,11]"
simd = (f"new URLSearchParams(location.search).get('kernel') !== 'portable'"
        f" && WebAssembly.validate(new Uint8Array({probe}))")

def patch(name, old, new, count=1):
    p = dist / name
    text = p.read_text()
    if text.count(old) != count:
        sys.exit(f"build-web.sh: {name} from Trunk does not contain {old!r} {count} time(s)")
    p.write_text(text.replace(old, new))

patch("index.html",
      "const wasm = await init({ module_or_path: './tpow-web_bg.wasm' });",
      f"const simd = {simd};\n"
      "const wasm = await init({ module_or_path: simd ? './tpow-web_simd_bg.wasm' : './tpow-web_bg.wasm' });")
# Trunk preloads the portable module; the page may not need it.
html = (dist / "index.html").read_text()
start = html.find('<link rel="preload" href="./tpow-web_bg.wasm"')
end = html.find(">", start) + 1
if start < 0 or html.count('href="./tpow-web_bg.wasm"') != 1:
    sys.exit("build-web.sh: index.html from Trunk has no single preload of tpow-web_bg.wasm")
(dist / "index.html").write_text(html[:start] + html[end:])
patch("miner_worker_loader.js",
      'importScripts("./miner_worker.js");wasm_bindgen("./miner_worker_bg.wasm");',
      'importScripts("./miner_worker.js");\n'
      f"wasm_bindgen({simd}\n  ? './miner_worker_simd_bg.wasm' : './miner_worker_bg.wasm');\n")
EOF

if [ "$CHECK" = 1 ]; then
  if ! diff -r "$dist" www/dist >/dev/null; then
    diff -rq "$dist" www/dist || true
    echo "www/dist is not what scripts/build-web.sh builds: rebuild and commit it" >&2
    exit 1
  fi
  echo "www/dist is up to date"
else
  rm -rf www/dist
  cp -r "$dist" www/dist
  for f in www/dist/*.wasm; do echo "$f: $(wc -c <"$f") bytes, $(gzip -9n <"$f" | wc -c) gzipped"; done
fi
