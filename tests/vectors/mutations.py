#!/usr/bin/env python3
"""Mutation check of the vector suite: every deliberate rule mutation of the
Python reference must fail at least one vector.

Each mutation is a textual edit of tests/vectors/reference.py (one rule of
docs/PROTOCOL.md broken the way a re-implementation plausibly would break it).
The mutated copy is run through conformance.py against the whole suite
(`--fail-fast`); a mutation is *caught* when the suite fails. The unmutated
reference must pass first. Prints the score; exit status 0 iff every mutation
is caught.

    python3 tests/vectors/mutations.py [-j JOBS] [NAME...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, what breaks, [(old, new), ...]); each `old` must occur exactly once.
MUTATIONS = [
    ("no-clampR", "§6.4/§6.6: residual updates not clamped to ±32767",
     [("return np.clip(y, -RESIDUAL_MAX, RESIDUAL_MAX)", "return y")]),
    ("no-att-clamp", "§6.4: attention output not clamped to ±127",
     [("att = clamp8(av)", "att = av")]),
    ("no-0x80-mapping", "§5: byte 0x80 read as −128 instead of −127",
     [("return np.maximum(np.frombuffer(b, dtype=np.int8), -127).reshape(rows, cols)",
       "return np.frombuffer(b, dtype=np.int8).reshape(rows, cols)"),
      ('return {"weights": out_bytes(np.maximum(np.frombuffer(b, dtype=np.int8), -127)).hex()}',
       'return {"weights": out_bytes(np.frombuffer(b, dtype=np.int8)).hex()}')]),
    ("asert-floor-div", "§10: floor instead of truncating division of num",
     [("    e = trunc_div(num, max(half_life, 1))\n    e = max(-400 * 65536, min(400 * 65536, e))\n    n = e >> 16\n",
       "    e = num // max(half_life, 1)\n    e = max(-400 * 65536, min(400 * 65536, e))\n    n = e >> 16\n")]),
    ("asert-trunc-shift", "§10: n = e / 65536 truncated instead of floored",
     [("    n = e >> 16\n    f = e & 0xFFFF\n", "    n = int(e / 65536)\n    f = e & 0xFFFF\n")]),
    ("asert-no-round-const", "§10: polynomial without the + 2^47 rounding",
     [("factor = 65536 + ((195766423245049 * f + 971821376 * f * f + 5127 * f * f * f + (1 << 47)) >> 48)\n    t0",
       "factor = 65536 + ((195766423245049 * f + 971821376 * f * f + 5127 * f * f * f) >> 48)\n    t0")]),
    ("asert-no-max-clamp", "§10: result not clamped to max_target",
     [("    t = min(t, max_target)\n    return 1 if t == 0 else t\n\n\ndef asert_fixed_width",
       "    return 1 if t == 0 else t\n\n\ndef asert_fixed_width")]),
    ("asert-anchor-not-clamped", "§10: anchor target used without min(anchor, max_target)",
     [("    t0 = min(anchor_t, max_target)\n", "    t0 = anchor_t\n")]),
    ("asert-dh-off-by-one", "§10: ideal · Δh instead of ideal · (Δh + 1)",
     [("    num = (dt - ideal * (dh + 1)) * 65536\n    e = trunc_div", "    num = (dt - ideal * dh) * 65536\n    e = trunc_div")]),
    ("mmr-peaks-from-left", "§11: peaks bagged from the left instead of the right",
     [("    acc = peaks[-1]\n    for p in reversed(peaks[:-1]):\n        acc = mmr_merge(p, acc)",
       "    acc = peaks[0]\n    for p in peaks[1:]:\n        acc = mmr_merge(acc, p)")]),
    ("mmr-peak-order", "§11.1: proven peak inserted one position off",
     [("peaks = proof[\"peaks\"][:m] + [node] + proof[\"peaks\"][m:]",
       "peaks = proof[\"peaks\"][:m + 1] + [node] + proof[\"peaks\"][m + 1:]")]),
    ("mmr-sibling-side", "§11.1: sibling side taken from the wrong bit of ℓ",
     [("node = mmr_merge(node, sib) if (local >> k) & 1 == 0 else mmr_merge(sib, node)",
       "node = mmr_merge(node, sib) if (local >> (h - 1 - k)) & 1 == 0 else mmr_merge(sib, node)")]),
    ("mmr-work-wraps", "§11: merged work wraps mod 2^256 instead of saturating",
     [("return (h, min(l[1] + r[1], U256_MAX))", "return (h, (l[1] + r[1]) % (1 << 256))")]),
    ("mmr-root-no-count", "§11: leaf count not committed in the root",
     [("return H(CTX_MMR_ROOT, le64(n) + b[0] + be256(b[1]))", "return H(CTX_MMR_ROOT, bytes(8) + b[0] + be256(b[1]))")]),
    ("mmr-decode-trailing", "§11.1: decoding accepts trailing bytes",
     [('    if pos != len(b):\n        raise ValueError("TrailingBytes")\n', "")]),
    ("mmr-decode-max-65", "§11.1: list count limit 65 instead of 64",
     [("if c > 64:", "if c > 65:")]),
    ("pow-hash-strict", "§7: pow hash must be < target instead of ≤",
     [('return int.from_bytes(h, "big") <= t', 'return int.from_bytes(h, "big") < t')]),
    ("pow-hash-little-endian", "§7: pow hash read little-endian",
     [('return int.from_bytes(h, "big") <= t', 'return int.from_bytes(h, "little") <= t')]),
    ("compact-no-sign-fix", "§9.2: GetCompact without the sign-bit adjustment",
     [("    if m & 0x00800000:\n        m >>= 8\n        size += 1\n", "")]),
    ("compact-no-overflow", "§9.1: no overflow rejection (size > 34 only)",
     [("(size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32))", "(size > 34)")]),
    ("compact-zero-before-sign", "§9.1: sign checked without the word ≠ 0 condition",
     [("if word != 0 and c & 0x00800000:", "if c & 0x00800000:")]),
    ("work-no-plus-one", "§9.3: 2^256 / T instead of 2^256 / (T + 1)",
     [("return (1 << 256) // (t + 1)", "return (1 << 256) // t if t > 1 else U256_MAX")]),
    ("rms-no-floor", "§6.2: r = isqrt(ms) without max(·, 1)",
     [("r = np.array([max(math.isqrt(int(m)), 1) for m in ms], dtype=np.int64)",
       "r = np.array([math.isqrt(int(m)) for m in ms], dtype=np.int64)")]),
    ("rms-sum-then-shift", "§6.2: floor(Σ x² / D) instead of Σ (x² >> log2 D)",
     [("    sq = (x * x) >> log2(d)\n    ms = sq.sum(axis=-1)\n", "    ms = (x * x).sum(axis=-1) >> log2(d)\n")]),
    ("rms-no-clamp", "§6.2: RMS-norm output not clamped",
     [("        hits[\"rms_clamp\"] += int((np.abs(y) > ACT_MAX).sum())\n    return clamp8(y)",
       "        hits[\"rms_clamp\"] += int((np.abs(y) > ACT_MAX).sum())\n    return y")]),
    ("softmax-shift-masked", "§6.4: no t ≥ 256 guard, shift amount masked to 5 bits (as WGSL/x86 do)",
     [("        tt = np.minimum(t, 256)\n        w = np.where(tt >= 256, 0, POW2_FRAC[tt & 15] >> (tt >> 4))\n",
       "        tc = np.minimum(t, 1 << 20)\n        w = np.where(causal, POW2_FRAC[tc & 15] >> ((tc >> 4) & 31), 0)\n")]),
    ("softmax-no-prob-cap", "§6.4: p_j not capped at 127",
     [("p = np.minimum(p, 127)", "p = p")]),
    ("softmax-not-causal", "§6.4: keys after the query attended to",
     [("causal = np.tril(np.ones((S, S), dtype=bool))", "causal = np.ones((S, S), dtype=bool)")]),
    ("act-clamp-128", "§2: clamp8 to −128..127 instead of ±127",
     [("return np.clip(v, -ACT_MAX, ACT_MAX)", "return np.clip(v, -ACT_MAX - 1, ACT_MAX)")]),
    ("round-ties-down", "§2: round_shift ties toward −∞",
     [("return (v + (np.int64(1) << (s - 1))) >> s", "return (v + (np.int64(1) << (s - 1)) - 1) >> s")]),
    ("act-shift-ceil", "§6: A = ceil((log2 D + 12) / 2)",
     [("return (log2(cols) + 12) // 2\n\n\ndef residual_shift", "return (log2(cols) + 13) // 2\n\n\ndef residual_shift")]),
    ("residual-shift-ceil", "§6: R = ceil(log2 / 2) + 2",
     [("return log2(cols) // 2 + 2", "return (log2(cols) + 1) // 2 + 2")]),
    ("score-shift-of-d", "§6.4: Q computed from D instead of HD",
     [("A, RD, RF, Q = act_shift(D), residual_shift(D), residual_shift(F), score_shift(HD)",
       "A, RD, RF, Q = act_shift(D), residual_shift(D), residual_shift(F), score_shift(D)")]),
    ("gelu-no-flat", "§6.5: GELU input not clamped to ±80 before the quadratic",
     [("t = max(-80, min(80, v))", "t = max(-127, min(127, v))")]),
    ("tokens-big-endian", "§7: token u16 read big-endian",
     [("return [(b[2 * p] | (b[2 * p + 1] << 8)) % spec.vocab for p in range(spec.seq_len)]",
       "return [((b[2 * p] << 8) | b[2 * p + 1]) % spec.vocab for p in range(spec.seq_len)]")]),
    ("header-bits-before-version", "§8: bits checked before the version",
     [('    if hd["version"] != 1:\n        return None, "Version"\n    _, why = compact_decode_checked(hd["bits"])\n    if why:\n        return None, why\n',
       '    _, why = compact_decode_checked(hd["bits"])\n    if why:\n        return None, why\n    if hd["version"] != 1:\n        return None, "Version"\n')]),
    ("body-length-before-version", "§15.1: length checked before the version",
     [('    if len(b) == 0 or b[0] != 1:\n        return None, "Version"\n    if len(b) != BODY_LEN:\n        return None, "Length"\n',
       '    if len(b) != BODY_LEN:\n        return None, "Length"\n    if b[0] != 1:\n        return None, "Version"\n')]),
    ("body-height-before-root", "§15.3: height checked before the root",
     [('    if body_root(b) != hd["body_root"]:\n        return "Root"\n    if cb["height"] != hd["height"]:\n        return "Height"\n',
       '    if cb["height"] != hd["height"]:\n        return "Height"\n    if body_root(b) != hd["body_root"]:\n        return "Root"\n')]),
    ("reward-rounded-halvings", "§15.3: h / 2^20 rounded instead of floored",
     [("k = h // (1 << 20)", "k = (h + (1 << 19)) // (1 << 20)")]),
    ("embed-no-shift", "§6.1: embeddings not scaled by 2^EMBED_SHIFT",
     [("x = (model.tok[tok % sp.vocab] + model.pos) << EMBED_SHIFT", "x = model.tok[tok % sp.vocab] + model.pos")]),
    ("chain-ts-not-strict", "§12.1 #5: timestamp ≥ parent's accepted (< instead of ≤ in the rejection)",
     [('if hd["timestamp_ms"] <= ph["timestamp_ms"]:', 'if hd["timestamp_ms"] < ph["timestamp_ms"]:')]),
    ("chain-drift-strict", "§12.1 #6: timestamp = now + drift rejected",
     [('if hd["timestamp_ms"] > min(now_ms + p["max_drift_ms"], (1 << 64) - 1):',
       'if hd["timestamp_ms"] >= min(now_ms + p["max_drift_ms"], (1 << 64) - 1):')]),
    ("chain-fork-choice-ge", "§12.2: a tie moves the tip (≥ instead of >)",
     [('if e["work"] > self.tip()["work"]:', 'if e["work"] >= self.tip()["work"]:')]),
    ("chain-no-work-threshold", "§12.3 step 3: no LowWork refusal",
     [("        if claimed < self.required():\n            raise ChainError(\"LowWork\")\n", "")]),
    ("chain-threshold-inclusive", "§12.3 step 3: claimed = threshold refused (≤ instead of <)",
     [("if claimed < self.required():", "if claimed <= self.required():")]),
    ("chain-margin-5", "§12.3: WORK_MARGIN_BLOCKS = 5",
     [("WORK_MARGIN_BLOCKS = 6", "WORK_MARGIN_BLOCKS = 5")]),
    ("chain-segment-bits-first-only", "§12.3 step 2: bits checked against ASERT for the first new header only",
     [("target = self.cheap_checks(parent, hd, now_ms)  # segment",
       "target = self.cheap_checks(parent, hd, now_ms, bits=k == skipped)  # segment")]),
    ("chain-passes-interleaved", "§12.3: each header's pass run right after its cheap checks",
     [("            parent = self.entry(parent, hd, ids[k], target)\n",
       "            if self.digest(hd) != hd[\"output_digest\"]:\n                raise ChainError(\"OutputDigest\", k)\n"
       "            parent = self.entry(parent, hd, ids[k], target)\n")]),
    ("chain-index-unskipped", "§12.3: NotContiguous index counted from the first new header",
     [('raise ChainError("NotContiguous", i)', 'raise ChainError("NotContiguous", i - skipped)')]),
    ("chain-no-prune", "§12.3 pruning: side branches never deleted",
     [("        pruned = self.prune()\n", "        pruned = []\n")]),
    ("chain-prune-strict", "§12.3 pruning: a branch exactly at the threshold deleted",
     [('if hid in on_best or e["work"] < required:', 'if hid in on_best or e["work"] <= required:')]),
    ("chain-segment-partial-insert", "§12.3 step 4: headers before a false digest stored",
     [('                raise ChainError("OutputDigest", skipped + k)\n',
       '                for x in new[:k]:\n                    self.insert(x)\n'
       '                raise ChainError("OutputDigest", skipped + k)\n')]),
    ("detached-bound-at-ts", "§16 detached: ASERT bound at (h − 1, ts) instead of ts − 1",
     [('next_bits(p, hd["height"] - 1, hd["timestamp_ms"] - 1)', 'next_bits(p, hd["height"] - 1, hd["timestamp_ms"])')]),
    ("detached-pow-before-bound", "§16 detached: pow hash checked before the ASERT bound",
     [('    if target > compact_decode(next_bits(p, hd["height"] - 1, hd["timestamp_ms"] - 1)):\n        raise RuleError("Target")\n    enc = header_encode(hd)\n    if not meets_target(pow_hash(enc[:TEMPLATE_LEN], hd["nonce"], hd["output_digest"]), target):\n        raise RuleError("PowHash")\n',
       '    enc = header_encode(hd)\n    if not meets_target(pow_hash(enc[:TEMPLATE_LEN], hd["nonce"], hd["output_digest"]), target):\n        raise RuleError("PowHash")\n    if target > compact_decode(next_bits(p, hd["height"] - 1, hd["timestamp_ms"] - 1)):\n        raise RuleError("Target")\n')]),
    ("conformance-gain-shift", "§14.1: gain applied as (w · mul) >> 8",
     [("w = np.clip(((w.astype(np.int64) * mul) >> 7) + add, -127, 127)",
       "w = np.clip(((w.astype(np.int64) * mul) >> 8) + add, -127, 127)")]),
]


# Cheap files first: with --fail-fast a caught mutant stops at its first failure.
FILES = [str(HERE / f) for f in ("targets.json", "header.json", "body.json", "chain.json", "mmr.json", "asert.json",
                                  "puzzle.json", "forward.json", "devnet.json", "asert_bch.json", "mainnet.json")]


def run_one(name, edits, source, timeout):
    text = source
    for old, new in edits:
        n = text.count(old)
        if n != 1:
            return name, None, f"pattern occurs {n} times: {old[:60]!r}"
        text = text.replace(old, new)
    with tempfile.TemporaryDirectory() as d:
        mutant = Path(d) / "reference.py"
        mutant.write_text(text)
        cmd = [sys.executable, str(HERE / "conformance.py"), "--fail-fast", "--quiet", *FILES, "--",
               sys.executable, str(mutant), "--serve"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=dict(os.environ, PYTHONWARNINGS="ignore"))
        except subprocess.TimeoutExpired:
            return name, True, "timed out (counted as caught)"
        first = next((l for l in r.stdout.splitlines() if l.startswith("FAIL")), r.stdout.strip()[-200:])
        return name, r.returncode != 0, first


def main(argv):
    jobs = os.cpu_count() or 2
    names = []
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a == "-j":
            jobs = int(args.pop(0))
        else:
            names.append(a)
    source = (HERE / "reference.py").read_text()
    t0 = time.perf_counter()
    base = subprocess.run([sys.executable, str(HERE / "conformance.py"), "--quiet", "--",
                           sys.executable, str(HERE / "reference.py"), "--serve"], capture_output=True, text=True)
    if base.returncode != 0:
        print(base.stdout)
        print("the unmutated reference fails the suite; no mutation score")
        return 1
    selected = [m for m in MUTATIONS if not names or m[0] in names]
    with ThreadPoolExecutor(jobs) as ex:
        results = list(ex.map(lambda m: run_one(m[0], m[2], source, 300), selected))
    caught = 0
    for (name, desc, _), (_, ok, detail) in zip(selected, results):
        status = {True: "caught", False: "SURVIVED", None: "BROKEN"}[ok]
        caught += ok is True
        print(f"{status:8} {name:28} {desc}" + ("" if ok else f"\n         {detail}"))
        if ok and "-v" in argv:
            print(f"         {detail}")
    print(f"mutation score: {caught}/{len(selected)} caught "
          f"({100 * caught // max(len(selected), 1)} %, {time.perf_counter() - t0:.0f} s)")
    return 0 if caught == len(selected) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
