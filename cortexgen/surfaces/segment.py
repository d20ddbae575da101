"""Tissue segmentation (CSF, GM, WM) of a skull-stripped T1w volume.

CAT12's AMAP (adaptive maximum a posteriori with a partial-volume model, through
cat-surf) classifies every brain voxel into CSF, CSF/GM, GM, GM/WM and WM. From those five
probabilities we form CAT's continuous tissue label (1 = CSF, 2 = GM, 3 = WM), whose
2.5 level is the white surface and 1.5 level the pial surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cortexgen.errors import InputImageError

#: The label value of each AMAP partial-volume class: CSF, CSF/GM, GM, GM/WM, WM.
PVE_CLASS_LABELS = np.array([1.0, 1.5, 2.0, 2.5, 3.0], dtype=np.float32)


@dataclass(frozen=True)
class TissueMaps:
    """Tissue fractions on one grid, each float32 in [0, 1], zero outside the brain.

    Attributes:
        csf, gm, wm: partial-volume fractions; inside the brain they sum to 1.
        label: CAT's continuous tissue label, 0 outside the brain, 1 (CSF) .. 3 (WM).
    """

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    label: np.ndarray

    @property
    def gm_wm(self) -> np.ndarray:
        """Fraction of grey plus white matter; its 0.5 level is the pial surface."""
        return self.gm + self.wm


def tissue_from_label(label: np.ndarray) -> TissueMaps:
    """Fractions from a continuous label (1 CSF, 2 GM, 3 WM; 0 outside the brain)."""
    label = np.asarray(label, dtype=np.float32)
    brain = label > 0
    wm = np.clip(label - 2.0, 0.0, 1.0)
    gm_wm = np.clip(label - 1.0, 0.0, 1.0) * brain
    csf = (1.0 - gm_wm) * brain
    return TissueMaps(csf=csf.astype(np.float32), gm=(gm_wm - wm).astype(np.float32), wm=wm, label=label)


def tissue_from_fractions(csf: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> TissueMaps:
    """Tissue maps from stored CSF, GM and WM fractions (the ``segment`` rule's outputs).

    The brain is where any fraction is non-zero; the label is rebuilt there as
    1 + GM + 2·WM, the inverse of :func:`tissue_from_label`.
    """
    gm = np.asarray(gm, dtype=np.float32)
    wm = np.asarray(wm, dtype=np.float32)
    brain = (np.asarray(csf) + gm + wm) > 0
    label = np.where(brain, 1.0 + gm + 2.0 * wm, 0.0).astype(np.float32)
    return tissue_from_label(label)


def kmeans_intensity_labels(intensities: np.ndarray, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Three-class 1D k-means, started at the 15th/50th/85th percentiles (deterministic).

    Returns:
        ``(labels, centres)``: labels (N,) uint8 in {1, 2, 3} ordered dark to bright
        (CSF, GM, WM on T1w) and the three class means.
    """
    centres = np.percentile(intensities, [15, 50, 85]).astype(np.float64)
    for _ in range(iterations):
        nearest = np.argmin(np.abs(intensities[:, None] - centres[None, :]), axis=1)
        updated = np.array([intensities[nearest == k].mean() if np.any(nearest == k) else centres[k] for k in range(3)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return (nearest + 1).astype(np.uint8), centres


def segment_tissue(
    t1_brain: np.ndarray,
    brain_mask: np.ndarray,
    voxel_size_mm: np.ndarray,
    iterations: int = 50,
    mrf_weight: float = 0.0,
    source: str = "image",
) -> TissueMaps:
    """Segment a skull-stripped, bias-corrected T1w volume into tissue fractions.

    Args:
        t1_brain: (X, Y, Z) intensities, any scale (the preprocessing's 1 mm brain).
        brain_mask: (X, Y, Z) bool, the brain.
        voxel_size_mm: (3,) voxel edges.
        iterations: AMAP iterations.
        mrf_weight: AMAP's Markov-random-field weight in [0, 1].
        source: the file the image came from, for error messages.

    Raises:
        InputImageError: if the brain has too few voxels or its intensities cannot be
            split into three classes (a blank or binary image).
    """
    import cat_surf

    brain_mask = np.asarray(brain_mask, dtype=bool)
    intensities = np.asarray(t1_brain, dtype=np.float32)[brain_mask]
    if intensities.size < 1000:
        raise InputImageError(source, f"brain mask has {intensities.size} voxels; too few to segment")
    initial, centres = kmeans_intensity_labels(intensities)
    if np.min(np.diff(centres)) <= 1e-3 * max(abs(centres).max(), 1e-6):
        raise InputImageError(source, f"brain intensities do not separate into CSF/GM/WM (class means {centres})")
    labels = np.zeros(brain_mask.shape, dtype=np.uint8)
    labels[brain_mask] = initial
    volume = np.where(brain_mask, t1_brain, 0).astype(np.float32)
    probabilities, _, _ = cat_surf.vol_amap(
        volume,
        labels,
        voxelsize=np.asarray(voxel_size_mm, dtype=np.float64),
        n_iters=int(iterations),
        pve=True,
        weight_mrf=float(mrf_weight),
    )
    probabilities = probabilities.astype(np.float32)
    total = probabilities.sum(axis=-1)
    label = np.where(total > 0, (probabilities @ PVE_CLASS_LABELS) / np.maximum(total, 1.0), 0.0)
    # AMAP leaves a few mask voxels unclassified; call them CSF so the brain has no holes.
    label = np.where(brain_mask & (label < 1.0), 1.0, label) * brain_mask
    return tissue_from_label(label.astype(np.float32))
