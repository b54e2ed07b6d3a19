"""Train one fraud model on the training features.

--model picks logistic regression, a random forest or histogram gradient
boosting; every other `--KEY VALUE` pair is one of that estimator's own
arguments (the model's section of params.yaml, expanded by reprobuild). Fraud is rare, so with
--class-weight balanced each class weighs in inversely to its frequency: the
few frauds count as much, in total, as the many honest claims. Every random
choice is seeded from --seed and fitting runs on one thread, so the same
inputs give a byte-identical pickle. Every setting of the fitted estimator
is written beside it as JSON.
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse

from common import read_parquet, save_pickle, single_thread, write_json, xy
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

ESTIMATORS = {
    "logreg": lambda hp, cw, seed: LogisticRegression(**hp, class_weight=cw, random_state=seed),
    "forest": lambda hp, cw, seed: RandomForestClassifier(
        **hp, class_weight=cw, n_jobs=1, random_state=seed
    ),
    # early_stopping=False: a fixed number of trees, no hidden validation split.
    "boosting": lambda hp, cw, seed: HistGradientBoostingClassifier(
        **hp, early_stopping=False, class_weight=cw, random_state=seed
    ),
}


def value(text: str):
    """A hyperparameter from the command line: int, float, else the string ("sqrt")."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def hyperparameters(extra: list[str], ap) -> dict:
    """`--KEY VALUE` pairs -> {KEY: VALUE}."""
    if len(extra) % 2 or not all(k.startswith("--") for k in extra[::2]):
        ap.error(f"hyperparameters must come as --KEY VALUE pairs, got: {' '.join(extra)}")
    return {k[2:]: value(v) for k, v in zip(extra[::2], extra[1::2], strict=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["logreg", "forest", "boosting"], required=True)
    ap.add_argument("--features", required=True, help="training features Parquet")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--class-weight", choices=["balanced", "none"], required=True)
    ap.add_argument("--out", required=True, help="model pickle")
    ap.add_argument("--params-out", required=True, help="JSON of the hyperparameters used")
    args, extra = ap.parse_known_args()
    hp = hyperparameters(extra, ap)
    class_weight = None if args.class_weight == "none" else args.class_weight
    try:
        model = ESTIMATORS[args.model](hp, class_weight, args.seed)
    except TypeError as exc:  # an argument the estimator does not take
        ap.error(f"--model {args.model}: {exc}")

    single_thread()

    x, y = xy(read_parquet(args.features))
    model.fit(x, y)
    save_pickle(model, args.out)
    write_json(
        {
            "model": args.model,
            "estimator": type(model).__name__,
            "hyperparameters": hp,
            "all_settings": model.get_params(),
        },
        args.params_out,
    )
    print(f"{args.model}: fitted on {len(y)} rows -> {args.out}")


if __name__ == "__main__":
    main()
