"""The memorisation check: a synthetic image that copies a training image is found, with its index;
a new image from the same distribution is no closer to the training set than held-out real ones."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from cortexgen.evaluate.memorisation import copy_summary, masked_correlation, nearest_training, ssim_map

GRID = (24, 28, 24)


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A brain-like phantom (X, Y, Z) in [0, 1] and its mask: an ellipsoid of its own size
    filled with its own smooth texture (as two people's brains differ), zero outside."""
    rng = np.random.default_rng(seed)
    axes = np.array(GRID) * rng.uniform(0.36, 0.44, 3)
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in GRID], indexing="ij"))
    mask = (((grid / axes[:, None, None, None]) ** 2).sum(axis=0)) <= 1.0
    texture = ndimage.gaussian_filter(rng.standard_normal(GRID), 1.5)
    image = np.clip(0.55 + 0.35 * texture / texture.std(), 0.0, 1.0) * mask
    return image.astype(np.float32), mask


def loader(volumes):
    return lambda j: volumes[j]


TRAIN = [phantom(seed) for seed in range(5)]


def test_ssim_map_is_monais():
    from monai.metrics.regression import compute_ssim_and_cs

    a, b = (torch.from_numpy(phantom(seed)[0])[None, None] for seed in (7, 8))
    expected, _ = compute_ssim_and_cs(a, b, spatial_dims=3, kernel_size=[11] * 3, kernel_sigma=[1.5] * 3)
    # float32 rounding of the local variances (E[x²] - E[x]²) differs by summation order.
    assert torch.allclose(ssim_map(a, b), expected, atol=1e-4)


def test_masked_correlation_is_pearson_inside_the_mask():
    image, mask = TRAIN[0]
    other = TRAIN[1][0]
    expected = np.corrcoef(image[mask], other[mask])[0, 1]
    assert masked_correlation(np.stack([image, other]), other, mask) == pytest.approx([expected, 1.0])


@pytest.mark.parametrize("candidates", [None, 2])
def test_a_copied_training_image_is_found_and_a_new_one_is_not_flagged(candidates):
    copy = TRAIN[3][0] + np.random.default_rng(0).normal(0, 0.002, GRID).astype(np.float32) * TRAIN[3][1]
    new = [phantom(seed)[0] for seed in (20, 21, 22)]
    held_out = [phantom(seed)[0] for seed in (30, 31, 32)]
    results = nearest_training(np.stack([copy, *new]), loader(TRAIN), len(TRAIN), ssim_candidates=candidates)
    baseline = nearest_training(np.stack(held_out), loader(TRAIN), len(TRAIN), ssim_candidates=candidates)
    found = results[0]
    assert found["ssim_train"] == found["corr_train"] == 3
    assert found["ssim"] > 0.99 and found["corr"] > 0.999
    # Another phantom's nearest training image is another phantom: far from a copy, like the real ones'.
    real_ssim = [row["ssim"] for row in baseline]
    assert max(real_ssim) < 0.5 and max(row["corr"] for row in baseline) < 0.6
    for row in results[1:]:
        assert row["ssim"] < 0.5 and row["corr"] < 0.6
    assert copy_summary([found["ssim"]], real_ssim)["above_real"] == 1.0
    summary = copy_summary([row["ssim"] for row in results[1:]], real_ssim)
    assert summary["above_real"] < 1.0 and summary["max"] < 0.5
    assert summary["median"] == pytest.approx(np.median([row["ssim"] for row in results[1:]]))


def test_a_copying_generator_shows_it_in_the_summary():
    copies = np.stack([TRAIN[j][0] for j in (0, 2, 4)])
    results = nearest_training(copies, loader(TRAIN), len(TRAIN))
    assert [row["ssim_train"] for row in results] == [0, 2, 4]
    assert [row["ssim"] for row in results] == pytest.approx([1.0] * 3, abs=1e-6)
    baseline = nearest_training(np.stack([phantom(40)[0]]), loader(TRAIN), len(TRAIN))
    summary = copy_summary([row["ssim"] for row in results], [row["ssim"] for row in baseline])
    assert summary == pytest.approx({"median": 1.0, "max": 1.0, "above_real": 1.0}, abs=1e-6)
    assert np.isnan(copy_summary([0.5], [])["above_real"])


def test_the_table_names_training_images_and_the_metrics_flag_the_copying_generator():
    from cortexgen.evaluate.memorisation import BASELINE, memorisation_metrics, memorisation_table
    from cortexgen.evaluate.metrics import SetMetricSettings

    labels = [f"sub-{j:02d}" for j in range(len(TRAIN))]
    sets = {BASELINE: (["sub-30", "sub-31"], np.stack([phantom(30)[0], phantom(31)[0]])),
            "copier": (["sample-0001", "sample-0002"], np.stack([TRAIN[1][0], TRAIN[4][0]])),
            "novel": (["sample-0001", "sample-0002"], np.stack([phantom(50)[0], phantom(51)[0]]))}
    table = memorisation_table(sets, labels, loader(TRAIN))
    assert [(row["generator"], row["image"]) for row in table][:4] == [
        (BASELINE, "sub-30"), (BASELINE, "sub-31"), ("copier", "sample-0001"), ("copier", "sample-0002")]
    assert [row["nearest_ssim_train"] for row in table[2:4]] == ["sub-01", "sub-04"]
    assert [row["nearest_corr_train"] for row in table[2:4]] == ["sub-01", "sub-04"]
    metrics = {(m.generator, m.metric): m for m in memorisation_metrics(table, SetMetricSettings(n_resamples=50))}
    assert metrics[("copier", "nearest_train_ssim_max")].value == pytest.approx(1.0, abs=1e-6)
    assert metrics[("copier", "nearest_train_ssim_above_real")].value == 1.0
    assert metrics[("novel", "nearest_train_ssim_above_real")].value < 1.0
    assert metrics[("novel", "nearest_train_ssim_median")].value < 0.5
    assert metrics[("novel", "nearest_train_corr")].value < 0.6
    baseline_max = max(row["nearest_ssim"] for row in table[:2])
    assert metrics[(BASELINE, "nearest_train_ssim_max")].value == pytest.approx(baseline_max)
    assert (BASELINE, "nearest_train_ssim_above_real") not in metrics
    for row in metrics.values():
        assert np.isfinite(row.value), row
