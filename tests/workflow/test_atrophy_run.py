"""Atrophy as an experiment, run for real: the demo's occipital atrophy applied to the held-out
subject's own surfaces (rule thin_held_out), the bridge sampling each atrophied cortex and its
unthinned twin with the same noise, and the twins' differences inside and outside the region
(rule atrophy_effect).

The inputs are the diffusion run's (tests/workflow/conftest.py: Colin27-derived subjects on a
32x48x32 grid, the template's meshes as sub-03's surfaces), with sub-03's condition volumes made
from its surfaces as rule surface_sdf makes them. The shape model's two cortices the atrophy
needs, the mean shape and it thinned, stand in as the same meshes and those meshes thinned
(rule make_shape is not allowed to run). A 4-step bridge: the numbers show where the thinning
reaches the image, not what a trained bridge makes of it.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from cortexgen.io import save_nifti
from cortexgen.shape.synthesis import thin_hemisphere
from cortexgen.surfaces.extract import HemisphereSurfaces
from cortexgen.surfaces.mesh import load_shape, load_surface, save_surface
from cortexgen.surfaces.sdf import condition_volumes
from cortexgen.surfaces.template import load_fsaverage
from tests.conftest import demo_config, run_snakemake
from tests.workflow.conftest import RES, build_diffusion_inputs

ATROPHY_RULES = ["surface_template", "train_generator", "thin_held_out", "sample_bridge", "atrophy_effect"]
VOLUME = f"space-MNIColin27_res-{RES}_desc-{{}}.nii.gz"  # pial_sdf, white_sdf, ribbon_mask


def write_cortex(folder, prefix, surfaces, grid):
    """Surfaces and, from the surfaces as written (float32), condition volumes, as rules
    surfaces and surface_sdf (or make_shape) write them."""
    folder.mkdir(parents=True, exist_ok=True)
    whites, pials = [], []
    for hemi, hemisphere in surfaces.items():
        for name, mesh, meshes in (("white", hemisphere.white, whites), ("pial", hemisphere.pial, pials)):
            save_surface(mesh, folder / f"{prefix}_hemi-{hemi}_{name}.surf.gii")
            meshes.append(load_surface(folder / f"{prefix}_hemi-{hemi}_{name}.surf.gii"))
    volumes = condition_volumes(whites, pials, grid.shape[:3], grid.affine, clip_mm=10.0)
    for role, volume in (("pial_sdf", volumes.pial_sdf), ("white_sdf", volumes.white_sdf),
                         ("ribbon_mask", volumes.ribbon.astype(np.uint8))):
        save_nifti(nib.Nifti1Image(volume, grid.affine), folder / f"{prefix}_{VOLUME.format(role)}")


@pytest.fixture(scope="module")
def atrophy_run(tmp_path_factory):
    work, config, brain = build_diffusion_inputs(tmp_path_factory.mktemp("atrophy_run"))
    config["shape_model"]["atrophy"] = demo_config()["shape_model"]["atrophy"]
    atrophy = config["shape_model"]["atrophy"][0]
    own = {}
    for hemi in ("L", "R"):
        meshes = load_fsaverage(hemi, subdivisions=0)
        own[hemi] = HemisphereSurfaces.from_white_pial(meshes.white, meshes.pial, meshes.cortex)
    write_cortex(work / "results/surfaces/sub-03/anat", "sub-03", own, brain)
    write_cortex(work / "results/shapes/mean", "mean", own, brain)
    write_cortex(work / "results/shapes/atrophy01", "atrophy01",
                 {hemi: thin_hemisphere(surfaces, hemi, atrophy) for hemi, surfaces in own.items()}, brain)
    result = run_snakemake(work, config, "--cores", "2", "results/evaluation/atrophy.tsv",
                           "results/samples/bridge/samples.tsv", "--allowed-rules", *ATROPHY_RULES)
    return work, result, own


def read_tsv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def volume(path):
    image = nib.load(path)
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


def test_bridge_samples_each_atrophy_and_its_twin_with_one_noise_key(atrophy_run):
    work, result, _ = atrophy_run
    assert result.returncode == 0, result.stderr[-4000:]
    rows = read_tsv(work / "results/samples/bridge/samples.tsv")
    assert [(row["condition"], row["kind"], row["noise"]) for row in rows] == [
        ("sub-03", "held_out", "sub03"), ("atrophy01", "atrophy", "mean"), ("mean", "mean", "mean"),
        ("sub03atrophy01", "held_out_atrophy", "sub03")]


def test_held_out_atrophy_thins_the_subjects_own_occipital_cortex(atrophy_run):
    work, result, own = atrophy_run
    assert result.returncode == 0, result.stderr[-4000:]
    folder = work / "results/shapes/sub03atrophy01"
    for hemi, surfaces in own.items():
        ratio = load_shape(folder / f"sub03atrophy01_hemi-{hemi}_thickness.shape.gii") / np.maximum(
            surfaces.thickness, 1e-9)
        y = surfaces.midthickness.vertices[:, 1]
        inside, away = surfaces.cortex & (y <= -70), surfaces.cortex & (y > -60)
        assert inside.sum() > 100
        # float32 files: the ratio to about 1e-6 mm on ~2.5 mm.
        assert np.allclose(ratio[inside], 0.7, atol=1e-5) and np.allclose(ratio[away], 1.0, atol=1e-5)
    # The thinned and the subject's own condition volumes differ near the region only (SDFs are
    # exact within 10 mm of a surface, clipped beyond: 20 mm from it no surface moved). Not bit for
    # bit: libigl's search tree over the changed mesh rounds a few float32 steps differently.
    thinned, affine = volume(folder / f"sub03atrophy01_{VOLUME.format('pial_sdf')}")
    twin, _ = volume(work / f"results/surfaces/sub-03/anat/sub-03_{VOLUME.format('pial_sdf')}")
    y = (np.indices(thinned.shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3])[:, 1].reshape(thinned.shape)
    assert np.abs(thinned - twin)[y > -45].max() < 1e-4 and np.abs(thinned - twin).max() > 0.1


def test_twin_difference_is_measured_inside_and_outside_the_region(atrophy_run):
    work, result, _ = atrophy_run
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {row["atrophied"]: row for row in read_tsv(work / "results/evaluation/atrophy.tsv")}
    assert sorted(rows) == ["atrophy01", "sub03atrophy01"]
    assert rows["atrophy01"]["twin"] == "mean" and rows["sub03atrophy01"]["twin"] == "sub03"
    for row in rows.values():
        assert int(row["region_voxels"]) > 0 and int(row["outside_voxels"]) > int(row["region_voxels"])
        # The same noise: the thinning changed the image more inside the region than elsewhere.
        assert float(row["mad_region"]) > float(row["mad_outside"]) > 0, row
    # The same cortex (the stand-in mean shape is sub-03's) with another noise key: another image.
    samples = work / "results/samples/bridge"
    assert not np.array_equal(volume(samples / "cond-mean_T1w.nii.gz")[0], volume(samples / "cond-sub03_T1w.nii.gz")[0])
    assert (work / "results/evaluation/figures/atrophy.png").stat().st_size > 10_000
