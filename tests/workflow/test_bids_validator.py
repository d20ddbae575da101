"""The official BIDS validator on the name of every file the demo workflow writes.

The tree: one placeholder file for every output and benchmark of the demo DAG (a dry run's job
list), beside the dataset_description.json and .bidsignore that rule dataset_description writes
(run for real). Sidecar contents and NIfTI headers are checked on a real run in
tests/workflow/test_surfaces_run.py.
"""

from __future__ import annotations

import pytest

from tests.bids_validator import UNAVAILABLE, issues, merged_copy, run_validator
from tests.conftest import demo_config, run_snakemake

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def planned_files(stdout: str) -> set[str]:
    """Every output and benchmark file of a dry run's jobs."""
    files = set()
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key in ("output", "benchmark"):
            files.update(value.split(", "))
    return files


def test_every_output_name_passes_the_bids_validator(tmp_path):
    work = tmp_path / "work"
    config = demo_config()
    described = run_snakemake(work, config, "--cores", "1", "dataset_description")
    assert described.returncode == 0, described.stderr[-3000:]
    planned = run_snakemake(work, config, "--dry-run")
    assert planned.returncode == 0, planned.stderr[-3000:]
    files = planned_files(planned.stdout)
    assert len(files) > 200
    for name in files:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not empty (the validator refuses empty files); the sidecars' keys are checked on a real run.
        path.write_text("{}" if name.endswith(".json") else "placeholder")

    root = merged_copy(work / "results", tmp_path / "bids")
    report = run_validator(root, ignore_codes=["SIDECAR_KEY_REQUIRED"], nifti_headers=False)
    assert issues(report) == []
    # The subjects' files were validated, not ignored.
    assert sorted(report["summary"]["subjects"]) == ["01", "02", "03"]
    assert (root / "sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-ribbon_mask.nii.gz").is_file()

    # And the validator does refuse a name without a suffix, such as the SDFs' old one.
    old = root / "sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-pialsdf.nii.gz"
    old.write_text("placeholder")
    report = run_validator(root, ignore_codes=["SIDECAR_KEY_REQUIRED"], nifti_headers=False)
    assert issues(report) == [f"NOT_INCLUDED /{old.relative_to(root)}"]
