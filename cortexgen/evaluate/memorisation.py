"""Memorisation check: each synthetic image's nearest training image, by SSIM and by correlation.

A generator that copies its training set makes images whose nearest training image is about as
close as the image itself (SSIM and r near 1). What "not copying" looks like is the same
measure for real images the generators never saw (held-out subjects): their nearest training
image is another person's brain. Both are measured inside the training image's brain mask, so
the zero background, identical in every image, does not count as likeness.

Images are (X, Y, Z) volumes in [0, 1] on one grid; a set of them is (N, X, Y, Z). Training
images are read one at a time through a loader, so a cohort of thousands needs no more memory
than one image beside the synthetic set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cortexgen.evaluate.metrics import MetricResult, SetMetricSettings
from cortexgen.evaluate.summary import summarise

#: The baseline's name in the tables: real images of held-out subjects against the training set.
BASELINE = "real_held_out"

#: SSIM's Gaussian window σ in voxels (Wang et al. 2004; MONAI's SSIMMetric default).
SSIM_SIGMA = 1.5
#: Synthetic images per batch of the SSIM blurs (bounds memory: about 6 volumes each).
SSIM_BATCH = 8


def _gaussian_1d(kernel_size: int, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 1D Gaussian MONAI's SSIM builds its 3D window from, shape (kernel_size,)."""
    distance = torch.arange((1 - kernel_size) / 2, (1 + kernel_size) / 2, 1.0)
    weights = torch.exp(-((distance / sigma) ** 2) / 2)
    return weights / weights.sum()


def _blur(volumes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian of (B, 1, X, Y, Z) without padding: (B, 1, X-k+1, Y-k+1, Z-k+1).

    Equal to a conv3d with the outer-product window (as MONAI's SSIM does) at 3k instead of k³
    multiplications per voxel.
    """
    k = len(weights)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k
        volumes = F.conv3d(volumes, weights.reshape(shape).to(volumes))
    return volumes


def ssim_map(x: torch.Tensor, y: torch.Tensor, kernel_size: int = 11, data_range: float = 1.0) -> torch.Tensor:
    """Local SSIM of (B, 1, X, Y, Z) against (B or 1, 1, X, Y, Z): (B, 1, X-k+1, Y-k+1, Z-k+1).

    The map of MONAI's ``compute_ssim_and_cs`` (Gaussian window σ 1.5 of ``kernel_size`` voxels,
    k1 0.01, k2 0.03, no padding); :class:`monai.metrics.SSIMMetric` is its mean.
    """
    weights = _gaussian_1d(kernel_size)
    return _ssim_from_moments(_moments(x, weights), _moments(y, weights), _blur(x * y, weights), data_range)


def _moments(volumes: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and local mean of squares, each (B, 1, X-k+1, Y-k+1, Z-k+1)."""
    return _blur(volumes, weights), _blur(volumes * volumes, weights)


def _ssim_from_moments(x_moments, y_moments, mu_xy: torch.Tensor, data_range: float) -> torch.Tensor:
    """The SSIM map from each side's (local mean, local mean of squares) and the local mean of x·y."""
    (mu_x, mu_xx), (mu_y, mu_yy) = x_moments, y_moments
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var_x, var_y, cov = mu_xx - mu_x**2, mu_yy - mu_y**2, mu_xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * ((2 * cov + c2) / (var_x + var_y + c2))


def _valid(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """The part of an (X, Y, Z) mask on the SSIM map's grid (the window centres of a no-padding map)."""
    start = (kernel_size - 1) // 2
    return mask[tuple(slice(start, start + side - kernel_size + 1) for side in mask.shape)]


def masked_correlation(images: np.ndarray, other: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson r of each of ``images`` (N, X, Y, Z) with ``other`` (X, Y, Z) over ``mask``: (N,).

    NaN for an image that is constant inside the mask (r is undefined there).
    """
    inside = np.asarray(images, dtype=np.float64)[:, mask]
    target = np.asarray(other, dtype=np.float64)[mask]
    inside -= inside.mean(axis=1, keepdims=True)
    target -= target.mean()
    denominator = np.sqrt((inside**2).sum(axis=1) * (target**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, inside @ target / denominator, np.nan)


def nearest_training(images: np.ndarray, load_train: Callable[[int], tuple[np.ndarray, np.ndarray]],
                     n_train: int, ssim_kernel: int = 11, ssim_candidates: int | None = None) -> list[dict]:
    """Each image's most similar training image, by masked SSIM and by masked Pearson r.

    Args:
        images: (N, X, Y, Z) in [0, 1]: synthetic images, or held-out real ones (the baseline).
        load_train: ``load_train(j)`` -> (training image (X, Y, Z) in [0, 1], its brain mask
            (X, Y, Z) bool), for j in range(n_train). Both measures run inside that mask.
        ssim_kernel: SSIM window side in voxels.
        ssim_candidates: SSIM is computed against this many training images per image, those of
            highest r (a cohort of thousands then costs one pass of correlations and a few SSIMs
            per image); None: against all. A copy has r ≈ 1, so it is always a candidate.

    Returns:
        One dict per image: ``ssim`` and ``ssim_train`` (the nearest training image's index),
        ``corr`` and ``corr_train``. NaN and -1 when no training image gives a value.
    """
    images = np.asarray(images, dtype=np.float32)
    count = len(images)
    if n_train < 1:
        raise ValueError("the memorisation check needs at least one training image")
    all_ssim = ssim_candidates is None or ssim_candidates >= n_train
    corr = np.full((count, n_train), np.nan)
    ssim = np.full((count, n_train), np.nan)
    weights = _gaussian_1d(ssim_kernel)
    batches = []  # the images' local moments, computed once for every training image
    for start in range(0, count, SSIM_BATCH):
        chunk = torch.from_numpy(images[start:start + SSIM_BATCH])[:, None]
        batches.append((start, chunk, _moments(chunk, weights)))

    def fill_ssim(j: int, train: np.ndarray, mask: np.ndarray, which: np.ndarray) -> None:
        valid = torch.from_numpy(_valid(mask, ssim_kernel))
        if not bool(valid.any()):
            raise ValueError(f"training image {j}: its brain mask is empty at least {ssim_kernel // 2} voxels "
                             "from the grid's edges")
        target = torch.from_numpy(np.asarray(train, dtype=np.float32))[None, None]
        target_moments = _moments(target, weights)
        for start, chunk, moments in batches:
            rows = which[start:start + len(chunk)]
            if not rows.any():
                continue
            local = _ssim_from_moments(moments, target_moments, _blur(chunk * target, weights), 1.0)
            ssim[start:start + len(chunk), j] = np.where(rows, local[:, 0][:, valid].double().mean(dim=1).numpy(),
                                                         np.nan)

    everyone = np.ones(count, dtype=bool)
    for j in range(n_train):
        train, mask = load_train(j)
        mask = np.asarray(mask, dtype=bool)
        corr[:, j] = masked_correlation(images, train, mask)
        if all_ssim:
            fill_ssim(j, train, mask, everyone)
    if not all_ssim:
        ranked = np.argsort(-np.nan_to_num(corr, nan=-np.inf), axis=1, kind="stable")[:, :ssim_candidates]
        chosen = np.zeros((count, n_train), dtype=bool)
        np.put_along_axis(chosen, ranked, True, axis=1)
        for j in np.flatnonzero(chosen.any(axis=0)):
            train, mask = load_train(int(j))
            fill_ssim(int(j), train, np.asarray(mask, dtype=bool), chosen[:, j])
    return [{**_best("ssim", ssim[i]), **_best("corr", corr[i])} for i in range(count)]


def _best(name: str, values: np.ndarray) -> dict:
    if not np.isfinite(values).any():
        return {name: math.nan, f"{name}_train": -1}
    index = int(np.nanargmax(values))
    return {name: float(values[index]), f"{name}_train": index}


def copy_summary(nearest: Sequence[float], baseline: Sequence[float]) -> dict:
    """How a generator's nearest-training SSIMs compare with the held-out real images'.

    Returns median and max of ``nearest``, and ``above_real``: the fraction of images closer to
    a training image than any held-out real image is (NaN without a baseline). A generator that
    copies has it near 1; one that does not, near 0.
    """
    nearest = np.asarray(nearest, dtype=np.float64)
    nearest = nearest[np.isfinite(nearest)]
    baseline = np.asarray(baseline, dtype=np.float64)
    baseline = baseline[np.isfinite(baseline)]
    if len(nearest) == 0:
        return {"median": math.nan, "max": math.nan, "above_real": math.nan}
    above = float((nearest > baseline.max()).mean()) if len(baseline) else math.nan
    return {"median": float(np.median(nearest)), "max": float(nearest.max()), "above_real": above}


def memorisation_table(sets: Mapping[str, tuple[Sequence[str], np.ndarray]], train_labels: Sequence[str],
                       load_train: Callable[[int], tuple[np.ndarray, np.ndarray]], ssim_kernel: int = 11,
                       ssim_candidates: int | None = None) -> list[dict]:
    """One row per image of each set: its nearest training image by SSIM and by r.

    Args:
        sets: name (a generator, or :data:`BASELINE`) -> (image labels, images (N, X, Y, Z)).
        train_labels: the training images' names (e.g. scan prefixes), in ``load_train`` order.

    Returns:
        Rows of generator, image, nearest_ssim, nearest_ssim_train, nearest_corr,
        nearest_corr_train (the training images' labels; empty when there is no value).
    """
    rows = []
    for name, (labels, images) in sets.items():
        found = nearest_training(images, load_train, len(train_labels), ssim_kernel, ssim_candidates)
        for label, item in zip(labels, found):
            rows.append({"generator": name, "image": label,
                         "nearest_ssim": item["ssim"],
                         "nearest_ssim_train": train_labels[item["ssim_train"]] if item["ssim_train"] >= 0 else "",
                         "nearest_corr": item["corr"],
                         "nearest_corr_train": train_labels[item["corr_train"]] if item["corr_train"] >= 0 else ""})
    return rows


def memorisation_metrics(table: Sequence[Mapping], settings: SetMetricSettings) -> list[MetricResult]:
    """metrics.tsv rows per set of :func:`memorisation_table`: mean (bootstrap CI), median and max of
    nearest_train_ssim and nearest_train_corr, and (for generators, given a baseline)
    nearest_train_ssim_above_real (see :func:`copy_summary`). Order statistics get no CI."""
    names = list(dict.fromkeys(row["generator"] for row in table))
    baseline = [row["nearest_ssim"] for row in table if row["generator"] == BASELINE]
    results = []
    for name in names:
        n_images = sum(row["generator"] == name for row in table)
        for measure in ("ssim", "corr"):
            values = [row[f"nearest_{measure}"] for row in table if row["generator"] == name]
            metric = f"nearest_train_{measure}"
            results.append(summarise(name, metric, values, settings))
            summary = copy_summary(values, baseline)
            for statistic in ("median", "max"):
                results.append(MetricResult(name, f"{metric}_{statistic}", summary[statistic], math.nan, math.nan,
                                            str(n_images), "no CI: an order statistic"))
        if name != BASELINE:
            ssim = [row["nearest_ssim"] for row in table if row["generator"] == name]
            above = copy_summary(ssim, baseline)["above_real"]
            note = ("no CI" if baseline else f"not computed: no held-out real images ({BASELINE})")
            results.append(MetricResult(name, "nearest_train_ssim_above_real", above, math.nan, math.nan,
                                        f"{n_images} vs {len(baseline)}", note))
    return results
