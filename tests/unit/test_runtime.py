"""cortexgen.runtime: thread limits and per-job logs."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from cortexgen.runtime import THREAD_VARIABLES, job_log, limit_threads


@pytest.fixture
def restore_thread_env(monkeypatch):
    """Let limit_threads change the variables; monkeypatch puts them back afterwards."""
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "sentinel")
    # A stand-in for torch, so the real one (if imported) keeps its thread count.
    calls = []

    class FakeTorch:
        @staticmethod
        def set_num_threads(n):
            calls.append(n)

    monkeypatch.setitem(sys.modules, "torch", FakeTorch)
    return calls


def test_limit_threads_sets_every_variable(restore_thread_env):
    limit_threads(3)
    assert {name: os.environ[name] for name in THREAD_VARIABLES} == {name: "3" for name in THREAD_VARIABLES}
    assert set(THREAD_VARIABLES) >= {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS"}
    assert restore_thread_env == [3]


@pytest.mark.parametrize("requested, expected", [(0, "1"), (-4, "1"), ("2", "2"), (5.7, "5")])
def test_limit_threads_clamps_and_converts(restore_thread_env, requested, expected):
    limit_threads(requested)
    assert all(os.environ[name] == expected for name in THREAD_VARIABLES)
    assert restore_thread_env == [int(expected)]


def test_limit_threads_without_torch(monkeypatch):
    for name in THREAD_VARIABLES:
        monkeypatch.setenv(name, "sentinel")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    limit_threads(2)
    assert os.environ["OMP_NUM_THREADS"] == "2"
    assert "torch" not in sys.modules  # it must not import torch itself


def _cortexgen_file_handlers():
    return [h for h in logging.getLogger("cortexgen").handlers if isinstance(h, logging.FileHandler)]


def test_job_log_records_the_failure_and_reraises(tmp_path):
    log_path = tmp_path / "logs" / "sub-01" / "mni_affine.log"
    with pytest.raises(ValueError, match="sub-01_T1w.nii.gz: every voxel is 0"):
        with job_log(log_path) as log:
            log.info("registering %s", "sub-01")
            raise ValueError("/data/sub-01_T1w.nii.gz: every voxel is 0 (an empty image)")
    text = log_path.read_text()
    assert "INFO registering sub-01" in text
    assert "ERROR FAILED: /data/sub-01_T1w.nii.gz: every voxel is 0 (an empty image)" in text
    assert _cortexgen_file_handlers() == []  # handlers are removed and closed


def test_job_log_success_writes_no_failure(tmp_path):
    log_path = tmp_path / "ok.log"
    with job_log(log_path) as log:
        assert log.name == "cortexgen"
        logging.getLogger("cortexgen.preprocess").info("child logger message")
        log.warning("looks skull-stripped")
    text = log_path.read_text()
    assert "INFO child logger message" in text
    assert "WARNING looks skull-stripped" in text
    assert "FAILED" not in text
    assert _cortexgen_file_handlers() == []


def test_job_log_overwrites_a_previous_attempt(tmp_path):
    log_path = tmp_path / "job.log"
    log_path.write_text("FAILED: old attempt\n")
    with job_log(log_path) as log:
        log.info("second attempt")
    text = log_path.read_text()
    assert "old attempt" not in text
    assert "second attempt" in text


def test_job_log_without_file(capsys):
    with pytest.raises(KeyboardInterrupt):
        with job_log(None) as log:
            log.info("no file")
            raise KeyboardInterrupt
    err = capsys.readouterr().err
    assert "INFO no file" in err
    assert "ERROR FAILED" in err
    assert logging.getLogger("cortexgen").handlers == []


def test_exit_without_teardown_keeps_what_the_job_wrote_and_succeeds(tmp_path):
    """The process ends with status 0, its buffered output and its job log written, and
    nothing after the call runs (no teardown, no atexit handlers)."""
    import subprocess

    script = f"""
import atexit
from cortexgen.runtime import exit_without_teardown, job_log
atexit.register(lambda: print("atexit ran"))
with job_log({str(tmp_path / "job.log")!r}) as log:
    log.info("written before the exit")
print("buffered stdout", end="")
exit_without_teardown()
print("after the exit")
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "buffered stdout"
    assert "written before the exit" in (tmp_path / "job.log").read_text()
