"""Paths in the configuration: the files the workflow ships resolve from its own folder."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_shipped(path: str, workflow_dir: str | Path) -> str:
    """``path`` as given if it is absolute or exists from the working directory; else, if the
    workflow ships it (``workflow_dir / path`` exists), that absolute path.

    The shipped config names the demo data and templates relative to the repository, so that
    the workflow runs from any directory (``snakemake -s /path/to/Snakefile``, the ``cortexgen``
    command) without the user copying them; a user's own relative paths keep their meaning.
    """
    if os.path.isabs(path) or os.path.exists(path):
        return path
    shipped = Path(workflow_dir) / path
    return str(shipped) if shipped.exists() else path
