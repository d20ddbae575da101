"""Session-wide fixtures of the workflow tests: the diffusion stage's small inputs, its one
local run (shared by tests/workflow/test_diffusion_run.py and the SLURM tests, which compare
their outputs with it), and the one-node SLURM cluster.

The model-ready images are the shipped Colin27 brain (a real scan) brought onto a small grid
the way subjects are, each "subject" shifted by a few voxels and given its own contrast; the
SDF conditions are signed distances to its brain and bright-tissue boundaries. The held-out
subject's "surfaces" are the template's own meshes (the cycle-consistency rule needs
conditioning surfaces). Tiny networks and a handful of steps.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tests import slurm_cluster as cluster_lib
from tests.conftest import REPO, demo_config, discovery_bids, run_snakemake

LABELS = ["01", "02", "03"]
GRID = (32, 48, 32)
RES = "32x48x32"
DIFFUSION_RULES = ["deform_template", "deformation_field", "train_generator", "sample_bridge", "sample_ddpm",
                   "sample_deform", "sample_sdm"]
EVALUATION_RULES = ["surface_template", "cycle_consistency", "evaluate"]
TINY = {"channels": [4, 8, 8], "attention_levels": [False, False, True], "num_res_blocks": 1,
        "norm_num_groups": 4, "num_head_channels": 0, "use_flash_attention": True}
GENERATORS = ("bridge", "ddpm", "deform", "sdm")
#: What the diffusion run asks for: every model, its log and figure, the samples, the metrics.
DIFFUSION_TARGETS = (
    [f"results/models/{model}/{name}" for model in GENERATORS for name in ("model.pt", "train_log.tsv", "loss.png")]
    + [f"results/samples/{model}/samples.tsv" for model in GENERATORS]
    + ["results/evaluation/metrics.tsv"]
)


def signed_distance(inside: np.ndarray, spacing) -> np.ndarray:
    """mm, negative inside."""
    return (ndimage.distance_transform_edt(~inside, sampling=spacing)
            - ndimage.distance_transform_edt(inside, sampling=spacing)).astype(np.float32)


def build_diffusion_inputs(root: Path) -> tuple[Path, dict, nib.Nifti1Image]:
    """The diffusion stage's inputs under ``root``, without running any rule (a few seconds).

    Writes ``root/bids`` (for subject discovery) and, in the workflow folder ``root/work``,
    the preprocessed images, brain masks and pial/white SDFs of sub-01..03 on the 32x48x32
    grid, and sub-03's surfaces. Returns (work folder, config, the template brain image).
    """
    bids = discovery_bids(root / "bids", LABELS)
    work = root / "work"
    from cortexgen.diffusion.fields import template_image
    from cortexgen.preprocess.normalize import resized_affine

    template = nib.load(REPO / "resources/templates/tpl-MNIColin27_res-1_T1w.nii.gz")
    mask = nib.load(REPO / "resources/templates/tpl-MNIColin27_res-1_desc-brain_mask.nii.gz")
    grid = nib.Nifti1Image(np.zeros(GRID, np.uint8), resized_affine(template.affine, template.shape, GRID))
    brain = template_image(template, mask, grid)
    spacing = np.sqrt((brain.affine[:3, :3] ** 2).sum(axis=0))
    for k, label in enumerate(LABELS):
        image = np.roll(brain.get_fdata(dtype=np.float32), shift=(k - 1, 1 - k, k), axis=(0, 1, 2))
        image = image ** (1.0 + 0.15 * k)
        anat = work / "results" / "preproc" / f"sub-{label}" / "anat"
        surf = work / "results" / "surfaces" / f"sub-{label}" / "anat"
        anat.mkdir(parents=True)
        surf.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, brain.affine),
                 anat / f"sub-{label}_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz")
        nib.save(nib.Nifti1Image((image > 0).astype(np.uint8), brain.affine),
                 anat / f"sub-{label}_space-MNIColin27_res-{RES}_desc-brain_mask.nii.gz")
        sdfs = {"pial": signed_distance(image > 0.05, spacing), "white": signed_distance(image > 0.7, spacing)}
        for surface, sdf in sdfs.items():
            nib.save(nib.Nifti1Image(sdf, brain.affine),
                     surf / f"sub-{label}_space-MNIColin27_res-{RES}_desc-{surface}_sdf.nii.gz")
    # The held-out subject's conditioning surfaces: the template's meshes (fsaverage5).
    from cortexgen.surfaces.mesh import save_shape, save_surface
    from cortexgen.surfaces.template import load_fsaverage

    surf03 = work / "results" / "surfaces" / "sub-03" / "anat"
    for hemi in ("L", "R"):
        meshes = load_fsaverage(hemi, subdivisions=0)
        save_surface(meshes.white, surf03 / f"sub-03_hemi-{hemi}_white.surf.gii")
        save_surface(meshes.pial, surf03 / f"sub-03_hemi-{hemi}_pial.surf.gii")
        save_shape(np.linalg.norm(meshes.pial.vertices - meshes.white.vertices, axis=1).astype(np.float32),
                   surf03 / f"sub-03_hemi-{hemi}_thickness.shape.gii")
    return work, diffusion_config(bids), brain


def diffusion_config(bids: Path) -> dict:
    """The shipped config shrunk for the diffusion run: tiny networks, 4 training steps, CPU; the
    statistical deformation model on deform's grid."""
    config = demo_config(bids_dir=str(bids))
    config["preprocess"]["shape"] = list(GRID)
    config["surfaces"]["template_subdivisions"] = 0
    # MS-SSIM at 5 scales needs sides of 16 x kernel voxels: kernel 2 fits the 32-voxel sides.
    config["evaluate"]["metrics"].update(n_resamples=200, ms_ssim_pairs=3, ms_ssim_kernel=2, feature_pool=2)
    config["evaluate"]["cycle_consistency"]["kinds"] = ["held_out"]
    config["split"] = {"held_out": ["03"], "held_out_fraction": 0.25, "seed": 0, "validation_fraction": 0.0}
    config["shape_model"]["samples"]["n"] = 0
    config["shape_model"]["interpolation"]["steps"] = 0
    config["shape_model"]["atrophy"] = []
    for model in GENERATORS:
        section = config["diffusion"][model]
        section["grid"] = [16, 24, 16]
        section["sampling"]["batch_size"] = 2
        if model != "bridge":
            section["sampling"]["n"] = 2
        if model != "sdm":
            section["network"] = copy.deepcopy(TINY)
            section["training"].update(steps=4, log_every=2, checkpoint_every=2, learning_rate=1e-3)
            section["sample_steps"] = 3
    config["diffusion"]["device"] = "cpu"
    return config


class DiffusionRun(NamedTuple):
    """The local diffusion + evaluation run: its folder, Snakemake's result, the grid image, config."""

    work: Path
    result: object  # subprocess.CompletedProcess of the run
    brain: nib.Nifti1Image
    report: object  # CompletedProcess of `--report`, None if the run failed
    config: dict


@pytest.fixture(scope="session")
def diffusion_run(tmp_path_factory) -> DiffusionRun:
    """Diffusion and evaluation rules run once, locally on 2 cores (about 4.5 minutes)."""
    work, config, brain = build_diffusion_inputs(tmp_path_factory.mktemp("diffusion_run"))
    # Targets right after a one-value option: --allowed-rules takes every word after it.
    result = run_snakemake(work, config, "--cores", "2", *DIFFUSION_TARGETS, "--allowed-rules", *DIFFUSION_RULES,
                           *EVALUATION_RULES)
    report = None
    if result.returncode == 0:
        report = run_snakemake(work, config, "--report", "report.html", *DIFFUSION_TARGETS)
    return DiffusionRun(work, result, brain, report, config)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster (tests/slurm_cluster.py) for the session; skips where none can start.

    Daemons this session started are stopped at its end (their jobs cancelled first).
    """
    reason = cluster_lib.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = cluster_lib.start()
    yield cluster
    cluster.stop()
