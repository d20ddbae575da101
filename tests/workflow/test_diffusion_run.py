"""The diffusion stage run for real (deformation fields, three generators trained and sampled).

Only the diffusion rules may run (--allowed-rules). The model-ready images are the shipped
Colin27 brain (a real scan) brought onto a small grid the way subjects are, each "subject"
shifted by a few voxels and given its own contrast; the SDF conditions are signed distances
to its brain and bright-tissue boundaries. Tiny networks and a handful of steps: the test
checks the plumbing and the files, the unit tests check what the models learn.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from cortexgen.diffusion.fields import template_image
from cortexgen.diffusion.training import load_model
from cortexgen.preprocess.normalize import resized_affine
from tests.conftest import REPO, demo_config, discovery_bids, run_snakemake

LABELS = ["01", "02", "03"]
GRID = (32, 48, 32)
RES = "32x48x32"
DIFFUSION_RULES = ["deform_template", "deformation_field", "train_bridge", "train_ddpm", "train_deform",
                   "sample_bridge", "sample_ddpm", "sample_deform"]
TINY = {"channels": [4, 8, 8], "attention_levels": [False, False, True], "num_res_blocks": 1,
        "norm_num_groups": 4, "num_head_channels": 0, "use_flash_attention": True}


def signed_distance(inside: np.ndarray, spacing) -> np.ndarray:
    """mm, negative inside."""
    return (ndimage.distance_transform_edt(~inside, sampling=spacing)
            - ndimage.distance_transform_edt(inside, sampling=spacing)).astype(np.float32)


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_run")
    bids = discovery_bids(root / "bids", LABELS)
    work = root / "work"
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
        sdfs = {"pialsdf": signed_distance(image > 0.05, spacing), "whitesdf": signed_distance(image > 0.7, spacing)}
        for role, sdf in sdfs.items():
            nib.save(nib.Nifti1Image(sdf, brain.affine), surf / f"sub-{label}_space-MNIColin27_res-{RES}_desc-{role}.nii.gz")
    config = demo_config(bids_dir=str(bids))
    config["preprocess"]["shape"] = list(GRID)
    config["split"] = {"held_out": ["03"], "held_out_fraction": 0.25, "seed": 0, "validation_fraction": 0.0}
    config["shape_model"]["samples"]["n"] = 0
    config["shape_model"]["interpolation"]["steps"] = 0
    config["shape_model"]["atrophy"] = []
    for model in ("bridge", "ddpm", "deform"):
        section = config["diffusion"][model]
        section["grid"] = [16, 24, 16]
        section["network"] = TINY
        section["training"].update(steps=4, log_every=2, checkpoint_every=2, learning_rate=1e-3)
        section["sample_steps"] = 3
        section["sampling"]["batch_size"] = 2
        if model != "bridge":
            section["sampling"]["n"] = 2
    config["diffusion"]["device"] = "cpu"
    targets = [f"results/models/{model}/{name}" for model in ("bridge", "ddpm", "deform")
               for name in ("model.pt", "train_log.tsv", "loss.png")]
    targets += [f"results/samples/{model}/samples.tsv" for model in ("bridge", "ddpm", "deform")]
    # Targets right after a one-value option: --allowed-rules takes every word after it.
    result = run_snakemake(work, config, "--cores", "2", *targets, "--allowed-rules", *DIFFUSION_RULES)
    return work, result, brain


def test_every_generator_trains_and_writes_a_loadable_model(diffusion_run):
    work, result, _ = diffusion_run
    assert result.returncode == 0, result.stderr[-4000:]
    for model, channels in (("bridge", 3), ("ddpm", 1), ("deform", 3)):
        folder = work / "results" / "models" / model
        trained = load_model(folder / "model.pt")
        assert trained.generator.name == model and trained.grid == (16, 24, 16)
        first_conv = next(p for n, p in trained.network.named_parameters() if n.endswith("weight") and p.dim() == 5)
        assert first_conv.shape[1] == channels
        with open(folder / "train_log.tsv") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        assert [int(row["step"]) for row in rows] == [2, 4]
        assert all(np.isfinite(float(row["train_loss"])) and float(row["train_loss"]) > 0 for row in rows)
        assert (folder / "loss.png").stat().st_size > 5_000
        # Checkpoints live beside the declared outputs, not among them.
        assert sorted(p.name for p in (folder / "checkpoints").glob("step-*.pt")) == ["step-00000002.pt",
                                                                                     "step-00000004.pt"]
    deform = load_model(work / "results" / "models" / "deform" / "model.pt")
    assert deform.extra["field_scale_mm"] > 0.5


def test_samples_are_images_on_the_model_grid(diffusion_run):
    work, result, brain = diffusion_run
    assert result.returncode == 0, result.stderr[-4000:]
    samples = work / "results" / "samples"
    with open(samples / "bridge" / "samples.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    # The held-out subject's own SDFs, paired with its real image for evaluation.
    assert [(row["condition"], row["kind"]) for row in rows] == [("sub-03", "held_out")]
    assert rows[0]["real_image"].endswith(f"sub-03_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz")
    paths = [samples / "bridge" / "cond-sub03_T1w.nii.gz"] + [
        samples / model / f"sample-{i:04d}_T1w.nii.gz" for model in ("ddpm", "deform") for i in (1, 2)]
    for path in paths:
        image = nib.load(path)
        assert image.shape == GRID
        assert np.allclose(image.affine, brain.affine)
        data = image.get_fdata()
        assert data.min() >= 0.0 and data.max() <= 1.0 and np.isfinite(data).all()
    field = nib.load(samples / "deform" / "sample-0001_from-MNIColin27_desc-displacement_xfm.nii.gz")
    assert field.shape == GRID + (3,)
    with open(samples / "deform" / "samples.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 2 and all(0.0 <= float(row["folding_fraction"]) <= 1.0 for row in rows)
    # A deform sample is the template warped by the field written beside it.
    from cortexgen.diffusion.fields import field_array, warp_image

    template = nib.load(work / "results" / "deform" / "template" / f"tpl-MNIColin27_res-{RES}_desc-brain_T1w.nii.gz")
    expected = warp_image(template.get_fdata(dtype=np.float32), field_array(field), template.affine)
    assert np.abs(nib.load(samples / "deform" / "sample-0001_T1w.nii.gz").get_fdata() - np.clip(expected, 0, 1)).max() < 1e-5


def test_deformation_fields_warp_the_template_towards_each_subject(diffusion_run):
    from cortexgen.diffusion.fields import field_array, warp_image

    work, result, _ = diffusion_run
    assert result.returncode == 0, result.stderr[-4000:]
    template = nib.load(work / "results" / "deform" / "template" / f"tpl-MNIColin27_res-{RES}_desc-brain_T1w.nii.gz")
    # Training subjects only (sub-03 is held out).
    fields = sorted((work / "results" / "deform").glob("sub-*/anat/*_desc-displacement_xfm.nii.gz"))
    assert [path.name[:6] for path in fields] == ["sub-01", "sub-02"]
    for path in fields:
        label = path.name[4:6]
        subject = nib.load(work / "results" / "preproc" / f"sub-{label}" / "anat"
                           / f"sub-{label}_space-MNIColin27_res-{RES}_desc-preproc_T1w.nii.gz").get_fdata()
        warped = warp_image(torch.from_numpy(template.get_fdata(dtype=np.float32)),
                            torch.from_numpy(field_array(nib.load(path))), template.affine).numpy()
        before = np.abs(template.get_fdata() - subject).mean()
        assert np.abs(warped - subject).mean() < 0.8 * before
