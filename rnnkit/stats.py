"""Aggregating a sweep over seeds: mean, standard deviation, n, the 95% confidence interval of the
mean (Student t) and, for classification, the success rate (the fraction of seeds that reached the
solve threshold)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from scipy.stats import t as student_t

#: The confidence level of the interval reported around a mean.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Aggregate:
    """One metric over the seeds of one combination of swept values."""

    values: dict[str, Any]  # the swept values (not the seed) this aggregates over
    n: int  # seeds with a value
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one seed
    ci: float  # half-width of the 95% confidence interval of the mean; nan for fewer than 2 seeds
    success_rate: float | None  # fraction of the combination's runs that reached the threshold
    failed: int  # runs of the combination that failed (no value)
    runs: int  # runs of the combination in all


def confidence_half_width(values: list[float], confidence: float = CONFIDENCE) -> float:
    """t_{(1+c)/2, n-1} * s / sqrt(n): the half-width of the Student-t confidence interval of the mean."""
    n = len(values)
    if n < 2:
        return math.nan
    return float(student_t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def aggregate(
    rows: list[dict[str, Any]], keys: list[str], metric: str, threshold: float | None = None
) -> list[Aggregate]:
    """``metric`` over seeds for every combination of ``keys`` in ``rows`` (in the rows' order).

    With a ``threshold`` (the spec's early-stop threshold, for classification) the success rate is the
    fraction of the combination's runs whose ``best_accuracy`` reached it; failed runs count as not
    reaching it."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    out = []
    for combination, group in groups.items():
        values = [
            float(r[metric]) for r in group if isinstance(r.get(metric), int | float) and r.get(metric) is not None
        ]
        values = [v for v in values if math.isfinite(v)]
        success = None
        if threshold:
            reached = [
                isinstance(r.get("best_accuracy"), int | float) and r["best_accuracy"] >= threshold for r in group
            ]
            success = sum(reached) / len(group)
        out.append(
            Aggregate(
                values=dict(zip(keys, combination, strict=True)),
                n=len(values),
                mean=statistics.fmean(values) if values else math.nan,
                std=statistics.stdev(values) if len(values) > 1 else 0.0,
                ci=confidence_half_width(values),
                success_rate=success,
                failed=sum(1 for r in group if r.get("status") == "failed"),
                runs=len(group),
            )
        )
    return out
