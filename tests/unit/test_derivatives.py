"""cortexgen.derivatives: dataset_description.json, sidecars, BIDS names."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import cortexgen
from cortexgen import derivatives
from cortexgen.derivatives import (
    BIDS_IGNORE,
    bids_ignore,
    bids_uri,
    code_url,
    dataset_description,
    dataset_root,
    is_bids_name,
    public_url,
    resolution_sidecar,
    write_json,
)

requires_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


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


def test_a_stage_links_the_datasets_it_is_made_from(tmp_path):
    raw = (tmp_path / "raw").resolve().as_uri()
    description = dataset_description(tmp_path / "raw", name="cortexgen surfaces", derived_from={"preproc": "../preproc"})
    assert description["Name"] == "cortexgen surfaces"
    # bids:preproc:<path> resolves through DatasetLinks, relative to this dataset's root.
    assert description["DatasetLinks"] == {"raw": raw, "preproc": "../preproc"}
    assert description["SourceDatasets"] == [{"URL": raw}, {"URL": "bids:preproc:"}]
    # "" is bids:: (the dataset itself), "raw" the input: neither can name another stage.
    for name in ("", "raw", "a:b"):
        with pytest.raises(ValueError, match="cannot name a linked dataset"):
            dataset_description(tmp_path / "raw", derived_from={name: "../x"})


def test_bids_uri_is_relative_to_the_dataset_each_file_is_in(tmp_path, monkeypatch):
    sidecar = "results/surfaces/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-pial_sdf.json"
    mesh = "results/surfaces/sub-01/anat/sub-01_hemi-L_pial.surf.gii"
    grid = "results/preproc/sub-01/anat/sub-01_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz"
    assert dataset_root(mesh) == Path("results/surfaces")
    assert bids_uri(mesh, sidecar) == "bids::sub-01/anat/sub-01_hemi-L_pial.surf.gii"
    assert bids_uri(grid, sidecar) == f"bids:preproc:sub-01/anat/{Path(grid).name}"
    # Sessions; an absolute path and a relative one (from the working directory) in one dataset.
    monkeypatch.chdir(tmp_path)
    session = tmp_path / "results/preproc/sub-01/ses-A/anat/sub-01_ses-A_desc-n4_T1w.nii.gz"
    assert bids_uri(session, "results/preproc/sub-01/ses-A/anat/x.json") == f"bids::sub-01/ses-A/anat/{session.name}"
    template = "results/deform/tpl-MNIColin27/tpl-MNIColin27_res-84x128x84_desc-brain_T1w.nii.gz"
    assert bids_uri(template, "results/deform/sub-01/anat/x.json") == f"bids::tpl-MNIColin27/{Path(template).name}"
    with pytest.raises(ValueError, match="no sub-<label>"):
        dataset_root("results/qc/sub-01_preproc.png")


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


def test_bidsignore_skips_the_file_types_bids_lacks():
    text = bids_ignore()
    assert text.splitlines() == list(BIDS_IGNORE)
    assert "*_sdf.*\n" in text and "*.surf.gii\n" in text and "*.shape.gii\n" in text and "*_xfm.*\n" in text
    # File types only: each stage's dataset holds subjects and templates, nothing else to skip.
    assert all("/" not in pattern for pattern in BIDS_IGNORE)


@pytest.mark.parametrize(("remote", "url"), [
    ("https://user:secret@github.com/lab/cortexgen.git", "https://github.com/lab/cortexgen"),
    ("git@github.com:lab/cortexgen.git", "https://github.com/lab/cortexgen"),
    ("ssh://git@gitlab.example.org:2222/group/lab/cortexgen.git", "https://gitlab.example.org/group/lab/cortexgen"),
    ("git://example.org/cortexgen.git\n", "https://example.org/cortexgen"),
    ("http://git.example.org:8080/cortexgen/", "http://git.example.org:8080/cortexgen"),
    ("https://github.com/lab/cortexgen", "https://github.com/lab/cortexgen"),
    # Nothing others can open: local paths, file://, an ssh alias.
    ("/srv/git/cortexgen.git", None),
    ("../cortexgen", None),
    ("file:///srv/git/cortexgen.git", None),
    ("gh:lab/cortexgen", None),
])
def test_public_url_of_a_git_remote(remote, url):
    assert public_url(remote) == url


def _git(*args):
    subprocess.run(["git", *args], check=True, capture_output=True)


@requires_git
def test_code_url_falls_back_on_the_checkouts_origin(tmp_path, monkeypatch):
    monkeypatch.setattr(derivatives, "_project_url", lambda: None)
    checkout = tmp_path / "checkout"
    (checkout / "rules").mkdir(parents=True)
    _git("init", "-q", str(checkout))
    # No remote: no CodeURL.
    assert code_url(checkout) is None
    assert "CodeURL" not in dataset_description(tmp_path / "raw", workflow_dir=checkout)["GeneratedBy"][0]
    _git("-C", str(checkout), "remote", "add", "origin", "https://ci-bot:token123@example.org/lab/cortexgen.git")
    # From the checkout or any folder in it; credentials never reach the description.
    assert code_url(checkout / "rules") == "https://example.org/lab/cortexgen"
    description = dataset_description(tmp_path / "raw", workflow_dir=checkout)
    assert description["GeneratedBy"][0]["CodeURL"] == "https://example.org/lab/cortexgen"
    assert "token123" not in json.dumps(description)


def test_code_url_without_git_or_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(derivatives, "_project_url", lambda: None)
    assert code_url(None) is None
    assert code_url(tmp_path / "not-a-checkout") is None  # no such folder: git fails, ignored
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert code_url(tmp_path) is None


def test_project_url_metadata_comes_first(tmp_path, monkeypatch):
    monkeypatch.setattr(derivatives, "_project_url", lambda: "https://example.org/cortexgen")
    monkeypatch.setattr(derivatives, "git_remote_url", lambda directory: pytest.fail("git asked"))
    assert code_url(tmp_path) == "https://example.org/cortexgen"
