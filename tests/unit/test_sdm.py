"""The statistical deformation model: PCA of velocity fields, its samples, its jobs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cortexgen.diffusion.run import fit_job, folding_fraction, sample_unconditional_job, warped_template
from cortexgen.diffusion.sdm import (
    draw_coefficients,
    explained_variance,
    field_of,
    fit_deformation_model,
    load_deformation_model,
    save_deformation_model,
    spectrum_rows,
)
from cortexgen.io import read_table

FIELD = (3, 6, 8, 5)
VELOCITY = {"kind": "velocity", "integration_steps": 7, "log_iterations": 4, "smoothing_voxels": 1.0}


def low_rank_fields(n=12, seed=0):
    """n fields = mean + coefficients @ 3 orthonormal basis fields, the coefficients' spreads 3, 2, 1 mm."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((int(np.prod(FIELD)), 3)))[0].T  # (3, D) orthonormal rows
    coefficients = rng.standard_normal((n, 3)) * [3.0, 2.0, 1.0]
    mean = rng.standard_normal(FIELD)
    return mean, basis, coefficients, (mean.ravel() + coefficients @ basis).reshape(n, *FIELD)


def test_pca_of_low_rank_fields_recovers_their_subspace_and_variances():
    mean, basis, coefficients, fields = low_rank_fields()
    # Tensors, one per field (as a VolumeStore gives them).
    model = fit_deformation_model(list(torch.from_numpy(fields)), variance_threshold=1.0)
    assert model.n_modes == 3 and model.n_subjects == 12 and model.grid == FIELD[1:]
    np.testing.assert_allclose(model.mean, fields.mean(axis=0), atol=1e-12)
    # The same subspace: equal projections onto it.
    np.testing.assert_allclose(model.components.T @ model.components, basis.T @ basis, atol=1e-10)
    # The variances along the modes are the eigenvalues of the coefficients' sample covariance.
    expected = np.sort(np.linalg.eigvalsh(np.cov(coefficients.T)))[::-1]
    np.testing.assert_allclose(model.variances, expected, rtol=1e-10)
    assert model.total_variance == pytest.approx(expected.sum(), rel=1e-10)
    # 0.95 keeps the fewest modes that reach it.
    fractions = np.cumsum(expected) / expected.sum()
    assert fit_deformation_model(fields, 0.95).n_modes == int(np.searchsorted(fractions, 0.95) + 1)
    assert fit_deformation_model(fields, 1.0, max_modes=2).n_modes == 2
    # Fields of the subspace are held entirely by the 3 modes, fields orthogonal to it not at all.
    inside = model.mean + (np.random.default_rng(2).standard_normal((4, 3)) @ basis).reshape(4, *FIELD)
    np.testing.assert_allclose(explained_variance(model, inside)[-1], 1.0, rtol=1e-10)
    outside = np.random.default_rng(3).standard_normal((4, int(np.prod(FIELD))))
    outside -= (outside @ basis.T) @ basis
    assert np.abs(explained_variance(model, model.mean + outside.reshape(4, *FIELD))).max() < 1e-10
    rows = spectrum_rows(model, explained_variance(model, inside))
    assert [row["mode"] for row in rows] == [1, 2, 3]
    assert rows[-1]["cumulative_explained_variance"] == pytest.approx(1.0)
    assert rows[0]["variance_mm2"] == pytest.approx(expected[0])


def test_samples_draw_each_mode_from_its_variance_and_round_trip_through_the_file(tmp_path):
    _, basis, _, fields = low_rank_fields()
    model = fit_deformation_model(fields, variance_threshold=1.0)
    draws = np.stack([draw_coefficients(model, seed=5, index=i) for i in range(4000)])
    np.testing.assert_allclose(draws.var(axis=0), model.variances, rtol=0.08)
    # A sample depends on (seed, index) only; another seed draws others.
    np.testing.assert_array_equal(draw_coefficients(model, 5, 7), draws[7])
    assert not np.allclose(draw_coefficients(model, 6, 7), draws[7])
    sample = field_of(model, draws[0])
    # Every sample lies in the training fields' subspace around their mean.
    deviation = (sample - model.mean).ravel()
    np.testing.assert_allclose((deviation @ basis.T) @ basis, deviation, atol=1e-10)
    save_deformation_model(model, tmp_path / "model.pt", {"grid": list(model.grid), "field": VELOCITY})
    loaded, extra = load_deformation_model(tmp_path / "model.pt")
    assert extra == {"grid": list(model.grid), "field": VELOCITY}
    np.testing.assert_array_equal(field_of(loaded, draws[0]), sample)
    with pytest.raises(ValueError, match="at least 2 fields"):
        fit_deformation_model(fields[:1])
    with pytest.raises(ValueError, match="identical"):
        fit_deformation_model([fields[0], fields[0]])


def smooth_velocities(n, grid, spread_mm, seed):
    """n random velocities (3, *grid) mm: white noise smoothed over 1.5 voxels, ``spread_mm`` standard deviation."""
    rng = np.random.default_rng(seed)
    fields = np.stack([[gaussian_filter(rng.standard_normal(grid), 1.5, mode="nearest") for _ in range(3)]
                       for _ in range(n)])
    return fields * spread_mm / fields.std()


def test_samples_of_random_training_velocities_never_fold():
    # Velocities on a 10 x 16 x 10 grid of 8 mm voxels, the template on 40 x 64 x 40 of 2 mm over the
    # same field of view; spread enough that the same fields taken as displacements fold.
    grid, shape = (10, 16, 10), (40, 64, 40)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    model = fit_deformation_model(smooth_velocities(8, grid, spread_mm=12.0, seed=0), variance_threshold=0.95)
    template = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))
    folded = []
    for index in range(6):
        velocity = torch.from_numpy(field_of(model, draw_coefficients(model, 0, index)))
        field, image = warped_template(velocity, VELOCITY, template, affine)
        assert field.shape == (3, *shape) and field.dtype == torch.float32 and image.shape == shape
        assert folding_fraction(field.numpy(), affine) == 0.0
        displacement, _ = warped_template(velocity, {**VELOCITY, "kind": "displacement"}, template, affine)
        folded.append(folding_fraction(displacement.numpy(), affine))
    assert max(folded) > 0.001, folded


def test_fit_and_sample_jobs_write_the_model_its_spectrum_and_unfolded_samples(tmp_path):
    # Displacement fields on the template grid (3 training, 2 validation); the model on a coarser grid.
    shape, affine = (20, 32, 20), np.diag([4.0, 4.0, 4.0, 1.0])
    fields = smooth_velocities(5, shape, spread_mm=2.0, seed=3)
    paths = []
    for k, field in enumerate(fields):
        paths.append(str(tmp_path / f"field{k}.nii.gz"))
        nib.save(nib.Nifti1Image(np.moveaxis(field, 0, -1).astype(np.float32), affine), paths[-1])
    settings = {"grid": [10, 16, 10], "field": VELOCITY, "variance_threshold": 1.0, "max_modes": None,
                "sampling": {"n": 3, "seed": 0, "batch_size": 2}}
    outputs = {name: str(tmp_path / "sdm" / name) for name in ("model.pt", "train_log.tsv", "loss.png")}
    fit_job({"model": "sdm", "settings": settings, "checkpoints": str(tmp_path / "checkpoints"),
             "inputs": {"fields": paths[:3], "val_fields": paths[3:]},
             "outputs": {"model": outputs["model.pt"], "log": outputs["train_log.tsv"], "png": outputs["loss.png"]}})
    model, extra = load_deformation_model(outputs["model.pt"])
    assert model.n_modes == 2 and model.grid == (10, 16, 10) and extra["field"] == VELOCITY
    rows = read_table(outputs["train_log.tsv"])
    # All variance kept: 1 up to rounding (the total and the modes' variances are summed in different orders).
    assert [row["mode"] for row in rows] == ["1", "2"]
    assert float(rows[-1]["cumulative_explained_variance"]) == pytest.approx(1.0, abs=1e-12)
    # Two modes of three random fields hold part of two other random fields' variance, not all of it.
    assert 0.0 < float(rows[-1]["validation_cumulative_explained_variance"]) < 1.0
    grid_image = tmp_path / "template.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), affine), grid_image)
    images = [str(tmp_path / "samples" / f"sample-{i:04d}_T1w.nii.gz") for i in (1, 2, 3)]
    warps = [str(tmp_path / "samples" / f"sample-{i:04d}_xfm.nii.gz") for i in (1, 2, 3)]
    table = tmp_path / "samples" / "samples.tsv"
    rows = sample_unconditional_job({"model": "sdm", "model_file": outputs["model.pt"], "settings": settings,
                                     "device": "cpu", "outputs": images, "fields": warps, "table": str(table),
                                     "grid_image": str(grid_image)})
    assert [row["folding_fraction"] for row in rows] == [0.0, 0.0, 0.0]
    assert [row["file"] for row in read_table(table)] == [f"sample-{i:04d}_T1w.nii.gz" for i in (1, 2, 3)]
    field = nib.load(warps[0])
    assert field.shape == (*shape, 3) and np.allclose(field.affine, affine)
    first = nib.load(images[0]).get_fdata()
    assert first.shape == shape and 0.0 <= first.min() and first.max() <= 1.0
    # The samples differ, each from its own coefficients.
    assert not np.allclose(first, nib.load(images[1]).get_fdata())
