"""Fitting a mesh onto an isosurface of a tissue map, keeping its vertex order.

The template's meshes arrive on a subject roughly in place (after a nonlinear
registration). Each round looks along every vertex normal for the nearest point where
the tissue fraction crosses the target level going from inside to outside, and turns
those proposed moves into a smooth displacement field in space that moves every vertex
(so vertices that see no boundary, e.g. in a sulcus where the CSF is invisible, follow
their neighbours). Never re-meshing keeps the vertex order, hence correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cortexgen.surfaces.mesh import Mesh, vertex_normals, world_to_voxel


@dataclass(frozen=True)
class FitSettings:
    """How a mesh is pulled onto an isosurface (config ``surfaces.fit``).

    Attributes:
        search_mm: how far along the normal, inwards and outwards, a boundary is looked for.
        step_mm: spacing of the samples along the normal.
        iterations: number of move rounds.
        rate: fraction of the found displacement applied per round.
        sigma_mm: width of the Gaussian that turns the vertices' moves into a smooth
            displacement field in space. Two sheets closer than about this share one
            motion, which is what keeps them from passing through each other.
        field_spacing_mm: voxel size of that field.
        fine_sigma_mm, fine_field_spacing_mm, fine_iterations, fine_search_mm, fine_step_mm:
            a second flow of the white mesh after the first: this wide, on a field this fine,
            for this many rounds (0: none), looking this far along the normals in steps this
            long. The first is smooth over ``sigma_mm`` and so cuts across gyral WM blades and
            sulcal fundi narrower than that; started where it ends, the narrower one follows
            them, and its longer search sees the fundus of a sulcus the first bridged.
        refine_iterations: rounds of CAT12's deformable model (:func:`refine_to_level`) run
            on the white mesh after the flows; 0: none.
        thickness_smoothing: neighbour-averaging rounds applied to the measured thickness
            before the pial mesh is placed. Each round pulls a vertex's pial point off its own
            boundary towards its neighbours' (on the ds000022 heads, 2 rounds put the pial
            surface's median 0.13 mm and its 95th percentile 0.1-0.16 mm farther from GM+WM = 0.5).
        pial_sigma_mm, pial_field_spacing_mm: ``sigma_mm`` and ``field_spacing_mm`` of the
            flow that grows the pial mesh out of the white one. The flow keeps the two banks of
            a sulcus apart by about its width, so a narrower one takes them nearer their
            midline before the repair.
        pial_final_step_mm: after that flow, each pial vertex goes at most this far straight
            on to its target (0: not at all). The straight step reaches the target but makes
            the mesh cross itself over about half its faces, and the repair of those pulls many
            vertices back farther than the step took them.
    """

    search_mm: float = 3.0
    step_mm: float = 0.5
    iterations: int = 30
    rate: float = 0.5
    sigma_mm: float = 3.0
    field_spacing_mm: float = 2.0
    fine_sigma_mm: float = 1.5
    fine_field_spacing_mm: float = 1.0
    fine_iterations: int = 30
    fine_search_mm: float = 6.0
    fine_step_mm: float = 1.0
    refine_iterations: int = 0
    thickness_smoothing: int = 0
    pial_sigma_mm: float = 1.5
    pial_field_spacing_mm: float = 1.0
    pial_final_step_mm: float = 0.0

    @classmethod
    def from_config(cls, section: dict) -> FitSettings:
        return cls(**section)


def sample_at(volume: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at world points (..., 3); outside the grid reads 0."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    values = ndimage.map_coordinates(volume, world_to_voxel(flat, affine).T, order=1, mode="constant", cval=0.0)
    return values.reshape(np.shape(points)[:-1])


def boundary_offsets(
    fraction: np.ndarray, affine: np.ndarray, vertices: np.ndarray, normals: np.ndarray, level: float,
    search_mm: float, step_mm: float,
) -> np.ndarray:
    """Signed distance along each normal (V,) to the nearest inside→outside crossing of ``level``.

    "Inside" is where ``fraction`` exceeds ``level``; the crossing is where it drops below
    going outwards. NaN where no such crossing lies within ``search_mm``.
    """
    offsets = np.arange(-search_mm, search_mm + 0.5 * step_mm, step_mm)
    profile = sample_at(fraction, affine, vertices[:, None, :] + offsets[None, :, None] * normals[:, None, :])
    above = profile - level
    # A crossing between samples k and k+1 when inside at k and outside at k+1.
    crossing = (above[:, :-1] >= 0) & (above[:, 1:] < 0)
    drop = np.where(crossing, above[:, :-1] - above[:, 1:], 1.0)
    position = offsets[None, :-1] + step_mm * np.where(crossing, above[:, :-1] / drop, 0.0)
    distance = np.where(crossing, np.abs(position), np.inf)
    nearest = np.argmin(distance, axis=1)
    rows = np.arange(len(vertices))
    found = np.isfinite(distance[rows, nearest])
    return np.where(found, position[rows, nearest], np.nan)


def smooth_displacement_field(
    points: np.ndarray, moves: np.ndarray, weights: np.ndarray, sigma_mm: float, spacing_mm: float,
    margin_mm: float, max_step_mm: float, max_gradient: float = 0.5,
) -> np.ndarray:
    """A smooth, invertible displacement field from scattered moves, sampled back at ``points``.

    Moves (N, 3) mm at ``points`` (N, 3) with ``weights`` (N,) are splatted onto a grid of
    ``spacing_mm`` and blurred by a Gaussian of ``sigma_mm`` (normalised convolution: a
    weighted local mean of the moves). Each grid vector is then shortened to at most
    ``max_step_mm`` (a projection onto a ball, which never steepens the field) and the field
    is scaled down *locally* wherever its Jacobian norm exceeds ``max_gradient``: the scale is
    the smallest needed within 2 sigma, blurred by sigma, so it varies slowly (its own
    gradient adds at most about 0.4 * max_step_mm / sigma_mm). x → x + u(x) with ‖∇u‖ < 1 is
    one-to-one, so no two parts of the mesh can be moved through each other, while regions
    away from a collision (e.g. two banks of a sulcus meeting) keep moving at full speed.

    Returns:
        (N, 3) field values (mm) at ``points``.
    """
    origin = points.min(axis=0) - margin_mm
    shape = tuple(np.ceil((points.max(axis=0) + margin_mm - origin) / spacing_mm).astype(int) + 1)
    index = (points - origin) / spacing_mm
    nearest = np.clip(np.round(index).astype(int), 0, np.array(shape) - 1)
    flat = np.ravel_multi_index(nearest.T, shape)
    sigma_vox = sigma_mm / spacing_mm
    size = int(np.prod(shape))
    weight_grid = ndimage.gaussian_filter(np.bincount(flat, weights, size).reshape(shape), sigma_vox)
    # Far from every proposing vertex the local mean is meaningless: fade it out there.
    support = weight_grid / (weight_grid + 0.05 * weight_grid.max() + 1e-12)
    field = np.stack([
        support * ndimage.gaussian_filter(np.bincount(flat, weights * moves[:, axis], size).reshape(shape), sigma_vox)
        / np.maximum(weight_grid, 1e-12)
        for axis in range(3)
    ])
    length = np.sqrt(np.sum(np.square(field), axis=0))
    field *= np.minimum(1.0, max_step_mm / np.maximum(length, 1e-12))
    gradient_norm = np.sqrt(sum(np.square(g) for component in field for g in np.gradient(component, spacing_mm)))
    scale = np.minimum(1.0, max_gradient / np.maximum(gradient_norm, 1e-12))
    # A Gaussian truncated at 2 sigma never lifts a 2-sigma minimum above the local need.
    reach = int(np.ceil(2 * sigma_vox))
    scale = ndimage.minimum_filter(scale, size=2 * reach + 1, mode="nearest")
    scale = ndimage.gaussian_filter(scale, sigma_vox, mode="nearest", truncate=2.0)
    field *= scale
    return np.stack([ndimage.map_coordinates(c, index.T, order=1, mode="nearest") for c in field], axis=1)


def fit_to_level(
    mesh: Mesh,
    fraction: np.ndarray,
    affine: np.ndarray,
    level: float = 0.5,
    settings: FitSettings = FitSettings(),
    frozen: np.ndarray | None = None,
) -> Mesh:
    """Move the vertices of ``mesh`` onto the ``level`` isosurface of ``fraction``.

    Every round, each vertex that sees the boundary along its normal proposes a move there;
    the proposals become a smooth displacement field in space and all vertices move by
    it, capped at a quarter of ``sigma_mm`` per round. A field whose gradient stays below
    one is invertible, so the mesh cannot fold onto itself: many small rounds give a
    diffeomorphic flow that keeps genus 0 and adds no self-intersections.

    Args:
        mesh: closed mesh in world mm, mostly within ``settings.search_mm`` of the boundary.
        fraction: (X, Y, Z) tissue fraction, high inside the surface (e.g. WM fraction
            for the white surface, GM+WM for the pial surface).
        affine: (4, 4) voxel → world mm of ``fraction``.
        level: the isovalue.
        frozen: (V,) bool, vertices that propose no move (the medial wall, where the
            hemisphere is cut through subcortical tissue); the field still carries them.

    Returns:
        A mesh with the same faces and vertex order.
    """
    vertices = mesh.vertices.copy()
    seek = np.ones(len(vertices), dtype=bool) if frozen is None else ~np.asarray(frozen, dtype=bool)
    for _ in range(settings.iterations):
        normals = vertex_normals(mesh.with_vertices(vertices))
        offsets = boundary_offsets(fraction, affine, vertices, normals, level, settings.search_mm, settings.step_mm)
        found = np.isfinite(offsets) & seek
        moves = np.where(found, settings.rate * np.nan_to_num(offsets), 0.0)[:, None] * normals
        vertices = _flow_step(vertices, moves, found.astype(np.float64), settings)
    return mesh.with_vertices(vertices)


def refine_to_level(mesh: Mesh, fraction: np.ndarray, affine: np.ndarray, level: float, iterations: int,
                    frozen: np.ndarray | None = None) -> Mesh:
    """``mesh`` moved vertex by vertex onto the ``level`` isosurface of ``fraction`` (CAT12's
    deformable surface model, ``CAT_SurfDeform`` via cat-surf, its default weights).

    Unlike :func:`fit_to_level` each vertex follows its own boundary, so the mesh reaches into
    WM blades and sulcal fundi a few mm wide. It may make the mesh cross itself where two
    sheets are closer than a vertex spacing: the caller repairs that. Same faces and vertex
    order; ``frozen`` (V,) bool vertices (the medial wall) stay where they were.

    Args:
        mesh: world mm, already near the isosurface (after :func:`fit_to_level`).
        fraction: (X, Y, Z) tissue fraction, high inside; affine: (4, 4) voxel → world mm.
    """
    import cat_surf
    import nibabel as nib

    volume = nib.Nifti1Image(np.asarray(fraction, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    vertices, _ = cat_surf.surf_deform(mesh.vertices, mesh.faces, volume, isovalue=level, iterations=iterations)
    if frozen is not None:
        frozen = np.asarray(frozen, dtype=bool)
        vertices[frozen] = mesh.vertices[frozen]
    return mesh.with_vertices(vertices)


def _flow_step(vertices: np.ndarray, moves: np.ndarray, weights: np.ndarray, settings: FitSettings) -> np.ndarray:
    """One round of the flow: the proposed moves (V, 3) as a smooth field of at most sigma/4 per round."""
    return vertices + smooth_displacement_field(
        vertices, moves, weights, settings.sigma_mm, settings.field_spacing_mm, 3 * settings.sigma_mm,
        max_step_mm=0.25 * settings.sigma_mm,
    )


def flow_to_targets(mesh: Mesh, targets: np.ndarray, settings: FitSettings, weights: np.ndarray | None = None) -> Mesh:
    """Move ``mesh`` towards per-vertex ``targets`` (V, 3) mm by the same invertible flow.

    Used to grow the pial surface out of the white one: moving each vertex straight to its
    target would let the offsets of the two banks of a sulcus cross; the smooth, capped
    field of :func:`smooth_displacement_field` stops them where they meet instead.
    """
    vertices = mesh.vertices.copy()
    weights = np.ones(len(vertices)) if weights is None else np.asarray(weights, dtype=np.float64)
    for _ in range(settings.iterations):
        vertices = _flow_step(vertices, targets - vertices, weights, settings)
    return mesh.with_vertices(vertices)
