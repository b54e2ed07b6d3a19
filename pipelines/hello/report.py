"""The top words and totals, as metrics."""

import argparse
import json
import pathlib

ap = argparse.ArgumentParser()
ap.add_argument("counts")
ap.add_argument("--top", type=int, default=3)
ap.add_argument("out")
args = ap.parse_args()

counts = json.loads(pathlib.Path(args.counts).read_text())
top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]
report = {"distinct_words": len(counts), "total_words": sum(counts.values()), "top": dict(top)}
pathlib.Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
