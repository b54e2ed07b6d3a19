"""Clean raw claims and split them into stratified train and test sets.

Missing values, per column (fill values are learnt on the training rows only,
so nothing about the test rows leaks into training):
  claimant_age, vehicle_value, annual_mileage, credit_score, incident_hour,
  witnesses (and any other numeric column that has a gap): training median.
  police_report, repair_shop (and any other category): "unknown", its own
  category, because "the claimant did not say" is itself a signal.
The fill values are written beside the split as fill_values.json; featurize
keeps them in the transformer so new claims are cleaned the same way.
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse
from pathlib import Path

import numpy as np
import polars as pl
from common import LABEL, clean, fit_fill_values, read_parquet, write_json, write_parquet


def stratified_test_mask(labels: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """True for test rows: the same share of each class, chosen by a seeded shuffle.

    (scikit-learn's train_test_split does this too, but importing it costs a
    second of start-up for one function.)
    """
    rng = np.random.default_rng([seed, 1])  # a stream of its own, not generate's
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):  # sorted, so the draw order is fixed
        rows = np.flatnonzero(labels == cls)
        mask[rng.permutation(rows)[: round(len(rows) * test_size)]] = True
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", required=True, help="raw claims Parquet")
    ap.add_argument("--test-size", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument(
        "--out", required=True, help="folder for train/test Parquet and fill_values.json"
    )
    args = ap.parse_args()

    claims = read_parquet(args.claims)
    # Both sides keep the raw file's row order.
    is_test = stratified_test_mask(claims[LABEL].to_numpy(), args.test_size, args.seed)
    train = claims.filter(pl.Series(~is_test))
    test = claims.filter(pl.Series(is_test))

    fill_values = fit_fill_values(train)
    out = Path(args.out)
    write_parquet(clean(train, fill_values), out / "train.parquet")
    write_parquet(clean(test, fill_values), out / "test.parquet")
    write_json(fill_values, out / "fill_values.json")
    print(
        f"train {train.height} rows ({train[LABEL].sum()} fraud), "
        f"test {test.height} rows ({test[LABEL].sum()} fraud) -> {out}"
    )


if __name__ == "__main__":
    main()
