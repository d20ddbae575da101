"""Seconds and peak resident memory of a block of work, for the benchmark scripts."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Peak resident memory (MB) of this process while a block runs, sampled every 20 ms."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak_mb = 0.0

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)
            self._stop.wait(0.02)

    def __enter__(self):
        self._stop = threading.Event()
        self.peak_mb = self.process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(record: dict, name: str, function, *args, **kwargs):
    """Run ``function``; store its seconds, CPU seconds (all its threads) and peak RSS under
    ``record[name]``. On a shared machine wall time grows with the others' load; CPU time
    much less so."""
    with PeakRSS() as memory:
        start = time.perf_counter()
        cpu_start = time.process_time()
        result = function(*args, **kwargs)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    record[name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "peak_rss_mb": round(memory.peak_mb, 1)}
    return result


def _timed_job(function, args: tuple, threads: int):
    from cortexgen.runtime import limit_threads

    limit_threads(threads)
    record = {}
    result = timed(record, "job", function, *args)
    return result, record["job"]


def in_fresh_process(function, *args, threads: int = 1):
    """Run ``function(*args)`` in a new (spawned) process limited to ``threads`` threads.

    Returns (its result, {seconds, cpu_seconds, peak_rss_mb} of :func:`timed`): the peak is
    that process's alone, as a workflow job's (imports included), not left over from earlier
    work in this one. ``function``, its arguments and result must pickle; its exception is re-raised here.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_timed_job, function, args, threads).result()
