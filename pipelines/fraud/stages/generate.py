"""Generate seeded synthetic motor-insurance claims, a few percent of them fraud.

Fraud is drawn from a hidden score built on red flags adjusters know (a claim
soon after the policy starts, a claim large against the premium, no police
report, no witnesses, a night-time incident, many prior claims, ...) plus
noise the data cannot explain, so a good model reaches a ROC-AUC of about
0.85, not 1.0. Some fields are then blanked at random, as in real claim
forms. Same arguments, same bytes.
"""

from __future__ import annotations

import numeric_env  # noqa: F401  (first: pins the numeric code paths before numpy loads)

# isort: split
import argparse

import numpy as np
import polars as pl
from common import LABEL, write_parquet


def pick(rng, n, options: dict) -> np.ndarray:
    """n draws from {label: probability}."""
    labels = list(options)
    probs = np.array(list(options.values()), dtype=float)
    return np.array(labels, dtype=object)[rng.choice(len(labels), size=n, p=probs / probs.sum())]


def blank(rng, values: np.ndarray, rate: float) -> list:
    """Values as a list with about `rate` of them missing (None)."""
    missing = rng.random(len(values)) < rate
    return [None if m else v for m, v in zip(missing, values.tolist(), strict=False)]


def offset_for_rate(score: np.ndarray, rate: float) -> float:
    """The shift of the score that makes the expected fraud rate `rate` (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(score + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def generate(rows: int, seed: int, fraud_rate: float) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = rows

    policy_type = pick(rng, n, {"basic": 0.35, "standard": 0.45, "premium": 0.20})
    region = pick(
        rng, n, {"north": 0.22, "south": 0.25, "east": 0.18, "west": 0.20, "central": 0.15}
    )
    sales_channel = pick(rng, n, {"agent": 0.45, "broker": 0.25, "online": 0.30})
    claimant_age = np.clip(rng.normal(46, 14, n), 18, 90).round().astype(np.int64)
    tenure = np.clip(rng.exponential(40, n), 1, 360).round().astype(np.int64)
    vehicle_age = np.clip(rng.gamma(2.0, 3.0, n), 0, 30).round().astype(np.int64)
    vehicle_value = (38_000 * 0.87**vehicle_age * rng.lognormal(0, 0.35, n)).round(2)
    base = np.select([policy_type == "basic", policy_type == "standard"], [550.0, 850.0], 1300.0)
    young = np.where(claimant_age < 25, 1.6, 1.0)
    annual_premium = (
        base * young * (1 + vehicle_value / 60_000) * rng.lognormal(0, 0.15, n)
    ).round(2)
    deductible = rng.choice([250, 500, 1000, 2000], size=n, p=[0.2, 0.45, 0.25, 0.1]).astype(
        np.int64
    )
    annual_mileage = rng.lognormal(np.log(12_000), 0.45, n).round()
    credit_score = np.clip(rng.normal(690, 70, n), 300, 850).round()
    prior_claims = np.minimum(rng.poisson(0.4, n), 8).astype(np.int64)
    days_since_start = rng.integers(0, 365, n)

    incident_type = pick(
        rng,
        n,
        {
            "collision": 0.45,
            "theft": 0.08,
            "vandalism": 0.10,
            "weather": 0.15,
            "fire": 0.04,
            "glass": 0.18,
        },
    )
    # Severity depends on the kind of incident: glass is minor, theft often total.
    sev_u = rng.random(n)
    total_cut = np.select(
        [incident_type == "theft", incident_type == "fire", incident_type == "glass"],
        [0.55, 0.35, 0.0],
        0.06,
    )
    major_cut = total_cut + np.where(incident_type == "glass", 0.02, 0.30)
    severity = np.where(
        sev_u < total_cut, "total_loss", np.where(sev_u < major_cut, "major", "minor")
    ).astype(object)
    # Most incidents happen in the day; a tail at any hour.
    incident_hour = np.where(rng.random(n) < 0.8, rng.normal(14, 4, n), rng.uniform(0, 24, n))
    incident_hour = np.mod(np.floor(incident_hour), 24).astype(np.int64)
    witnesses = np.minimum(rng.poisson(np.where(incident_type == "collision", 1.2, 0.5)), 5).astype(
        np.int64
    )
    police_p = np.select(
        [incident_type == "theft", incident_type == "collision", incident_type == "glass"],
        [0.85, 0.55, 0.05],
        0.35,
    )
    police_report = np.where(rng.random(n) < police_p, "yes", "no").astype(object)
    bodily_injuries = np.where(
        incident_type == "collision", np.minimum(rng.poisson(0.35, n), 4), 0
    ).astype(np.int64)
    vehicles_involved = np.where(
        incident_type == "collision", 1 + np.minimum(rng.poisson(0.7, n), 4), 1
    ).astype(np.int64)
    repair_shop = np.where(
        severity == "total_loss", "none", np.where(rng.random(n) < 0.65, "partner", "independent")
    ).astype(object)
    claim_amount = np.select(
        [severity == "minor", severity == "major"],
        [rng.lognormal(np.log(1_400), 0.6, n), rng.lognormal(np.log(6_500), 0.5, n)],
        vehicle_value * rng.uniform(0.8, 1.05, n),
    ) + bodily_injuries * rng.lognormal(np.log(5_000), 0.7, n)
    days_to_report = np.minimum(rng.exponential(3.0, n), 120)

    # Hidden fraud score: red flags plus noise that no column explains.
    early = days_since_start < 30
    log_ratio = np.log(claim_amount / annual_premium)
    score = (
        1.3 * early
        + 0.55 * (log_ratio - log_ratio.mean())
        + 0.8 * ((police_report == "no") & (incident_type != "glass"))
        + 0.5 * (witnesses == 0)
        + 0.9 * ((incident_hour >= 23) | (incident_hour < 5))
        + 0.35 * prior_claims
        + 0.6 * (tenure < 12)
        + 0.8 * (incident_type == "theft")
        + 0.5 * (incident_type == "fire")
        + 0.7 * ((severity == "total_loss") & (vehicle_age > 10))
        + 0.5 * (repair_shop == "independent")
        - 0.005 * (credit_score - 690)
        + 0.8 * (early & (police_report == "no"))
        + 1.6
        * ((claim_amount >= 4_500) & (claim_amount < 5_000))  # just under the desk-review limit
        + 0.6 * (claimant_age < 25)
        + rng.normal(0, 1.0, n)
    )
    fraud = rng.random(n) < 1 / (1 + np.exp(-(score + offset_for_rate(score, fraud_rate))))
    # Fraudsters take longer to report: the story needs time.
    days_to_report = np.round(days_to_report + fraud * rng.exponential(4.0, n)).astype(np.int64)

    return pl.DataFrame(
        {
            "claim_id": [f"CLM{i:07d}" for i in range(n)],
            "policy_type": policy_type.tolist(),
            "region": region.tolist(),
            "sales_channel": sales_channel.tolist(),
            "claimant_age": blank(rng, claimant_age, 0.03),
            "policy_tenure_months": tenure,
            "annual_premium": annual_premium,
            "deductible": deductible,
            "vehicle_age_years": vehicle_age,
            "vehicle_value": blank(rng, vehicle_value, 0.05),
            "annual_mileage": blank(rng, annual_mileage, 0.07),
            "credit_score": blank(rng, credit_score, 0.12),
            "prior_claims": prior_claims,
            "days_since_policy_start": days_since_start.astype(np.int64),
            "incident_type": incident_type.tolist(),
            "incident_severity": severity.tolist(),
            "incident_hour": blank(rng, incident_hour, 0.04),
            "witnesses": blank(rng, witnesses, 0.10),
            "police_report": blank(rng, police_report, 0.08),
            "bodily_injuries": bodily_injuries,
            "vehicles_involved": vehicles_involved,
            "claim_amount": claim_amount.round(2),
            "days_to_report": days_to_report,
            "repair_shop": blank(rng, repair_shop, 0.06),
            LABEL: fraud.astype(np.int8),
        },
        schema_overrides={
            "claimant_age": pl.Int64,
            "vehicle_value": pl.Float64,
            "annual_mileage": pl.Float64,
            "credit_score": pl.Float64,
            "incident_hour": pl.Int64,
            "witnesses": pl.Int64,
            "police_report": pl.String,
            "repair_shop": pl.String,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument(
        "--fraud-rate", type=float, required=True, help="expected share of fraud, e.g. 0.04"
    )
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    claims = generate(args.rows, args.seed, args.fraud_rate)
    write_parquet(claims, args.out)
    print(f"{claims.height} claims, {claims[LABEL].mean():.1%} fraud -> {args.out}")


if __name__ == "__main__":
    main()
