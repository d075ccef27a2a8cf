#!/usr/bin/env python3
"""llama.cpp (via llama-cpp-python) on the chat model: the baseline of `tpow-bench chat`.

    ~/.cache/tpow/bench-venv/bin/python crates/tpow-bench/llama_cpp_bench.py \
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 1,2] [--runs 3]

Same prompt (the ChatML rendering of PROMPT with SmolLM2's default system prompt),
same measurements and columns as the Rust benchmark:
- load: Llama(...) construction (mmap'd weights, no re-quantisation);
- prompt tok/s: eval of the prompt tokens from an empty KV cache, batch 256 (median);
- TTFT: prompt eval plus the greedy choice of the first token;
- decode tok/s: 128 more tokens, one eval each, greedy (argmax), EOS ignored.
Each thread count runs in a fresh process state (n_threads = n_threads_batch = n).
"""
import argparse
import os
import statistics
import time

import numpy as np
from llama_cpp import Llama

from bench_prompt import DECODE_TOKENS, PROMPT, SYSTEM  # noqa: E402 (next to this script)
BATCH = 256

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def last_argmax(llm):
    """Greedy choice from the logits of the last evaluated token (read in place)."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def measure(model, threads, runs):
    t = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=1024, n_batch=BATCH, n_ubatch=BATCH, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    load_s = time.perf_counter() - t
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n"
              "<|im_start|>assistant\n")
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)

    prefill, ttft = [], []
    first = 0
    for _ in range(runs + 1):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t = time.perf_counter()
        llm.eval(tokens)
        p = time.perf_counter() - t
        first = last_argmax(llm)
        f = time.perf_counter() - t
        prefill.append(p)
        ttft.append(f)
    prefill, ttft = prefill[1:], ttft[1:]  # the first run warms up

    decode = []
    for _ in range(runs):
        # Back to the end of the prompt (drop the KV of the previous decode run).
        llm.n_tokens = len(tokens)
        llm._ctx.kv_cache_seq_rm(-1, len(tokens), -1)
        tok = first
        t = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            llm.eval([tok])
            tok = last_argmax(llm)
        decode.append(DECODE_TOKENS / (time.perf_counter() - t))
    return {
        "load_s": load_s,
        "prompt_tokens": len(tokens),
        "prompt_tps": len(tokens) / statistics.median(prefill),
        "ttft_ms": statistics.median(ttft) * 1e3,
        "decode_tps": statistics.median(decode),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get(
        "TPOW_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print("| engine | weights | threads | load (s) | prompt tokens | prompt (tok/s) | TTFT (ms) | decode (tok/s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in args.threads.split(",")]:
        r = measure(args.model, n, args.runs)
        print(f"| llama.cpp (llama-cpp-python) | Q4_1 | {n} | {r['load_s']:.2f} | {r['prompt_tokens']} | "
              f"{r['prompt_tps']:.0f} | {r['ttft_ms']:.0f} | {r['decode_tps']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
