#!/usr/bin/env python3
"""llama.cpp's server (parallel slots, continuous batching) on the chat model: the
baseline of `tpow-bench chat` (single stream) and `tpow-bench chat --child streams`.

    ~/.cache/tpow/bench-venv/bin/python crates/tpow-bench/llama_server_bench.py \
        [--server ~/.cache/tpow/llama.cpp/build/bin/llama-server] \
        [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 1,2] [--runs 3] \
        [--streams 1,4,8,16] [--skip-single] [--skip-streams]

llama-server is built from the llama.cpp sources vendored in the llama-cpp-python sdist
(outside this repository), e.g.:

    pip download --no-binary :all: --no-deps --no-build-isolation llama-cpp-python
    cmake -S llama_cpp_python-*/vendor/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    cmake --build build -j2 --target llama-server llama-bench

For each thread count one server runs with `-t N -tb N --parallel 16 --cont-batching`
(a 4,096-position KV cache, 256 per slot), and this client (stdlib only) measures:

- single stream (the columns of `tpow-bench chat`): the same ChatML prompt (PROMPT of
  crates/tpow-bench/src/chat.rs with SmolLM2's default system prompt) sent raw to
  `/completion`, greedy, 128 tokens with EOS ignored, no prompt cache; prompt tok/s
  and decode tok/s from the server's own `timings`, TTFT = request to first streamed
  token at the client; median of `--runs` after one warm-up;
- concurrent streams (the workload of `tpow-bench chat --child streams`): N streaming
  `/v1/chat/completions` requests sent at once, stream i asking "Write a long story
  about <SUBJECTS[i]>.", temperature 0.8, top_p 0.95, seed run*100+i, max_tokens 64,
  no prompt cache. Aggregate tok/s = completion tokens / wall time of the rounds
  (first request to last end); TTFT p50/p95 over every stream of every round;
  prompt tok/s = prompt tokens / time until the last stream's first token.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bench_prompt import DECODE_TOKENS, PROMPT, SYSTEM  # noqa: E402 (next to this script)
# Keep in sync with SUBJECTS / STREAM_TOKENS in crates/tpow-bench/src/chat.rs.
SUBJECTS = [
    "a lighthouse keeper", "a lost robot", "a river town", "a mountain climber", "an old clock",
    "a desert caravan", "a city at night", "a ship's cook", "a young baker", "a forest fire",
    "a chess champion", "a winter market", "a deep-sea diver", "a travelling circus",
    "a quiet library", "a summer storm",
]
STREAM_TOKENS = 64
SLOTS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sse(req, timeout=600):
    """Yields the JSON events of a server-sent-event response."""
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield json.loads(data)


def post(base, path, body):
    return urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})


def single(base, runs):
    """One stream of the benchmark prompt; medians over `runs` after a warm-up."""
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n"
              "<|im_start|>assistant\n")
    body = {"prompt": prompt, "n_predict": DECODE_TOKENS, "temperature": 0, "top_k": 1, "ignore_eos": True,
            "cache_prompt": False, "stream": True}
    ttft, prompt_tps, decode_tps, prompt_n = [], [], [], 0
    for i in range(runs + 1):
        start = time.perf_counter()
        first = None
        timings = None
        for ev in sse(post(base, "/completion", body)):
            if first is None and ev.get("content"):
                first = time.perf_counter() - start
            if ev.get("timings"):
                timings = ev["timings"]
        if i == 0:
            continue  # warm-up
        ttft.append(first * 1e3)
        prompt_tps.append(timings["prompt_per_second"])
        decode_tps.append(timings["predicted_per_second"])
        prompt_n = timings["prompt_n"]
    return prompt_n, statistics.median(prompt_tps), statistics.median(ttft), statistics.median(decode_tps)


def one_stream(base, i, run, start, out):
    body = {"model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": f"Write a long story about {SUBJECTS[i % len(SUBJECTS)]}."}],
            "max_tokens": STREAM_TOKENS, "temperature": 0.8, "top_p": 0.95, "seed": run * 100 + i,
            "stream": True, "stream_options": {"include_usage": True}, "cache_prompt": False}
    first = None
    usage = {}
    times = []  # one per content chunk, as tpow-bench counts its text events
    for ev in sse(post(base, "/v1/chat/completions", body)):
        for c in ev.get("choices", []):
            if c.get("delta", {}).get("content"):
                t = time.perf_counter() - start
                times.append(t)
                if first is None:
                    first = t
        if ev.get("usage"):
            usage = ev["usage"]
    out[i] = (first, usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0), time.perf_counter() - start,
              times)


def percentile(sorted_v, p):
    return sorted_v[min(len(sorted_v) - 1, round((len(sorted_v) - 1) * p))]


def streams(base, counts, runs, threads):
    # decode, all streams: content chunks after the round's last first token over
    # that time (the batched decode rate), as tpow-bench's streams table.
    print("| engine | threads | streams | generated tokens | aggregate (tok/s) | decode, all streams (tok/s) | "
          "per stream (tok/s) | TTFT p50 (ms) | TTFT p95 (ms) | prompt (tok/s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    one_stream(base, 0, 99, time.perf_counter(), [None])  # warm-up
    for n in counts:
        ttft = []
        tokens = prompt_tokens = 0
        secs = prompt_secs = decode_secs = 0.0
        decode_tokens = 0
        for run in range(runs):
            out = [None] * n
            start = time.perf_counter()
            ts = [threading.Thread(target=one_stream, args=(base, i, run, start, out)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            secs += max(o[3] for o in out)
            last_first = max(o[0] for o in out)
            prompt_secs += last_first
            times = [t for o in out for t in o[4]]
            decode_tokens += sum(1 for t in times if t > last_first)
            decode_secs += max(times + [last_first]) - last_first
            for first, completion, prompt, _, _ in out:
                ttft.append(first * 1e3)
                tokens += completion
                prompt_tokens += prompt
        ttft.sort()
        agg = tokens / secs
        dec = decode_tokens / decode_secs if decode_secs > 0 else float("nan")
        print(f"| llama-server | {threads} | {n} | {tokens} | {agg:.1f} | {dec:.1f} | {agg / n:.1f} | "
              f"{percentile(ttft, 0.5):.0f} | "
              f"{percentile(ttft, 0.95):.0f} | {prompt_tokens / prompt_secs:.0f} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default=os.path.expanduser("~/.cache/tpow/llama.cpp/build/bin/llama-server"))
    ap.add_argument("--model", default=os.environ.get(
        "TPOW_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--skip-single", action="store_true")
    ap.add_argument("--skip-streams", action="store_true")
    args = ap.parse_args()
    for n in [int(x) for x in args.threads.split(",")]:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [args.server, "-m", args.model, "-t", str(n), "-tb", str(n), "-c", str(256 * SLOTS),
               "--parallel", str(SLOTS), "--cont-batching", "-b", "256", "-ub", "256",
               "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if urllib.request.urlopen(base + "/health", timeout=5).status == 200:
                        break
                except Exception:
                    if proc.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"llama-server did not start: {' '.join(cmd)}")
                time.sleep(0.2)
            if not args.skip_single:
                p_n, p_tps, ttft, d_tps = single(base, args.runs)
                print("| engine | weights | threads | prompt tokens | prompt (tok/s) | TTFT (ms) | decode (tok/s) |")
                print("|---|---|---:|---:|---:|---:|---:|")
                print(f"| llama-server | Q4_1 | {n} | {p_n} | {p_tps:.0f} | {ttft:.0f} | {d_tps:.1f} |", flush=True)
            if not args.skip_streams:
                streams(base, [int(x) for x in args.streams.split(",")], args.runs, n)
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
