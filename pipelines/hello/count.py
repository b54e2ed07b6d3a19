"""Count words in every .txt file of a folder."""

import argparse
import collections
import json
import pathlib

from words import words

ap = argparse.ArgumentParser()
ap.add_argument("--min-length", type=int, default=1)
ap.add_argument("folder")
ap.add_argument("out")
args = ap.parse_args()

counts = collections.Counter()
for path in sorted(pathlib.Path(args.folder).glob("*.txt")):
    counts.update(words(path.read_text(), args.min_length))
pathlib.Path(args.out).write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")
