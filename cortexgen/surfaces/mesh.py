"""Triangle meshes: the container, geometry on it, and GIfTI files.

Coordinates are world RAS millimetres throughout, the same space as the NIfTI affine
of the preprocessed volumes, so a mesh overlays its image without any conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.sparse as sp

from cortexgen.errors import InputImageError
from cortexgen.io import atomic_output


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh.

    Attributes:
        vertices: (V, 3) float64, world RAS mm.
        faces: (F, 3) int32 vertex indices, counter-clockwise seen from outside, so
            that face normals point outwards.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertices", np.ascontiguousarray(self.vertices, dtype=np.float64))
        object.__setattr__(self, "faces", np.ascontiguousarray(self.faces, dtype=np.int32))
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must have shape (F, 3), got {self.faces.shape}")

    def with_vertices(self, vertices: np.ndarray) -> Mesh:
        """The same connectivity with new vertex positions (V, 3)."""
        return Mesh(vertices, self.faces)


def world_to_voxel(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World mm (N, 3) → continuous voxel indices (N, 3) of the grid of ``affine`` (4, 4)."""
    inverse = np.linalg.inv(affine)
    return np.asarray(points, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]


def voxel_to_world(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (N, 3) → world mm (N, 3) through ``affine`` (4, 4)."""
    return np.asarray(ijk, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def face_normals(mesh: Mesh, unit: bool = True) -> np.ndarray:
    """Face normals (F, 3); unnormalised ones have length twice the face area (mm²)."""
    v = mesh.vertices
    f = mesh.faces
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    if unit:
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return normals


def face_areas(mesh: Mesh) -> np.ndarray:
    """Area of every face (F,), mm²."""
    return 0.5 * np.linalg.norm(face_normals(mesh, unit=False), axis=1)


def surface_area(mesh: Mesh) -> float:
    """Total area, mm²."""
    return float(face_areas(mesh).sum())


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3), pointing outwards."""
    weighted = face_normals(mesh, unit=False)
    normals = np.zeros_like(mesh.vertices)
    for corner in range(3):
        np.add.at(normals, mesh.faces[:, corner], weighted)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def vertex_areas(mesh: Mesh) -> np.ndarray:
    """A third of the area of the faces around each vertex (V,), mm²; sums to the total area."""
    areas = np.zeros(len(mesh.vertices))
    third = face_areas(mesh) / 3.0
    for corner in range(3):
        np.add.at(areas, mesh.faces[:, corner], third)
    return areas


def edges(faces: np.ndarray) -> np.ndarray:
    """The unique undirected edges (E, 2) of a triangle list, each as (low, high)."""
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def adjacency(mesh: Mesh) -> sp.csr_matrix:
    """Symmetric vertex adjacency (V, V) with ones where an edge joins two vertices."""
    e = edges(mesh.faces)
    n = len(mesh.vertices)
    ones = np.ones(len(e))
    a = sp.coo_matrix((ones, (e[:, 0], e[:, 1])), shape=(n, n))
    return (a + a.T).tocsr()


def neighbour_mean_operator(mesh: Mesh) -> sp.csr_matrix:
    """Row-stochastic (V, V) matrix: ``op @ x`` is the mean of x over each vertex's neighbours."""
    a = adjacency(mesh)
    degree = np.asarray(a.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(degree, 1)) @ a


def smooth_values(values: np.ndarray, mean_op: sp.csr_matrix, iterations: int, rate: float = 0.5) -> np.ndarray:
    """Laplacian smoothing of per-vertex values (V,) or (V, k): ``x += rate * (mean_nbr(x) - x)``."""
    out = np.array(values, dtype=np.float64, copy=True)
    for _ in range(iterations):
        out += rate * (mean_op @ out - out)
    return out


def euler_characteristic(mesh: Mesh) -> int:
    """V − E + F; 2 for a closed surface of genus 0 (a sphere's topology)."""
    return int(len(mesh.vertices) - len(edges(mesh.faces)) + len(mesh.faces))


def count_self_intersections(mesh: Mesh) -> int:
    """Number of intersecting triangle pairs (libCAT's exact test)."""
    import cat_surf

    return int(cat_surf.count_intersections(mesh.vertices, mesh.faces))


def intersecting_faces(mesh: Mesh, leaf_faces: int = 4) -> np.ndarray:
    """Indices (sorted) of a small set of faces that holds every self-intersecting triangle pair.

    libCAT only counts crossings, so they are located by bisection: the faces are split at the
    median of their bounding boxes along the longest axis, a face whose box straddles the plane
    going to both halves. Two triangles that cross have overlapping boxes, so every crossing
    pair lies entirely in one half; halves without crossings are dropped, and a set of at most
    ``leaf_faces`` faces with crossings is returned whole (it may hold a few faces that do not
    cross). Empty when the mesh has none.
    """
    import cat_surf

    corners = mesh.vertices[mesh.faces]
    low, high = corners.min(axis=1), corners.max(axis=1)

    def crossings(subset: np.ndarray) -> int:
        used, faces = np.unique(mesh.faces[subset], return_inverse=True)
        return int(cat_surf.count_intersections(mesh.vertices[used], faces.reshape(-1, 3)))

    found, pending = [], [np.arange(len(mesh.faces))] if count_self_intersections(mesh) else []
    while pending:
        subset = pending.pop()
        centres = 0.5 * (low[subset] + high[subset])
        axis = int(np.argmax(np.ptp(centres, axis=0)))
        plane = float(np.median(centres[:, axis]))
        halves = [subset[low[subset, axis] <= plane], subset[high[subset, axis] > plane]]
        if len(subset) <= leaf_faces or max(len(half) for half in halves) == len(subset):
            found.append(subset)  # small enough, or no plane separates these faces further
            continue
        pending.extend(half for half in halves if len(half) and crossings(half))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def subdivide(mesh: Mesh) -> Mesh:
    """Split every triangle into four at its edge midpoints.

    The original vertices keep their indices (0..V-1) and the edge midpoints follow, so
    data on the coarse mesh still addresses the same vertices of the fine one; an
    icosahedral mesh of order k becomes one of order k+1 (10242 → 40962 vertices).
    """
    e = edges(mesh.faces)
    n = len(mesh.vertices)
    midpoints = 0.5 * (mesh.vertices[e[:, 0]] + mesh.vertices[e[:, 1]])
    # Look up the midpoint index of every face edge through a sorted edge key.
    key = e[:, 0].astype(np.int64) * n + e[:, 1]
    order = np.argsort(key)

    def midpoint_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        return n + order[np.searchsorted(key[order], lo * n + hi)]

    f = mesh.faces
    m01 = midpoint_index(f[:, 0], f[:, 1])
    m12 = midpoint_index(f[:, 1], f[:, 2])
    m20 = midpoint_index(f[:, 2], f[:, 0])
    faces = np.concatenate(
        [
            np.stack([f[:, 0], m01, m20], axis=1),
            np.stack([f[:, 1], m12, m01], axis=1),
            np.stack([f[:, 2], m20, m12], axis=1),
            np.stack([m01, m12, m20], axis=1),
        ]
    )
    return Mesh(np.concatenate([mesh.vertices, midpoints]), faces)


def icosphere(order: int, radius: float = 1.0, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Mesh:
    """An icosahedron subdivided ``order`` times and projected onto a sphere (mm).

    Order 5 has 10242 vertices, like FreeSurfer's fsaverage5. Faces point outwards.
    """
    t = (1.0 + np.sqrt(5.0)) / 2.0
    vertices = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    faces = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
    )  # fmt: skip
    mesh = Mesh(vertices / np.linalg.norm(vertices, axis=1, keepdims=True), faces)
    for _ in range(order):
        fine = subdivide(mesh)
        mesh = fine.with_vertices(fine.vertices / np.linalg.norm(fine.vertices, axis=1, keepdims=True))
    return mesh.with_vertices(mesh.vertices * radius + np.asarray(centre, dtype=np.float64))


# ----------------------------------------------------------------------------- GIfTI


def save_surface(mesh: Mesh, path: str | Path) -> None:
    """Write a ``.surf.gii`` (float32 vertices in mm, int32 faces) atomically."""
    coords = nib.gifti.GiftiDataArray(
        mesh.vertices.astype(np.float32), intent="NIFTI_INTENT_POINTSET", datatype="NIFTI_TYPE_FLOAT32"
    )
    # Tell readers (FreeSurfer, Workbench, nilearn) these are scanner-RAS world millimetres.
    coords.coordsys = nib.gifti.GiftiCoordSystem(dataspace=3, xformspace=3, xform=np.eye(4))
    triangles = nib.gifti.GiftiDataArray(mesh.faces, intent="NIFTI_INTENT_TRIANGLE", datatype="NIFTI_TYPE_INT32")
    with atomic_output(path) as tmp:
        nib.save(nib.gifti.GiftiImage(darrays=[coords, triangles]), str(tmp))


def load_surface(path: str | Path) -> Mesh:
    """Read a GIfTI surface (``.surf.gii`` or ``.gii.gz``); errors name the file."""
    path = Path(path)
    try:
        img = _load_gifti(path)
        coords = img.get_arrays_from_intent("NIFTI_INTENT_POINTSET")
        triangles = img.get_arrays_from_intent("NIFTI_INTENT_TRIANGLE")
        if len(coords) != 1 or len(triangles) != 1:
            raise ValueError(f"expected one POINTSET and one TRIANGLE array, found {len(coords)} and {len(triangles)}")
        mesh = Mesh(coords[0].data, triangles[0].data)
    except Exception as err:
        raise InputImageError(path, f"is not a readable GIfTI surface: {err}") from err
    if mesh.faces.size and (mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices)):
        raise InputImageError(path, "has faces that index vertices outside the mesh")
    return mesh


def save_shape(values: np.ndarray, path: str | Path) -> None:
    """Write per-vertex values (V,) as a ``.shape.gii`` (float32) atomically."""
    array = nib.gifti.GiftiDataArray(
        np.asarray(values, dtype=np.float32), intent="NIFTI_INTENT_SHAPE", datatype="NIFTI_TYPE_FLOAT32"
    )
    with atomic_output(path) as tmp:
        nib.save(nib.gifti.GiftiImage(darrays=[array]), str(tmp))


def load_shape(path: str | Path) -> np.ndarray:
    """Read per-vertex values (V,) from a one-array GIfTI file."""
    path = Path(path)
    try:
        img = _load_gifti(path)
        if len(img.darrays) != 1:
            raise ValueError(f"expected one data array, found {len(img.darrays)}")
        return np.asarray(img.darrays[0].data, dtype=np.float64).ravel()
    except Exception as err:
        raise InputImageError(path, f"is not a readable GIfTI shape file: {err}") from err


def _load_gifti(path: Path) -> nib.gifti.GiftiImage:
    if path.name.endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as handle:
            return nib.gifti.GiftiImage.from_bytes(handle.read())
    return nib.load(str(path))
