"""The surface stage run for real on one embedded ds000022 head, at reduced mesh density."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cortexgen.surfaces.mesh import euler_characteristic, load_shape, load_surface
from cortexgen.surfaces.sdf import sample_volume
from tests.bids_validator import UNAVAILABLE, derivative_datasets, issue_codes, issues, resolve_bids_uri, run_validator
from tests.conftest import DEMO_BIDS, demo_config, run_snakemake

pytestmark = pytest.mark.slow
SUB = "sub-01"


@pytest.fixture(scope="module")
def surface_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("surface_run")
    bids = root / "bids"
    shutil.copytree(DEMO_BIDS / SUB, bids / SUB)
    shutil.copy(DEMO_BIDS / "dataset_description.json", bids / "dataset_description.json")
    config = demo_config(bids_dir=str(bids))
    # fsaverage5 density (10242 vertices per hemisphere) keeps CI fast; the fit is the default one.
    config["surfaces"]["template_subdivisions"] = 0
    work = root / "work"
    # deformation_field too (a few seconds): the deform dataset, for the BIDS validator.
    result = run_snakemake(work, config, "--cores", "2", "--until", "surface_sdf", "qc_surfaces", "dataset_description",
                           "deformation_field")
    return work, result


def test_surfaces_sdf_and_qc_are_written(surface_run):
    work, result = surface_run
    assert result.returncode == 0, result.stderr[-3000:]
    anat = work / "results" / "surfaces" / SUB / "anat"
    for hemi in ("L", "R"):
        white = load_surface(anat / f"{SUB}_hemi-{hemi}_white.surf.gii")
        pial = load_surface(anat / f"{SUB}_hemi-{hemi}_pial.surf.gii")
        thickness = load_shape(anat / f"{SUB}_hemi-{hemi}_thickness.shape.gii")
        assert len(white.vertices) == len(pial.vertices) == len(thickness) == 10242
        assert euler_characteristic(white) == euler_characteristic(pial) == 2
        cortex = thickness > 0
        # A human cortex, measured in the (affinely enlarged) MNI space: 2-3.2 mm on average.
        assert 2.0 < thickness[cortex].mean() < 3.2
        # Left hemisphere on the left (x < 0) of the MNI space, and vice versa.
        assert np.sign(white.vertices[:, 0].mean()) == (-1 if hemi == "L" else 1)
    pial_sdf = nib.load(anat / f"{SUB}_space-MNIColin27_res-84x128x84_desc-pial_sdf.nii.gz")
    assert pial_sdf.shape == (84, 128, 84)
    # The SDF's zero level is the mesh: its vertices read ~0 (half the smallest voxel edge).
    values = sample_volume(pial_sdf.get_fdata(), pial_sdf.affine, pial.vertices)
    assert np.median(np.abs(values)) < 0.85
    ribbon = nib.load(anat / f"{SUB}_space-MNIColin27_res-84x128x84_desc-ribbon_mask.nii.gz").get_fdata()
    # The cortical ribbon of a brain is roughly 400-700 mL; at 2.155 x 1.695 x 2.155 mm voxels.
    ribbon_ml = ribbon.sum() * 2.155 * 1.695 * 2.155 / 1000
    assert 300 < ribbon_ml < 900


def test_cortex_partition_and_native_thickness(surface_run):
    """The partition holds a cerebellum and brainstem of a human's size apart from two cerebral
    hemispheres on their own sides; the native thickness undoes the affine's enlargement."""
    from cortexgen.surfaces.partition import HINDBRAIN, LEFT, LEFT_FILL, RIGHT, RIGHT_FILL

    work, result = surface_run
    assert result.returncode == 0, result.stderr[-3000:]
    anat = work / "results" / "surfaces" / SUB / "anat"
    image = nib.load(anat / f"{SUB}_space-MNIColin27_desc-cortex_dseg.nii.gz")
    partition = np.asarray(image.dataobj)
    assert set(np.unique(partition)) == {0, LEFT, RIGHT, LEFT_FILL, RIGHT_FILL, HINDBRAIN}
    ml = {value: np.count_nonzero(partition == value) * np.prod(image.header.get_zooms()[:3]) / 1000
          for value in (LEFT, RIGHT, HINDBRAIN)}
    # MNI space enlarges this head ~1.1x linearly: a cerebellum and brainstem of 150-350 mL
    # (with the CSF around them), cerebral hemispheres of 450-900 mL each.
    assert 150 < ml[HINDBRAIN] < 350 and all(450 < ml[v] < 900 for v in (LEFT, RIGHT))
    x = nib.affines.apply_affine(image.affine, np.argwhere(partition == LEFT))[:, 0]
    assert np.mean(x < 0) > 0.99
    for hemi in ("L", "R"):
        mni = load_shape(anat / f"{SUB}_hemi-{hemi}_thickness.shape.gii")
        native = load_shape(anat / f"{SUB}_hemi-{hemi}_desc-native_thickness.shape.gii")
        cortex = mni > 0
        assert 2.0 < native[cortex].mean() < mni[cortex].mean()


def test_surface_qc_table(surface_run):
    work, result = surface_run
    assert result.returncode == 0, result.stderr[-3000:]
    with open(work / "results" / "qc" / f"{SUB}_surfaces.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["hemi"] for row in rows] == ["L", "R"]
    for row in rows:
        assert int(row["euler_characteristic_white"]) == int(row["euler_characteristic_pial"]) == 2
        # Repaired: no self-intersections left.
        assert int(row["self_intersections_white"]) == int(row["self_intersections_pial"]) == 0
        assert float(row["white_to_wm_mm"]) < 1.5
        assert float(row["pial_to_gmwm_mm"]) < 2.5
        assert float(row["white_to_wm_median_mm"]) < 0.5 and float(row["pial_to_gmwm_median_mm"]) < 0.6
        # No cortex in the cerebellum or brainstem (the stage before the partition had ~3000).
        assert int(row["hindbrain_vertices"]) == 0
        assert row["flags"] == "ok", row["flags"]
    assert (work / "results" / "qc" / f"{SUB}_surfaces.png").stat().st_size > 20_000


@pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")
def test_the_bids_validator_accepts_each_dataset_of_the_run(surface_run):
    """Real files: NIfTI headers and sidecars too (the names of every output: test_bids_validator.py).
    Each stage folder that holds subjects is validated as it is, a dataset of its own."""
    work, result = surface_run
    assert result.returncode == 0, result.stderr[-3000:]
    results = work / "results"
    assert [folder.name for folder in derivative_datasets(results)] == ["deform", "preproc", "surfaces"]
    for name, subjects in (("preproc", ["01"]), ("surfaces", ["01"]), ("deform", [])):
        report = run_validator(results / name)
        assert issues(report) == [], name
        # deform's subject holds only its transform (_xfm: .bidsignore).
        assert report["summary"]["subjects"] == subjects, name
        # What remains: no README or Authors (the user's to write), keys BIDS recommends (Description,
        # Sources, SpatialReference, Type) on the images without a sidecar of their own, and no spatial
        # unit in the headers of the native-space images and the segmentations (NIFTI_UNIT).
        assert set(issue_codes(report)) <= {"README_FILE_MISSING", "TOO_FEW_AUTHORS", "SIDECAR_KEY_RECOMMENDED",
                                            "NIFTI_UNIT"}, name

    sidecar = json.loads((results / "surfaces" / SUB / "anat" /
                          f"{SUB}_space-MNIColin27_res-84x128x84_desc-pial_sdf.json").read_text())
    assert sidecar["Units"] == "mm" and sidecar["Resolution"].startswith("84x128x84 voxels")
    assert sidecar["Sources"] == [f"bids::{SUB}/anat/{SUB}_hemi-{hemi}_pial.surf.gii" for hemi in "LR"] + [
        f"bids:preproc:{SUB}/anat/{SUB}_space-MNIColin27_res-84x128x84_desc-preproc_T1w.nii.gz"]
    # Every Sources entry of every sidecar names a file that is there, from the dataset it is in
    # (bids:: that dataset, bids:preproc: and bids:raw: through its DatasetLinks).
    cited = {}
    for name in ("preproc", "surfaces", "deform"):
        cited[name] = 0
        for path in sorted((results / name).glob("*/**/*.json")):
            for uri in json.loads(path.read_text()).get("Sources", []):
                assert resolve_bids_uri(uri, results / name).is_file(), (path, uri)
                cited[name] += 1
    # preproc: the raw scan thrice, denoised, n4 + transform, head + mask; surfaces: the meshes and
    # the grid of the SDFs and the ribbon; deform: the study template's one training image.
    assert cited == {"preproc": 8, "surfaces": 11, "deform": 1}
