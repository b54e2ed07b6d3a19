"""Turn cleaned claims into model features and save the fitted transformer.

Adds red-flag features (claim-to-premium and claim-to-vehicle-value ratios,
an early-claim flag, a night-incident flag, a late-report flag), one-hot
encodes the categories and scales the numbers. Everything is fitted on the
training rows only. The transformer (fill values + feature settings + fitted
encoder) goes to models/transformer.pkl so predict.py can score new claims
exactly as the model saw its training data.
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse
from pathlib import Path

import polars as pl
from common import (
    CATEGORICAL,
    ENGINEERED,
    ID,
    LABEL,
    NUMERIC,
    add_features,
    read_json,
    read_parquet,
    save_pickle,
    transform,
    write_parquet,
)
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True, help="folder written by prepare")
    ap.add_argument(
        "--early-claim-days",
        type=int,
        required=True,
        help="a claim this soon after the policy starts is an early claim",
    )
    ap.add_argument("--night-start", type=int, required=True, help="first night hour (0-23)")
    ap.add_argument("--night-end", type=int, required=True, help="first hour after the night")
    ap.add_argument(
        "--late-report-days",
        type=int,
        required=True,
        help="a claim reported later than this after the incident is late",
    )
    ap.add_argument("--out", required=True, help="folder for train/test feature Parquet")
    ap.add_argument("--transformer", required=True, help="where to pickle the fitted transformer")
    args = ap.parse_args()

    prepared = Path(args.prepared)
    train = read_parquet(prepared / "train.parquet")
    test = read_parquet(prepared / "test.parquet")
    settings = {
        "early_claim_days": args.early_claim_days,
        "night_start": args.night_start,
        "night_end": args.night_end,
        "late_report_days": args.late_report_days,
    }

    encoder = ColumnTransformer(
        [
            ("num", StandardScaler(), NUMERIC + ENGINEERED),
            # Categories sorted by the encoder; one never seen in training scores as all zeros.
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="polars")
    encoder.fit(add_features(train, **settings).select(NUMERIC + ENGINEERED + CATEGORICAL))
    transformer = {
        "fill_values": read_json(prepared / "fill_values.json"),
        "feature_settings": settings,
        "encoder": encoder,
    }

    out = Path(args.out)
    for name, frame in (("train", train), ("test", test)):
        features = pl.concat(
            [frame.select(ID), transform(frame, transformer), frame.select(LABEL)], how="horizontal"
        )
        write_parquet(features, out / f"{name}.parquet")
    save_pickle(transformer, args.transformer)
    print(
        f"{len(encoder.get_feature_names_out())} features -> {out}, transformer -> {args.transformer}"
    )


if __name__ == "__main__":
    main()
