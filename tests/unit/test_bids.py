"""cortexgen.bids: finding T1w scans in a BIDS folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortexgen.bids import Scan, check_label, discover, discover_scans
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
    assert [(s.subject, s.session) for s in scans] == [("01", None), ("02", "A"), ("02", "B"), ("02", "B")]
    assert scans[0].path == bids_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    assert scans[1].path == bids_dir / "sub-02" / "ses-A" / "anat" / "sub-02_ses-A_T1w.nii.gz"
    # Several runs: one scan each (hidden files ignored).
    assert [s.path.name for s in scans[2:]] == ["sub-02_ses-B_run-1_T1w.nii", "sub-02_ses-B_run-2_T1w.nii"]


def test_prefixes_and_subdirs(bids_dir):
    scans = discover_scans(bids_dir)
    assert [s.prefix for s in scans] == ["sub-01", "sub-02_ses-A", "sub-02_ses-B_run-1", "sub-02_ses-B_run-2"]
    assert [s.subdir for s in scans] == ["sub-01", "sub-02/ses-A", "sub-02/ses-B", "sub-02/ses-B"]


def test_scan_properties_without_discovery():
    scan = Scan("7", "pre", Path("x.nii.gz"))
    assert scan.prefix == "sub-7_ses-pre"
    assert scan.subdir == "sub-7/ses-pre"
    assert Scan("7", None, Path("x.nii.gz")).prefix == "sub-7"
    assert Scan("7", None, Path("x"), (("acq", "fast"), ("run", "10"))).prefix == "sub-7_acq-fast_run-10"


@pytest.mark.parametrize("participants", [["02"], ["sub-02"]])
def test_participants_filter_with_and_without_prefix(bids_dir, participants):
    scans = discover_scans(bids_dir, participants=participants)
    assert [s.subject for s in scans] == ["02", "02", "02"]


def test_empty_participants_keeps_everyone(bids_dir):
    assert len(discover_scans(bids_dir, participants=[])) == 4
    assert len(discover_scans(bids_dir, participants=None)) == 4


def test_exclude_participants(bids_dir):
    assert {s.subject for s in discover_scans(bids_dir, exclude_participants=["sub-02"])} == {"01"}
    assert discover_scans(bids_dir, participants=["01", "02"], exclude_participants=["01"])[0].subject == "02"


def test_bad_participant_label_in_config_is_refused(bids_dir):
    with pytest.raises(SubjectIdError, match="participant label '0_1'"):
        discover_scans(bids_dir, participants=["sub-0_1"])
    with pytest.raises(SubjectIdError, match="exclude_participants"):
        discover_scans(bids_dir, exclude_participants=["a.b"])


def _reasons(discovery) -> dict[str, str]:
    return {Path(item.path).name: item.reason for item in discovery.skipped}


def test_corpus_of_quirks_each_kept_or_skipped_with_a_reason(tmp_path):
    """The issue's corpus: runs, acquisitions, sessions, .nii beside .nii.gz, no anat/, only
    non-NIfTI files, a symlink loop, bad labels, participants.tsv naming a missing subject."""
    root = tmp_path / "ds"
    for name in ("sub-01_run-2_T1w.nii.gz", "sub-01_run-10_T1w.nii.gz"):
        _touch(root / "sub-01" / "anat" / name)
    for name in ("sub-02_acq-fast_T1w.nii.gz", "sub-02_acq-slow_T1w.nii.gz"):
        _touch(root / "sub-02" / "anat" / name)
    _touch(root / "sub-03" / "ses-1" / "anat" / "sub-03_ses-1_T1w.nii.gz")
    _touch(root / "sub-03" / "ses-2" / "anat" / "sub-03_ses-2_acq-x_run-1_T1w.nii.gz")
    _touch(root / "sub-04" / "anat" / "sub-04_T1w.nii")
    _touch(root / "sub-04" / "anat" / "sub-04_T1w.nii.gz")
    _touch(root / "sub-05" / "func" / "sub-05_task-rest_bold.nii.gz")  # no anat/
    _touch(root / "sub-06" / "anat" / "sub-06_T1w.mgz")  # only non-NIfTI
    _touch(root / "sub-06" / "anat" / "sub-06_T1w.json")
    os.symlink(root / "sub-07", root / "sub-07")  # a loop
    _touch(root / "sub-0a_b" / "anat" / "sub-0a_b_T1w.nii.gz")  # an invalid label
    _touch(root / "sub-08" / "anat" / "sub-08_run-x_y_T1w.nii.gz")  # a malformed name
    _touch(root / "sub-08" / "anat" / "sub-09_T1w.nii.gz")  # another subject's file
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-99\t40\n")

    found = discover(root)
    assert [s.prefix for s in found.scans] == [
        "sub-01_run-10", "sub-01_run-2", "sub-02_acq-fast", "sub-02_acq-slow",
        "sub-03_ses-1", "sub-03_ses-2_acq-x_run-1", "sub-04"]
    assert found.scans[-1].path.name == "sub-04_T1w.nii.gz"  # the .nii.gz wins
    reasons = _reasons(found)
    assert "same name as sub-04_T1w.nii.gz" in reasons["sub-04_T1w.nii"]
    assert reasons["sub-05"] == "no anat/ folder"
    anat_06 = next(item.reason for item in found.skipped if item.path == str(root / "sub-06" / "anat"))
    assert "no *_T1w.nii[.gz]" in anat_06 and "sub-06_T1w.mgz" in anat_06
    assert "loop" in reasons["sub-07"]
    assert "'0a_b'" in reasons["sub-0a_b"]
    assert "not a valid BIDS file name" in reasons["sub-08_run-x_y_T1w.nii.gz"]
    assert "do not match its folder" in reasons["sub-09_T1w.nii.gz"]
    assert found.missing_on_disk == ["99"]
    assert found.subjects == ["01", "02", "03", "04"]

    summary = found.summary()
    assert summary.splitlines()[0].endswith(f"4 subjects, 7 T1w images, {len(found.skipped)} skipped")
    assert len(found.skipped) == 8  # the 7 above and sub-08's anat/, left with no usable T1w
    assert "skipped " + str(root / "sub-07") in summary
    assert "participants.tsv lists 1 subjects with no folder: sub-99" in summary


def test_summary_lists_at_most_max_listed(tmp_path):
    root = tmp_path / "ds"
    _touch(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    for index in range(5):
        (root / f"sub-x{index}").mkdir()
    summary = discover(root).summary(max_listed=2)
    assert summary.count("skipped ") == 2
    assert "... and 3 more: 3 x no anat/ folder" in summary


def test_listed_participant_without_folder_is_listed(bids_dir):
    found = discover(bids_dir, participants=["01", "99"])
    assert [s.prefix for s in found.scans] == ["sub-01"]
    assert ("sub-99", "listed in config 'participants' but has no folder") in [
        (item.path, item.reason) for item in found.skipped]


def test_bad_session_folder_is_skipped(bids_dir):
    _touch(bids_dir / "sub-02" / "ses-1-a" / "anat" / "sub-02_ses-1-a_T1w.nii.gz")
    found = discover(bids_dir)
    assert len(found.scans) == 4
    assert "session label '1-a'" in _reasons(found)["ses-1-a"]


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
