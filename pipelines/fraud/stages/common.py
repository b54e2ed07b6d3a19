"""Helpers shared by the fraud stages and predict.py.

Everything that touches disk goes through here so that a rebuild from scratch
writes byte-identical files: Parquet with fixed writer settings, JSON with
sorted keys and rounded floats, pickles with a fixed protocol. The column
lists and the feature recipe live here too, so training and scoring new
claims can never disagree about them.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import polars as pl

ID = "claim_id"
LABEL = "fraud"

CATEGORICAL = [
    "policy_type",
    "region",
    "sales_channel",
    "incident_type",
    "incident_severity",
    "police_report",
    "repair_shop",
]
NUMERIC = [
    "claimant_age",
    "policy_tenure_months",
    "annual_premium",
    "deductible",
    "vehicle_age_years",
    "vehicle_value",
    "annual_mileage",
    "credit_score",
    "prior_claims",
    "days_since_policy_start",
    "incident_hour",
    "witnesses",
    "bodily_injuries",
    "vehicles_involved",
    "claim_amount",
    "days_to_report",
]
# Made by add_features() from the cleaned columns above.
ENGINEERED = [
    "claim_to_premium",
    "claim_to_vehicle_value",
    "early_claim",
    "night_incident",
    "late_report",
]

FLOAT_DIGITS = 6  # JSON floats are rounded so they print the same everywhere
PICKLE_PROTOCOL = 5
ROW_GROUP_SIZE = 100_000  # fixed, so row groups never depend on polars' defaults


def write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    """Write Parquet with every writer setting pinned (no timestamps are written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(
        path,
        compression="zstd",
        compression_level=3,
        statistics=True,
        row_group_size=ROW_GROUP_SIZE,
        use_pyarrow=False,
    )


def read_parquet(path: str | Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def read_table(path: str | Path) -> pl.DataFrame:
    """Parquet or CSV, by extension: new claims may arrive as either."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        # Types fixed up front: a column that happens to be empty in a small
        # file must not be read as text.
        types = {c: pl.Float64 for c in NUMERIC} | {c: pl.String for c in [ID, *CATEGORICAL]}
        return pl.read_csv(path, schema_overrides=types, infer_schema_length=None)
    return read_parquet(path)


def _rounded(value):
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None  # JSON has no NaN
        return round(value, FLOAT_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
    return value


def write_json(obj, path: str | Path) -> None:
    """Sorted keys, rounded floats, two-space indent and a final newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_rounded(obj), sort_keys=True, indent=2, allow_nan=False)
    path.write_bytes((text + "\n").encode("utf-8"))  # bytes: no newline translation on Windows


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_pickle(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=PICKLE_PROTOCOL))


def load_pickle(path: str | Path):
    return pickle.loads(Path(path).read_bytes())


def single_thread() -> None:
    """Run BLAS and OpenMP on one thread, whatever the machine's core count.

    Fitting then adds floating-point numbers in the same order everywhere,
    and HistGradientBoosting's pickle (which records its thread count) is the
    same on a laptop and on a 64-core worker. Call after importing sklearn.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=1)
    # numeric_env pinned the OpenBLAS kernel; another BLAS (MKL, Accelerate)
    # ignores it and may give other last bits: say so in the stage's log.
    for lib in threadpool_info():
        if lib["user_api"] == "blas" and lib.get("architecture") != "Prescott":
            print(
                f"warning: BLAS {lib['internal_api']} {lib.get('version')} "
                f"({lib.get('architecture')}) is not OpenBLAS pinned to Prescott: "
                "results may differ from other machines'",
                file=sys.stderr,
            )


# --- cleaning and features -------------------------------------------------


def fit_fill_values(train: pl.DataFrame) -> dict:
    """Median of every numeric column, learnt on the training rows only.

    Every numeric column gets a value, not only those with gaps today, so
    a new claim with a different field missing can still be scored.
    """
    values = {}
    for col in NUMERIC:
        median = train[col].median()
        if train[col].dtype.is_integer():
            median = int(round(median))
        else:
            median = round(float(median), FLOAT_DIGITS)
        values[col] = median
    return values


def clean(df: pl.DataFrame, fill_values: dict) -> pl.DataFrame:
    """Fill gaps: numeric columns with the training median, categories with "unknown".

    A missing police report or repair shop is information in itself (the
    claimant did not say), so it becomes its own "unknown" category rather
    than the most common answer.
    """
    return df.with_columns(
        *(pl.col(c).fill_null(pl.lit(fill_values[c]).cast(df.schema[c])) for c in NUMERIC),
        *(pl.col(c).fill_null("unknown") for c in CATEGORICAL),
    )


def add_features(
    df: pl.DataFrame, early_claim_days: int, night_start: int, night_end: int, late_report_days: int
) -> pl.DataFrame:
    """Ratios and flags that adjusters use as fraud red flags."""
    hour = pl.col("incident_hour")
    if night_start > night_end:  # the night wraps past midnight, e.g. 23 -> 5
        night = (hour >= night_start) | (hour < night_end)
    else:
        night = (hour >= night_start) & (hour < night_end)
    return df.with_columns(
        claim_to_premium=pl.col("claim_amount") / pl.col("annual_premium"),
        claim_to_vehicle_value=pl.col("claim_amount")
        / pl.col("vehicle_value").clip(lower_bound=1.0),
        early_claim=(pl.col("days_since_policy_start") < early_claim_days).cast(pl.Int8),
        night_incident=night.cast(pl.Int8),
        late_report=(pl.col("days_to_report") > late_report_days).cast(pl.Int8),
    )


def transform(df: pl.DataFrame, transformer: dict) -> pl.DataFrame:
    """Raw or prepared claims -> model features, with the fitted transformer.

    The transformer is a plain dict (fill values, feature settings and a
    fitted scikit-learn ColumnTransformer) so unpickling it needs no code
    from this pipeline.
    """
    df = clean(df, transformer["fill_values"])
    df = add_features(df, **transformer["feature_settings"])
    return transformer["encoder"].transform(df.select(NUMERIC + ENGINEERED + CATEGORICAL))


def xy(features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and label vector from a featurized table."""
    x = features.drop(ID, LABEL).to_numpy().astype(np.float64)
    y = features[LABEL].to_numpy().astype(np.int64)
    return x, y
