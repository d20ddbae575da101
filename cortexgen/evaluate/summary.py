"""The evaluation table: per-item metrics summarised with bootstrap CIs, the real-vs-real
baseline split, failed jobs found in the logs, and the TSV/JSON writers."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cortexgen.evaluate.metrics import MetricResult, SetMetricSettings, bootstrap_mean_ci
from cortexgen.io import atomic_output, read_table

#: Columns of metrics.tsv, in order.
COLUMNS = ("generator", "metric", "value", "ci_low", "ci_high", "n", "note")


def baseline_halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``count`` reference images into two halves (the first gets the odd one)."""
    order = np.random.default_rng(seed).permutation(count)
    half = (count + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def summarise(generator: str, metric: str, values: Sequence[float], settings: SetMetricSettings) -> MetricResult:
    """Mean of per-item ``values`` (one per subject or sample) with a percentile bootstrap CI.

    Items whose value is not finite (e.g. a sample whose surfaces could not be extracted) are
    left out and counted in the note; with no finite item the metric is not computed.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    left_out = len(values) - len(finite)
    note = f"{left_out} of {len(values)} items had no value" if left_out else ""
    if len(finite) == 0:
        return MetricResult(generator, metric, math.nan, math.nan, math.nan, "0",
                            note or "not computed: no items")
    low, high = bootstrap_mean_ci(finite, n_resamples=settings.n_resamples, level=settings.level,
                                  seed=settings.seed)
    return MetricResult(generator, metric, float(finite.mean()), float(low), float(high), str(len(finite)), note)


def per_item_rows(generator: str, items: Sequence[Mapping[str, float]], settings: SetMetricSettings,
                  prefix: str = "") -> list[MetricResult]:
    """One summarised row per key of the per-item dicts (keys in first-seen order)."""
    names = list(dict.fromkeys(key for item in items for key in item))
    return [
        summarise(generator, f"{prefix}{name}", [item.get(name, math.nan) for item in items], settings)
        for name in names
    ]


def failed_jobs(log_folder: str | Path) -> list[dict]:
    """Jobs whose log records a failure (``FAILED: <reason>``, as cortexgen.runtime.job_log writes).

    Returns [{"log": path relative to the folder, "reason": first failure line}], sorted by path.
    A job that failed and then succeeded on a rerun has its log rewritten and is not listed.
    """
    folder = Path(log_folder)
    failures = []
    for path in sorted(folder.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if "FAILED: " in line:
                failures.append({"log": str(path.relative_to(folder)), "reason": line.split("FAILED: ", 1)[1].strip()})
                break
    return failures


def _finite_or_none(value):
    return value if isinstance(value, float) and math.isfinite(value) else (None if isinstance(value, float) else value)


def write_metrics(rows: Iterable[MetricResult], tsv_path: str | Path, json_path: str | Path,
                  failures: Sequence[Mapping] = (), extra: Mapping | None = None) -> None:
    """metrics.tsv (COLUMNS; NaN written as 'nan'; a 'failed_job' row per failure) and metrics.json ({"metrics": [...], "failed_jobs":
    [...], ...extra}; NaN written as null so that any JSON reader accepts the file)."""
    rows = list(rows)
    with atomic_output(tsv_path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_row())
        # Failed jobs go in the table too, so that the report's table shows them.
        for failure in failures:
            writer.writerow({"generator": "workflow", "metric": "failed_job", "value": "nan", "ci_low": "nan",
                             "ci_high": "nan", "n": "", "note": f"{failure['log']}: {failure['reason']}"})
    document = {
        "metrics": [{key: _finite_or_none(value) for key, value in asdict(row).items()} for row in rows],
        "failed_jobs": list(failures),
        **(extra or {}),
    }
    with atomic_output(json_path) as tmp:
        Path(tmp).write_text(json.dumps(document, indent=2) + "\n")


def read_train_log(path: str | Path) -> list[dict]:
    """A generator's train_log.tsv with step as int and the losses as floats (NaN when empty)."""
    rows = []
    for row in read_table(path):
        rows.append({"step": int(row["step"]),
                     "train_loss": float(row["train_loss"] or "nan"),
                     "val_loss": float(row["val_loss"] or "nan")})
    return rows
