"""The generator benchmark's own bookkeeping: per-model minutes, seconds per step from a
training log, metric rows as JSON values."""

import math

import numpy as np
import pytest

from benchmarks.generators import log_seconds_per_step, metric_values, minutes_per_model
from cortexgen.diffusion.training import write_log
from cortexgen.evaluate.metrics import MetricResult


def test_minutes_per_model_reads_each_models_minutes():
    assert minutes_per_model("bridge=60, ddpm=0.5,") == {"bridge": 60.0, "ddpm": 0.5}
    with pytest.raises(ValueError, match="model=minutes"):
        minutes_per_model("ddpm")


def test_seconds_per_step_from_a_log_of_uneven_windows(tmp_path):
    # Rows every 2 steps, then a last row of 1 step: 2 s, 4 s, 3 s -> 1, 2, 3 s per step.
    rows = [{"step": step, "train_loss": 0.1, "val_loss": math.nan, "learning_rate": 1e-3, "seconds": seconds,
             "volumes_per_second": 1.0} for step, seconds in ((2, 2.0), (4, 4.0), (5, 3.0))]
    write_log(rows, tmp_path / "train_log.tsv")
    median, mean = log_seconds_per_step(tmp_path / "train_log.tsv")
    assert median == pytest.approx(2.0)
    assert mean == pytest.approx(9.0 / 5)
    # Rows ending within the warm-up are left out of the median only: 2 and 3 s per step remain.
    median, mean = log_seconds_per_step(tmp_path / "train_log.tsv", warmup_steps=2)
    assert median == pytest.approx(2.5)
    assert mean == pytest.approx(9.0 / 5)


def test_metric_values_keeps_notes_and_writes_nan_as_none():
    rows = [MetricResult("ddpm", "mmd_rbf_pooled4", 0.25, 0.1, 0.4, "4 vs 8"),
            MetricResult("ddpm", "fid_medicalnet", math.nan, math.nan, math.nan, "4 vs 8", "not computed")]
    values = metric_values(rows)
    assert values["mmd_rbf_pooled4"] == {"value": 0.25, "ci": [0.1, 0.4], "n": "4 vs 8", "note": ""}
    assert values["fid_medicalnet"]["value"] is None and values["fid_medicalnet"]["ci"] == [None, None]


def test_error_by_region_splits_the_squared_error_by_partition_and_surfaces():
    """Hindbrain, filled, inside white, ribbon and outside pial in slabs of 2 voxels along x:
    the hindbrain holds half of the squared error, so the real image there gains 3.01 dB."""
    from benchmarks.generators import ERROR_REGIONS, error_by_region
    from cortexgen.surfaces.partition import HINDBRAIN, LEFT, LEFT_FILL

    x = np.arange(10)[:, None, None] * np.ones((10, 10, 10))
    partition = np.where(x < 2, HINDBRAIN, np.where(x < 4, LEFT_FILL, LEFT))
    white_sdf, pial_sdf = x - 5.5, x - 7.5
    real = np.zeros((10, 10, 10))
    fake = np.where(x < 2, 0.2, 0.1)
    split = error_by_region(real, fake, np.ones_like(real, dtype=bool), partition, pial_sdf, white_sdf)
    assert list(split) == list(ERROR_REGIONS)
    assert split["hindbrain"] == {"share": 0.5, "oracle_gain_db": pytest.approx(3.0103, abs=1e-3)}
    for name in ERROR_REGIONS[1:]:
        assert split[name]["share"] == 0.125
    # Outside the mask nothing counts.
    split = error_by_region(real, fake, x >= 2, partition, pial_sdf, white_sdf)
    assert split["hindbrain"]["share"] == 0.0 and split["ribbon"]["share"] == 0.25


def test_training_mean_samples_are_what_the_sampling_job_would_write_of_the_mean(tmp_path):
    """An image DDPM's mean is upsampled to the template's grid and mapped to [0, 1]; a field
    DDPM's mean velocity of zero leaves the template as it is and folds nowhere."""
    import nibabel as nib
    import torch

    from benchmarks.generators import training_mean_samples
    from cortexgen.diffusion.generators import make_generator
    from cortexgen.diffusion.networks import NetworkSettings, build_unet
    from cortexgen.diffusion.training import save_model

    network_settings = NetworkSettings(channels=(4, 8, 8), attention_levels=(False, False, False),
                                       num_res_blocks=1, norm_num_groups=4)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    template = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(template, affine), tmp_path / "template.nii.gz")

    images = [torch.full((1, 4, 4, 4), -0.5), torch.full((1, 4, 4, 4), 0.1)]
    ddpm = make_generator("ddpm", {"center": "mean"})
    ddpm.fit({"image": images})
    network = build_unet(network_settings, ddpm.in_channels, ddpm.out_channels)
    save_model(tmp_path / "ddpm.pt", ddpm, network_settings, network.state_dict(), (4, 4, 4), {})
    table = training_mean_samples(tmp_path / "ddpm.pt", str(tmp_path / "template.nii.gz"), 3, tmp_path / "ddpm")
    assert table == [{"file": "mean_T1w.nii.gz"}] * 3
    written = np.asarray(nib.load(tmp_path / "ddpm" / "mean_T1w.nii.gz").dataobj)
    assert written.shape == (8, 8, 8) and np.allclose(written, 0.4, atol=1e-6)  # (-0.2 + 1) / 2

    fields = [torch.full((3, 4, 4, 4), 0.3), torch.full((3, 4, 4, 4), -0.3)]
    deform = make_generator("deform", {"center": "mean"})
    deform.fit({"image": fields})
    network = build_unet(network_settings, deform.in_channels, deform.out_channels)
    extra = {"field_scale_mm": 4.0, "field": {"kind": "velocity", "integration_steps": 7, "log_iterations": 4,
                                              "smoothing_voxels": 1.0}}
    save_model(tmp_path / "deform.pt", deform, network_settings, network.state_dict(), (4, 4, 4), extra)
    table = training_mean_samples(tmp_path / "deform.pt", str(tmp_path / "template.nii.gz"), 2, tmp_path / "deform")
    assert [row["folding_fraction"] for row in table] == [0.0, 0.0]
    warped = np.asarray(nib.load(tmp_path / "deform" / "mean_T1w.nii.gz").dataobj)
    assert np.allclose(warped, template, atol=1e-5)


def test_seed_spread_of_identical_and_of_offset_draws(tmp_path):
    """Two identical draws lie 0 apart (SSIM 1); draws 0.1 apart in the brain mask and equal
    outside it have an MAE and RMS of 0.1 there, and the volume's SSIM falls below 1."""
    import nibabel as nib

    from benchmarks.generators import seed_spread

    mask = np.zeros((16, 16, 16), dtype=np.float32)
    mask[4:12, 4:12, 4:12] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "mask.nii.gz")
    subject = {"id": "sub-01", "mask": str(tmp_path / "mask.nii.gz")}
    first = np.random.default_rng(0).uniform(0.2, 0.8, mask.shape).astype(np.float32) * mask
    spread = seed_spread([(subject, first, first.copy())])
    assert spread["per_subject"]["sub-01"] == {"ssim": 1.0, "mae": 0.0, "rms": 0.0}
    spread = seed_spread([(subject, first, first + 0.1 * mask)])
    assert spread["mean_mae"] == pytest.approx(0.1, abs=1e-5)
    assert spread["mean_rms"] == pytest.approx(0.1, abs=1e-5)
    assert spread["mean_ssim"] < 1.0
