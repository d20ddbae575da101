"""cortexgen.derivatives: dataset_description.json, sidecars, BIDS names."""

from __future__ import annotations

import json

import cortexgen
from cortexgen.derivatives import (
    BIDS_IGNORE,
    bids_ignore,
    dataset_description,
    is_bids_name,
    resolution_sidecar,
    write_json,
)


def test_dataset_description_is_a_derivative_generated_by_this_version(tmp_path):
    description = dataset_description(tmp_path / "raw")
    assert description["DatasetType"] == "derivative"
    assert description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "cortexgen"
    assert description["GeneratedBy"][0]["Version"] == cortexgen.__version__
    assert description["SourceDatasets"] == [{"URL": (tmp_path / "raw").resolve().as_uri()}]
    # The sidecars' Sources say bids:raw:<path>: the name "raw" is defined here.
    assert description["DatasetLinks"] == {"raw": (tmp_path / "raw").resolve().as_uri()}
    write_json(description, tmp_path / "out" / "dataset_description.json")
    assert json.loads((tmp_path / "out" / "dataset_description.json").read_text()) == description


def test_resolution_sidecar_says_what_res_means():
    sidecar = resolution_sidecar((84, 128, 84), [2.0, 1.5, 2.0], "MNIColin27", "sub-01/anat/sub-01_T1w.nii.gz")
    assert sidecar["Resolution"].startswith("84x128x84 voxels of 2x1.5x2 mm")
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert sidecar["SkullStripped"] is True
    # A map or a mask: no SkullStripped (BIDS asks it of images), keys of its own.
    mask = resolution_sidecar((84, 128, 84), [2.0, 1.5, 2.0], "MNIColin27", skull_stripped=None, Type="ROI")
    assert "SkullStripped" not in mask and "Sources" not in mask and mask["Type"] == "ROI"


def test_bids_names():
    assert is_bids_name("sub-01_ses-A_run-2_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz")
    assert is_bids_name("sub-01_hemi-L_white.surf.gii")
    assert is_bids_name("sub-01_from-T1w_to-MNIColin27_mode-image_xfm.mat")
    assert is_bids_name("sub-01_space-MNIColin27_res-84x128x84_desc-pial_sdf.nii.gz")
    assert not is_bids_name("sub-01_res-84x128x84_desc-pialsdf.nii.gz")  # no suffix
    assert not is_bids_name("sub-01_desc-a_b_T1w.nii.gz")


def test_bidsignore_skips_folders_without_subjects_and_types_bids_lacks():
    text = bids_ignore()
    assert text.splitlines() == list(BIDS_IGNORE)
    assert "/qc\n" in text and "*_sdf.*\n" in text and "*.surf.gii\n" in text
    # Anchored folders only: a pattern such as "qc/" would leave the folder itself flagged.
    assert all(not pattern.endswith("/") for pattern in BIDS_IGNORE)
