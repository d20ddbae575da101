"""cortexgen.bids: finding T1w scans in a BIDS folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortexgen.bids import Scan, check_label, discover_scans
from cortexgen.errors import SubjectIdError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def bids_dir(tmp_path) -> Path:
    """sub-01 (no sessions), sub-02 (ses-A, ses-B), sub-03 (func only), plus clutter."""
    root = tmp_path / "ds"
    _touch(root / "dataset_description.json")
    _touch(root / "participants.tsv")
    _touch(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _touch(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    _touch(root / "sub-01" / "anat" / "sub-01_T1w.json")
    _touch(root / "sub-02" / "ses-A" / "anat" / "sub-02_ses-A_T1w.nii.gz")
    _touch(root / "sub-02" / "ses-B" / "anat" / "sub-02_ses-B_run-2_T1w.nii")
    _touch(root / "sub-02" / "ses-B" / "anat" / "sub-02_ses-B_run-1_T1w.nii")
    _touch(root / "sub-02" / "ses-B" / "anat" / ".sub-02_ses-B_run-0_T1w.nii")  # hidden: ignored
    _touch(root / "sub-03" / "func" / "sub-03_task-rest_bold.nii.gz")
    _touch(root / "sub-04.html")  # a file, not a subject folder
    return root


def test_discovers_subjects_and_sessions(bids_dir):
    scans = discover_scans(bids_dir)
    assert [(s.subject, s.session) for s in scans] == [("01", None), ("02", "A"), ("02", "B")]
    assert scans[0].path == bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    assert scans[1].path == bids_dir / "sub-02" / "ses-A" / "anat" / "sub-02_ses-A_T1w.nii.gz"
    # Several runs: the first in sorted order, hidden files ignored.
    assert scans[2].path == bids_dir / "sub-02" / "ses-B" / "anat" / "sub-02_ses-B_run-1_T1w.nii"


def test_prefixes_and_subdirs(bids_dir):
    scans = discover_scans(bids_dir)
    assert [s.prefix for s in scans] == ["sub-01", "sub-02_ses-A", "sub-02_ses-B"]
    assert [s.subdir for s in scans] == ["sub-01", "sub-02/ses-A", "sub-02/ses-B"]


def test_scan_properties_without_discovery():
    scan = Scan("7", "pre", Path("x.nii.gz"))
    assert scan.prefix == "sub-7_ses-pre"
    assert scan.subdir == "sub-7/ses-pre"
    assert Scan("7", None, Path("x.nii.gz")).prefix == "sub-7"


@pytest.mark.parametrize("participants", [["02"], ["sub-02"]])
def test_participants_filter_with_and_without_prefix(bids_dir, participants):
    scans = discover_scans(bids_dir, participants=participants)
    assert [s.prefix for s in scans] == ["sub-02_ses-A", "sub-02_ses-B"]


def test_empty_participants_keeps_everyone(bids_dir):
    assert len(discover_scans(bids_dir, participants=[])) == 3
    assert len(discover_scans(bids_dir, participants=None)) == 3


def test_mixed_participants_filter(bids_dir):
    scans = discover_scans(bids_dir, participants=["sub-01", "02"])
    assert [s.prefix for s in scans] == ["sub-01", "sub-02_ses-A", "sub-02_ses-B"]


@pytest.mark.parametrize("folder", ["sub-0_1", "sub-x.y"])
def test_bad_subject_folder_is_refused(bids_dir, folder):
    _touch(bids_dir / folder / "anat" / f"{folder}_T1w.nii.gz")
    with pytest.raises(SubjectIdError) as excinfo:
        discover_scans(bids_dir)
    message = str(excinfo.value)
    assert str(bids_dir / folder) in message
    assert repr(folder.removeprefix("sub-")) in message
    assert "[A-Za-z0-9]+" in message


def test_bad_subject_folder_can_be_left_out(bids_dir):
    _touch(bids_dir / "sub-0_1" / "anat" / "sub-0_1_T1w.nii.gz")
    scans = discover_scans(bids_dir, participants=["01"])
    assert [s.prefix for s in scans] == ["sub-01"]


def test_bad_session_folder_is_refused(bids_dir):
    _touch(bids_dir / "sub-02" / "ses-1-a" / "anat" / "sub-02_ses-1-a_T1w.nii.gz")
    with pytest.raises(SubjectIdError, match="session label '1-a'") as excinfo:
        discover_scans(bids_dir)
    assert str(bids_dir / "sub-02" / "ses-1-a") in str(excinfo.value)


def test_bad_participant_label_in_config_is_refused(bids_dir):
    with pytest.raises(SubjectIdError, match="participant label '0_1'"):
        discover_scans(bids_dir, participants=["sub-0_1"])


@pytest.mark.parametrize("missing", ["03", "99"])
def test_listed_participant_without_t1w_is_refused(bids_dir, missing):
    with pytest.raises(SubjectIdError) as excinfo:
        discover_scans(bids_dir, participants=["01", missing])
    message = str(excinfo.value)
    assert f"participants sub-{missing} are listed" in message  # only the missing one
    assert "no anat/*_T1w.nii[.gz]" in message


def test_missing_bids_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="BIDS folder not found") as excinfo:
        discover_scans(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(excinfo.value)


def test_bids_dir_that_is_a_file(tmp_path):
    _touch(tmp_path / "ds")
    with pytest.raises(FileNotFoundError):
        discover_scans(tmp_path / "ds")


def test_dangling_t1w_link_is_still_listed(bids_dir):
    """DataLad datasets hold symlinks to unfetched files; load_t1w reports them later."""
    target = bids_dir / "sub-05" / "anat" / "sub-05_T1w.nii.gz"
    target.parent.mkdir(parents=True)
    os.symlink(bids_dir / ".git" / "annex" / "objects" / "nothing", target)
    scans = discover_scans(bids_dir, participants=["05"])
    assert [(s.subject, s.path) for s in scans] == [("05", target)]
    assert not scans[0].path.exists()


def test_check_label():
    assert check_label("A01", "subject", "here") == "A01"
    for bad in ("", "a b", "a-b", "a_b", "a.b", "ä"):
        with pytest.raises(SubjectIdError):
            check_label(bad, "subject", "here")
