"""The evaluation table: summaries of per-item metrics, the baseline split, failed jobs, writers, figures."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from cortexgen.evaluate.figures import centre_slices, gallery_figure, metrics_figure, training_figure
from cortexgen.evaluate.metrics import MetricResult, SetMetricSettings
from cortexgen.evaluate.summary import (
    COLUMNS,
    baseline_halves,
    failed_jobs,
    per_item_rows,
    read_train_log,
    summarise,
    write_metrics,
)

FAST = SetMetricSettings(n_resamples=300, seed=1)


@pytest.mark.parametrize("count", [2, 3, 7, 10])
def test_baseline_halves_partition_the_reference_and_are_seeded(count):
    first, second = baseline_halves(count, seed=3)
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(count))
    assert len(first) - len(second) in (0, 1)
    again = baseline_halves(count, seed=3)
    assert np.array_equal(first, again[0]) and np.array_equal(second, again[1])


def test_summary_is_the_mean_with_a_ci_around_it_and_counts_missing_items():
    values = [1.0, 2.0, 3.0, 4.0, float("nan")]
    row = summarise("bridge", "paired_mae", values, FAST)
    assert row.value == pytest.approx(2.5)
    assert 1.0 <= row.ci_low < 2.5 < row.ci_high <= 4.0
    assert row.n == "4" and row.note == "1 of 5 items had no value"
    empty = summarise("bridge", "paired_mae", [float("nan")], FAST)
    assert math.isnan(empty.value) and empty.note == "1 of 1 items had no value"


def test_per_item_rows_one_row_per_key_with_a_prefix():
    items = [{"ssim": 0.8, "mae": 0.1}, {"ssim": 0.6, "mae": 0.3}]
    rows = per_item_rows("bridge", items, FAST, prefix="paired_")
    assert [row.metric for row in rows] == ["paired_ssim", "paired_mae"]
    assert rows[0].value == pytest.approx(0.7) and rows[1].value == pytest.approx(0.2)


def test_failed_jobs_are_read_from_the_logs(tmp_path):
    (tmp_path / "denoise" / "sub-02").mkdir(parents=True)
    (tmp_path / "denoise" / "sub-02" / "sub-02.log").write_text(
        "2026-01-01 INFO start\n2026-01-01 ERROR FAILED: sub-02_T1w.nii.gz: every voxel is 0\n")
    (tmp_path / "denoise" / "sub-01").mkdir(parents=True)
    (tmp_path / "denoise" / "sub-01" / "sub-01.log").write_text("2026-01-01 INFO done\n")
    assert failed_jobs(tmp_path) == [{"log": "denoise/sub-02/sub-02.log",
                                      "reason": "sub-02_T1w.nii.gz: every voxel is 0"}]
    assert failed_jobs(tmp_path / "missing") == []


def test_tsv_and_json_carry_nan_and_failures(tmp_path):
    rows = [MetricResult("ddpm", "mmd_linear_voxels", 0.5, 0.4, 0.6, "3 vs 2"),
            MetricResult("ddpm", "fid_medicalnet", math.nan, math.nan, math.nan, "3 vs 2", "not computed: no weights")]
    failures = [{"log": "n4/sub-02/sub-02.log", "reason": "bad file"}]
    write_metrics(rows, tmp_path / "metrics.tsv", tmp_path / "metrics.json", failures, extra={"reference": "all"})
    with open(tmp_path / "metrics.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert tuple(table[0]) == COLUMNS
    assert [row["metric"] for row in table] == ["mmd_linear_voxels", "fid_medicalnet", "failed_job"]
    assert table[1]["value"] == "nan" and table[1]["note"] == "not computed: no weights"
    assert table[2]["note"] == "n4/sub-02/sub-02.log: bad file"
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["metrics"][0]["value"] == 0.5 and document["metrics"][1]["value"] is None
    assert document["failed_jobs"] == failures and document["reference"] == "all"


def test_train_log_is_read_as_numbers(tmp_path):
    path = tmp_path / "train_log.tsv"
    path.write_text("step\ttrain_loss\tval_loss\tlearning_rate\tseconds\tvolumes_per_second\n"
                    "10\t0.5\t\t0.001\t1.0\t2.0\n20\t0.25\t0.3\t0.001\t2.0\t2.0\n")
    rows = read_train_log(path)
    assert [row["step"] for row in rows] == [10, 20]
    assert rows[1]["train_loss"] == 0.25 and math.isnan(rows[0]["val_loss"]) and rows[1]["val_loss"] == 0.3


def test_centre_slices_cut_through_the_middle():
    volume = np.zeros((5, 7, 9), np.float32)
    volume[2, 3, 4] = 1.0
    slices = centre_slices(volume)
    assert [s.shape for s in slices] == [(9, 7), (9, 5), (7, 5)]
    assert all(s.max() == 1.0 for s in slices)


def test_figures_have_a_panel_per_item():
    volume = np.random.default_rng(0).random((12, 16, 12)).astype(np.float32)
    gallery = gallery_figure([("sub-01", volume)], [("s1", volume), ("s2", volume)], "ddpm")
    assert len(gallery.axes) == 2 * 3 * 2  # two columns, three views for each of real and synthetic
    rows = [MetricResult("ddpm", "mmd", 0.2, 0.1, 0.3, "3 vs 2").as_row(),
            MetricResult("real_vs_real", "mmd", math.nan, math.nan, math.nan, "1 vs 1", "not computed").as_row(),
            MetricResult("ddpm", "ms_ssim_real", 0.5, 0.4, 0.6, "3 pairs").as_row()]
    assert len(metrics_figure(rows).axes) == 2
    # Two values equal to 6 digits are drawn level (no offset spreading them over the panel).
    close = [MetricResult(name, "paired_psnr", value, value, value, "1").as_row()
             for name, value in (("bridge", 19.2618), ("bridge_prior", 19.2623))]
    figure = metrics_figure(close)
    figure.canvas.draw()
    (ax,) = figure.axes
    low, high = ax.get_ylim()
    assert high - low == pytest.approx(0.02 * 19.2623) and low < 19.2618 < 19.2623 < high
    assert not ax.yaxis.get_major_formatter().get_offset()
    losses = {"ddpm": [{"step": 1, "train_loss": 1.0, "val_loss": math.nan}], "bridge": []}
    assert len(training_figure(losses).axes) == 2
