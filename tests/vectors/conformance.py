#!/usr/bin/env python3
"""Runs an implementation of docs/PROTOCOL.md against the whole vector suite.

The implementation is any command that speaks the conformance protocol of
tests/vectors/README.md (one JSON request per line on stdin, one JSON reply per
line on stdout). Standard library only.

    python3 tests/vectors/conformance.py [options] [vector files...] -- COMMAND [ARGS...]

    # tpow-core (Rust):
    python3 tests/vectors/conformance.py -- cargo run -q --release -p tpow-core --example conformance
    # the independent Python implementation:
    python3 tests/vectors/conformance.py -- python3 tests/vectors/reference.py --serve

Options: --fail-fast (stop at the first failing case), --quiet (summary only),
--allow-unsupported (ops the implementation answers with `unsupported` are
skipped instead of failing). Without files, every *.json in this directory.
Exit status 0 iff every case passed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMAT = "tpow-vectors/1"


def legacy_requests(v):
    """devnet.json / mainnet.json (PROTOCOL.md §14 table) as protocol cases."""
    chain, spec = v["chain"], v["spec"]
    yield "genesis", {"op": "genesis", "input": {"chain": chain},
                      "expect": {"header": v["genesis_header"], "id": v["genesis_id"]}}
    yield "gelu_table", {"op": "gelu_table", "input": {}, "expect": {"table": v["gelu_table"]}}
    seen = set()
    for c in v["cases"]:
        tag = f"prev_id={c['prev_id'][:8]} nonce={c['nonce']}"
        for w in c["weights"]:
            key = (c["prev_id"], w["layer"], w["kind"])
            if key in seen:
                continue
            seen.add(key)
            yield f"weights {tag} layer={w['layer']} kind={w['kind']}", {
                "op": "weights",
                "input": {"spec": spec, "model": {"prev_id": c["prev_id"]}, "layer": w["layer"],
                          "kind": w["kind"], "count": len(w["first_bytes"]) // 2},
                "expect": {"weights": w["first_bytes"]}}
        yield f"puzzle {tag}", {
            "op": "puzzle", "input": {"spec": spec, "template": c["template"], "nonce": c["nonce"]},
            "expect": {"tokens": c["tokens"], "output": c["output"], "output_digest": c["output_digest"],
                       "pow_hash": c["pow_hash"]}}


def suite_cases(v):
    """(name, case) for every case of a vector file; table cases expanded."""
    if "format" not in v:
        if "chain" not in v:
            # A file this runner does not speak yet (flyclient.json is checked
            # by reference.py and tpow-core's flyclient_vectors test).
            return
        yield from legacy_requests(v)
        return
    if v["format"] != FORMAT:
        raise SystemExit(f"unknown vector format {v['format']!r} (this runner speaks {FORMAT})")
    for i, c in enumerate(v["cases"]):
        name = c.get("name", f"case {i}")
        if "table" in c:
            t = c["table"]
            nin = len(t["input_fields"])
            for k, row in enumerate(t["rows"]):
                inp = dict(c["input"], **dict(zip(t["input_fields"], row[:nin])))
                exp = dict(zip(t["expect_fields"], row[nin:]))
                yield f"{name} [{k}]", {"op": c["op"], "input": inp, "expect": exp}
        else:
            yield name, c


def check(case, rep):
    """None if the reply is what the case expects, else a description."""
    if "error" in case:
        if rep.get("error") == case["error"]:
            return None
        return f"expected error {case['error']}, got {json.dumps(rep)[:300]}"
    if "output" not in rep:
        return f"expected output, got {json.dumps(rep)[:300]}"
    out = rep["output"]
    for k, want in case["expect"].items():
        if out.get(k) != want:
            return f"{k}: expected {json.dumps(want)[:200]}, got {json.dumps(out.get(k))[:200]}"
    # Rule hit counts are optional for an implementation; compared when returned.
    if "hits" in case and "hits" in out:
        for k, want in case["hits"].items():
            if out["hits"].get(k) != want:
                return f"hits.{k}: expected {want}, got {out['hits'].get(k)}"
    return None


def main(argv):
    if "--" not in argv:
        print(__doc__)
        return 2
    sep = argv.index("--")
    opts, cmd = argv[1:sep], argv[sep + 1:]
    flags = {o for o in opts if o.startswith("--")}
    files = [Path(o) for o in opts if not o.startswith("--")] or sorted(HERE.glob("*.json"))
    fail_fast, quiet = "--fail-fast" in flags, "--quiet" in flags
    allow_unsupported = "--allow-unsupported" in flags

    work = []  # (file, name, case)
    for f in files:
        v = json.loads(Path(f).read_text())
        for name, case in suite_cases(v):
            work.append((Path(f).name, name, case))

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def feed():
        try:
            for i, (_, _, c) in enumerate(work):
                proc.stdin.write(json.dumps({"id": i, "op": c["op"], "input": c["input"]}) + "\n")
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    stats = {}  # file -> [passed, failed, unsupported]
    failed = 0
    answered = 0
    for line in proc.stdout:
        if not line.strip():
            continue
        rep = json.loads(line)
        i = rep.get("id")
        if not isinstance(i, int) or not 0 <= i < len(work):
            print(f"reply with unknown id: {line.strip()[:200]}")
            failed += 1
            continue
        answered += 1
        fname, name, case = work[i]
        st = stats.setdefault(fname, [0, 0, 0])
        if "unsupported" in rep and allow_unsupported:
            st[2] += 1
            continue
        why = check(case, rep)
        if why is None:
            st[0] += 1
            continue
        st[1] += 1
        failed += 1
        if not quiet:
            print(f"FAIL {fname}: {name} ({case['op']}): {why}")
        if fail_fast:
            break
        if answered == len(work):
            break
        continue
    proc.kill() if fail_fast and failed else None
    proc.stdout.close()
    proc.wait()
    missing = len(work) - answered
    if missing and not (fail_fast and failed):
        print(f"FAIL: {missing} requests got no reply (the implementation exited with {proc.returncode})")
        failed += missing
    for fname, (p, f_, u) in sorted(stats.items()):
        if not quiet or f_:
            print(f"{fname}: {p} passed, {f_} failed" + (f", {u} unsupported (skipped)" if u else ""))
    total_pass = sum(s[0] for s in stats.values())
    print(f"conformance: {total_pass} passed, {failed} failed, {len(work)} cases "
          f"({'PASS' if failed == 0 else 'FAIL'}: {' '.join(cmd)})")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
