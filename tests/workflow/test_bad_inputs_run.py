"""The first rule on a small bad-input corpus: each job fails fast, naming the file and the problem,
with the traceback in the rule's log."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tests.conftest import demo_config, run_snakemake
from tests.unit.test_failures import _header_only, _sheared_affine


def test_preprocess_refuses_a_huge_header_and_a_shear_in_its_log(tmp_path):
    bids = tmp_path / "bids"
    for subject in ("01", "02"):
        (bids / f"sub-{subject}" / "anat").mkdir(parents=True)
    huge = _header_only(bids / "sub-01" / "anat" / "sub-01_T1w.nii", (1000, 1000, 1000))
    sheared = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    data = np.random.default_rng(0).uniform(1, 100, (24, 24, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, _sheared_affine(5.0)), str(sheared))

    work = tmp_path / "work"
    result = run_snakemake(work, demo_config(bids_dir=str(bids)), "--until", "preprocess", "--cores", "2",
                           "--keep-going", timeout=300)
    assert result.returncode != 0
    logs = {subject: (work / "logs" / "preprocess" / f"sub-{subject}" / f"sub-{subject}.log").read_text()
            for subject in ("01", "02")}
    assert f"{huge}: header claims shape (1000, 1000, 1000)" in logs["01"]
    assert f"{sheared}: has a sheared affine" in logs["02"]
    for text in logs.values():
        assert "Traceback (most recent call last)" in text
        assert "InputImageError" in text
    assert not list((work / "results").rglob("*.nii.gz"))
