"""Set metrics of synthetic images against real ones, paired fidelity, and bootstrap intervals.

Images are [0, 1] volumes; sets are (N, X, Y, Z) arrays (real) and (M, X, Y, Z) (synthetic),
features (N, D). Every random choice takes an explicit seed.

* MMD, linear kernel on voxels: MONAI's :class:`~monai.metrics.MMDMetric`, the unbiased
  statistic of Gretton et al. (2012, eq. 3) with k(a, b) = a·b. Because that kernel is linear,
  it equals |x̄ - ȳ|² - tr Sx / N - tr Sy / M (Sx, Sy: the sets' sample covariances, 1/(n-1)):
  an unbiased estimate of the squared distance of the mean images, near 0 or slightly
  negative when the means agree.
* MMD, RBF kernel on features: the same U-statistic with k(a, b) = exp(-|a-b|² / (2σ²)),
  σ by the median heuristic.
* Fréchet distance (FID) of MedicalNet features: MONAI's :class:`~monai.metrics.FIDMetric`.
* MS-SSIM of random pairs within a set (diversity: lower is more diverse): MONAI's
  :class:`~monai.metrics.MultiScaleSSIMMetric`.

Confidence intervals are percentile bootstraps. The kernel statistics are bootstrapped from a
kernel matrix computed once, so a resample costs a few matrix-vector products.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from monai.metrics import FIDMetric, MMDMetric, MultiScaleSSIMMetric, PSNRMetric, SSIMMetric

from cortexgen.evaluate.features import medicalnet_features, pooled_features

log = logging.getLogger("cortexgen")

#: MONAI's MS-SSIM scale weights (Wang et al. 2003), its default: five scales.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Voxels along the flattened images per float64 block of the voxel Gram matrix / MMD.
GRAM_CHUNK = 1 << 15
#: Pairs per batch of MS-SSIM.
MS_SSIM_BATCH = 8
#: Why FID is missing without MedicalNet: random-weight features would make a number that means nothing.
NO_MEDICALNET = "not computed: no MedicalNet weights file configured (evaluate.medicalnet.weights)"


# --- kernel MMD ---------------------------------------------------------------------------------


def _flat(volumes: np.ndarray) -> np.ndarray:
    """(N, ...) as (N, V) without a copy where the array is contiguous."""
    volumes = np.asarray(volumes)
    return volumes.reshape(len(volumes), -1)


def linear_gram(*sets: np.ndarray, chunk: int = GRAM_CHUNK) -> np.ndarray:
    """Float64 Gram matrix (n_total, n_total) of the flattened images of ``sets``, stacked in order.

    The images are taken minus the voxel-wise mean of all of them: the linear-kernel MMD does
    not change under a common shift, and centred voxels lose far less to cancellation (the
    MMD is a small difference of sums of ~10⁵-sized products). Blocks of ``chunk`` voxels are
    converted to float64 one at a time, so the stacks are never copied whole. (Bootstrap
    replicates of :func:`mmd_from_kernel` that skip repeated images are not exactly shift
    invariant; the pooled mean is the natural origin for them.)
    """
    flats = [_flat(volumes) for volumes in sets]
    voxels = {flat.shape[1] for flat in flats}
    if len(voxels) != 1:
        raise ValueError(f"the sets' images differ in size: {sorted(voxels)} voxels")
    total = sum(len(flat) for flat in flats)
    gram = np.zeros((total, total))
    for start in range(0, voxels.pop(), chunk):
        block = np.concatenate([flat[:, start:start + chunk] for flat in flats], dtype=np.float64)
        block -= block.mean(axis=0)
        gram += block @ block.T
    return gram


def squared_distances(features: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (N, N) of feature rows, float64, zero diagonal."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.einsum("ij,ij->i", features, features)
    distances = norms[:, None] + norms[None, :] - 2.0 * (features @ features.T)
    np.fill_diagonal(distances, 0.0)
    return np.maximum(distances, 0.0)  # rounding can leave tiny negatives


def _median_distance(squared: np.ndarray) -> float:
    """Median of the off-diagonal distances of a squared-distance matrix."""
    if len(squared) < 2:
        raise ValueError("the median heuristic needs at least 2 feature vectors")
    median = float(np.median(np.sqrt(squared[np.triu_indices(len(squared), k=1)])))
    if median <= 0.0:
        raise ValueError("the median pairwise feature distance is 0 (most feature vectors are identical)")
    return median


def median_bandwidth(features: np.ndarray) -> float:
    """The median heuristic's RBF bandwidth σ: median pairwise distance of the rows, diagonal excluded."""
    return _median_distance(squared_distances(features))


def rbf_kernel(squared: np.ndarray, bandwidth: float) -> np.ndarray:
    """exp(-d² / (2σ²)) of a squared-distance matrix."""
    return np.exp(-squared / (2.0 * bandwidth**2))


def mmd_from_kernel(kernel: np.ndarray, x_index: np.ndarray, y_index: np.ndarray) -> float:
    """Unbiased MMD² of two samples given as rows of a precomputed kernel matrix.

    ``x_index`` and ``y_index`` index ``kernel`` (the samples stacked); with each image once
    this is Gretton's U-statistic, MONAI's :func:`~monai.metrics.mmd.compute_mmd`::

        Σ_{i≠j} k(x_i, x_j) / (n(n-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1)) - 2 Σ k(x_i, y_j) / (nm)

    A bootstrap resample repeats images; the within-set sums then skip every pair of copies of
    one image (not only the diagonal), as the U-statistic skips an image paired with itself.
    Otherwise the copies' k(x, x) enter as pairs and the resampled statistic is centred on the
    biased V-statistic instead of the estimate. NaN when a set holds fewer than 2 distinct images.
    """
    size = len(kernel)
    counts = np.stack([np.bincount(x_index, minlength=size), np.bincount(y_index, minlength=size)]).astype(np.float64)
    weighted = counts @ kernel  # (2, size)
    diagonal = np.diagonal(kernel)
    within = []
    for count, row in zip(counts, weighted):
        pairs = count.sum() ** 2 - (count**2).sum()  # ordered pairs of positions holding different images
        sums = row @ count - (count**2) @ diagonal
        within.append(sums / pairs if pairs > 0 else math.nan)
    cross = weighted[0] @ counts[1] / (counts[0].sum() * counts[1].sum())
    return float(within[0] + within[1] - 2.0 * cross)


def _stacked_index(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two stacked samples in their joint kernel matrix."""
    return np.arange(n), n + np.arange(m)


def mmd_linear(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with the linear kernel on flattened voxels (MONAI's MMDMetric, its default).

    MONAI's metric needs sets of equal size (it checks the shapes) and multiplies in the input's
    dtype. For N = M it is run on float64 blocks of voxels and the blocks' values summed (the
    linear kernel, and with it the statistic, adds up over voxels); for N ≠ M the same formula
    is evaluated on the float64 Gram matrix (:func:`linear_gram`, :func:`mmd_from_kernel`).
    Both sets need at least 2 images.
    """
    real, fake = _flat(real), _flat(fake)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"MMD needs at least 2 images per set, got {len(real)} and {len(fake)}")
    if real.shape != fake.shape:
        return mmd_from_kernel(linear_gram(real, fake), *_stacked_index(len(real), len(fake)))
    metric = MMDMetric()
    total = 0.0
    for start in range(0, real.shape[1], GRAM_CHUNK):
        block = slice(start, start + GRAM_CHUNK)
        total += float(metric(torch.from_numpy(real[:, block].astype(np.float64)),
                              torch.from_numpy(fake[:, block].astype(np.float64))))
    return total


def mmd_rbf_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD² of feature sets (N, D), (M, D) with the RBF kernel of width σ = ``bandwidth``.

    Can be slightly negative when the distributions agree (it is an unbiased estimate of a
    non-negative quantity).
    """
    squared = squared_distances(np.concatenate([x, y]))
    return mmd_from_kernel(rbf_kernel(squared, bandwidth), *_stacked_index(len(x), len(y)))


# --- Fréchet distance ------------------------------------------------------------------------------


def frechet_distance(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Fréchet distance of two feature sets (N, D), (M, D): MONAI's FIDMetric.

    |μ1 - μ2|² + tr Σ1 + tr Σ2 - 2 tr (Σ1 Σ2)^½ with sample covariances (1/(n-1)), the square
    root by scipy's sqrtm in float64.
    """
    fid = FIDMetric()(torch.from_numpy(np.asarray(fake_features, dtype=np.float64)),
                      torch.from_numpy(np.asarray(real_features, dtype=np.float64)))
    return float(fid)


def _trace_factor(centred: np.ndarray) -> np.ndarray:
    """X itself, or for more rows than columns the R of X = QR: XYᵀ and RYᵀ share singular values."""
    if len(centred) <= centred.shape[1]:
        return centred
    return np.linalg.qr(centred, mode="r")


def frechet_distance_fast(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """The Fréchet distance of :func:`frechet_distance` without a D×D matrix square root.

    With centred features X (n×D) and Y (m×D), Σ1 = XᵀX/(n-1) and Σ2 = YᵀY/(m-1), and the
    eigenvalues of Σ1Σ2 are the squared singular values of XYᵀ over (n-1)(m-1), so
    tr (Σ1Σ2)^½ = ‖XYᵀ‖_* / sqrt((n-1)(m-1)) (nuclear norm). When a set has more rows than
    D, X is replaced by the R of its QR decomposition (same singular values, D×D at most).
    """
    x = np.asarray(real_features, dtype=np.float64)
    y = np.asarray(fake_features, dtype=np.float64)
    n, m = len(x), len(y)
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    x, y = x - mean_x, y - mean_y
    trace_x, trace_y = np.einsum("ij,ij->", x, x) / (n - 1), np.einsum("ij,ij->", y, y) / (m - 1)
    singular = np.linalg.svd(_trace_factor(x) @ _trace_factor(y).T, compute_uv=False)
    trace_sqrt = singular.sum() / math.sqrt((n - 1) * (m - 1))
    return float(np.sum((mean_x - mean_y) ** 2) + trace_x + trace_y - 2.0 * trace_sqrt)


# --- MS-SSIM and paired fidelity -------------------------------------------------------------------


def random_pairs(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` distinct unordered pairs (i < j) of ``n`` items, (k, 2), seeded; all pairs if k ≥ n(n-1)/2."""
    total = n * (n - 1) // 2
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if k >= total:
        return np.stack(np.triu_indices(n, k=1), axis=1).astype(np.int64)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    # Pair number p in row-major order over i < j: row i starts at i(2n - i - 1)/2.
    rows = np.arange(n - 1)
    starts = rows * (2 * n - rows - 1) // 2
    first = np.searchsorted(starts, chosen, side="right") - 1
    second = first + 1 + chosen - starts[first]
    return np.stack([first, second], axis=1).astype(np.int64)


def ms_ssim_min_side(kernel_size: int, scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """The smallest side MONAI's MS-SSIM accepts: side // (scales - 1)² must exceed kernel_size - 1.

    (MONAI's check; its error message says "larger than (kernel_size - 1)·16", but integer
    division makes the smallest accepted side 16·kernel_size for 5 scales.)
    """
    return max(1, scales - 1) ** 2 * kernel_size


def ms_ssim_size_problem(shape: Sequence[int], kernel_size: int) -> str | None:
    """Why volumes of ``shape`` are too small for MS-SSIM with this kernel, or None."""
    needed = ms_ssim_min_side(kernel_size)
    if min(shape) < needed:
        return (f"volumes of {'×'.join(map(str, shape))} are too small for MS-SSIM with kernel {kernel_size} at "
                f"{len(MS_SSIM_WEIGHTS)} scales: every side needs ≥ {needed} voxels")
    return None


def ms_ssim_pairs(volumes: np.ndarray, pairs: np.ndarray, kernel_size: int = 5,
                  data_range: float = 1.0) -> np.ndarray:
    """MS-SSIM (K,) of the volume pairs ``pairs`` (K, 2) of ``volumes`` (N, X, Y, Z).

    MONAI's MultiScaleSSIMMetric, 3D, Gaussian window (σ 1.5) of ``kernel_size``, its five
    default scale weights. Each side must be ≥ 16·kernel_size (84×128×84 allows kernel 5).
    """
    problem = ms_ssim_size_problem(volumes.shape[1:], kernel_size)
    if problem:
        raise ValueError(problem)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=data_range, kernel_size=kernel_size,
                                  weights=MS_SSIM_WEIGHTS)
    values = []
    for start in range(0, len(pairs), MS_SSIM_BATCH):
        batch = pairs[start:start + MS_SSIM_BATCH]
        first = torch.from_numpy(np.asarray(volumes[batch[:, 0]], dtype=np.float32))[:, None]
        second = torch.from_numpy(np.asarray(volumes[batch[:, 1]], dtype=np.float32))[:, None]
        values.append(metric(y_pred=first, y=second).reshape(-1).double().numpy())
    metric.reset()  # the metric also buffers what it returned
    return np.concatenate(values) if values else np.zeros(0)


def _batch(array: np.ndarray) -> torch.Tensor:
    """An array as a float32 (1, 1, ...) batch of one single-channel item."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32))[None, None]


def paired_fidelity(real: np.ndarray, fake: np.ndarray, mask: np.ndarray, ssim_kernel: int = 11) -> dict:
    """Similarity of a synthetic image to its real counterpart, (X, Y, Z) each in [0, 1].

    * ``ssim``: MONAI's SSIMMetric (3D, data range 1, Gaussian window σ 1.5 of ``ssim_kernel``
      voxels; 11 is the SSIM paper's and MONAI's default) over the whole volume: the zero
      background is part of the image both should have.
    * ``psnr``: MONAI's PSNRMetric (max 1) on the voxels inside ``mask`` only, i.e.
      10·log10(1 / mse in the mask); +inf for identical images.
    * ``mae``: mean |real - fake| inside ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    if real.shape != fake.shape or real.shape != mask.shape:
        raise ValueError(f"real, fake and mask differ in shape: {real.shape}, {fake.shape}, {mask.shape}")
    if not mask.any():
        raise ValueError("paired fidelity needs a non-empty mask")
    ssim = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=ssim_kernel)(
        y_pred=_batch(fake), y=_batch(real))
    inside_real, inside_fake = real[mask], fake[mask]
    # MONAI's PSNR averages over all but the batch dimension, so the masked voxels go in as one row.
    psnr = PSNRMetric(max_val=1.0)(y_pred=_batch(inside_fake), y=_batch(inside_real))
    mae = np.abs(inside_real.astype(np.float64) - inside_fake.astype(np.float64)).mean()
    return {"ssim": float(ssim), "psnr": float(psnr), "mae": float(mae)}


def draw_spread(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> dict:
    """How far apart two draws of one condition set lie, (X, Y, Z) each in [0, 1].

    ``ssim`` over the volume and ``mae`` in ``mask`` as :func:`paired_fidelity`, and ``rms``, the
    root mean square difference in ``mask`` (PSNR is infinite for identical draws). Draws far
    closer to each other than to the real image (SSIM near 1, MAE well below the paired MAE)
    mean the generator renders its conditions and ignores its noise.
    """
    fidelity = paired_fidelity(first.astype(np.float32), second.astype(np.float32), mask)
    difference = first[mask].astype(np.float64) - second[mask].astype(np.float64)
    return {"ssim": fidelity["ssim"], "mae": fidelity["mae"], "rms": float(np.sqrt(np.mean(difference**2)))}


# --- bootstrap -------------------------------------------------------------------------------------


def bootstrap_ci(statistic: Callable[..., float], sizes: tuple[int, ...], n_resamples: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` at ``level``.

    Each resample draws, for every sample i, ``sizes[i]`` indices into it with replacement
    (independently per sample) and calls ``statistic(*index_arrays)``. Resamples whose
    statistic is not finite (e.g. a set reduced to copies of one image) are left out; when
    more than half are, the interval is (nan, nan).
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(*(rng.integers(0, size, size) for size in sizes)) for _ in range(n_resamples)],
                      dtype=np.float64)
    finite = values[np.isfinite(values)]
    skipped = n_resamples - len(finite)
    if skipped:
        log.info("bootstrap: %d of %d resamples gave a non-finite statistic and were left out", skipped, n_resamples)
    if skipped * 2 > n_resamples:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 1000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item values (pairs, subjects, samples)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    return bootstrap_ci(lambda index: values[index].mean(), (len(values),), n_resamples, level, seed)


# --- set metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricResult:
    """One row of the metrics table; a metric that was not computed has NaNs and a ``note`` why."""

    generator: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: str  # what the value rests on: "4 vs 3" (real vs synthetic images) or "12 pairs"
    note: str = ""

    def as_row(self) -> dict:
        """The result as a dict of the TSV's columns, in field order."""
        return asdict(self)


@dataclass(frozen=True)
class SetMetricSettings:
    """Config ``evaluate.metrics``: bootstrap, MS-SSIM pairs and kernel, fallback feature pooling."""

    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    ms_ssim_pairs: int = 100
    ms_ssim_kernel: int = 5
    feature_pool: int = 4

    @classmethod
    def from_config(cls, section: dict) -> SetMetricSettings:
        """Settings from the config section; unknown keys are an error."""
        unknown = set(section) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown evaluate.metrics settings: {sorted(unknown)}")
        return cls(**section)


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def _too_few(**sets: int) -> str | None:
    """The note for the first set with fewer than 2 images, or None."""
    for name, count in sets.items():
        if count < 2:
            return f"not computed: the {name} set has {_images(count)} (needs ≥ 2)"
    return None


def _kernel_result(generator: str, metric: str, kernel: np.ndarray, n: int, m: int,
                   settings: SetMetricSettings) -> MetricResult:
    """An MMD row from the stacked kernel matrix of n real and m synthetic items, with its bootstrap CI."""
    value = mmd_from_kernel(kernel, *_stacked_index(n, m))
    low, high = bootstrap_ci(lambda ix, iy: mmd_from_kernel(kernel, ix, n + iy), (n, m),
                             settings.n_resamples, settings.level, settings.seed)
    # With a couple of images per set most resamples repeat an image and have no value.
    note = "" if math.isfinite(low) else "no CI: most resamples repeat an image (too few images)"
    return MetricResult(generator, metric, value, low, high, f"{n} vs {m}", note)


def _ms_ssim_result(generator: str, metric: str, volumes: np.ndarray, which: str,
                    settings: SetMetricSettings) -> MetricResult:
    """Mean MS-SSIM of seeded random pairs within one set, with the bootstrap CI of the pairs' mean."""
    note = _too_few(**{which: len(volumes)}) or ms_ssim_size_problem(volumes.shape[1:], settings.ms_ssim_kernel)
    if note:
        return MetricResult(generator, metric, math.nan, math.nan, math.nan, f"{len(volumes)} images",
                            note if note.startswith("not computed") else f"not computed: {note}")
    pairs = random_pairs(len(volumes), settings.ms_ssim_pairs, settings.seed)
    values = ms_ssim_pairs(volumes, pairs, kernel_size=settings.ms_ssim_kernel)
    # The pairs share images, so this interval is conditional on the set's images.
    low, high = bootstrap_mean_ci(values, settings.n_resamples, settings.level, settings.seed)
    return MetricResult(generator, metric, float(values.mean()), low, high, f"{len(pairs)} pairs")


def features_name(settings: SetMetricSettings, medicalnet: torch.nn.Module | None) -> str:
    """What the RBF MMD is computed on, as its metric names say: ``medicalnet`` or ``pooled<feature_pool>``."""
    return "medicalnet" if medicalnet is not None else f"pooled{settings.feature_pool}"


def set_features(sets: Sequence[np.ndarray], settings: SetMetricSettings, medicalnet: torch.nn.Module | None = None,
                 medicalnet_batch_size: int = 4, device: str = "cpu") -> list[np.ndarray]:
    """The RBF MMD's features of each set of volumes (N_i, X, Y, Z): MedicalNet's with a model,
    else the volumes average-pooled by ``settings.feature_pool``; (N_i, D) each, one row per
    volume (a volume's features do not depend on the others in its set)."""
    if medicalnet is not None:
        return [medicalnet_features(medicalnet, volumes, medicalnet_batch_size, device) for volumes in sets]
    return [pooled_features(volumes, settings.feature_pool) for volumes in sets]


def mmd_rbf_difference(generator: str, baseline: str, real: np.ndarray, fake: np.ndarray, baseline_fake: np.ndarray,
                       settings: SetMetricSettings = SetMetricSettings(), medicalnet: torch.nn.Module | None = None,
                       medicalnet_batch_size: int = 4, device: str = "cpu",
                       features: Sequence[np.ndarray] | None = None) -> MetricResult:
    """Whether ``generator`` is closer to the real set than ``baseline`` is: RBF MMD(real, fake)
    minus RBF MMD(real, baseline_fake), with a paired bootstrap 95% CI.

    Sets (N, X, Y, Z), (M, ...), (K, ...) in [0, 1]. Both MMDs use one kernel (σ: the median
    pairwise distance of all three sets' features), and every resample draws the real set once
    for both, so the real set's own sampling noise, which dominates each MMD's interval when it
    is small, cancels in the difference. Negative: ``generator`` is nearer; an interval that
    holds 0: no difference shown. Row ``mmd_rbf_<features>_minus_<baseline>``. ``features``: the
    three sets' :func:`set_features` (same settings and model) where the caller has them; None:
    computed here.
    """
    metric = f"mmd_rbf_{features_name(settings, medicalnet)}_minus_{baseline}"
    n, m, k = len(real), len(fake), len(baseline_fake)
    label = f"{n} vs {m} vs {k}"
    too_few = _too_few(real=n, synthetic=m, baseline=k)
    if too_few:
        return MetricResult(generator, metric, math.nan, math.nan, math.nan, label, too_few)
    if features is None:
        features = set_features((real, fake, baseline_fake), settings, medicalnet, medicalnet_batch_size, device)
    features = np.concatenate(features)
    squared = squared_distances(features)
    kernel = rbf_kernel(squared, _median_distance(squared))

    def difference(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> float:
        return mmd_from_kernel(kernel, ix, n + iy) - mmd_from_kernel(kernel, ix, n + m + iz)

    value = difference(np.arange(n), np.arange(m), np.arange(k))
    low, high = bootstrap_ci(difference, (n, m, k), settings.n_resamples, settings.level, settings.seed)
    note = "" if math.isfinite(low) else "no CI: most resamples repeat an image (too few images)"
    return MetricResult(generator, metric, value, low, high, label, note)


def set_metrics(generator: str, real: np.ndarray, fake: np.ndarray,
                settings: SetMetricSettings = SetMetricSettings(), medicalnet: torch.nn.Module | None = None,
                medicalnet_batch_size: int = 4, device: str = "cpu",
                timings: dict | None = None, features: Sequence[np.ndarray] | None = None) -> list[MetricResult]:
    """Distribution and diversity metrics of a synthetic set against a real one, with bootstrap CIs.

    ``real`` (N, X, Y, Z) and ``fake`` (M, X, Y, Z) in [0, 1]. Rows, in order:

    * ``mmd_linear_voxels``: MONAI's linear-kernel MMD on the voxels (from the Gram matrix).
    * ``mmd_rbf_medicalnet`` with a MedicalNet model, else ``mmd_rbf_pooled<feature_pool>``:
      the unbiased RBF MMD, σ = median pairwise distance of the real and synthetic features together.
    * ``fid_medicalnet``: only with a MedicalNet model (random-weight features are meaningless).
    * ``ms_ssim_synthetic``, ``ms_ssim_real``: mean MS-SSIM of seeded random pairs within each set.

    A metric that cannot be computed (a set with fewer than 2 images, volumes too small for
    the MS-SSIM kernel, no MedicalNet) is a row with NaNs and a note saying why. ``timings``,
    if given, receives the seconds each step took. ``features``: the real and synthetic sets'
    :func:`set_features` (same settings and model) where the caller has them (MedicalNet's cost
    minutes on a CPU); None: computed here.
    """
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and synthetic images differ in shape: {real.shape[1:]} vs {fake.shape[1:]}")
    timings = {} if timings is None else timings
    n, m = len(real), len(fake)
    pair_label = f"{n} vs {m}"
    rbf_metric = f"mmd_rbf_{features_name(settings, medicalnet)}"
    results = []

    def missing(metric: str, note: str) -> MetricResult:
        return MetricResult(generator, metric, math.nan, math.nan, math.nan, pair_label, note)

    too_few = _too_few(real=n, synthetic=m)
    start = time.perf_counter()
    if too_few:
        results.append(missing("mmd_linear_voxels", too_few))
    else:
        # MONAI's statistic evaluated on the Gram matrix (equal to MMDMetric, tested), which the
        # bootstrap needs anyway and which allows N ≠ M.
        results.append(_kernel_result(generator, "mmd_linear_voxels", linear_gram(real, fake), n, m, settings))
    timings["mmd_linear_voxels"] = time.perf_counter() - start

    if too_few:
        results.append(missing(rbf_metric, too_few))
        results.append(missing("fid_medicalnet", too_few if medicalnet is not None else NO_MEDICALNET))
    else:
        start = time.perf_counter()
        if features is None:
            features = set_features((real, fake), settings, medicalnet, medicalnet_batch_size, device)
        features = np.concatenate(features)
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        squared = squared_distances(features)
        kernel = rbf_kernel(squared, _median_distance(squared))
        results.append(_kernel_result(generator, rbf_metric, kernel, n, m, settings))
        timings[rbf_metric] = time.perf_counter() - start

        start = time.perf_counter()
        if medicalnet is None:
            results.append(missing("fid_medicalnet", NO_MEDICALNET))
        else:
            real_features, fake_features = features[:n], features[n:]
            low, high = bootstrap_ci(lambda ix, iy: frechet_distance_fast(real_features[ix], fake_features[iy]),
                                     (n, m), settings.n_resamples, settings.level, settings.seed)
            results.append(MetricResult(generator, "fid_medicalnet", frechet_distance(real_features, fake_features),
                                        low, high, pair_label))
        timings["fid_medicalnet"] = time.perf_counter() - start

    for metric, volumes, which in (("ms_ssim_synthetic", fake, "synthetic"), ("ms_ssim_real", real, "real")):
        start = time.perf_counter()
        results.append(_ms_ssim_result(generator, metric, volumes, which, settings))
        timings[metric] = time.perf_counter() - start
    return results
