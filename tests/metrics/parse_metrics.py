"""Parses a node's /metrics with the Prometheus project's own parser.

Usage: parse_metrics.py URL
Prints one JSON object {sample_name{labels}: value} on stdout; exits non-zero if
the text does not parse (the format, not the values, is what this checks).
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as resp:
        ctype = resp.headers.get("Content-Type", "")
        text = resp.read().decode("utf-8")
    if not ctype.startswith("application/openmetrics-text"):
        sys.exit(f"unexpected Content-Type {ctype!r}")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + ("{" + labels + "}" if labels else "")] = s.value
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
