"""Chat and mining on one node: time to first token, decode rate and nonces/s
with mining off, at the default --mine-share, and at full share, for 1 and for 8
concurrent users; the miner's model-switch time from /metrics.

Usage:
    cargo build --release --locked -p tpow-node
    python3 crates/tpow-bench/chat_mining_bench.py [--node PATH] [--runs N] [--users 1,8]
        [--modes off,default,full] [--max-tokens 48]

Starts one devnet node per mode (stdlib only; needs the model from
scripts/fetch-model.sh; the node defaults to $CARGO_TARGET_DIR/release/tpow-node)
and prints a table. For each user count, `--runs` rounds send that many streaming
requests at once (greedy, the same prompt); TTFT p50/p95 are over every request of
every round, decode is the median per-request rate. The last column is TTFT p50
against the same user count with mining off (issue 17: at most 1.5x).
"""
import threading
import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = ("Summarise in one short sentence why the sky looks blue during the day and red at sunset. "
          "Mention scattering of light by molecules of the atmosphere, the wavelength of blue light, "
          "and the longer path of sunlight through the air when the sun is low. ") * 2


def metrics(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def stream(base, max_tokens):
    body = json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": PROMPT}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    start = time.monotonic()
    first = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=300) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            for c in chunk.get("choices", []):
                if c.get("delta", {}).get("content") and first is None:
                    first = time.monotonic()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.monotonic()
    return first - start, (tokens - 1) / max(end - first, 1e-9)


def pct(sorted_v, p):
    return sorted_v[min(len(sorted_v) - 1, round((len(sorted_v) - 1) * p))]


def concurrent(base, users, max_tokens):
    """`users` streams sent at once; their (ttft, decode) pairs."""
    out = [None] * users

    def one(i):
        out[i] = stream(base, max_tokens)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(users)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def run_mode(node, name, extra, runs, max_tokens, users_list, idle_p50):
    with tempfile.TemporaryDirectory() as d:
        cmd = [node, "run", "--chain", "devnet", "--data-dir", d, "--http", "127.0.0.1:0",
               "--p2p", "/ip4/127.0.0.1/tcp/0", "--no-web",
               "--model", os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")] + extra
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            addr_file = os.path.join(d, "http-addr")
            while not os.path.exists(addr_file) or not open(addr_file).read().strip():
                if proc.poll() is not None:
                    raise SystemExit(f"the node exited with {proc.returncode}: {' '.join(cmd)}")
                time.sleep(0.1)
            base = "http://" + open(addr_file).read().strip()
            while True:
                try:
                    if json.load(urllib.request.urlopen(base + "/api/info", timeout=5)).get("models"):
                        break
                except Exception:
                    pass
                time.sleep(0.2)
            stream(base, 4)  # warm-up
            m0, t0 = metrics(base), time.monotonic()
            time.sleep(3)
            m1, t1 = metrics(base), time.monotonic()
            idle_rate = (m1.get("tpow_pow_forward_passes_total", 0) - m0.get("tpow_pow_forward_passes_total", 0)) / (t1 - t0)
            for users in users_list:
                m1, t1 = metrics(base), time.monotonic()
                ttfts, decodes = [], []
                for _ in range(runs):
                    for ttft, dec in concurrent(base, users, max_tokens):
                        ttfts.append(ttft * 1e3)
                        decodes.append(dec)
                m2, t2 = metrics(base), time.monotonic()
                chat_rate = (m2.get("tpow_pow_forward_passes_total", 0) - m1.get("tpow_pow_forward_passes_total", 0)) / (t2 - t1)
                n = m2.get("tpow_miner_switch_seconds_count", 0)
                switch = m2.get("tpow_miner_switch_seconds_sum", 0) / n * 1e3 if n else float("nan")
                ttfts.sort()
                decodes.sort()
                p50 = pct(ttfts, 0.5)
                if name == "off":
                    idle_p50[users] = p50
                ratio = p50 / idle_p50[users] if idle_p50.get(users) else float("nan")
                print(f"| {name} | {users} | {p50:,.0f} | {pct(ttfts, 0.95):,.0f} | {pct(decodes, 0.5):.1f} | "
                      f"{idle_rate:,.0f} | {chat_rate:,.0f} | {switch:.2f} ({int(n)}) | {ratio:.2f} |", flush=True)
        finally:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release/tpow-node"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--users", default="1,8", help="concurrent users per round, comma-separated")
    ap.add_argument("--modes", default="off,default,full", help="subset of off,default,full")
    args = ap.parse_args()
    threads = str(os.cpu_count() or 2)
    users = [int(u) for u in args.users.split(",")]
    modes = {
        "off": ("off", []),
        "default": ("default share (0.1), every core", ["--mine", "--threads", threads]),
        "full": ("full share (1.0), every core", ["--mine", "--threads", threads, "--mine-share", "1"]),
    }
    print("| mining | users | TTFT p50 (ms) | TTFT p95 (ms) | decode tok/s per user | nonces/s before chat | "
          "nonces/s during chat | switch ms (count) | TTFT p50 / idle |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    idle_p50 = {}
    for m in args.modes.split(","):
        name, extra = modes[m]
        run_mode(args.node, name, extra, args.runs, args.max_tokens, users, idle_p50)


if __name__ == "__main__":
    main()
