"""Score new claims with the shipped model: prints P(fraud) per claim.

    python predict.py data/raw/claims.parquet --limit 10
    python predict.py new_claims.csv --out scored.csv

Uses models/transformer.pkl (cleaning + features, fitted on the training
claims) and models/best.pkl (the model the select stage shipped). Not a
stage: this is what a production job would run on incoming claims.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "stages"))

import numeric_env  # noqa: E402, F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import polars as pl  # noqa: E402
from common import ID, load_pickle, read_json, read_table, transform  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "claims", help="Parquet or CSV of claims, raw columns as in data/raw/claims.parquet"
    )
    ap.add_argument("--model", default=HERE / "models/best.pkl", type=Path)
    ap.add_argument("--transformer", default=HERE / "models/transformer.pkl", type=Path)
    ap.add_argument(
        "--threshold",
        type=float,
        help="flag claims at or above this probability (default: the one the model was evaluated at)",
    )
    ap.add_argument("--limit", type=int, help="score only the first N claims")
    ap.add_argument(
        "--out", type=Path, help="write the scores to this .csv or .parquet instead of printing"
    )
    args = ap.parse_args()

    threshold = args.threshold
    if threshold is None:
        best = read_json(HERE / "reports/best.json")["selected"]
        threshold = read_json(HERE / f"reports/{best}.json")["threshold"]

    claims = read_table(args.claims)
    if args.limit is not None:
        claims = claims.head(args.limit)
    features = transform(claims, load_pickle(args.transformer))
    proba = load_pickle(args.model).predict_proba(features.to_numpy())[:, 1]

    ids = claims[ID] if ID in claims.columns else pl.Series(ID, range(claims.height))
    scores = pl.DataFrame(
        {ID: ids, "fraud_probability": proba.round(4), "flagged": proba >= threshold}
    )
    if args.out is None:
        with pl.Config(tbl_rows=-1):
            print(scores)
    elif args.out.suffix.lower() == ".csv":
        scores.write_csv(args.out)
    else:
        scores.write_parquet(args.out)


if __name__ == "__main__":
    main()
