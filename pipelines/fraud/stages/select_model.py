"""Pick the model to ship: the best recall among models precise enough.

A model passes when its precision on the test claims is at least
--min-precision: investigators can only chase so many honest claims. Among
those that pass, the highest recall wins; ties go to the higher PR-AUC, then
to the name. When no model passes, the most precise one is shipped and the
report says the floor was missed. The winner is copied byte for byte to
models/best.pkl; reports/best.json says why it won.

(Named select_model.py, not select.py: the script's folder comes first on
sys.path, and a select.py there would hide the standard library's `select`
module from everything the script imports.)
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse
import shutil
from pathlib import Path

from common import read_json, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--candidates", nargs="+", required=True, help="model names, e.g. logreg forest boosting"
    )
    ap.add_argument("--models", required=True, help="folder holding NAME.pkl")
    ap.add_argument("--reports", required=True, help="folder holding NAME.json metrics")
    ap.add_argument("--min-precision", type=float, required=True)
    ap.add_argument("--out-model", required=True)
    ap.add_argument("--out-report", required=True)
    args = ap.parse_args()

    candidates = {}
    for name in args.candidates:
        m = read_json(Path(args.reports) / f"{name}.json")
        candidates[name] = {
            "recall": m["recall"],
            "precision": m["precision"],
            "pr_auc": m["pr_auc"],
            "passed_floor": m["precision"] >= args.min_precision,
        }

    passed = [n for n in candidates if candidates[n]["passed_floor"]]
    if passed:
        rank = lambda n: (candidates[n]["recall"], candidates[n]["pr_auc"], n)  # noqa: E731
        winner = max(passed, key=rank)
        reason = f"highest recall among models with precision >= {args.min_precision}"
    else:
        rank = lambda n: (candidates[n]["precision"], candidates[n]["recall"], n)  # noqa: E731
        winner = max(candidates, key=rank)
        reason = f"no model reached precision {args.min_precision}; shipped the most precise one"

    shutil.copyfile(Path(args.models) / f"{winner}.pkl", args.out_model)
    write_json(
        {
            "selected": winner,
            "reason": reason,
            "min_precision": args.min_precision,
            "floor_met": bool(passed),
            "recall": candidates[winner]["recall"],
            "precision": candidates[winner]["precision"],
            "candidates": candidates,
        },
        args.out_report,
    )
    print(f"selected {winner}: {reason}")


if __name__ == "__main__":
    main()
