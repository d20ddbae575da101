"""The preprocessing rules really run on real heads (at 2 mm, to keep CI short), beside
every kind of bad input, under --keep-going.

One workflow run (a module fixture) serves every test here:
- sub-01, sub-02: real ds000022 heads from resources/, resampled to 2 mm (a valid '2 mm scan');
- sub-lps: sub-02 stored in LPS voxel order with an oblique (10 degree) affine: valid;
- sub-stripped: sub-01 already skull-stripped (zeros outside the brain): valid;
- sub-corrupt, sub-truncated, sub-fourd, sub-twod, sub-nan, sub-zero, sub-missing,
  sub-coarse: each refused with a message naming the file and the problem.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_to_output

from tests.conftest import DEMO_BIDS, demo_config, run_snakemake

pytestmark = pytest.mark.slow

SPACE = "MNIColin27"
VALID = ["01", "02", "lps", "stripped"]
INVALID = {
    "corrupt": "cannot be read as NIfTI",
    "truncated": "cannot be read as NIfTI",
    "fourd": "is a 4D series",
    "twod": "is 2D",
    "nan": "NaN",
    "zero": "every voxel is 0",
    "missing": "dangling symlink",
    "coarse": "coarser than preprocess.max_voxel_size_mm",
}


def _rotation_z(degrees: float) -> np.ndarray:
    theta = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return rotation


def _write(img: nib.Nifti1Image, bids, label: str) -> str:
    path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return str(path)


def _make_bids(bids):
    """Write the test cohort; returns the path of each subject's T1w."""
    from cortexgen.io import load_t1w
    from cortexgen.preprocess.skullstrip import deepbet_brain_mask

    heads = {}
    paths = {}
    for label in ("01", "02"):
        head = resample_to_output(nib.load(DEMO_BIDS / f"sub-{label}/anat/sub-{label}_T1w.nii.gz"), voxel_sizes=2.0)
        head = nib.Nifti1Image(np.asarray(head.dataobj, dtype=np.int16), head.affine)
        heads[label] = head
        paths[label] = _write(head, bids, label)

    # Same voxels in LPS order, and the whole head rotated in world space (oblique).
    data = np.asarray(heads["02"].dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [data.shape[0] - 1, data.shape[1] - 1]
    lps_affine = _rotation_z(10.0) @ heads["02"].affine @ flip
    paths["lps"] = _write(nib.Nifti1Image(data, lps_affine), bids, "lps")

    # Skull-stripped by a mask computed on the native scan (what another tool would hand us).
    native = load_t1w(paths["01"])
    mask = deepbet_brain_mask(native)
    stripped = np.where(mask, np.asarray(native.dataobj), 0).astype(np.int16)
    paths["stripped"] = _write(nib.Nifti1Image(stripped, native.affine), bids, "stripped")

    good = heads["01"]
    shape = good.shape
    corrupt = bids / "sub-corrupt/anat/sub-corrupt_T1w.nii.gz"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(gzip.compress(b"not a nifti")[:10] + np.random.default_rng(0).bytes(50_000))
    raw = (bids / "sub-01/anat/sub-01_T1w.nii.gz").read_bytes()
    truncated = bids / "sub-truncated/anat/sub-truncated_T1w.nii.gz"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(raw[: len(raw) // 2])
    _write(nib.Nifti1Image(np.stack([np.asarray(good.dataobj)] * 3, axis=-1), good.affine), bids, "fourd")
    _write(nib.Nifti1Image(np.asarray(good.dataobj)[:, :, shape[2] // 2], good.affine), bids, "twod")
    with_nan = np.asarray(good.dataobj).astype(np.float32)
    with_nan[10:12, 10:12, 10:12] = np.nan
    _write(nib.Nifti1Image(with_nan, good.affine), bids, "nan")
    _write(nib.Nifti1Image(np.zeros(shape, np.int16), good.affine), bids, "zero")
    missing = bids / "sub-missing/anat/sub-missing_T1w.nii.gz"
    missing.parent.mkdir(parents=True)
    missing.symlink_to(bids / ".git/annex/objects/never-fetched.nii.gz")
    coarse = resample_to_output(good, voxel_sizes=4.0)
    _write(nib.Nifti1Image(np.asarray(coarse.dataobj, np.int16), coarse.affine), bids, "coarse")
    return paths


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("preproc_run")
    bids = root / "bids"
    paths = _make_bids(bids)
    work = root / "work"
    # Preprocessing only: the surface stage has its own workflow test.
    result = run_snakemake(
        work, demo_config(bids_dir=str(bids)), "--cores", "2", "--keep-going", "--until", "qc_preproc"
    )
    return work, result, paths, bids


def preproc(work, label, suffix):
    return work / "results" / "preproc" / f"sub-{label}" / "anat" / f"sub-{label}{suffix}"


def test_run_fails_overall_but_valid_subjects_finish(cohort_run):
    work, result, _, _ = cohort_run
    assert result.returncode != 0, "bad subjects must make the run fail"
    for label in VALID:
        image = preproc(work, label, f"_space-{SPACE}_res-84x128x84_desc-preproc_T1w.nii.gz")
        assert image.is_file(), f"sub-{label} did not finish:\n{result.stderr[-3000:]}"
        assert (work / "results" / "qc" / f"sub-{label}_preproc.png").stat().st_size > 10_000


@pytest.mark.parametrize("label", VALID)
def test_valid_outputs_have_the_promised_values(cohort_run, label):
    work, _, _, _ = cohort_run
    image = nib.load(preproc(work, label, f"_space-{SPACE}_res-84x128x84_desc-preproc_T1w.nii.gz"))
    mask = nib.load(preproc(work, label, f"_space-{SPACE}_res-84x128x84_desc-brain_mask.nii.gz"))
    data = np.asarray(image.dataobj)
    inside = np.asarray(mask.dataobj) > 0
    assert image.shape == (84, 128, 84)
    assert data.dtype == np.float32
    assert data.min() >= 0.0 and data.max() <= 1.0
    assert np.all(data[~inside] == 0.0)
    # Robust percentiles: the brain spans the range, median tissue is mid-grey.
    assert np.percentile(data[inside], 99) > 0.9
    assert 0.3 < np.median(data[inside]) < 0.9
    # The affine states the true voxel size of the 181x217x181 mm box on 84x128x84 voxels.
    np.testing.assert_allclose(np.sqrt((image.affine[:3, :3] ** 2).sum(0)), [181 / 84, 217 / 128, 181 / 84], rtol=1e-6)
    brain_ml = np.asarray(nib.load(preproc(work, label, f"_space-{SPACE}_desc-brain_mask.nii.gz")).dataobj).sum() / 1000
    assert 1200 < brain_ml < 2300, f"sub-{label}: brain mask {brain_ml:.0f} mL in MNI space"


@pytest.mark.parametrize("label", VALID)
def test_brain_lands_on_the_template_brain(cohort_run, label):
    from cortexgen.preprocess.skullstrip import mask_dice
    from tests.conftest import REPO

    work, _, _, _ = cohort_run
    mask = np.asarray(nib.load(preproc(work, label, f"_space-{SPACE}_desc-brain_mask.nii.gz")).dataobj) > 0
    template_mask = np.asarray(nib.load(REPO / demo_config()["preprocess"]["template_brain_mask"]).dataobj) > 0
    assert mask_dice(mask, template_mask) > 0.85


def test_oblique_lps_scan_gives_the_same_brain_as_its_ras_original(cohort_run):
    work, _, _, _ = cohort_run
    suffix = f"_space-{SPACE}_res-84x128x84_desc-preproc_T1w.nii.gz"
    original = np.asarray(nib.load(preproc(work, "02", suffix)).dataobj)
    rotated = np.asarray(nib.load(preproc(work, "lps", suffix)).dataobj)
    assert np.corrcoef(original.ravel(), rotated.ravel())[0, 1] > 0.95


def test_skull_stripped_scan_gives_the_same_brain_as_the_head(cohort_run):
    from cortexgen.preprocess.skullstrip import mask_dice

    work, _, _, _ = cohort_run
    suffix = f"_space-{SPACE}_desc-brain_mask.nii.gz"
    head_mask = np.asarray(nib.load(preproc(work, "01", suffix)).dataobj) > 0
    stripped_mask = np.asarray(nib.load(preproc(work, "stripped", suffix)).dataobj) > 0
    assert mask_dice(head_mask, stripped_mask) > 0.9
    log = (work / "logs" / "preprocess" / "sub-stripped" / "sub-stripped.log").read_text()
    assert "looks skull-stripped" in log


@pytest.mark.parametrize("label", sorted(INVALID))
def test_bad_input_is_named_and_leaves_nothing_behind(cohort_run, label):
    work, result, _, bids = cohort_run
    log = (work / "logs" / "preprocess" / f"sub-{label}" / f"sub-{label}.log").read_text()
    assert f"sub-{label}_T1w.nii.gz" in log
    assert INVALID[label] in log
    subject_dir = work / "results" / "preproc" / f"sub-{label}"
    leftovers = [p for p in subject_dir.rglob("*") if p.is_file()] if subject_dir.exists() else []
    assert leftovers == [], f"half-written outputs left behind: {leftovers}"
    assert not (work / "results" / "qc" / f"sub-{label}_preproc.png").exists()
