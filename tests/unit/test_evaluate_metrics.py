"""Set metrics, paired fidelity, bootstrap intervals and MedicalNet loading (cortexgen.evaluate)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from monai.metrics import MMDMetric
from monai.metrics.regression import compute_ms_ssim
from monai.networks.nets import resnet10
from scipy import linalg, ndimage

from cortexgen.evaluate.features import load_medicalnet, medicalnet_features, medicalnet_normalize, pooled_features
from cortexgen.evaluate.metrics import (
    NO_MEDICALNET,
    SetMetricSettings,
    bootstrap_ci,
    bootstrap_mean_ci,
    frechet_distance,
    frechet_distance_fast,
    linear_gram,
    median_bandwidth,
    mmd_from_kernel,
    mmd_linear,
    mmd_rbf_difference,
    mmd_rbf_unbiased,
    ms_ssim_min_side,
    ms_ssim_pairs,
    paired_fidelity,
    random_pairs,
    rbf_kernel,
    set_features,
    set_metrics,
    squared_distances,
)


def smooth_volumes(n: int, shape=(32, 32, 32), seed: int = 0) -> np.ndarray:
    """(n, *shape) float32 in [0, 1]: smoothed noise inside an ellipsoid, zero outside."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side) for side in shape], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.7
    volumes = []
    for _ in range(n):
        noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
        volumes.append(np.where(inside, 0.5 + 0.3 * noise / noise.std(), 0.0).clip(0, 1))
    return np.array(volumes, dtype=np.float32)


# --- MMD ---------------------------------------------------------------------------------------------


def test_rbf_mmd_of_a_set_with_itself_is_slightly_negative_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    sigma = median_bandwidth(x)
    value = mmd_rbf_unbiased(x, x, sigma)
    # With y = x the cross term also averages the k(x_i, x_i) = 1 the within terms skip:
    # MMD² = -2 (1 - A) / n, A the mean off-diagonal kernel value.
    kernel = rbf_kernel(squared_distances(x), sigma)
    off_diagonal = (kernel.sum() - len(x)) / (len(x) * (len(x) - 1))
    assert value == pytest.approx(-2.0 * (1.0 - off_diagonal) / len(x), rel=1e-9)
    assert -0.01 < value <= 0.0


def test_rbf_mmd_is_near_zero_for_one_distribution_and_rises_with_a_mean_shift():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    sigma = median_bandwidth(np.concatenate([x, y]))
    assert abs(mmd_rbf_unbiased(x, y, sigma)) < 0.01
    values = [mmd_rbf_unbiased(x, y + shift, sigma) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in itertools.pairwise(values)), values
    assert values[-1] > 0.3


def test_median_bandwidth_is_the_median_pairwise_distance():
    x = np.random.default_rng(2).normal(size=(9, 3))
    distances = [np.linalg.norm(x[i] - x[j]) for i in range(9) for j in range(i + 1, 9)]
    assert median_bandwidth(x) == pytest.approx(np.median(distances), rel=1e-9)


def test_mmd_linear_equals_monai_and_the_mean_difference_closed_form():
    rng = np.random.default_rng(3)
    real = rng.uniform(size=(5, 6, 7, 8))
    fake = rng.uniform(size=(5, 6, 7, 8)) + 0.05
    monai = float(MMDMetric()(torch.from_numpy(real[:, None]), torch.from_numpy(fake[:, None])))
    assert mmd_linear(real, fake) == pytest.approx(monai, rel=1e-9)
    # The Gram-matrix form (used for N ≠ M and for the bootstrap) gives MONAI's value too,
    # whatever the voxel block size.
    assert mmd_from_kernel(linear_gram(real, fake, chunk=50), np.arange(5), 5 + np.arange(5)) == pytest.approx(
        monai, rel=1e-9)

    def closed_form(a, b):
        """|x̄ - ȳ|² - tr Sx / N - tr Sy / M: MONAI's statistic with its linear kernel."""
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        return (np.sum((a.mean(0) - b.mean(0)) ** 2) - a.var(axis=0, ddof=1).sum() / len(a)
                - b.var(axis=0, ddof=1).sum() / len(b))

    assert monai == pytest.approx(closed_form(real, fake), rel=1e-9)
    unequal = fake[:3] - 0.1
    assert mmd_linear(real, unequal) == pytest.approx(closed_form(real, unequal), rel=1e-9)


def test_kernel_mmd_bootstrap_skips_copies_of_one_image():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(7, 3))
    kernel = rbf_kernel(squared_distances(features), 1.0)
    # Image 0 twice and image 1 once: the within-set pairs are (0, 1) and (1, 0) twice each.
    value = mmd_from_kernel(kernel, np.array([0, 0, 1]), np.array([4, 5]))
    within_x = kernel[0, 1]
    within_y = kernel[4, 5]
    cross = (2 * kernel[0, [4, 5]].sum() + kernel[1, [4, 5]].sum()) / 6
    assert value == pytest.approx(within_x + within_y - 2 * cross, rel=1e-12)
    assert math.isnan(mmd_from_kernel(kernel, np.array([2, 2]), np.array([4, 5])))


# --- Fréchet distance ----------------------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(5).normal(size=(50, 8))
    assert abs(frechet_distance(x, x)) < 1e-6
    assert abs(frechet_distance_fast(x, x)) < 1e-8


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(6)
    mean_a, mean_b = np.array([0.0, 1.0, -1.0, 0.5]), np.array([1.0, 0.0, -1.0, 1.5])
    root_a, root_b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_a, cov_b = root_a @ root_a.T, root_b @ root_b.T
    a = rng.multivariate_normal(mean_a, cov_a, size=20000)
    b = rng.multivariate_normal(mean_b, cov_b, size=20000)
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b)
                - 2 * np.trace(linalg.sqrtm(cov_a @ cov_b)).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)
    assert frechet_distance_fast(a, b) == pytest.approx(frechet_distance(a, b), rel=1e-4)


@pytest.mark.parametrize("n, m, d", [(30, 25, 64), (300, 250, 16)])
def test_fast_frechet_distance_equals_monai(n, m, d):
    rng = np.random.default_rng(7)
    real = rng.normal(size=(n, d))
    fake = 1.3 * rng.normal(size=(m, d)) + 0.2
    assert frechet_distance_fast(real, fake) == pytest.approx(frechet_distance(real, fake), rel=1e-4)


# --- MS-SSIM ---------------------------------------------------------------------------------------


def test_ms_ssim_of_identical_volumes_is_one_and_of_noise_below():
    volumes = smooth_volumes(2, shape=(48, 48, 48))
    noise = np.random.default_rng(8).uniform(size=(1, 48, 48, 48)).astype(np.float32)
    stack = np.concatenate([volumes, volumes[:1], noise])
    values = ms_ssim_pairs(stack, np.array([[0, 2], [0, 3], [0, 1]]), kernel_size=3)
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert values[1] < 0.5
    assert values[2] < 0.99


def test_ms_ssim_too_small_volume_says_the_size_the_kernel_needs():
    volumes = smooth_volumes(2, shape=(24, 32, 24))
    with pytest.raises(ValueError, match="≥ 80 voxels"):
        ms_ssim_pairs(volumes, np.array([[0, 1]]), kernel_size=5)


@pytest.mark.parametrize("kernel", [2, 3])
def test_ms_ssim_min_side_is_monais_limit(kernel):
    side = ms_ssim_min_side(kernel)
    ok = torch.rand(1, 1, side, side, side)
    compute_ms_ssim(ok, ok, spatial_dims=3, kernel_size=kernel)  # accepted
    small = torch.rand(1, 1, side - 1, side, side)
    with pytest.raises(ValueError):
        compute_ms_ssim(small, small, spatial_dims=3, kernel_size=kernel)


def test_random_pairs_are_distinct_ordered_and_seeded():
    pairs = random_pairs(30, 100, seed=3)
    assert pairs.shape == (100, 2)
    assert np.all(pairs[:, 0] < pairs[:, 1]) and pairs.max() < 30
    assert len({tuple(pair) for pair in pairs}) == 100
    np.testing.assert_array_equal(pairs, random_pairs(30, 100, seed=3))
    assert not np.array_equal(pairs, random_pairs(30, 100, seed=4))
    everything = random_pairs(5, 100, seed=0)
    assert len(everything) == 10 and len({tuple(pair) for pair in everything}) == 10


# --- bootstrap ---------------------------------------------------------------------------------------


def test_bootstrap_interval_of_a_mean_covers_at_about_the_nominal_rate():
    rng = np.random.default_rng(9)
    mu = 3.0
    covered = 0
    for dataset in range(200):
        low, high = bootstrap_mean_ci(rng.normal(mu, 1.0, size=40), n_resamples=500, seed=dataset)
        covered += low <= mu <= high
    assert 0.9 <= covered / 200 <= 0.99


def test_bootstrap_skips_non_finite_resamples():
    values = np.arange(10.0)
    # About 10% of resamples hold index 0 first: those are skipped, the rest give an interval.
    low, high = bootstrap_ci(lambda i: math.nan if i[0] == 0 else values[i].mean(), (10,), n_resamples=200)
    assert 2.0 < low < 4.5 < high < 7.0
    # Mostly non-finite: no interval.
    assert all(math.isnan(v) for v in bootstrap_ci(lambda i: math.nan if i[0] > 1 else 1.0, (10,), 200))


# --- paired fidelity ----------------------------------------------------------------------------------


def test_paired_fidelity_of_identical_and_offset_images():
    real = smooth_volumes(1, shape=(24, 32, 24))[0] * 0.8
    mask = real > 0
    same = paired_fidelity(real, real.copy(), mask)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["mae"] == 0.0 and same["psnr"] == math.inf
    offset = paired_fidelity(real, np.where(mask, real + 0.1, real).astype(np.float32), mask)
    assert offset["mae"] == pytest.approx(0.1, rel=1e-5)
    assert offset["psnr"] == pytest.approx(10 * math.log10(1 / 0.1**2), rel=1e-4)
    assert offset["ssim"] < 1.0


# --- features ---------------------------------------------------------------------------------------


def small_medicalnet_file(path):
    """A depth-10 MONAI ResNet saved as MedicalNet does (DataParallel prefix, a segmentation head)."""
    torch.manual_seed(0)
    model = resnet10(spatial_dims=3, n_input_channels=1, shortcut_type="B", bias_downsample=False, feed_forward=False)
    state = {"module." + key: value for key, value in model.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 512, 3, 3, 3)
    torch.save({"state_dict": state}, path)
    return model


def test_load_medicalnet_reads_a_medicalnet_file(tmp_path):
    path = tmp_path / "resnet_10_23dataset.pth"
    original = small_medicalnet_file(path)
    model = load_medicalnet(path, depth=10)
    assert not model.training
    loaded = model.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(loaded[key], value), key
    features = medicalnet_features(model, smooth_volumes(3, shape=(24, 32, 24)), batch_size=2)
    assert features.shape == (3, 512) and np.isfinite(features).all()


def test_load_medicalnet_refuses_another_depth_and_missing_files(tmp_path):
    path = tmp_path / "resnet_10.pth"
    small_medicalnet_file(path)
    with pytest.raises(ValueError, match="resnet_10.pth.*layer"):
        load_medicalnet(path, depth=18)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_medicalnet(tmp_path / "absent.pth", depth=10)


def test_medicalnet_normalize_zscores_the_nonzero_voxels():
    volume = torch.from_numpy(smooth_volumes(1, shape=(24, 32, 24))[0])
    scaled = medicalnet_normalize(volume)
    inside = volume != 0
    assert torch.all(scaled[~inside] == 0)
    assert float(scaled[inside].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scaled[inside].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)


def test_pooled_features_average_blocks():
    volumes = np.random.default_rng(10).uniform(size=(2, 24, 32, 24)).astype(np.float32)
    features = pooled_features(volumes, 4)
    assert features.shape == (2, 6 * 8 * 6)
    assert features[1, 0] == pytest.approx(volumes[1, :4, :4, :4].mean(), rel=1e-5)
    assert pooled_features(volumes, 5).shape == (2, 5 * 7 * 5)  # ceil(side / 5)


# --- set metrics --------------------------------------------------------------------------------------

SMALL = SetMetricSettings(n_resamples=50, ms_ssim_pairs=5, ms_ssim_kernel=2, feature_pool=4)
ROWS = ["mmd_linear_voxels", "mmd_rbf_pooled4", "fid_medicalnet", "ms_ssim_synthetic", "ms_ssim_real"]


def test_set_metrics_rows_without_medicalnet():
    real, fake = smooth_volumes(4, seed=1), smooth_volumes(3, seed=2)
    timings = {}
    results = set_metrics("bridge", real, fake, SMALL, timings=timings)
    assert [r.metric for r in results] == ROWS
    by_name = {r.metric: r for r in results}
    for name in ("mmd_linear_voxels", "mmd_rbf_pooled4", "ms_ssim_synthetic", "ms_ssim_real"):
        row = by_name[name]
        assert np.isfinite([row.value, row.ci_low, row.ci_high]).all() and row.note == "", row
        assert row.ci_low <= row.ci_high
    assert by_name["mmd_linear_voxels"].n == "4 vs 3"
    assert by_name["ms_ssim_synthetic"].n == "3 pairs" and by_name["ms_ssim_real"].n == "5 pairs"
    fid = by_name["fid_medicalnet"]
    assert math.isnan(fid.value) and fid.note == NO_MEDICALNET and "evaluate.medicalnet.weights" in fid.note
    assert set(results[0].as_row()) == {"generator", "metric", "value", "ci_low", "ci_high", "n", "note"}
    assert "mmd_linear_voxels" in timings and "features" in timings


def test_mmd_difference_finds_the_generator_nearer_the_real_set():
    """A set from the real images' distribution against a darker one as its baseline: the
    difference is negative and its paired interval excludes 0; swapped, the sign flips; a set
    against itself differs by exactly 0; a baseline of one image is not computed, and says why."""
    real, same, darker = smooth_volumes(6, seed=1), smooth_volumes(6, seed=2), 0.6 * smooth_volumes(6, seed=3)
    row = mmd_rbf_difference("deform", "sdm", real, same, darker, SMALL)
    assert (row.generator, row.metric, row.n, row.note) == ("deform", "mmd_rbf_pooled4_minus_sdm", "6 vs 6 vs 6", "")
    assert row.ci_low <= row.value <= row.ci_high < 0
    assert mmd_rbf_difference("sdm", "deform", real, darker, same, SMALL).value == pytest.approx(-row.value)
    assert mmd_rbf_difference("deform", "sdm", real, same, same.copy(), SMALL).value == 0.0
    alone = mmd_rbf_difference("deform", "sdm", real, same, darker[:1], SMALL)
    assert math.isnan(alone.value) and alone.note == "not computed: the baseline set has 1 image (needs ≥ 2)"
    # Features the caller computed once, per set, give the same row as computing them here.
    features = set_features((real, same, darker), SMALL)
    assert mmd_rbf_difference("deform", "sdm", real, same, darker, SMALL, features=features) == row
    given, computed = (set_metrics("deform", real, same, SMALL, features=f) for f in (features[:2], None))
    assert [str(r.as_row()) for r in given] == [str(r.as_row()) for r in computed]


def test_set_metrics_with_one_real_image_notes_why():
    results = set_metrics("ddpm", smooth_volumes(1, seed=1), smooth_volumes(3, seed=2), SMALL)
    by_name = {r.metric: r for r in results}
    for name in ("mmd_linear_voxels", "mmd_rbf_pooled4", "ms_ssim_real"):
        assert math.isnan(by_name[name].value) and math.isnan(by_name[name].ci_low)
        assert by_name[name].note == "not computed: the real set has 1 image (needs ≥ 2)"
    assert by_name["fid_medicalnet"].note == NO_MEDICALNET
    assert np.isfinite(by_name["ms_ssim_synthetic"].value)


def test_set_metrics_notes_volumes_too_small_for_ms_ssim():
    settings = SetMetricSettings(n_resamples=20, ms_ssim_pairs=3, ms_ssim_kernel=5)
    results = set_metrics("deform", smooth_volumes(3, shape=(24, 32, 24)), smooth_volumes(3, (24, 32, 24), 1), settings)
    row = {r.metric: r for r in results}["ms_ssim_real"]
    assert math.isnan(row.value) and "≥ 80 voxels" in row.note and row.note.startswith("not computed")


def test_set_metrics_with_a_medicalnet_model(tmp_path):
    path = tmp_path / "resnet_10.pth"
    small_medicalnet_file(path)
    model = load_medicalnet(path, depth=10)
    results = set_metrics("bridge", smooth_volumes(4, seed=1), smooth_volumes(4, seed=2), SMALL, medicalnet=model)
    by_name = {r.metric: r for r in results}
    assert [r.metric for r in results][1] == "mmd_rbf_medicalnet"
    assert np.isfinite([by_name["fid_medicalnet"].value, by_name["mmd_rbf_medicalnet"].value]).all()


def test_settings_from_config():
    section = {"n_resamples": 1000, "level": 0.95, "seed": 0, "ms_ssim_pairs": 100, "ms_ssim_kernel": 5,
               "feature_pool": 4}
    assert SetMetricSettings.from_config(section) == SetMetricSettings()
    with pytest.raises(ValueError, match="resamples"):
        SetMetricSettings.from_config({"resamples": 10})
