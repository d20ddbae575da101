"""Cortical cycle consistency: is the generated cortex the cortex that was asked for?

A generator draws an image conditioned on the signed distance volumes of a set of white
and pial surfaces. The workflow's own surface stage (CAT12 tissue segmentation, then the
fsaverage template carried onto the image and fitted to its tissue) is run on that image,
and the surfaces it finds are compared with the conditioning ones:

* white and pial surface distance, as ASSD and HD95 (mm), per hemisphere;
* thickness correlation: both surface sets come from the same template, so vertex i is
  the same place on both and per-vertex thickness can be correlated directly;
* tissue Dice of GM and WM on the synthetic image's own grid.

Nothing of the real subject but the conditioning surfaces is used: the brain mask the
segmentation runs in is built from the synthetic image itself, since the subject's mask
would hand the answer (the outer brain boundary) to the surface stage.

Surface distances are exact point-to-triangle distances (libigl's AABB tree) from the
vertices of one mesh to the other mesh's triangles, so two meshes lying on the same
surface measure ~0 however differently they are tessellated. Coordinates are world RAS
millimetres throughout, like the meshes of :mod:`cortexgen.surfaces.mesh`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from cortexgen.errors import InputImageError
from cortexgen.surfaces.extract import HemisphereSurfaces, extract_surfaces
from cortexgen.surfaces.fit import FitSettings, sample_at
from cortexgen.surfaces.mesh import Mesh
from cortexgen.surfaces.sdf import ConditionVolumes, condition_volumes, grid_points
from cortexgen.surfaces.partition import PartitionSettings, cortex_partition
from cortexgen.surfaces.segment import TissueMaps, segment_tissue
from cortexgen.surfaces.template import HemisphereMeshes, SurfaceTemplate
from cortexgen.surfaces.warp import WarpSettings

#: Per-hemisphere metrics of :class:`CycleResult`, stored as ``f"{name}_{hemi}"`` and,
#: averaged over the hemispheres, as ``name``.
SURFACE_METRICS = (
    "white_assd_mm", "white_hd95_mm", "pial_assd_mm", "pial_hd95_mm", "thickness_r", "thickness_mae_mm",
)
#: Whole-image metrics of :class:`CycleResult` (both hemispheres: the conditioning SDFs are unions).
VOLUME_METRICS = ("gm_dice", "wm_dice")
#: The SDF truncation (mm) used when the conditioning volumes are rebuilt from the meshes:
#: Dice needs only the signs, which truncation keeps, and it is several times cheaper.
CONDITION_CLIP_MM = 3.0


# ----------------------------------------------------------------------------- surface distances


def point_to_surface_distances(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Exact distance (mm) from each point to the nearest point of a triangle mesh.

    The distance is to the nearest point on any triangle (a face, an edge or a corner),
    not to the nearest vertex: a point 1 mm above the middle of a 10 mm triangle is 1 mm
    away, not ~6.

    Args:
        points: (P, 3) world RAS mm.
        mesh: the surface, world RAS mm.

    Returns:
        (P,) float64 mm.
    """
    import igl

    points = np.ascontiguousarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (P, 3), got {points.shape}")
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces to measure a distance to")
    if len(points) == 0:
        return np.zeros(0)
    # libigl wants int64 faces; Mesh keeps int32.
    squared, _, _ = igl.point_mesh_squared_distance(points, mesh.vertices, mesh.faces.astype(np.int64))
    # Rounding can leave a tiny negative square for a point on the surface.
    return np.sqrt(np.maximum(squared, 0.0))


def surface_distances(
    a: Mesh, b: Mesh, mask_a: np.ndarray | None = None, mask_b: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two directed vertex-to-surface distance sets between meshes ``a`` and ``b``.

    Args:
        a, b: surfaces, world RAS mm; any tessellations.
        mask_a: (V_a,) bool, the vertices of ``a`` measured from (None: all). The target
            surface is always whole, so a masked vertex still finds its nearest point
            anywhere on the other mesh.
        mask_b: (V_b,) bool, the same for ``b``.

    Returns:
        ``(a_to_b, b_to_a)``: (n_a,) mm from ``a``'s (selected) vertices to surface ``b``,
        and (n_b,) mm from ``b``'s (selected) vertices to surface ``a``.
    """
    return (
        point_to_surface_distances(a.vertices[_vertex_mask(mask_a, a)], b),
        point_to_surface_distances(b.vertices[_vertex_mask(mask_b, b)], a),
    )


def assd(a: Mesh, b: Mesh, mask_a: np.ndarray | None = None, mask_b: np.ndarray | None = None) -> float:
    """Average symmetric surface distance (mm) between two surfaces.

    The mean over the union of both directed distance sets of :func:`surface_distances`,
    i.e. (Σ a→b + Σ b→a) / (n_a + n_b): each vertex counts once (vertex-, not
    area-weighted, as in MONAI and most segmentation challenges).

    Args:
        a, b, mask_a, mask_b: see :func:`surface_distances`.
    """
    return _assd(*surface_distances(a, b, mask_a, mask_b))


def hd95(a: Mesh, b: Mesh, mask_a: np.ndarray | None = None, mask_b: np.ndarray | None = None) -> float:
    """95th-percentile Hausdorff distance (mm) between two surfaces.

    MONAI's convention (``compute_hausdorff_distance(percentile=95)``): the larger of the
    two directed 95th percentiles, ``max(P95(a→b), P95(b→a))``, rather than the 95th
    percentile of the pooled distances, which a large mesh can dominate. Percentiles are
    linearly interpolated (numpy's default, as MONAI's). A directed set that is empty
    (its mask selects nothing) is left out.

    Args:
        a, b, mask_a, mask_b: see :func:`surface_distances`.
    """
    return _hd95(*surface_distances(a, b, mask_a, mask_b))


def thickness_correlation(
    thickness_a: np.ndarray, thickness_b: np.ndarray, cortex: np.ndarray | None = None
) -> float:
    """Pearson correlation of two per-vertex thickness maps over the cortex vertices.

    Both maps must be on meshes with one vertex order (vertex i the same place on both),
    which the template construction guarantees.

    Args:
        thickness_a, thickness_b: (V,) mm.
        cortex: (V,) bool; vertices outside it (the medial wall, thickness 0 by
            construction) are ignored whatever their values. None: all vertices.

    Returns:
        r in [-1, 1]; NaN when fewer than two vertices are selected or either map is
        constant over them (the correlation is undefined then).
    """
    a = np.asarray(thickness_a, dtype=np.float64).ravel()
    b = np.asarray(thickness_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"thickness maps differ in length: {a.size} and {b.size} vertices")
    keep = np.ones(a.size, dtype=bool) if cortex is None else np.asarray(cortex, dtype=bool).ravel()
    if keep.shape != a.shape:
        raise ValueError(f"cortex mask has {keep.size} entries for {a.size} vertices")
    a, b = a[keep], b[keep]
    # A constant map has no variance to correlate: say so instead of dividing by zero.
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()), -1.0, 1.0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two boolean arrays of one shape.

    1.0 when both are empty: two segmentations that agree there is none of a tissue agree
    perfectly (MONAI would return NaN; a number keeps summary tables simple).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


# ----------------------------------------------------------------------------- tissue of a synthetic image


@dataclass(frozen=True)
class SegmentSettings:
    """CAT12 AMAP settings (config ``surfaces.segment``), as the ``segment`` rule uses them.

    Attributes:
        iterations: AMAP iterations.
        mrf_weight: AMAP's Markov-random-field weight in [0, 1].
    """

    iterations: int = 50
    mrf_weight: float = 0.0

    @classmethod
    def from_config(cls, section: dict) -> SegmentSettings:
        return cls(**section)


@dataclass(frozen=True)
class CycleSettings:
    """Everything the surface stage needs to run on a synthetic image.

    The segmentation, warp and fit settings should be the workflow's own (config
    ``surfaces``, see :meth:`from_config`), so the cycle measures the generator and not a
    differently tuned surface stage.

    Attributes:
        segment, partition, warp, fit, max_thickness_mm, repair: as the ``segment`` and
            ``surfaces`` rules use them (see :func:`cortexgen.surfaces.extract.extract_surfaces`);
            partition None fits the whole tissue (phantoms without a hindbrain).
        mask_threshold: the brain is where the lightly smoothed synthetic image exceeds
            this (images in [0, 1] with background ~0; normalised CSF sits at ~0.1-0.3).
        mask_smoothing_mm: Gaussian sigma (mm) of that smoothing, which keeps noise specks
            in the background out and dark CSF voxels at the brain's edge in.
        workers: hemispheres fitted at once (the job's threads; see ``extract_surfaces``).
    """

    segment: SegmentSettings = field(default_factory=SegmentSettings)
    partition: PartitionSettings | None = field(default_factory=PartitionSettings)
    warp: WarpSettings = field(default_factory=WarpSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    max_thickness_mm: float = 5.0
    repair: bool = True
    mask_threshold: float = 0.1
    mask_smoothing_mm: float = 1.0
    workers: int = 1

    @classmethod
    def from_config(cls, surfaces: dict, **overrides) -> CycleSettings:
        """From the config's ``surfaces`` section; ``overrides`` replace single fields."""
        values = {
            "segment": SegmentSettings.from_config(surfaces.get("segment", {})),
            "partition": PartitionSettings.from_config(surfaces.get("partition", {})),
            "warp": WarpSettings.from_config(surfaces.get("warp", {})),
            "fit": FitSettings.from_config(surfaces.get("fit", {})),
            "max_thickness_mm": float(surfaces.get("max_thickness_mm", cls.max_thickness_mm)),
            "repair": bool(surfaces.get("repair_self_intersections", cls.repair)),
        }
        values.update(overrides)
        return cls(**values)


def resample_to_grid(image: nib.Nifti1Image, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a 3D image onto another grid (world space; 0 outside the image).

    Args:
        image: 3D image with its own affine.
        affine: (4, 4) voxel → world RAS mm of the target grid.
        shape: (I, J, K) voxels of the target grid.

    Returns:
        ``shape`` float32 array.
    """
    shape = tuple(int(n) for n in shape)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    values = sample_at(data, image.affine, grid_points(shape, affine))
    return values.reshape(shape).astype(np.float32)


def brain_mask_from_image(volume: np.ndarray, voxel_size_mm: np.ndarray, threshold: float = 0.1,
                          smoothing_mm: float = 1.0) -> np.ndarray:
    """The brain of a skull-stripped image whose background is ~0, from the image alone.

    The volume is smoothed (Gaussian, ``smoothing_mm``) and thresholded; the largest
    connected component is kept (stray bright specks in the background go) and its holes
    are filled (dark ventricles, and CSF voxels the threshold missed, stay in).

    Args:
        volume: (I, J, K) intensities in [0, 1].
        voxel_size_mm: (3,) voxel edges of its grid.
        threshold, smoothing_mm: see :class:`CycleSettings`.

    Returns:
        (I, J, K) bool; empty when nothing exceeds the threshold.
    """
    sigma = float(smoothing_mm) / np.asarray(voxel_size_mm, dtype=np.float64)
    smoothed = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma)
    labels, count = ndimage.label(smoothed > threshold)
    if count == 0:
        return np.zeros(np.shape(volume), dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == sizes.argmax())


def synthetic_tissue(
    image: nib.Nifti1Image, affine: np.ndarray, shape: Sequence[int], settings: CycleSettings = CycleSettings(),
    source: str = "synthetic image",
) -> tuple[TissueMaps, np.ndarray]:
    """CSF/GM/WM fractions of a synthetic image on the surface stage's 1 mm grid.

    The image (e.g. 84×128×84 at ~2 mm) is resampled trilinearly onto the grid the
    surface stage works on (the 1 mm MNI brain's), its brain mask is built from the image
    itself (:func:`brain_mask_from_image`), and CAT12 AMAP segments it as the ``segment``
    rule segments a real brain.

    Args:
        image: the synthetic image, intensities in [0, 1], background ~0.
        affine: (4, 4) voxel → world RAS mm of the target grid.
        shape: (I, J, K) voxels of the target grid.
        settings: segmentation and brain-mask settings.
        source: what to call the image in error messages.

    Returns:
        ``(tissue, affine)``: the tissue maps, each ``shape``, and the grid's affine (4, 4).

    Raises:
        InputImageError: no brain found, or one that AMAP cannot split into three classes.
    """
    affine = np.asarray(affine, dtype=np.float64)
    volume = resample_to_grid(image, affine, shape)
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    brain = brain_mask_from_image(volume, voxel_size, settings.mask_threshold, settings.mask_smoothing_mm)
    if not brain.any():
        raise InputImageError(source, f"no voxel above the brain threshold {settings.mask_threshold}")
    tissue = segment_tissue(
        volume, brain, voxel_size, iterations=settings.segment.iterations, mrf_weight=settings.segment.mrf_weight,
        source=source,
    )
    return tissue, affine


def condition_tissue(condition: ConditionVolumes) -> tuple[np.ndarray, np.ndarray]:
    """GM and WM (bool, the volumes' grid) that the conditioning SDFs ask for.

    SDFs are negative inside (:mod:`cortexgen.surfaces.sdf`): WM where a voxel centre is
    inside the white union, GM where it is inside the pial union and not inside the white
    one (the ribbon of :class:`~cortexgen.surfaces.sdf.ConditionVolumes`).
    """
    pial = np.asarray(condition.pial_sdf)
    white = np.asarray(condition.white_sdf)
    return (pial < 0) & (white >= 0), white < 0


def tissue_on_grid(tissue: TissueMaps, tissue_affine: np.ndarray, shape: Sequence[int],
                   affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GM and WM (bool, ``shape``) of segmented tissue maps at the voxel centres of another grid.

    The fractions are interpolated at the target voxel centres, where the conditioning
    ribbon is defined too, and classified by the 0.5 levels the surfaces are fitted to:
    WM where WM ≥ 0.5 (inside the white surface), GM where GM+WM ≥ 0.5 but WM < 0.5
    (between white and pial). Outside the tissue grid is neither.
    """
    points = grid_points(shape, affine)
    shape = tuple(int(n) for n in shape)
    wm = sample_at(tissue.wm, tissue_affine, points).reshape(shape) >= 0.5
    gm_wm = sample_at(tissue.gm_wm, tissue_affine, points).reshape(shape) >= 0.5
    return gm_wm & ~wm, wm


# ----------------------------------------------------------------------------- the cycle


@dataclass(frozen=True)
class CycleResult:
    """What the surface stage found in a synthetic image, and how far it is from what was asked.

    Attributes:
        surfaces: hemisphere ("L"/"R") → the surfaces extracted from the synthetic image
            (template faces and vertex order; save them like the ``surfaces`` rule does).
        tissue: the synthetic image's tissue maps on the 1 mm grid.
        tissue_affine: (4, 4) voxel → world RAS mm of that grid.
        metrics: a flat name → float table. Per hemisphere ``f"{name}_{hemi}"`` for every
            name of :data:`SURFACE_METRICS`, e.g. ``"white_assd_mm_L"``, ``"thickness_r_R"``:

            - ``white_assd_mm``, ``pial_assd_mm``: ASSD (mm) between extracted and
              conditioning surface, from the cortex vertices of each (medial wall left out).
            - ``white_hd95_mm``, ``pial_hd95_mm``: HD95 (mm), MONAI's convention, likewise.
            - ``thickness_r``: Pearson r of per-vertex thickness over the cortex vertices.
            - ``thickness_mae_mm``: mean |thickness difference| (mm) there, which r
              (blind to a uniformly thinner cortex) misses.

            Then each of those names alone (``"white_assd_mm"``) for the mean over the
            hemispheres, and the whole-image :data:`VOLUME_METRICS`: ``gm_dice`` and
            ``wm_dice`` on the synthetic image's own grid.
    """

    surfaces: dict[str, HemisphereSurfaces]
    tissue: TissueMaps
    tissue_affine: np.ndarray
    metrics: dict[str, float]


def surface_metrics(found: HemisphereSurfaces, asked: HemisphereSurfaces | HemisphereMeshes,
                    cortex: np.ndarray) -> dict[str, float]:
    """The :data:`SURFACE_METRICS` of one hemisphere (names without the hemisphere suffix).

    Args:
        found: surfaces extracted from the synthetic image.
        asked: the conditioning surfaces, same vertex order; their thickness is
            ``asked.thickness`` if they carry one, else |pial − white| per vertex (the
            definition of :meth:`HemisphereSurfaces.from_white_pial`).
        cortex: (V,) bool, the template's cortex mask (shared by both, same vertex order).
    """
    cortex = np.asarray(cortex, dtype=bool)
    for name, mesh in (("found white", found.white), ("asked white", asked.white), ("asked pial", asked.pial)):
        if len(mesh.vertices) != cortex.size:
            raise ValueError(f"{name} mesh has {len(mesh.vertices)} vertices; the template has {cortex.size}")
    asked_thickness = getattr(asked, "thickness", None)
    if asked_thickness is None:
        asked_thickness = np.linalg.norm(asked.pial.vertices - asked.white.vertices, axis=1)
    asked_thickness = np.asarray(asked_thickness, dtype=np.float64)
    # Each surface's distances once, for both summaries (~1 s per 41k-vertex pair).
    white = surface_distances(found.white, asked.white, cortex, cortex)
    pial = surface_distances(found.pial, asked.pial, cortex, cortex)
    return {
        "white_assd_mm": _assd(*white),
        "white_hd95_mm": _hd95(*white),
        "pial_assd_mm": _assd(*pial),
        "pial_hd95_mm": _hd95(*pial),
        "thickness_r": thickness_correlation(found.thickness, asked_thickness, cortex),
        "thickness_mae_mm": float(np.abs(found.thickness - asked_thickness)[cortex].mean()),
    }


def load_conditioning(template: SurfaceTemplate, white: Mapping[str, str], pial: Mapping[str, str],
                      thickness: Mapping[str, str], pial_sdf: str, white_sdf: str,
                      ) -> tuple[dict[str, HemisphereSurfaces], ConditionVolumes]:
    """A subject's (or a new cortex's) surfaces and SDF volumes as :func:`cycle_consistency` takes
    them, from the files the surface stage writes.

    Args:
        template: gives each hemisphere's cortex (the medial wall is not compared).
        white, pial, thickness: hemisphere → GIfTI path.
        pial_sdf, white_sdf: the condition volumes (NIfTI, mm); the ribbon is where the pial
            SDF is negative and the white one is not.
    """
    from cortexgen.surfaces.mesh import load_shape, load_surface

    conditioning = {}
    for hemi, meshes in template.hemispheres.items():
        white_mesh, pial_mesh = load_surface(white[hemi]), load_surface(pial[hemi])
        conditioning[hemi] = HemisphereSurfaces(
            white=white_mesh, pial=pial_mesh,
            midthickness=white_mesh.with_vertices(0.5 * (white_mesh.vertices + pial_mesh.vertices)),
            thickness=load_shape(thickness[hemi]), cortex=meshes.cortex,
        )
    pial_volume = np.asarray(nib.load(pial_sdf).dataobj, dtype=np.float32)
    white_volume = np.asarray(nib.load(white_sdf).dataobj, dtype=np.float32)
    condition = ConditionVolumes(pial_sdf=pial_volume, white_sdf=white_volume,
                                 ribbon=((pial_volume < 0) & (white_volume >= 0)).astype(np.uint8))
    return conditioning, condition


def cycle_consistency(
    image: nib.Nifti1Image,
    conditioning: Mapping[str, HemisphereSurfaces | HemisphereMeshes],
    template: SurfaceTemplate,
    grid_affine: np.ndarray,
    grid_shape: Sequence[int],
    settings: CycleSettings = CycleSettings(),
    condition: ConditionVolumes | None = None,
) -> CycleResult:
    """Run the surface stage on a synthetic image and compare with its conditioning surfaces.

    Args:
        image: the synthetic image (e.g. 84×128×84, ~2 mm, MNI), intensities in [0, 1].
        conditioning: hemisphere → the white and pial surfaces the image was generated
            from (anything with ``white`` and ``pial`` meshes in the template's vertex
            order, e.g. a subject's :class:`HemisphereSurfaces` or a shape sample's
            :class:`HemisphereMeshes`); the same hemispheres as ``template``.
        template: the surface template the workflow carries onto every subject.
        grid_affine: (4, 4) voxel → world RAS mm of the 1 mm grid the surface stage works
            on (the MNI brain's).
        grid_shape: (I, J, K) voxels of that grid.
        settings: the surface stage's settings (:meth:`CycleSettings.from_config`).
        condition: the pial and white SDFs the image was conditioned on, on the image's
            own grid (shape checked). None: rebuilt from ``conditioning`` (truncated at
            :data:`CONDITION_CLIP_MM`, which keeps the signs Dice needs).

    Returns:
        The extracted surfaces, the tissue maps, and the metrics (:class:`CycleResult`).
    """
    hemis = list(template.hemispheres)
    if set(conditioning) != set(hemis):
        raise ValueError(f"conditioning has hemispheres {sorted(conditioning)}; the template has {sorted(hemis)}")
    image_shape = tuple(int(n) for n in image.shape[:3])
    if condition is None:
        condition = condition_volumes(
            [conditioning[h].white for h in hemis], [conditioning[h].pial for h in hemis], image_shape,
            image.affine, clip_mm=CONDITION_CLIP_MM,
        )
    for name in ("pial_sdf", "white_sdf"):
        if np.shape(getattr(condition, name)) != image_shape:
            raise ValueError(f"condition {name} has shape {np.shape(getattr(condition, name))}; the image {image_shape}")

    tissue, tissue_affine = synthetic_tissue(image, grid_affine, grid_shape, settings)
    partition = None if settings.partition is None else cortex_partition(tissue.label, tissue_affine,
                                                                         settings.partition)
    surfaces = extract_surfaces(
        tissue, tissue_affine, template, settings.warp, settings.fit, settings.max_thickness_mm, settings.repair,
        partition=partition, workers=settings.workers,
    )

    metrics: dict[str, float] = {}
    per_hemi = {h: surface_metrics(surfaces[h], conditioning[h], template.hemispheres[h].cortex) for h in hemis}
    for hemi in hemis:
        metrics.update({f"{name}_{hemi}": value for name, value in per_hemi[hemi].items()})
    for name in SURFACE_METRICS:
        metrics[name] = float(np.mean([per_hemi[h][name] for h in hemis]))
    asked_gm, asked_wm = condition_tissue(condition)
    found_gm, found_wm = tissue_on_grid(tissue, tissue_affine, image_shape, image.affine)
    metrics["gm_dice"] = dice(found_gm, asked_gm)
    metrics["wm_dice"] = dice(found_wm, asked_wm)
    return CycleResult(surfaces=surfaces, tissue=tissue, tissue_affine=tissue_affine, metrics=metrics)


# ----------------------------------------------------------------------------- internals


def _assd(a_to_b: np.ndarray, b_to_a: np.ndarray) -> float:
    """ASSD (mm) from the two directed distance sets (see :func:`assd`)."""
    if a_to_b.size + b_to_a.size == 0:
        raise ValueError("no vertices to measure from: both masks are empty")
    return float((a_to_b.sum() + b_to_a.sum()) / (a_to_b.size + b_to_a.size))


def _hd95(a_to_b: np.ndarray, b_to_a: np.ndarray) -> float:
    """HD95 (mm) from the two directed distance sets (see :func:`hd95`)."""
    directed = [d for d in (a_to_b, b_to_a) if d.size]
    if not directed:
        raise ValueError("no vertices to measure from: both masks are empty")
    return float(max(np.percentile(d, 95) for d in directed))


def _vertex_mask(mask: np.ndarray | None, mesh: Mesh) -> np.ndarray | slice:
    """``mask`` as a (V,) bool index into ``mesh``'s vertices, or all of them."""
    if mask is None:
        return slice(None)
    mask = np.asarray(mask, dtype=bool).ravel()
    if mask.size != len(mesh.vertices):
        raise ValueError(f"vertex mask has {mask.size} entries for a mesh of {len(mesh.vertices)} vertices")
    return mask
