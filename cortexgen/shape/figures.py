"""Figures of the shape model: its modes, and thickness maps of sampled cortices.

Surfaces are drawn by :func:`cortexgen.plotting.draw_surface`, like the surface QC figure.

Figures are drawn on their own Agg canvas, outside pyplot, so they render headless
without switching any global backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from cortexgen.plotting import HEMI_NAMES, MAX_FACES, THICKNESS_RANGE_MM, agg_figure, colour_bar, draw_surface
from cortexgen.shape.model import ShapeModel, reconstruct
from cortexgen.surfaces.mesh import Mesh

COLOUR_BY = ("thickness", "displacement")


def mode_figure(
    model: ShapeModel, n_modes: int = 3, sd: float = 2.0, colour_by: str = "thickness", view: str = "lateral",
    max_faces: int = MAX_FACES,
) -> Figure:
    """The first modes of a shape model: mean − sd·σ, mean, mean + sd·σ per mode.

    One row per mode, three surface panels per row (mid-thickness surfaces of the
    model's hemisphere), and one colour bar axis: n_modes × 3 + 1 axes.

    Args:
        model: the shape model.
        n_modes: modes to show (at most the model's K).
        sd: how many standard deviations along each mode.
        colour_by: ``"thickness"`` (mm, 0–5) or ``"displacement"``: the distance (mm) of
            each vertex from its place on the mean surface.
        view: nilearn view, e.g. ``"lateral"``, ``"medial"``, ``"dorsal"``.
        max_faces: coarsen subdivided meshes to at most this many faces when drawing.

    Returns:
        A matplotlib figure on an Agg canvas, not registered with pyplot: the caller saves it.
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {COLOUR_BY}, got {colour_by!r}")
    n_modes = min(int(n_modes), model.n_modes)
    if n_modes < 1:
        raise ValueError("the model has no modes to show")
    offsets = (-sd, 0.0, sd)
    shapes = []
    for mode in range(n_modes):
        z = np.zeros((len(offsets), mode + 1))
        z[:, mode] = offsets
        mids, thicknesses = reconstruct(model, z)
        if colour_by == "thickness":
            values = thicknesses
        else:
            values = np.linalg.norm(mids - model.mean_mid_vertices, axis=2)
        shapes.append((mids, values))
    if colour_by == "thickness":
        vmin, vmax, label = *THICKNESS_RANGE_MM, "thickness (mm)"
    else:
        vmin, vmax, label = 0.0, max(float(max(v.max() for _, v in shapes)), 1e-6), "displacement from mean (mm)"

    cmap = matplotlib.colormaps["viridis"]
    fig = agg_figure((9, 2.6 * n_modes + 0.6))
    for mode, (mids, values) in enumerate(shapes):
        for column, offset in enumerate(offsets):
            ax = fig.add_subplot(n_modes, 3, 3 * mode + column + 1, projection="3d", proj_type="ortho")
            draw_surface(ax, Mesh(mids[column], model.faces), values[column], model.hemi, view,
                         cmap, vmin, vmax, max_faces)
            ax.set_title(f"mode {mode + 1}: {'mean' if offset == 0 else f'{offset:+g} SD'}", fontsize=9)
    colour_bar(fig, cmap, vmin, vmax, label)
    fig.suptitle(f"hemi-{model.hemi} shape model, {model.n_modes} modes, {len(model.subjects)} subjects")
    return fig


def thickness_figure(
    surfaces: Sequence[tuple[Mesh, np.ndarray]], titles: Sequence[str], hemi: str = "L",
    views: Sequence[str] = ("lateral", "medial"), max_faces: int = MAX_FACES,
) -> Figure:
    """Thickness maps (0–5 mm) of several hemispheres, e.g. a sample, an interpolation, an atrophy.

    One row per hemisphere, one column per view, and one colour bar axis:
    len(surfaces) × len(views) + 1 axes.

    Args:
        surfaces: (mid-thickness mesh, (V,) thickness mm) per row.
        titles: one title per row.
        hemi: ``"L"`` or ``"R"`` (sets which side is lateral).
        views: nilearn views per row.
        max_faces: coarsen subdivided meshes to at most this many faces when drawing.

    Returns:
        A matplotlib figure on an Agg canvas, not registered with pyplot: the caller saves it.
    """
    surfaces = list(surfaces)
    titles = list(titles)
    if not surfaces or len(titles) != len(surfaces):
        raise ValueError(f"need one title per surface, got {len(titles)} titles for {len(surfaces)} surfaces")
    if hemi not in HEMI_NAMES:
        raise ValueError(f"hemi must be one of {tuple(HEMI_NAMES)}, got {hemi!r}")
    cmap = matplotlib.colormaps["viridis"]
    vmin, vmax = THICKNESS_RANGE_MM
    n_rows, n_columns = len(surfaces), len(views)
    fig = agg_figure((3.2 * n_columns, 2.6 * n_rows + 0.6))
    for row, ((mesh, thickness), title) in enumerate(zip(surfaces, titles)):
        for column, view in enumerate(views):
            ax = fig.add_subplot(n_rows, n_columns, row * n_columns + column + 1, projection="3d", proj_type="ortho")
            draw_surface(ax, mesh, thickness, hemi, view, cmap, vmin, vmax, max_faces)
            ax.set_title(f"{title} ({view})", fontsize=9)
    colour_bar(fig, cmap, vmin, vmax, "thickness (mm)")
    return fig


def quality_figure(quality: dict, title: str) -> Figure:
    """Compactness, generalisation and specificity against the number of modes, side by side.

    Args:
        quality: ``{"compactness": [...], "generalisation": {...} | None,
            "specificity": {...} | None, "correspondence": {...}}`` as written by the
            ``shape_model_quality`` rule (the dicts of :mod:`cortexgen.shape.quality`); a measure
            that is None (e.g. generalisation with fewer than three training subjects) is drawn
            as a note; the folding agreement, when there, goes into the title.

    Returns:
        A figure with three axes on an Agg canvas.
    """
    fig = agg_figure((11, 3.4))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    compact = quality["compactness"]
    axes[0].plot(np.arange(1, len(compact) + 1), compact, "o-")
    axes[0].set(xlabel="modes", ylabel="cumulative explained variance", title="compactness", ylim=(0, 1.02))
    for ax, key, ylabel in ((axes[1], "generalisation", "leave-one-out vertex error (mm)"),
                            (axes[2], "specificity", "distance to nearest training shape (mm)")):
        measure = quality.get(key)
        ax.set(title=key, xlabel="modes", ylabel=ylabel)
        if not measure or "modes" not in measure:
            reason = (measure or {}).get("not_computed", "not computed")
            ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
            continue
        mean_key = "vertex_error_mm_mean" if key == "generalisation" else "distance_mm_mean"
        std_key = mean_key.replace("_mean", "_std")
        ax.errorbar(measure["modes"], measure[mean_key], yerr=measure[std_key], fmt="o-", capsize=3)
    folds = quality.get("correspondence")
    if folds:
        title += (f"; folds at the same vertices: curvature r {folds['curvature_r_mean']:.2f}"
                  f" (lowest subject {folds['curvature_r_min']:.2f})")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
