"""Atrophy as an experiment: the bridge's image of an atrophied cortex against its unthinned twin's.

The two were sampled with the same noise (:func:`cortexgen.planning.bridge_conditions`), so their
difference (atrophied − twin) is what the thinning changed in the image, and should sit where
the cortex was thinned: :func:`region_cortex` finds those voxels, :func:`twin_difference`
compares the difference there with the difference in the rest of the cortex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from cortexgen.surfaces.mesh import Mesh, voxel_to_world

def region_cortex(ribbon: np.ndarray, affine: np.ndarray, midthickness: Sequence[Mesh],
                  retained: Sequence[np.ndarray]) -> np.ndarray:
    """The atrophy region's cortex in voxels: the voxels of ``ribbon`` whose nearest midthickness
    vertex (of any hemisphere) lost thickness.

    Args:
        ribbon: (X, Y, Z) bool, the unthinned twin's cortical ribbon.
        affine: (4, 4) voxel index → world RAS mm of its grid.
        midthickness: the twin's midthickness meshes (world mm), e.g. left and right.
        retained: per mesh, (V,) the fraction of thickness each vertex keeps
            (:func:`cortexgen.shape.synthesis.atrophy_retained`); < 1 is thinned (taper included).

    Returns:
        (X, Y, Z) bool, within ``ribbon``.
    """
    ribbon = np.asarray(ribbon, dtype=bool)
    region = np.zeros(ribbon.shape, dtype=bool)
    thinned = np.concatenate([np.asarray(values) < 1.0 for values in retained])
    if not thinned.any() or not ribbon.any():
        return region
    voxels = np.argwhere(ribbon)
    _, nearest = cKDTree(np.concatenate([mesh.vertices for mesh in midthickness])).query(
        voxel_to_world(voxels, affine))
    region[tuple(voxels[thinned[nearest]].T)] = True
    return region


def twin_difference(atrophied: np.ndarray, twin: np.ndarray, region: np.ndarray, twin_ribbon: np.ndarray,
                    atrophied_ribbon: np.ndarray) -> dict[str, float]:
    """Where the image of an atrophied cortex differs from its twin's, in image intensity units.

    Args:
        atrophied, twin: (X, Y, Z) the two bridge samples (intensities in [0, 1]).
        region: (X, Y, Z) bool, the atrophy region's cortex (:func:`region_cortex`).
        twin_ribbon, atrophied_ribbon: (X, Y, Z) bool, the two condition ribbons.

    Returns:
        ``region_voxels`` and ``outside_voxels`` (the twin's ribbon outside the region);
        ``mad_region``, ``mad_outside``: mean |atrophied − twin| there, and their ratio
        ``mad_ratio``; ``mean_change_region``: mean (atrophied − twin) in the region's cortex;
        ``lost_voxels``, ``mean_change_lost``: the twin's ribbon voxels that the atrophied ribbon
        lost, and the mean change there (cortex that became CSF or white matter). NaN where a
        set is empty.
    """
    difference = np.asarray(atrophied, dtype=np.float64) - np.asarray(twin, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    twin_ribbon = np.asarray(twin_ribbon, dtype=bool)
    outside = twin_ribbon & ~region
    lost = twin_ribbon & ~np.asarray(atrophied_ribbon, dtype=bool)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    mad_region, mad_outside = mean(np.abs(difference[region])), mean(np.abs(difference[outside]))
    return {
        "region_voxels": int(region.sum()), "outside_voxels": int(outside.sum()),
        "mad_region": mad_region, "mad_outside": mad_outside,
        "mad_ratio": mad_region / mad_outside if mad_outside > 0 else float("nan"),
        "mean_change_region": mean(difference[region]),
        "lost_voxels": int(lost.sum()), "mean_change_lost": mean(difference[lost]),
    }
