"""cortexgen.surfaces.sdf: signed distance volumes of closed meshes and the conditioning volumes.

Spheres have an analytic SDF, |x - c| - r; an icosphere's flat triangles sit at most a few
µm inside the sphere through its vertices (order 5, r = 20 mm), far below the 0.05 mm
tolerance used here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cortexgen.surfaces.mesh import Mesh, icosphere
from cortexgen.surfaces.sdf import (
    ConditionVolumes,
    condition_volumes,
    grid_points,
    sample_volume,
    signed_distance,
    signed_distance_volume,
)

TOLERANCE_MM = 0.05
CENTRE = np.array([1.3, -2.1, 0.7])
# The model-ready grid's voxel (mm).
ANISOTROPIC_VOXEL = np.array([2.155, 1.695, 2.155])


def grid_affine(shape, voxel_mm, centre=(0.0, 0.0, 0.0), rotation=None) -> np.ndarray:
    """Affine of a grid of ``voxel_mm`` voxels (optionally rotated) whose middle sits at ``centre``."""
    linear = np.diag(np.broadcast_to(np.asarray(voxel_mm, float), (3,)))
    if rotation is not None:
        linear = rotation @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre, float) - linear @ ((np.asarray(shape, float) - 1) / 2)
    return affine


def sphere_sdf(points: np.ndarray, centre, radius: float) -> np.ndarray:
    return np.linalg.norm(points - np.asarray(centre, float), axis=-1) - radius


def rotation_about(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.fixture(scope="module")
def sphere20() -> Mesh:
    return icosphere(5, 20.0, tuple(CENTRE))


def folded_sphere(order: int = 5) -> Mesh:
    """A star-shaped closed mesh with deep narrow folds: sulci a voxel or two wide."""
    sphere = icosphere(order)
    x, y, z = sphere.vertices.T
    radius = 18.0 + 5.0 * np.sin(7 * np.arctan2(y, x)) * np.sin(3 * np.arccos(np.clip(z, -1, 1))) ** 2
    return sphere.with_vertices(sphere.vertices * radius[:, None])


# ----------------------------------------------------------------------------- grids


def test_grid_points_are_voxel_centres_through_the_affine():
    shape = (4, 5, 6)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, (10.0, -3.0, 7.0), rotation_about((1, 2, 3), 0.4))
    affine[0, 1] += 0.3  # a shear, so no axis is special
    points = grid_points(shape, affine)
    assert points.shape == (np.prod(shape), 3) and points.dtype == np.float64
    on_grid = points.reshape(shape + (3,))
    for ijk in [(0, 0, 0), (3, 4, 5), (1, 2, 3), (3, 0, 5), (0, 4, 1)]:
        expected = (affine @ np.r_[ijk, 1.0])[:3]
        np.testing.assert_allclose(on_grid[ijk], expected, atol=1e-12)
    # C order: the last index varies fastest.
    np.testing.assert_allclose(points[1] - points[0], affine[:3, 2], atol=1e-12)


def test_sample_volume_is_trilinear_and_clamps_outside():
    shape = (6, 7, 8)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, (5.0, 0.0, -5.0))
    points = grid_points(shape, affine)
    gradient = np.array([0.5, -1.0, 2.0])
    volume = (points @ gradient + 3.0).reshape(shape)
    rng = np.random.default_rng(0)
    inner = rng.uniform(points.min(axis=0), points.max(axis=0), size=(50, 3))
    np.testing.assert_allclose(sample_volume(volume, affine, inner), inner @ gradient + 3.0, atol=1e-9)
    # Beyond the last voxel centre the edge value holds (mode='nearest').
    corner = points[-1]
    beyond = corner + 10 * (affine[:3, :3] @ np.ones(3))
    np.testing.assert_allclose(sample_volume(volume, affine, beyond[None]), [volume[-1, -1, -1]], atol=1e-9)
    assert sample_volume(volume, affine, inner, order=0).shape == (50,)


# ----------------------------------------------------------------------------- spheres


def test_sphere_sdf_on_isotropic_grid(sphere20):
    shape = (28, 28, 28)
    affine = grid_affine(shape, 2.0, CENTRE + 0.37)
    sdf = signed_distance_volume([sphere20], shape, affine)
    assert sdf.shape == shape and sdf.dtype == np.float32
    expected = sphere_sdf(grid_points(shape, affine), CENTRE, 20.0).reshape(shape)
    assert np.abs(sdf - expected).max() < TOLERANCE_MM
    assert np.all(sdf[expected < -TOLERANCE_MM] < 0)
    assert np.all(sdf[expected > TOLERANCE_MM] > 0)
    assert sdf.min() < -18.0  # the voxels around the centre are deep inside


def test_sphere_sdf_on_rotated_anisotropic_grid():
    sphere = icosphere(6, 20.0, tuple(CENTRE))
    shape = (24, 30, 24)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, CENTRE - 0.5, rotation_about((0.2, 1, 0.5), 0.3))
    sdf = signed_distance_volume([sphere], shape, affine)
    assert sdf.shape == shape and sdf.dtype == np.float32
    expected = sphere_sdf(grid_points(shape, affine), CENTRE, 20.0).reshape(shape)
    assert np.abs(sdf - expected).max() < TOLERANCE_MM
    assert np.all(sdf[expected < -TOLERANCE_MM] < 0) and np.all(sdf[expected > TOLERANCE_MM] > 0)


def test_zero_level_lies_on_the_mesh(sphere20):
    shape = (22, 28, 22)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, CENTRE)
    sdf = signed_distance_volume([sphere20], shape, affine)
    at_vertices = sample_volume(sdf, affine, sphere20.vertices)
    assert np.abs(at_vertices).max() < 0.5 * ANISOTROPIC_VOXEL.min()


def test_signed_distance_at_points(sphere20):
    rng = np.random.default_rng(1)
    points = CENTRE + rng.normal(size=(2000, 3)) * 15.0
    distance = signed_distance(sphere20, points)
    assert distance.shape == (2000,) and distance.dtype == np.float64
    expected = sphere_sdf(points, CENTRE, 20.0)
    assert np.abs(distance - expected).max() < TOLERANCE_MM
    assert (expected < -1).any() and (expected > 1).any()
    assert np.all(distance[expected < -TOLERANCE_MM] < 0) and np.all(distance[expected > TOLERANCE_MM] > 0)


def test_reversed_faces_give_the_same_sdf(sphere20):
    reversed_sphere = Mesh(sphere20.vertices, sphere20.faces[:, ::-1])
    shape = (24, 24, 24)
    affine = grid_affine(shape, 2.0, CENTRE)
    np.testing.assert_allclose(
        signed_distance_volume([reversed_sphere], shape, affine),
        signed_distance_volume([sphere20], shape, affine),
        atol=1e-6,
    )
    points = grid_points(shape, affine)[::7]
    np.testing.assert_allclose(signed_distance(reversed_sphere, points), signed_distance(sphere20, points), atol=1e-9)
    assert signed_distance(reversed_sphere, CENTRE[None])[0] < -19.0


# ----------------------------------------------------------------------------- unions


def test_union_of_disjoint_spheres_is_the_minimum():
    left_centre, right_centre = np.array([-14.0, 0.0, 2.0]), np.array([13.0, 1.0, -1.0])
    left, right = icosphere(5, 10.0, tuple(left_centre)), icosphere(5, 11.0, tuple(right_centre))
    shape = (32, 20, 20)
    affine = grid_affine(shape, 2.0)
    sdf = signed_distance_volume([left, right], shape, affine)
    points = grid_points(shape, affine)
    to_left, to_right = sphere_sdf(points, left_centre, 10.0), sphere_sdf(points, right_centre, 11.0)
    expected = np.minimum(to_left, to_right).reshape(shape)
    assert np.abs(sdf - expected).max() < TOLERANCE_MM
    inside_either = ((to_left < -TOLERANCE_MM) | (to_right < -TOLERANCE_MM)).reshape(shape)
    assert inside_either.sum() > 100 and np.all(sdf[inside_either] < 0)
    assert np.all(sdf[expected > TOLERANCE_MM] > 0)
    # Each sphere alone, for comparison: the union is never farther than either.
    alone = signed_distance_volume([left], shape, affine)
    assert np.all(sdf <= alone + 1e-6)


def test_union_of_overlapping_spheres_is_the_minimum():
    # Points inside both spheres, and points inside one whose nearest surface is the
    # other's (buried in the first), need each mesh's own distance.
    a_centre, b_centre = np.array([-5.0, 0.0, 0.0]), np.array([5.0, 0.5, 0.0])
    a, b = icosphere(5, 12.0, tuple(a_centre)), icosphere(5, 10.0, tuple(b_centre))
    shape = (26, 18, 18)
    affine = grid_affine(shape, 2.0)
    points = grid_points(shape, affine)
    to_a, to_b = sphere_sdf(points, a_centre, 12.0), sphere_sdf(points, b_centre, 10.0)
    assert ((to_a < -1) & (to_b < -1)).sum() > 100
    expected = np.minimum(to_a, to_b).reshape(shape)
    sdf = signed_distance_volume([a, b], shape, affine)
    assert np.abs(sdf - expected).max() < TOLERANCE_MM


def test_folded_mesh_volume_matches_pointwise_winding_numbers():
    # The volume evaluates winding numbers once per surface-free connected region; the
    # pointwise function evaluates them at every point. They must agree voxel by voxel.
    folded = folded_sphere()
    shape = (26, 30, 26)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, (0.4, -0.3, 0.2))
    volume = signed_distance_volume([folded], shape, affine)
    pointwise = signed_distance(folded, grid_points(shape, affine)).reshape(shape)
    np.testing.assert_allclose(volume, pointwise, atol=1e-5)
    assert (volume < 0).sum() > 1000
    # Folds a few voxels deep: some voxels between the lobes are outside yet closer to
    # the centre than parts of the inside.
    radius = np.linalg.norm(grid_points(shape, affine), axis=1).reshape(shape)
    assert (volume[radius < 18.0] > 0).any()


def test_truncated_sdf_is_the_clipped_exact_sdf():
    folded = folded_sphere()
    shape = (26, 30, 26)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL)
    exact = signed_distance_volume([folded], shape, affine)
    truncated = signed_distance_volume([folded], shape, affine, max_distance_mm=4.0)
    np.testing.assert_allclose(truncated, np.clip(exact, -4.0, 4.0), atol=1e-5)
    assert (truncated == 4.0).any() and (truncated == -4.0).any()
    with pytest.raises(ValueError, match="max_distance_mm"):
        signed_distance_volume([folded], shape, affine, max_distance_mm=0.0)


# ----------------------------------------------------------------------------- condition volumes


def test_condition_volumes_of_a_shell():
    white, pial = icosphere(5, 20.0, tuple(CENTRE)), icosphere(5, 23.0, tuple(CENTRE))
    shape = (30, 36, 30)
    affine = grid_affine(shape, ANISOTROPIC_VOXEL, CENTRE + 0.3)
    volumes = condition_volumes([white], [pial], shape, affine)
    assert isinstance(volumes, ConditionVolumes)
    assert volumes.pial_sdf.shape == volumes.white_sdf.shape == volumes.ribbon.shape == shape
    assert volumes.pial_sdf.dtype == np.float32 and volumes.white_sdf.dtype == np.float32
    assert volumes.ribbon.dtype == np.uint8 and set(np.unique(volumes.ribbon)) == {0, 1}

    radius = np.linalg.norm(grid_points(shape, affine) - CENTRE, axis=1).reshape(shape)
    cortex = (radius > 20.5) & (radius < 22.5)
    assert cortex.sum() > 500 and np.all(volumes.ribbon[cortex] == 1)
    assert np.all(volumes.ribbon[radius < 19.5] == 0) and np.all(volumes.ribbon[radius > 23.5] == 0)
    np.testing.assert_array_equal(volumes.ribbon, (volumes.pial_sdf < 0) & (volumes.white_sdf >= 0))
    assert np.abs(volumes.pial_sdf - (radius - 23.0)).max() < TOLERANCE_MM
    assert np.abs(volumes.white_sdf - (radius - 20.0)).max() < TOLERANCE_MM
    with pytest.raises(dataclasses.FrozenInstanceError):
        volumes.ribbon = volumes.ribbon  # type: ignore[misc]


def test_condition_volumes_of_two_hemispheres():
    centres = [(-13.0, 0.0, 0.0), (13.0, 0.0, 0.0)]
    white = [icosphere(4, 8.0, c) for c in centres]
    pial = [icosphere(4, 11.0, c) for c in centres]
    shape = (30, 16, 16)
    affine = grid_affine(shape, 2.0)
    volumes = condition_volumes(white, pial, shape, affine)
    points = grid_points(shape, affine)
    radius = np.min([np.linalg.norm(points - c, axis=1) for c in centres], axis=0).reshape(shape)
    assert np.all(volumes.ribbon[(radius > 8.5) & (radius < 10.5)] == 1)
    assert np.all(volumes.ribbon[(radius < 7.5) | (radius > 11.5)] == 0)


# ----------------------------------------------------------------------------- inputs


def test_bad_inputs_are_refused(sphere20):
    with pytest.raises(ValueError, match="points"):
        signed_distance(sphere20, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least one mesh"):
        signed_distance_volume([], (4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="affine"):
        signed_distance_volume([sphere20], (4, 4, 4), np.eye(3))
    with pytest.raises(ValueError, match="grid shape"):
        grid_points((4, 4), np.eye(4))
    with pytest.raises(ValueError, match="no faces"):
        signed_distance(Mesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int32)), np.zeros((1, 3)))
    assert signed_distance(sphere20, np.zeros((0, 3))).shape == (0,)
