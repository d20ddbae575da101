"""Errors that name the offending file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class InputImageError(ValueError):
    """An input image cannot be used; the message names the file and the problem.

    Raised for unreadable or unsuitable scans so that one subject's job fails with a
    message a person can act on, while ``--keep-going`` lets the rest of the cohort finish.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = self.path if self.path is not None else "<in-memory image>"
        super().__init__(f"{where}: {problem}")


class SubjectIdError(ValueError):
    """A subject or session label that is not ``[A-Za-z0-9]+``."""


class JobError(RuntimeError):
    """A job failed in a library (ANTs, deepbet, ...) whose message did not name the file;
    raised by :func:`cortexgen.runtime.job_log` with the file put in front of that message."""
