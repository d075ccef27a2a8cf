#!/usr/bin/env bash
# tpow-chat against llama.cpp on the same GGUF, prompt and thread counts, the two
# engines run back to back in each repetition (on a shared machine the load
# changes between minutes, so each pair is measured in the same conditions, and
# `uptime` is printed before each engine).
#
#   cargo build --release --locked -p tpow-bench
#   crates/tpow-bench/chat_vs_llama.sh [single|streams|all] [REPEATS] [THREADS...]
#   e.g. crates/tpow-bench/chat_vs_llama.sh single 3 1 2
#
# single:  `tpow-bench chat --child q8_0` (one row per thread count, `--runs 3`) and
#          `llama-bench -p 209 -n 128 -b 256 -ub 256` (pp209 = the same 209-token
#          prompt length from an empty cache in one 256-token batch, tg128 = 128
#          decoded tokens, 3 repetitions, mean +- sd); llama-bench's prompt is random
#          tokens of the same length, which costs the same as PROMPT.
# streams: `tpow-bench chat --child streams` (1, 2, 4, 8, 16 concurrent streams of
#          ~40 prompt tokens and 64 generated) and `llama-batched-bench -npp 40
#          -ntg 64 -npl 1,4,8,16` (the same shape: N sequences, prompts processed
#          together, then decoded together, one decode batch per step). For the
#          llama.cpp HTTP server with parallel slots (TTFT measured at a client)
#          see llama_server_bench.py.
#
# Environment: TPOW_BENCH (default $CARGO_TARGET_DIR/release/tpow-bench),
# LLAMA_BIN (default ~/.cache/tpow/llama.cpp/build/bin), TPOW_MODEL.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mode="${1:-all}"
repeats="${2:-3}"
shift $(($# > 2 ? 2 : $#)) || true
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2)
bench="${TPOW_BENCH:-${CARGO_TARGET_DIR:-$root/target}/release/tpow-bench}"
llama="${LLAMA_BIN:-$HOME/.cache/tpow/llama.cpp/build/bin}"
model="${TPOW_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

for rep in $(seq 1 "$repeats"); do
  for t in "${threads[@]}"; do
    if [ "$mode" = single ] || [ "$mode" = all ]; then
      echo "## repetition $rep, $t thread(s), single stream"
      echo "load: $(uptime | sed 's/.*load average: //')"
      CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t "$bench" chat --model "$model" --runs 3 --child q8_0
      echo "load: $(uptime | sed 's/.*load average: //')"
      "$llama/llama-bench" -m "$model" -t "$t" -p 209 -n 128 -b 256 -ub 256 -r 3 -o md 2>/dev/null | grep -E 'pp209|tg128'
    fi
    if [ "$mode" = streams ] || [ "$mode" = all ]; then
      echo "## repetition $rep, $t thread(s), concurrent streams"
      echo "load: $(uptime | sed 's/.*load average: //')"
      CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t "$bench" chat --model "$model" --runs 1 --child streams
      echo "load: $(uptime | sed 's/.*load average: //')"
      "$llama/llama-batched-bench" -m "$model" -t "$t" -tb "$t" -c 4096 -b 256 -ub 256 \
        -npp 40 -ntg 64 -npl 1,4,8,16 2>/dev/null | grep -E '^\|'
    fi
  done
done
