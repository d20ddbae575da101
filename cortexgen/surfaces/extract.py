"""A subject's cortical surfaces: the template meshes carried onto it and fitted to its tissue.

Per hemisphere: white (WM fraction 0.5), pial (GM+WM fraction 0.5), midthickness (their
vertex-wise mean) and thickness (the vertex-wise white–pial distance, mm). All four share
the template's faces and vertex order, so vertex i is the same place on every subject.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import nibabel as nib
import numpy as np
from scipy import ndimage

from cortexgen.surfaces.fit import FitSettings, fit_to_level, flow_to_targets, refine_to_level, sample_at
from cortexgen.surfaces.mesh import (
    Mesh,
    count_self_intersections,
    intersecting_faces,
    neighbour_mean_operator,
    smooth_values,
    vertex_normals,
    voxel_to_world,
    world_to_voxel,
)
from cortexgen.surfaces.partition import HINDBRAIN, cortex_tissue
from cortexgen.surfaces.segment import TissueMaps
from cortexgen.surfaces.template import SurfaceTemplate
from cortexgen.surfaces.warp import WarpSettings, register_labels


@dataclass(frozen=True)
class HemisphereSurfaces:
    """One hemisphere's surfaces (world RAS mm) and per-vertex thickness.

    Attributes:
        white, pial, midthickness: meshes with identical faces and vertex order.
        thickness: (V,) mm, |pial_i − white_i|; 0 on the medial wall.
        cortex: (V,) bool, False on the medial wall.
    """

    white: Mesh
    pial: Mesh
    midthickness: Mesh
    thickness: np.ndarray
    cortex: np.ndarray

    @classmethod
    def from_white_pial(cls, white: Mesh, pial: Mesh, cortex: np.ndarray) -> HemisphereSurfaces:
        """Midthickness = the vertex-wise mean of white and pial; thickness = |pial − white|."""
        return cls(
            white=white,
            pial=pial,
            midthickness=white.with_vertices(0.5 * (white.vertices + pial.vertices)),
            thickness=np.linalg.norm(pial.vertices - white.vertices, axis=1),
            cortex=cortex,
        )


def native_thickness(white: Mesh, pial: Mesh, template_to_native: np.ndarray) -> np.ndarray:
    """Thickness (V,) in the scan's own millimetres: |A (pial_i − white_i)|.

    Args:
        white, pial: one hemisphere's meshes in template (MNI) world mm, one vertex order.
        template_to_native: (4, 4) RAS matrix mapping template points to scan points (the
            preprocessing's affine, :func:`cortexgen.preprocess.register.itk_affine_to_ras`).
            Only its linear part matters: the affine scales the brain (ds000022: by a median
            1.14), so the MNI-space thickness is scaled with it.
    """
    linear = np.asarray(template_to_native, dtype=np.float64)[:3, :3]
    return np.linalg.norm((pial.vertices - white.vertices) @ linear.T, axis=1)


def smoothed_normals(mesh: Mesh, iterations: int = 3) -> np.ndarray:
    """Vertex normals (V, 3) averaged over neighbours, so a crumpled patch still points outwards."""
    normals = smooth_values(vertex_normals(mesh), neighbour_mean_operator(mesh), iterations)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def profile_thickness(white: Mesh, normals: np.ndarray, tissue: TissueMaps, affine: np.ndarray,
                      max_thickness_mm: float, step_mm: float = 0.25) -> np.ndarray:
    """Cortical thickness (V,) mm measured outwards from the white surface along its normals.

    Where CSF is visible, the pial surface is where the GM+WM fraction drops below 0.5.
    Where a sulcus is glued (GM of both banks touching, no CSF visible) the profile never
    drops; the pial surface is then the bottom of the GM+WM valley between the banks, or
    half-way to the opposite bank's WM if there is no valley at all. NaN where neither is
    found within ``max_thickness_mm`` (filled from the neighbours by the caller).
    ``normals`` (V, 3) are the unit outward directions measured along (smoothed ones).
    """
    offsets = np.arange(0.0, max_thickness_mm + 0.5 * step_mm, step_mm)
    points = white.vertices[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    gm_wm = sample_at(tissue.gm_wm, affine, points)
    wm = sample_at(tissue.wm, affine, points)
    # The pial crossing: the first sample below 0.5 (interpolated from the one before it).
    below = gm_wm < 0.5
    below[:, 0] = False
    first_below = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    k = np.maximum(first_below, 1)
    idx = np.arange(len(white.vertices))
    before, after = gm_wm[idx, k - 1], gm_wm[idx, k]
    crossing = offsets[k - 1] + step_mm * (before - 0.5) / np.maximum(before - after, 1e-6)
    # The opposite bank: the first sample back in WM after leaving it.
    left_wm = np.maximum.accumulate(wm < 0.5, axis=1)
    back_in_wm = left_wm & (wm >= 0.5)
    opposite = np.where(back_in_wm.any(axis=1), offsets[back_in_wm.argmax(axis=1)], np.inf)
    # The valley bottom of GM+WM between the white surface and the opposite bank.
    inside = offsets[None, :] < np.minimum(opposite, max_thickness_mm)[:, None]
    valley_profile = np.where(inside & left_wm, gm_wm, np.inf)
    valley = offsets[np.argmin(valley_profile, axis=1)]
    has_valley = np.isfinite(valley_profile.min(axis=1)) & (valley_profile.min(axis=1) < 0.95)
    glued_half = np.where(np.isfinite(opposite), 0.5 * opposite, np.nan)
    thickness = np.where(has_valley, valley, glued_half)
    thickness = np.where((first_below > 0) & (crossing < np.nan_to_num(opposite, posinf=np.inf)), crossing, thickness)
    # A white vertex already outside GM+WM (it sits on CSF) has no cortex above it.
    return np.where(gm_wm[:, 0] < 0.5, 0.0, thickness)


def repair_self_intersections(mesh: Mesh, reference: Mesh | None = None) -> Mesh:
    """The mesh with its self-intersections removed (CAT12's repair, via cat-surf).

    Intersecting triangles are smoothed locally; defects that smoothing cannot separate are
    moved part of the way back towards ``reference`` (the white mesh for the pial one).
    Faces and vertex order are kept, so correspondence survives. The cost grows with the
    number of defects (about 2 s for ten, 20 s for 150 on 40962 vertices), which is why the
    flow that builds the meshes is kept smooth enough to leave only a handful.
    """
    import cat_surf

    if count_self_intersections(mesh) == 0:
        return mesh
    vertices, _ = cat_surf.fix_self_intersect(
        mesh.vertices, mesh.faces, reference=None if reference is None else reference.vertices
    )
    return mesh.with_vertices(vertices)


#: How far below the 0.5 level of the forbidden region's indicator a vertex pulled out stops
#: (~0.05 voxel at a flat border): a vertex left on the level itself can fall back in when the
#: mesh is saved as float32 GIFTI (demo sub-02/-03: 1-2 pial vertices per hemisphere at 0.5000003).
KEEP_OUT_MARGIN = 0.05


def keep_out(mesh: Mesh, forbidden: np.ndarray, affine: np.ndarray, anchors: np.ndarray | None = None,
             cortex: np.ndarray | None = None, steps: int = 10) -> Mesh:
    """The mesh with every (cortex) vertex that lies in ``forbidden`` pulled back out of it.

    A vertex is in when the trilinear value of the indicator there exceeds 0.5, i.e. it is
    nearer a forbidden voxel centre than an allowed one. It moves along the line to its anchor
    (e.g. its white vertex, for a pial vertex) or, without one, to the nearest allowed voxel
    centre, to the last point of that line whose value is at most 0.5 - :data:`KEEP_OUT_MARGIN`
    (bisection). The moves are the sub-voxel overshoots of a smooth flow at a region's border,
    so they are short.

    Args:
        mesh: world mm.
        forbidden: (X, Y, Z) bool, where no vertex may lie (e.g. the cerebellum and brainstem).
        affine: (4, 4) voxel → world mm of ``forbidden``.
        anchors: (V, 3) allowed points to pull towards, or None.
        cortex: (V,) bool, the vertices to check; None: all.
        steps: bisection steps (the last point outside is found to 2**-steps of the line).
    """
    forbidden = np.asarray(forbidden, dtype=bool)
    indicator = forbidden.astype(np.float32)
    vertices = mesh.vertices.copy()
    check = np.ones(len(vertices), dtype=bool) if cortex is None else np.asarray(cortex, dtype=bool)
    inside = check & (sample_at(indicator, affine, vertices) > 0.5)
    if not inside.any():
        return mesh
    if anchors is None:
        _, nearest = ndimage.distance_transform_edt(forbidden, return_indices=True)
        ijk = np.clip(np.rint(world_to_voxel(vertices[inside], affine)).astype(int), 0, np.array(forbidden.shape) - 1)
        start = voxel_to_world(nearest[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].T.astype(np.float64), affine)
    else:
        start = np.asarray(anchors, dtype=np.float64)[inside]
    end = vertices[inside]
    low, high = np.zeros(len(end)), np.ones(len(end))
    for _ in range(steps):
        middle = 0.5 * (low + high)
        out = sample_at(indicator, affine, start + middle[:, None] * (end - start)) <= 0.5 - KEEP_OUT_MARGIN
        low, high = np.where(out, middle, low), np.where(out, high, middle)
    vertices[inside] = start + low[:, None] * (end - start)
    return mesh.with_vertices(vertices)


def _repaired_and_kept_out(mesh: Mesh, repair: bool, forbidden: np.ndarray | None, affine: np.ndarray,
                           cortex: np.ndarray | None, reference: Mesh | None = None, rounds: int = 3,
                           fallback: Mesh | None = None) -> Mesh:
    """Cortex vertices (every vertex with ``cortex`` None) kept out of ``forbidden`` and
    self-intersections repaired.

    Each can undo the other (the repair may move a vertex back in, and pulling one out may
    make a crossing), so they alternate until neither has anything left to do, at most
    ``rounds`` repairs; the crossings left then retreat towards the fallback
    (:func:`retreat_crossings`), and any the fallback has itself are the QC's to flag.
    ``reference``: the repair's fallback mesh and keep_out's anchors (the white mesh for the
    pial one); ``fallback``: a crossing-free mesh the repair alone retreats towards (the flowed
    white mesh for the refined one), when it differs from ``reference``.
    """
    anchors = None if reference is None else reference.vertices
    fallback = reference if fallback is None else fallback
    for _ in range(rounds):
        if forbidden is not None:
            mesh = keep_out(mesh, forbidden, affine, anchors=anchors, cortex=cortex)
        # The repair counts the crossings itself and returns the mesh unchanged when there are none.
        repaired = repair_self_intersections(mesh, reference=fallback) if repair else mesh
        if repaired is mesh:
            return mesh
        mesh = repaired
    if forbidden is not None:
        mesh = keep_out(mesh, forbidden, affine, anchors=anchors, cortex=cortex)
    if repair and fallback is not None:
        mesh = retreat_crossings(mesh, fallback)
        if forbidden is not None:
            mesh = keep_out(mesh, forbidden, affine, anchors=anchors, cortex=cortex)
    crossings = count_self_intersections(mesh) if repair and forbidden is not None and cortex is not None else 0
    if crossings:
        # Where the medial wall stays in the hindbrain (beside the diencephalon), the cortex
        # vertices pulled out next to it can cross it again after every repair (sub-14 L of
        # ds000022: 2 crossings); the last resort keeps the medial wall out too. Not the rule:
        # on the 14 heads that made 30 crossings on 4 other hemispheres.
        alternative = _repaired_and_kept_out(mesh, repair, forbidden, affine, None, reference, rounds, fallback)
        if count_self_intersections(alternative) < crossings:
            mesh = alternative
    return mesh


def retreat_crossings(mesh: Mesh, towards: Mesh, rounds: int = 8) -> Mesh:
    """The mesh with the vertices of the faces that still cross moved half-way to ``towards``, until none cross.

    The last resort after CAT12's repair: a crossing its smoothing cannot undo (sub-11 R's
    pial mesh kept 8 after three repairs) is taken back towards a crossing-free mesh with the
    same faces (the white mesh for the pial one), which thins the cortex there only (sub-11 R:
    105 of 40962 vertices, by 0.76 mm on average, 7 s). After ``rounds`` halvings a vertex is within
    1/2**rounds of ``towards``; crossings ``towards`` has itself stay, for the QC to flag.
    """
    vertices = mesh.vertices.copy()
    for _ in range(rounds):
        crossing = intersecting_faces(mesh.with_vertices(vertices))
        if not len(crossing):
            break
        moving = np.unique(mesh.faces[crossing])
        vertices[moving] = 0.5 * (vertices[moving] + towards.vertices[moving])
    return mesh.with_vertices(vertices)


def fit_hemisphere(white: Mesh, cortex: np.ndarray, tissue: TissueMaps, affine: np.ndarray,
                   settings: FitSettings, max_thickness_mm: float = 5.0,
                   repair: bool = True,
                   forbidden: np.ndarray | None = None) -> HemisphereSurfaces:
    """Fit the white mesh to WM = 0.5, then build the pial mesh outwards from it.

    The white mesh is fitted by the smooth, invertible flow, then by a narrower one started
    where it ends (``settings.fine_sigma_mm``), which reaches the fundi and the thin WM blades
    the first cuts across, and optionally, vertex by vertex, by CAT12's deformable model
    (``settings.refine_iterations``); the crossings they make are repaired.

    Args:
        white: the template's white mesh already carried onto the subject.
        cortex: (V,) bool; the medial wall (False) seeks no boundary and gets thickness 0.
        tissue: the subject's tissue fractions on the grid of ``affine``.
        settings: the isosurface fit of the white surface, and the thickness smoothing.
        max_thickness_mm: the farthest the pial surface is looked for.
        repair: remove any self-intersections left in the white and pial meshes.
        forbidden: (X, Y, Z) bool on the tissue's grid, where no cortex vertex may end up
            (the cerebellum and brainstem): sub-voxel overshoots there are pulled back
            (:func:`keep_out`) before the self-intersection repair.

    The pial mesh grows out of the white one towards each white vertex moved along its
    (smoothed) normal by the thickness from :func:`profile_thickness`, which ends on the CSF or
    on the midline of a sulcus whose banks touch, by an invertible flow
    (``settings.pial_sigma_mm`` wide), which cannot make two sheets cross but keeps the banks
    of a narrow sulcus apart by about its width, then straight on by at most
    ``settings.pial_final_step_mm``. The crossings left are repaired. Pial and white share the
    vertex order, and the reported thickness is the distance the vertex actually moved.
    """
    cortex = np.asarray(cortex, dtype=bool)
    white_flowed = fit_to_level(white, tissue.wm, affine, 0.5, settings, frozen=~cortex)
    white_fit = white_flowed
    if settings.fine_iterations:
        fine = replace(settings, sigma_mm=settings.fine_sigma_mm, field_spacing_mm=settings.fine_field_spacing_mm,
                       iterations=settings.fine_iterations, search_mm=settings.fine_search_mm,
                       step_mm=settings.fine_step_mm)
        white_fit = fit_to_level(white_fit, tissue.wm, affine, 0.5, fine, frozen=~cortex)
    if settings.refine_iterations:
        white_fit = refine_to_level(white_fit, tissue.wm, affine, 0.5, settings.refine_iterations, frozen=~cortex)
    # The first, wide flow leaves (almost) no crossings, so what the repair cannot smooth away
    # retreats towards it.
    white_fit = _repaired_and_kept_out(white_fit, repair, forbidden, affine, cortex, fallback=white_flowed)
    normals = smoothed_normals(white_fit)
    measured = profile_thickness(white_fit, normals, tissue, affine, max_thickness_mm)
    known = np.isfinite(measured) & cortex
    mean_op = neighbour_mean_operator(white_fit)
    # Fill unmeasured vertices from their neighbours (weighted smoothing).
    weight = smooth_values(known.astype(np.float64), mean_op, 10)
    filled = smooth_values(np.where(known, measured, 0.0), mean_op, 10) / np.maximum(weight, 1e-9)
    thickness = np.where(known, measured, np.where(weight > 1e-9, filled, 0.0))
    thickness = np.clip(smooth_values(thickness, mean_op, settings.thickness_smoothing), 0.0, max_thickness_mm)
    thickness[~cortex] = 0.0
    targets = white_fit.vertices + thickness[:, None] * normals
    pial_flow = replace(settings, sigma_mm=settings.pial_sigma_mm, field_spacing_mm=settings.pial_field_spacing_mm)
    flowed = flow_to_targets(white_fit, targets, pial_flow).vertices
    rest = targets - flowed
    length = np.linalg.norm(rest, axis=1, keepdims=True)
    pial_vertices = flowed + rest * np.minimum(1.0, settings.pial_final_step_mm / np.maximum(length, 1e-12))
    pial_vertices[~cortex] = white_fit.vertices[~cortex]
    pial = white_fit.with_vertices(pial_vertices)
    pial = _repaired_and_kept_out(pial, repair, forbidden, affine, cortex, reference=white_fit)
    return HemisphereSurfaces.from_white_pial(white_fit, pial, cortex)


def extract_surfaces(
    tissue: TissueMaps,
    affine: np.ndarray,
    template: SurfaceTemplate,
    warp_settings: WarpSettings = WarpSettings(),
    fit_settings: FitSettings = FitSettings(),
    max_thickness_mm: float = 5.0,
    repair: bool = True,
    partition: np.ndarray | None = None,
    workers: int = 1,
) -> dict[str, HemisphereSurfaces]:
    """White, pial, midthickness and thickness of both hemispheres of one subject.

    Args:
        tissue: the subject's tissue maps on its 1 mm MNI grid.
        affine: (4, 4) voxel → world mm of that grid.
        template: from :func:`cortexgen.surfaces.template.build_template`.
        partition: (X, Y, Z) from :func:`cortexgen.surfaces.partition.partition_brain`, on the
            tissue's grid. With it, the template is registered to the cerebrum alone (deep grey
            matter and ventricles filled as WM) and each hemisphere is fitted to its own side, so
            no surface can reach the cerebellum, the brainstem or the other hemisphere. None:
            the whole tissue (phantoms without a hindbrain).
        workers: hemispheres fitted at once, each in a forked process (the fit holds the GIL,
            so threads would not overlap); 1, or a platform without fork: one after the other.
            The result does not depend on it.
        The rest: see :func:`fit_hemisphere`.
    """
    voxel_size = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    cerebrum = tissue if partition is None else cortex_tissue(tissue, partition, voxel_size)
    forbidden = None if partition is None else partition == HINDBRAIN
    warp = register_labels(template.label, nib.Nifti1Image(cerebrum.label, affine), warp_settings, template.mask)
    jobs = {
        hemi: (meshes.white.with_vertices(warp.map(meshes.white.vertices)), meshes.cortex,
               tissue if partition is None else cortex_tissue(tissue, partition, voxel_size, hemi),
               affine, fit_settings, max_thickness_mm)
        for hemi, meshes in template.hemispheres.items()
    }
    fit = partial(fit_hemisphere, repair=repair, forbidden=forbidden)
    workers = min(int(workers), len(jobs))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return {hemi: fit(*args) for hemi, args in jobs.items()}
    # fork, not spawn: a spawned child re-runs the __main__ module, which for a Snakemake
    # rule is the whole script; nothing the children call (cat-surf, numpy, libigl) keeps a
    # thread pool that a fork would break.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {hemi: pool.submit(fit, *args) for hemi, args in jobs.items()}
        return {hemi: future.result() for hemi, future in futures.items()}
