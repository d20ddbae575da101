"""Evaluation figures: sample galleries beside real images, metrics with CI bars, training losses,
an atrophied cortex's sample beside its twin's.

Each function returns a matplotlib Figure on its own Agg canvas; the caller saves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cortexgen.plotting import agg_figure

VIEWS = ("sagittal", "coronal", "axial")


def centre_slices(volume: np.ndarray, centre: Sequence[int] | None = None) -> list[np.ndarray]:
    """Sagittal, coronal and axial slices through ``centre`` (voxel indices; default the grid
    centre) of an (X, Y, Z) RAS volume, rotated for display (superior / anterior up)."""
    x, y, z = centre if centre is not None else (s // 2 for s in volume.shape)
    return [np.rot90(volume[x, :, :]), np.rot90(volume[:, y, :]), np.rot90(volume[:, :, z])]


def gallery_figure(
    real: Sequence[tuple[str, np.ndarray]], synthetic: Sequence[tuple[str, np.ndarray]], title: str,
    voxel_mm: Sequence[float] = (1.0, 1.0, 1.0),
) -> Figure:
    """Real images (top block) and synthetic ones (bottom block), three views each.

    Args:
        real, synthetic: (label, volume (X, Y, Z) in [0, 1]) pairs; one column per image.
        voxel_mm: voxel sizes, for each panel's aspect ratio.
    """
    columns = max(len(real), len(synthetic), 1)
    fig = agg_figure((1.9 * columns + 0.6, 1.9 * 2 * len(VIEWS) * 0.8))
    dx, dy, dz = voxel_mm
    aspects = (dz / dy, dz / dx, dy / dx)
    for block, (name, images) in enumerate((("real", real), ("synthetic", synthetic))):
        for column in range(columns):
            for v, view in enumerate(VIEWS):
                row = block * len(VIEWS) + v
                ax = fig.add_subplot(2 * len(VIEWS), columns, row * columns + column + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                if column < len(images):
                    label, volume = images[column]
                    ax.imshow(centre_slices(volume)[v], cmap="gray", vmin=0.0, vmax=1.0, aspect=aspects[v],
                              interpolation="nearest")
                    if v == 0:
                        ax.set_title(label, fontsize=7)
                elif column == 0 and v == 0:
                    ax.text(0.5, 0.5, f"no {name} images", ha="center", va="center", fontsize=8,
                            transform=ax.transAxes)
                if column == 0:
                    ax.set_ylabel(f"{name}\n{view}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


#: A panel's y axis spans at least this fraction of its largest absolute value.
MIN_RELATIVE_SPAN = 0.02


def _readable_span(ax, numbers: np.ndarray) -> None:
    """No offset on the y axis, and at least :data:`MIN_RELATIVE_SPAN` of the values' size around
    them: values that agree to a few digits (a bridge and its prior alone) are drawn level, not
    spread over the whole panel under an offset that hides how close they are."""
    ax.yaxis.get_major_formatter().set_useOffset(False)
    finite = numbers[np.isfinite(numbers)]
    if not finite.size:
        return
    low, high = float(finite.min()), float(finite.max())
    half = 0.5 * MIN_RELATIVE_SPAN * float(np.abs(finite).max())
    if high - low < 2 * half:
        centre = 0.5 * (low + high)
        ax.set_ylim(centre - half, centre + half)


def metrics_figure(rows: Sequence[Mapping], title: str = "metrics with bootstrap 95% CIs") -> Figure:
    """One panel per metric: value and CI bar per generator; a metric not computed says so.

    Args:
        rows: dicts with generator, metric, value, ci_low, ci_high (floats; NaN when not computed).
    """
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    columns = min(4, max(len(metrics), 1))
    panel_rows = max(1, math.ceil(len(metrics) / columns))
    fig = agg_figure((3.2 * columns, 2.4 * panel_rows))
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(panel_rows, columns, index + 1)
        entries = [row for row in rows if row["metric"] == metric]
        names = [row["generator"] for row in entries]
        values = np.array([float(row["value"]) for row in entries])
        low = np.array([float(row["ci_low"]) for row in entries])
        high = np.array([float(row["ci_high"]) for row in entries])
        positions = np.arange(len(entries))
        shown = np.isfinite(values)
        if shown.any():
            # A CI that could not be computed (too few resamples finite) is drawn as no bar.
            below = np.where(np.isfinite(low), values - low, 0.0)
            above = np.where(np.isfinite(high), high - values, 0.0)
            ax.errorbar(positions[shown], values[shown], yerr=np.vstack([below[shown], above[shown]]), fmt="o", capsize=3)
        for position in positions[~shown]:
            ax.text(float(position), 0.5, "not\ncomputed", ha="center", va="center", fontsize=6, color="grey",
                    transform=ax.get_xaxis_transform())
        _readable_span(ax, np.concatenate([values, low, high]))
        if "_minus_" in metric:
            # A difference of two generators: its sign is the answer.
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(positions)
        ax.set_xticklabels(names, fontsize=7, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(entries) - 0.5)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def training_figure(logs: Mapping[str, Sequence[Mapping]]) -> Figure:
    """Training (and validation) loss against step per generator, one panel each, log scale.

    Args:
        logs: generator -> rows of its train_log.tsv (step, train_loss, val_loss as floats).
    """
    names = list(logs) or ["none"]
    fig = agg_figure((3.4 * len(names), 3.0))
    for index, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), index + 1)
        rows = logs.get(name, [])
        if not rows:
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
        else:
            steps = [row["step"] for row in rows]
            ax.plot(steps, [row["train_loss"] for row in rows], label="train")
            val = [row["val_loss"] for row in rows]
            if any(math.isfinite(v) for v in val):
                ax.plot(steps, val, label="validation (EMA)")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def twin_figure(twin: np.ndarray, atrophied: np.ndarray, region: np.ndarray, title: str,
                voxel_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> Figure:
    """An atrophied cortex's sample, its unthinned twin's, and their difference (atrophied − twin),
    in sagittal, coronal and axial slices through the centre of the atrophy region's cortex
    (outlined on the difference; the grid centre if it is empty).

    Args:
        twin, atrophied: (X, Y, Z) images in [0, 1].
        region: (X, Y, Z) bool, the atrophy region's cortex
            (:func:`cortexgen.evaluate.atrophy.region_cortex`).
        voxel_mm: voxel sizes, for each panel's aspect ratio.
    """
    region = np.asarray(region, dtype=bool)
    centre = np.round(np.argwhere(region).mean(axis=0)).astype(int) if region.any() else None
    difference = np.asarray(atrophied, dtype=np.float64) - np.asarray(twin, dtype=np.float64)
    limit = max(float(np.abs(difference).max()), 1e-6)
    dx, dy, dz = voxel_mm
    aspects = (dz / dy, dz / dx, dy / dx)
    columns = (("twin", twin, {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}),
               ("atrophied", atrophied, {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}),
               ("atrophied − twin", difference, {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}))
    fig = agg_figure((7.2, 6.6))
    outlines = centre_slices(region.astype(np.float32), centre)
    for v, view in enumerate(VIEWS):
        for c, (name, volume, style) in enumerate(columns):
            ax = fig.add_subplot(len(VIEWS), len(columns), v * len(columns) + c + 1)
            shown = ax.imshow(centre_slices(np.asarray(volume), centre)[v], aspect=aspects[v], interpolation="nearest",
                              **style)
            if c == len(columns) - 1:
                if outlines[v].any():
                    ax.contour(outlines[v], levels=[0.5], colors="k", linewidths=0.5)
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if v == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(view, fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
