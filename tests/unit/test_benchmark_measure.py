"""benchmarks.measure: the peak memory of a job run in its own process."""

import numpy as np

from benchmarks.measure import in_fresh_process


def _allocate(megabytes: int) -> float:
    return float(np.ones(megabytes * 2**20 // 8).sum())


def test_in_fresh_process_reports_that_process_peak_memory():
    result, record = in_fresh_process(_allocate, 200, threads=1)
    assert result == 200 * 2**20 // 8
    assert record["peak_rss_mb"] >= 200
    assert record["seconds"] > 0
