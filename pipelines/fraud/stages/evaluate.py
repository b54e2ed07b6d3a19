"""Score one trained model on the held-out test claims.

Recall comes first: a missed fraud costs far more than a second look at an
honest claim. Writes a flat metrics file (recall, precision, F1 and the
confusion matrix at --threshold, plus threshold-free ROC-AUC and PR-AUC), a
separate precision-recall curve thinned to --curve-points points, and the
confusion matrix again as records (actual, predicted, count) for plotting.
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse

import numpy as np
from common import load_pickle, read_parquet, single_thread, write_json, xy
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

CURVE_DIGITS = 4  # the curve is for plotting; 4 digits keep the file small and stable


def thin_curve(y, proba, points: int) -> list[dict]:
    """The precision-recall curve at `points` evenly spaced recall levels.

    For each level, the strictest threshold that still reaches that recall.
    """
    precision, recall, thresholds = precision_recall_curve(y, proba)
    # recall falls as the threshold rises; the last pair ("flag nothing") has no threshold.
    curve = []
    for level in np.linspace(1 / points, 1.0, points):
        i = int(np.nonzero(recall[:-1] >= level - 1e-12)[0].max())
        point = {"threshold": thresholds[i], "precision": precision[i], "recall": recall[i]}
        curve.append({k: round(float(v), CURVE_DIGITS) for k, v in point.items()})
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model pickle")
    ap.add_argument("--features", required=True, help="test features Parquet")
    ap.add_argument(
        "--threshold", type=float, required=True, help="flag a claim when P(fraud) >= this"
    )
    ap.add_argument("--curve-points", type=int, required=True)
    ap.add_argument("--metrics-out", required=True)
    ap.add_argument("--curve-out", required=True)
    ap.add_argument("--confusion-out", required=True)
    args = ap.parse_args()

    single_thread()
    model = load_pickle(args.model)
    x, y = xy(read_parquet(args.features))
    proba = model.predict_proba(x)[:, 1]
    flagged = (proba >= args.threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, flagged, labels=[0, 1]).ravel()

    metrics = {
        "recall": recall_score(y, flagged, zero_division=0),
        "precision": precision_score(y, flagged, zero_division=0),
        "f1": f1_score(y, flagged, zero_division=0),
        "roc_auc": roc_auc_score(y, proba),
        "pr_auc": average_precision_score(y, proba),
        "threshold": args.threshold,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "test_rows": len(y),
        "test_fraud": int(y.sum()),
    }
    write_json(metrics, args.metrics_out)
    write_json({"points": thin_curve(y, proba, args.curve_points)}, args.curve_out)
    cells = {("honest", "honest"): tn, ("honest", "fraud"): fp, ("fraud", "honest"): fn}
    cells[("fraud", "fraud")] = tp
    write_json(
        [{"actual": a, "predicted": p, "count": int(n)} for (a, p), n in cells.items()],
        args.confusion_out,
    )
    print(
        f"{args.model}: recall {metrics['recall']:.3f} precision {metrics['precision']:.3f} "
        f"roc_auc {metrics['roc_auc']:.3f} pr_auc {metrics['pr_auc']:.3f}"
    )


if __name__ == "__main__":
    main()
