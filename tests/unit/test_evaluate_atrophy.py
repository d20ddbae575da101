"""Atrophy as an experiment: the region's cortex in voxels and the twin difference inside and outside it."""

from __future__ import annotations

import numpy as np
import pytest

from cortexgen.evaluate.atrophy import region_cortex, twin_difference
from cortexgen.evaluate.figures import twin_figure
from cortexgen.surfaces.mesh import icosphere, voxel_to_world

SHAPE = (40, 40, 40)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -39.0  # voxel centres at -39, -37, ..., 39 mm


def shell():
    """A 30 mm midthickness sphere and, in voxels, its ribbon: 27-33 mm from the centre."""
    mid = icosphere(3, radius=30.0)
    world = voxel_to_world(np.indices(SHAPE).reshape(3, -1).T, AFFINE).reshape(*SHAPE, 3)
    radius = np.linalg.norm(world, axis=-1)
    return mid, world, (radius >= 27) & (radius <= 33)


def test_region_cortex_is_the_ribbon_nearest_the_thinned_vertices():
    mid, world, ribbon = shell()
    retained = np.where(mid.vertices[:, 2] > 0, 0.7, 1.0)
    region = region_cortex(ribbon, AFFINE, [mid], [retained])
    assert not (region & ~ribbon).any()
    z = world[..., 2]
    # Nearest-vertex boundaries run between vertices (~4 mm apart at this size): 5 mm off the
    # z = 0 plane the split is exact.
    assert region[ribbon & (z > 5)].all() and not region[ribbon & (z < -5)].any()
    assert not region_cortex(ribbon, AFFINE, [mid], [np.ones(len(mid.vertices))]).any()


def test_twin_difference_inside_and_outside_the_region():
    _, world, ribbon = shell()
    region = ribbon & (world[..., 2] > 0)
    twin = np.full(SHAPE, 0.5)
    atrophied = twin + np.where(region, -0.2, np.where(ribbon, 0.01, 0.0))
    # The atrophied ribbon lost the region's outer voxels.
    radius = np.linalg.norm(world, axis=-1)
    atrophied_ribbon = ribbon & ~(region & (radius > 31))
    row = twin_difference(atrophied, twin, region, ribbon, atrophied_ribbon)
    assert row["region_voxels"] == region.sum() and row["outside_voxels"] == (ribbon & ~region).sum()
    assert row["mad_region"] == pytest.approx(0.2) and row["mad_outside"] == pytest.approx(0.01)
    assert row["mad_ratio"] == pytest.approx(20.0)
    assert row["mean_change_region"] == pytest.approx(-0.2)
    assert row["lost_voxels"] == (region & (radius > 31)).sum() > 0
    assert row["mean_change_lost"] == pytest.approx(-0.2)
    # Identical images (twins without thinning): no difference anywhere, no ratio.
    same = twin_difference(twin, twin, region, ribbon, ribbon)
    assert same["mad_region"] == same["mad_outside"] == 0 and np.isnan(same["mad_ratio"])
    assert same["lost_voxels"] == 0 and np.isnan(same["mean_change_lost"])


def test_twin_figure_shows_twin_atrophied_and_difference_in_three_views():
    _, world, ribbon = shell()
    region = ribbon & (world[..., 2] > 0)
    twin = np.where(ribbon, 0.6, 0.2)
    fig = twin_figure(twin, twin - 0.1 * region, region, "pair", voxel_mm=(2.0, 2.0, 2.0))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["twin", "atrophied", "atrophied − twin"]
    assert len(fig.axes) == 9 + 3  # three views of three images, a colour bar per difference panel
