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
