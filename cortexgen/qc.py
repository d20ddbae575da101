"""Quality-control figures: three orthogonal slices per processing step, mask outlined."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import voxel_sizes  # noqa: E402


@dataclass
class QCRow:
    """One row of a montage: a step's image and, optionally, a mask on the same grid."""

    label: str
    image: nib.Nifti1Image
    mask: nib.Nifti1Image | None = None


def _slice_centre(image: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int]:
    """Slice indices through the mask's centre of mass, or the image's bright centre."""
    weights = mask if mask is not None and mask.any() else image > np.percentile(image, 75)
    if not weights.any():
        return tuple(s // 2 for s in image.shape)
    centre = np.argwhere(weights).mean(axis=0)
    return tuple(int(round(c)) for c in centre)


def preproc_montage(rows: list[QCRow], title: str) -> plt.Figure:
    """Sagittal, coronal and axial slices of each step, one row per step.

    Images are expected in RAS+ voxel order (as every cortexgen step writes them). Panels
    follow the neurological convention (left on the left, superior up), with each panel's
    aspect ratio set from the true voxel sizes.

    Returns:
        A matplotlib figure; the caller saves and closes it.
    """
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for row_axes, row in zip(axes, rows):
        data = np.asarray(row.image.dataobj, dtype=np.float32)
        mask = None if row.mask is None else np.asarray(row.mask.dataobj) > 0
        x, y, z = _slice_centre(data, mask)
        dx, dy, dz = voxel_sizes(row.image)
        low, high = np.percentile(data, [1, 99.5])
        views = [
            ("sagittal", data[x, :, :], None if mask is None else mask[x, :, :], dz / dy),
            ("coronal", data[:, y, :], None if mask is None else mask[:, y, :], dz / dx),
            ("axial", data[:, :, z], None if mask is None else mask[:, :, z], dy / dx),
        ]
        for ax, (view, plane, plane_mask, aspect) in zip(row_axes, views):
            ax.imshow(np.rot90(plane), cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            if plane_mask is not None and plane_mask.any():
                ax.contour(np.rot90(plane_mask.astype(float)), levels=[0.5], colors="tab:red", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if ax is row_axes[0]:
                ax.set_ylabel(row.label, fontsize=10)
            ax.set_title(f"{view}  {data.shape[0]}x{data.shape[1]}x{data.shape[2]}", fontsize=8)
    fig.suptitle(title)
    # Leave the top strip to the title so it does not sit on the first row's panel titles.
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
