"""The official BIDS validator on the name of every file the demo workflow writes.

The tree: one placeholder file for every output and benchmark of the demo DAG (a dry run's job
list), beside the dataset_description.json and .bidsignore files that rule dataset_description
writes (run for real). Each stage folder that holds subjects is validated as it is, a dataset of
its own. Sidecar contents and NIfTI headers are checked on a real run in
tests/workflow/test_surfaces_run.py.
"""

from __future__ import annotations

import json

import pytest

from tests.bids_validator import UNAVAILABLE, derivative_datasets, issues, run_validator
from tests.conftest import demo_config, run_snakemake

pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
#: The stage folders that hold subjects, each a BIDS-derivative dataset (DATASETS in rules/common.smk).
DATASETS = ["deform", "preproc", "surfaces"]


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

    results = work / "results"
    # Every folder that holds subjects is a described dataset, and nothing else is: results/ is
    # what a derivatives/ folder is to a raw dataset.
    assert [folder.name for folder in derivative_datasets(results)] == DATASETS
    assert sorted(path.parent.name for path in results.glob("*/dataset_description.json")) == DATASETS
    assert not (results / "dataset_description.json").exists()
    for name in DATASETS:
        description = json.loads((results / name / "dataset_description.json").read_text())
        assert description["DatasetType"] == "derivative"
        assert ("preproc" in description["DatasetLinks"]) == (name != "preproc")
        report = run_validator(results / name, ignore_codes=["SIDECAR_KEY_REQUIRED"], nifti_headers=False)
        assert issues(report) == [], name
        # The subjects' files were validated, not ignored; deform's subjects hold only transforms
        # (_xfm: .bidsignore), of the training subjects.
        assert sorted(report["summary"]["subjects"]) == ([] if name == "deform" else ["01", "02", "03"]), name
    assert (results / "surfaces/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-ribbon_mask.nii.gz").is_file()

    # And the validator does refuse a name without a suffix, such as the SDFs' old one.
    old = results / "surfaces/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-pialsdf.nii.gz"
    old.write_text("placeholder")
    report = run_validator(results / "surfaces", ignore_codes=["SIDECAR_KEY_REQUIRED"], nifti_headers=False)
    assert issues(report) == [f"NOT_INCLUDED /{old.relative_to(results / 'surfaces')}"]
