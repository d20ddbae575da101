"""Signed distance volumes of closed surfaces, and the conditioning volumes built from them.

A signed distance function (SDF) gives, at every point, the distance in mm to the nearest
point of a closed triangle mesh, NEGATIVE INSIDE and positive outside. Distances are exact
point-to-triangle distances (libigl's AABB tree); the sign comes from the generalised
winding number, which is ~±1 inside a closed mesh and ~0 outside whichever way its faces
turn, so a mesh with inward-facing triangles gets the same SDF as its outward twin.

:func:`condition_volumes` is the one entry point for real subjects and for shapes sampled
from the shape model alike: meshes plus a target grid in, the pial SDF, the white SDF and
the cortical ribbon out.

Cost and threads: an exact distance costs libigl ~6-12 µs per point against two 82k-face
fsaverage-density hemispheres, hardly less for points far from the surface (a distant point
sees many triangles at almost the same distance, and the tree must look at them all; on
a perfect sphere it is worse still), so one union on the 84×128×84 model grid takes ~10
CPU-seconds and :func:`condition_volumes` ~21. :func:`signed_distance_volume` therefore
queries all meshes of a union in ONE tree, evaluates winding numbers at one voxel per
surface-free connected region (see :func:`_inside_flags_on_grid`), and can truncate the
SDF (``max_distance_mm``), which skips most of the distant work: ~3 s per union at 5 mm.
libigl runs the distance queries on ``IGL_NUM_THREADS`` threads (default: every hardware
thread); it reads the variable once, at its first parallel loop in the process, so set it
before that, e.g. to a Snakemake rule's ``threads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cortexgen.surfaces.mesh import Mesh, world_to_voxel

#: |winding number| above which a point is inside a closed mesh (exactly 1 inside, 0 outside).
INSIDE_WINDING = 0.5
#: Slack (mm) by which two voxels' surface-free balls must overlap to share a winding number.
LINK_MARGIN_MM = 1e-6


# ----------------------------------------------------------------------------- grids


def grid_points(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre of a NIfTI grid.

    Args:
        shape: (I, J, K) voxels.
        affine: (4, 4) voxel index → world RAS mm.

    Returns:
        (I*J*K, 3) float64 in C order (the last index varies fastest), so
        ``values.reshape(shape)`` puts a per-point result back on the grid.
    """
    shape = _grid_shape(shape)
    affine = _affine(affine)
    # Summing one broadcast column per axis avoids materialising the (N, 3) index array.
    points = np.empty(shape + (3,), dtype=np.float64)
    points[...] = affine[:3, 3]
    for axis, size in enumerate(shape):
        index = np.arange(size, dtype=np.float64).reshape([-1 if a == axis else 1 for a in range(3)] + [1])
        points += index * affine[:3, axis]
    return points.reshape(-1, 3)


def sample_volume(volume: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int = 1) -> np.ndarray:
    """Interpolate a volume at world points (mm): trilinear for ``order=1``.

    Points outside the grid take the value of the nearest edge voxel (``mode='nearest'``).

    Args:
        volume: (I, J, K) array.
        affine: (4, 4) voxel index → world RAS mm of ``volume``.
        points: (N, 3) world RAS mm.
        order: spline order of :func:`scipy.ndimage.map_coordinates` (0 nearest, 1 linear).

    Returns:
        (N,) float64.
    """
    ijk = world_to_voxel(_points(points), _affine(affine))
    return ndimage.map_coordinates(np.asarray(volume, dtype=np.float64), ijk.T, order=order, mode="nearest")


# ----------------------------------------------------------------------------- distances


def signed_distance(mesh: Mesh, points: np.ndarray) -> np.ndarray:
    """Signed distance (mm) from points to a closed mesh, negative inside.

    Args:
        mesh: a closed (watertight) triangle mesh in world mm; either face orientation.
        points: (N, 3) world RAS mm.

    Returns:
        (N,) float64: exact distance to the nearest triangle, negated where the winding
        number says the point is inside.
    """
    points = _points(points)
    vertices, faces, _ = _stack([mesh])
    distance, _ = _unsigned_distance(vertices, faces, points)
    inside = _inside(vertices, faces, points)
    return np.where(inside, -distance, distance)


def signed_distance_volume(
    meshes: Sequence[Mesh], shape: Sequence[int], affine: np.ndarray, max_distance_mm: float | None = None
) -> np.ndarray:
    """SDF (mm) of the union of closed meshes at every voxel centre of a grid.

    The union's SDF is the minimum of the meshes' SDFs: outside all of them it is the
    distance to the nearest mesh, inside any it is negative (e.g. left ∪ right hemisphere).

    Args:
        meshes: one or more closed meshes in world mm (either face orientation).
        shape: (I, J, K) voxels of the target grid.
        affine: (4, 4) voxel index → world RAS mm of the target grid.
        max_distance_mm: None for the exact SDF everywhere; a distance to get a truncated
            SDF, exact where |SDF| ≤ max_distance_mm and ±max_distance_mm beyond, several
            times cheaper (distant voxels dominate the cost of the exact one).

    Returns:
        ``shape`` float32 array, negative inside the union.
    """
    shape = _grid_shape(shape)
    affine = _affine(affine)
    if max_distance_mm is not None and not max_distance_mm > 0:
        raise ValueError(f"max_distance_mm must be positive or None, got {max_distance_mm}")
    return _union_sdf_on_grid(meshes, shape, affine, max_distance_mm).reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class ConditionVolumes:
    """The volumes a generator is conditioned on, all on one target grid.

    Attributes:
        pial_sdf: (I, J, K) float32 mm, SDF of the union of the pial surfaces (negative
            inside the brain's grey matter envelope).
        white_sdf: (I, J, K) float32 mm, SDF of the union of the white surfaces.
        ribbon: (I, J, K) uint8, 1 where a voxel centre lies inside the pial union and not
            inside the white union (``pial_sdf < 0`` and ``white_sdf >= 0``): the cortex.
    """

    pial_sdf: np.ndarray
    white_sdf: np.ndarray
    ribbon: np.ndarray


def condition_volumes(
    white: Sequence[Mesh], pial: Sequence[Mesh], shape: Sequence[int], affine: np.ndarray,
    clip_mm: float | None = None,
) -> ConditionVolumes:
    """Pial SDF, white SDF and cortical ribbon of a set of surfaces on a target grid.

    Real subjects and shapes sampled from the shape model both come through here, so the
    volumes depend on nothing but the meshes and the grid.

    Args:
        white: closed white surfaces in world mm (e.g. left and right hemisphere).
        pial: closed pial surfaces in world mm.
        shape: (I, J, K) voxels of the target grid.
        affine: (4, 4) voxel index → world RAS mm of the target grid.
        clip_mm: if given, distances are exact within ±clip_mm and clipped to it beyond
            (a truncated SDF, 3–4× faster; the generators rescale the SDF to a range anyway).
    """
    pial_sdf = signed_distance_volume(pial, shape, affine, max_distance_mm=clip_mm)
    white_sdf = signed_distance_volume(white, shape, affine, max_distance_mm=clip_mm)
    # From the stored float32 values, so the documented relation holds for what callers read.
    ribbon = ((pial_sdf < 0) & (white_sdf >= 0)).astype(np.uint8)
    return ConditionVolumes(pial_sdf=pial_sdf, white_sdf=white_sdf, ribbon=ribbon)


# ----------------------------------------------------------------------------- internals


def _union_sdf_on_grid(
    meshes: Sequence[Mesh], shape: tuple[int, int, int], affine: np.ndarray, max_distance: float | None
) -> np.ndarray:
    """Flat (I*J*K,) float64 SDF of the union of ``meshes`` at the voxel centres, optionally truncated."""
    points = grid_points(shape, affine)
    vertices, faces, face_mesh = _stack(meshes)
    # One tree over every mesh of the union: one query per point instead of one per mesh.
    # Queried in Z order, successive points walk the same branches of the tree (~10% faster).
    order = _z_order(shape)
    distance = np.empty(len(points))
    nearest_face = np.empty(len(points), dtype=np.int64)
    distance[order], nearest_face[order] = _unsigned_distance(vertices, faces, points[order], max_distance)
    inside = _inside_flags_on_grid(meshes, distance, shape, affine, points)

    sdf = distance.copy()
    n_containing = inside.sum(axis=0)
    # A voxel beyond max_distance has no nearest face; inside one mesh, its value is
    # -max_distance whichever mesh that is.
    nearest_mesh = np.where(nearest_face >= 0, face_mesh[np.maximum(nearest_face, 0)], -1)
    containing_mesh = np.argmax(inside, axis=0)
    # Inside exactly one mesh whose surface is also the nearest one: the union's SDF is
    # minus that distance. Otherwise (meshes that overlap, or a point whose nearest
    # surface belongs to a mesh it is not in) every mesh's own distance is needed.
    simple = (n_containing == 1) & ((nearest_mesh == containing_mesh) | (nearest_mesh < 0))
    sdf[simple] = -distance[simple]
    tangled = np.flatnonzero((n_containing >= 1) & ~simple)
    if tangled.size:
        per_mesh = []
        for index, mesh in enumerate(meshes):
            v, f, _ = _stack([mesh])
            d, _ = _unsigned_distance(v, f, points[tangled], max_distance)
            per_mesh.append(np.where(inside[index, tangled], -d, d))
        sdf[tangled] = np.min(per_mesh, axis=0)
    return sdf


def _inside_flags_on_grid(
    meshes: Sequence[Mesh], distance: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray,
    points: np.ndarray,
) -> np.ndarray:
    """(M, I*J*K) bool: which voxel centres lie inside each of the M meshes.

    ``distance`` (I*J*K,) is the exact unsigned distance from each voxel centre to the
    nearest triangle of any mesh (or a lower bound of it). An open ball of that radius
    around a voxel centre holds no surface, so when two face-adjacent voxels' distances
    add up to more than their spacing, the two balls cover the segment between them and
    no surface crosses it: every mesh's winding number is the same at both. Winding numbers
    are therefore constant over each connected component of the graph of such voxel pairs,
    and are evaluated at one voxel per component (a few thousand, mostly single voxels
    hugging a surface) instead of at all ~10⁶: libigl's fast winding number costs ~20 µs
    per point near a folded surface, plus ~0.2 s per mesh to set up.
    """
    import scipy.sparse
    import scipy.sparse.csgraph

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    grid = distance.reshape(shape)
    index = np.arange(grid.size).reshape(shape)
    sources, targets = [], []
    for axis in range(3):
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        lower, upper = tuple(lower), tuple(upper)
        # The margin keeps rounding in the distances from linking across a surface.
        linked = grid[lower] + grid[upper] > spacing[axis] + LINK_MARGIN_MM
        sources.append(index[lower][linked])
        targets.append(index[upper][linked])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    graph = scipy.sparse.coo_matrix((np.ones(len(sources), dtype=np.int8), (sources, targets)), shape=(grid.size,) * 2)
    n_components, component = scipy.sparse.csgraph.connected_components(graph, directed=False)
    # The voxel farthest from any surface represents its component: there the winding
    # number is unambiguously 0 or ±1.
    by_component = np.lexsort((-distance, component))
    first = np.flatnonzero(np.r_[True, np.diff(component[by_component]) != 0])
    representative = by_component[first]

    inside = np.empty((len(meshes), len(points)), dtype=bool)
    for mesh_index, mesh in enumerate(meshes):
        vertices, faces, _ = _stack([mesh])
        inside[mesh_index] = _inside(vertices, faces, points[representative])[component]
    return inside


def _unsigned_distance(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, max_distance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distance (N,) mm from each point to the nearest triangle, and that triangle's index (N,).

    With ``max_distance``, points farther than that get ``max_distance`` and index -1.
    """
    import igl

    # signed_distance with the UNSIGNED type runs its query loop on libigl's thread pool;
    # point_mesh_squared_distance and AABB.squared_distance (2.6.3) run on one thread.
    # The winding-number sign types are avoided: the exact one costs ~8x the distance
    # itself, and the fast one computes distances in single precision (off by ~0.1 mm).
    if max_distance is None:
        distance, face, _, _ = igl.signed_distance(
            points, vertices, faces, igl.SignedDistanceType.SIGNED_DISTANCE_TYPE_UNSIGNED
        )
        return np.abs(distance), face
    # The bound prunes every subtree farther than it, so distant points cost almost
    # nothing; they come back as NaN. (libigl needs a finite lower bound for that: with
    # the default -inf the bounds are ignored.)
    distance, face, _, _ = igl.signed_distance(
        points, vertices, faces, igl.SignedDistanceType.SIGNED_DISTANCE_TYPE_UNSIGNED,
        lower_bound=0.0, upper_bound=float(max_distance),
    )
    beyond = ~(np.abs(distance) <= max_distance)
    distance = np.where(beyond, max_distance, np.abs(distance))
    return distance, np.where(beyond, -1, face)


def _inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each point is inside the closed mesh, by its winding number."""
    import igl

    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    winding = igl.fast_winding_number(vertices, faces, np.ascontiguousarray(points))
    return np.abs(winding) > INSIDE_WINDING


def _z_order(shape: tuple[int, int, int]) -> np.ndarray:
    """Flat C-order voxel indices (I*J*K,) sorted along a Morton (Z-order) curve."""
    bits = max(int(np.ceil(np.log2(max(shape)))), 1)
    code = np.zeros(shape, dtype=np.uint64)
    for axis, size in enumerate(shape):
        index = np.arange(size, dtype=np.uint64).reshape([-1 if a == axis else 1 for a in range(3)])
        for bit in range(bits):
            code |= ((index >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + 2 - axis)
    return np.argsort(code.ravel(), kind="stable")


def _stack(meshes: Sequence[Mesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (V, 3) float64 and int64 faces (F, 3) of several meshes as one, and each face's mesh (F,)."""
    meshes = list(meshes)
    if not meshes:
        raise ValueError("need at least one mesh")
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
    for mesh in meshes:
        if len(mesh.faces) == 0:
            raise ValueError("a mesh has no faces, so it encloses nothing")
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces.astype(np.int64) + offset for m, offset in zip(meshes, offsets)])
    face_mesh = np.repeat(np.arange(len(meshes)), [len(m.faces) for m in meshes])
    return np.ascontiguousarray(vertices), np.ascontiguousarray(faces), face_mesh


def _points(points: np.ndarray) -> np.ndarray:
    points = np.ascontiguousarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    return points


def _grid_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"grid shape must be three positive sizes, got {shape}")
    return shape


def _affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    return affine
