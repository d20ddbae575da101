"""Process-level settings for workflow jobs: thread limits, logging."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from cortexgen.errors import JobError

#: Environment variables read by the numerical libraries cortexgen uses (ITK/ANTs,
#: OpenMP in libCAT, BLAS, libigl) to size their thread pools.
THREAD_VARIABLES = (
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "IGL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def limit_threads(threads: int) -> None:
    """Make every library use at most ``threads`` threads.

    Call before importing ants, cat_surf or torch: ITK and OpenMP read these variables
    when their thread pools are created. A job that uses more cores than the scheduler
    gave it slows every other job on the node.
    """
    threads = max(1, int(threads))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def lower_thread_priority(niceness: int = 19) -> None:
    """Lower the calling thread's scheduling priority (Linux: niceness is per thread), e.g.
    as a background writer pool's initializer, so that it runs on cycles the job's own
    steps leave idle. Where the platform cannot, the thread keeps its priority."""
    import threading

    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def exit_without_teardown() -> None:
    """A job script's last call: flush and end the process now. The interpreter's teardown
    walks every object torch, ANTs and their imports made (0.6 s of a 15 s preprocessing job
    on the 2-core machine) only to free memory the exit frees anyway. Whatever the job wrote
    is closed by then (outputs are written atomically, :func:`job_log` closes its handlers).
    Never call it from a process that has more to do, e.g. a test run.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def job_log(log_path: str | Path | None, source: str | Path | None = None) -> Iterator[logging.Logger]:
    """Send logging (and a failure's full traceback) to ``log_path`` as well as stderr.

    Args:
        log_path: the rule's log file (overwritten), or ``None`` for stderr only.
        source: the file the job works on (e.g. the subject's raw T1w). A failure whose
            message does not name it (ANTs', deepbet's, numpy's own errors) is re-raised as
            :class:`~cortexgen.errors.JobError` ``"<source>: <Type>: <message>"``, chained
            to the original, so every failure says which file it was about.

    The exception is re-raised, so the job still fails; the log keeps the message that
    names the file and the problem, and the traceback, which is what a person reads after
    ``--keep-going`` (Snakemake's own stderr capture is lost on a cluster).
    """
    logger = logging.getLogger("cortexgen")
    logger.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    try:
        yield logger
    except BaseException as err:
        message = str(err) or type(err).__name__
        named = source is None or str(source) in message or not isinstance(err, Exception)
        if not named:
            message = f"{source}: {type(err).__name__}: {message}"
        logger.error("FAILED: %s\n%s", message, "".join(traceback.format_exception(err)).rstrip())
        if named:
            raise
        raise JobError(message) from err
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


class JobInputs(dict):
    """A job's input files by name, readable as ``inputs.name`` or ``inputs["name"]``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def job_inputs(snakemake) -> JobInputs:
    """A workflow job's input files by name, wherever they came from.

    One job per subject: the job's declared inputs. Sharded (config 'sharding'): the
    per-subject files are not inputs (the shard manifests are, named ``shards``); their paths
    come in ``params.subject_files`` (rules/common.smk: subject_inputs, subject_params).
    """
    inputs = JobInputs((name, value) for name, value in snakemake.input.items() if name != "shards")
    inputs.update(getattr(snakemake.params, "subject_files", None) or {})
    return inputs
