"""Fixtures and helpers shared by the unit and workflow tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DS000022 = SHARED_DATA / "ds000022"
DEMO_BIDS = REPO / "resources" / "bids_demo"

requires_shared = pytest.mark.skipif(
    not DS000022.is_dir(),
    reason=f"{DS000022} is absent: the full ds000022 cohort lives outside the repository (../shared/data)",
)


def world_grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 1 mm grid of ``shape`` centred on the origin: (affine (4, 4), world points (X, Y, Z, 3) mm)."""
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2
    points = np.indices(shape, dtype=np.float64).transpose(1, 2, 3, 0) + affine[:3, 3]
    return affine, points


def demo_config(**overrides) -> dict:
    """The shipped config with absolute resource paths (tests run in a temporary folder)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key in ("template", "template_brain_mask"):
        config["preprocess"][key] = str(REPO / config["preprocess"][key])
    config["bids_dir"] = str(REPO / config["bids_dir"])
    for key, value in overrides.items():
        config[key] = value
    return config


def discovery_bids(root: Path, labels) -> Path:
    """A BIDS folder with one T1w per label, for runs where no rule that reads a T1w may run.

    Each file is a copy of a demo head: the workflow needs the files to find the subjects.
    """
    import shutil

    for label in labels:
        anat = root / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(DEMO_BIDS / "sub-01/anat/sub-01_T1w.nii.gz", anat / f"sub-{label}_T1w.nii.gz")
    return root


def snakemake_command(workdir: Path, config: dict, *args: str) -> list[str]:
    """The argv that runs the repository's workflow in ``workdir`` with ``config`` (written there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "test_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        *args,
    ]


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` with ``config``; output captured as text."""
    command = snakemake_command(workdir, config, *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
