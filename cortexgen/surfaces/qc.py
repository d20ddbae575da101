"""Quality control of the cortical surfaces: a metrics table and a figure per subject.

The metrics (one :class:`SurfaceQC` row per subject and hemisphere, written as TSV) say
whether a surface is usable at a glance: its topology (Euler characteristic), whether it
folds through itself (self-intersections), whether the thickness and area are those of a
human cortex, and how far the white and pial surfaces lie from the tissue boundaries they
were meant to follow. The figure overlays the exact surface contours on the T1 and shows
the thickness map on the midthickness surface.

Coordinates are world RAS millimetres throughout, like the meshes of
:mod:`cortexgen.surfaces.mesh` and the affines of the preprocessed volumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from cortexgen.io import atomic_output  # noqa: E402
from cortexgen.plotting import HEMI_NAMES, THICKNESS_RANGE_MM, colour_bar, draw_surface  # noqa: E402
from cortexgen.surfaces.mesh import (  # noqa: E402
    Mesh,
    count_self_intersections,
    euler_characteristic,
    vertex_areas,
    voxel_to_world,
    world_to_voxel,
)
from cortexgen.surfaces.partition import HINDBRAIN, LEFT_FILL, RIGHT_FILL  # noqa: E402
from cortexgen.surfaces.sdf import signed_distance  # noqa: E402

#: How far (mm) beyond the mesh's bounding box the isosurface is extracted: a vertex's
#: nearest isosurface point lies within its distance to it, and any surface worth keeping
#: is far closer than this to its tissue boundary.
ISOSURFACE_MARGIN_MM = 5.0
#: Contour colours of the figure (white surface yellow, pial red, as in freeview).
CONTOUR_COLOURS = {"white": "yellow", "pial": "red"}
#: Outlines of the partition's regions on the surface QC slices: (partition values, colour, name).
PARTITION_OUTLINES = (((LEFT_FILL, RIGHT_FILL), "cyan", "filled as WM"),
                      ((HINDBRAIN,), "dodgerblue", "cerebellum/brainstem"))



# ----------------------------------------------------------------------------- distances


def _voxel_box(mesh: Mesh, affine: np.ndarray, shape: tuple[int, ...], margin_mm: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index bounds (low, high), each (3,) int, of ``mesh`` and ``margin_mm`` around it on
    a grid of ``shape`` and ``affine``, clipped to the grid (high exclusive)."""
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ijk = world_to_voxel(mesh.vertices, affine)
    margin = np.ceil(margin_mm / voxel_mm).astype(int)
    low = np.clip(np.floor(ijk.min(axis=0)).astype(int) - margin, 0, None)
    high = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + margin + 1, shape[:3])
    return low, high


def isosurface_near(mesh: Mesh, volume: np.ndarray, affine: np.ndarray, level: float) -> Mesh:
    """The ``level`` isosurface of ``volume`` around ``mesh`` (its bounding box and a margin of
    :data:`ISOSURFACE_MARGIN_MM`), world RAS mm, by marching cubes (linear interpolation
    between voxel centres).

    Args:
        mesh: the surface, world RAS mm.
        volume: (X, Y, Z) scalar image, e.g. a tissue fraction map in [0, 1].
        affine: (4, 4) voxel-to-world matrix of ``volume``.
        level: the iso-value, e.g. 0.5 for the boundary of a fraction map.

    Raises:
        ValueError: when the volume does not cross ``level`` near the mesh (no boundary to
            measure against: a wrong map or a surface in the wrong place).
    """
    from skimage.measure import marching_cubes

    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {volume.shape}")
    # Only the region around the mesh matters; marching cubes on a whole 1 mm head costs
    # several times more than on one hemisphere's box.
    low, high = _voxel_box(mesh, affine, volume.shape, ISOSURFACE_MARGIN_MM)
    if np.any(high - low < 2):
        raise ValueError(f"the mesh lies outside the volume (voxel box {low.tolist()}..{high.tolist()})")
    crop = np.ascontiguousarray(volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]], dtype=np.float32)
    if not (crop.min() < level < crop.max()):
        raise ValueError(
            f"the volume does not cross level {level} near the mesh (values {crop.min():.3g}..{crop.max():.3g})"
        )
    iso_ijk, iso_faces, _, _ = marching_cubes(crop, level=level)
    # marching_cubes answers in the crop's voxel indices: shift back, then map to world mm.
    return Mesh(voxel_to_world(iso_ijk.astype(np.float64) + low, affine), iso_faces.astype(np.int64))


def isosurface_distance(mesh: Mesh, volume: np.ndarray, affine: np.ndarray, level: float) -> np.ndarray:
    """Unsigned distance (mm) from every mesh vertex to the ``level`` isosurface of ``volume``
    (:func:`isosurface_near`): the exact point-to-triangle distance, so a mesh lying on the
    boundary measures ~0 rather than up to half a voxel.

    Returns:
        (V,) float64 distances in mm.
    """
    import igl

    iso = isosurface_near(mesh, volume, affine, level)
    sq_dist, _, _ = igl.point_mesh_squared_distance(mesh.vertices, iso.vertices, iso.faces)
    return np.sqrt(sq_dist)


def missed_boundary_fraction(mesh: Mesh, cortex: np.ndarray, volume: np.ndarray, affine: np.ndarray,
                             level: float, distance_mm: float = 3.0) -> float:
    """The fraction of the ``level`` isosurface of ``volume`` that ``mesh`` does not reach.

    The other direction of :func:`isosurface_distance`: a surface can lie on its boundary
    everywhere and still cut across the sulci and the thin gyral blades it should follow,
    which only the boundary's distance to the surface shows. Counted over the isosurface's
    vertices whose nearest point of ``mesh`` is on a cortex face (the medial wall closes the
    hemisphere through tissue that is no cortex boundary).

    Args:
        mesh: the surface, world RAS mm.
        cortex: (V,) bool, the cortex vertices of ``mesh``.
        volume, affine, level: as :func:`isosurface_near`.
        distance_mm: how far an isosurface point may lie from ``mesh`` and count as reached.
    """
    import igl

    iso = isosurface_near(mesh, volume, affine, level)
    sq_dist, nearest_face, _ = igl.point_mesh_squared_distance(iso.vertices, mesh.vertices, mesh.faces)
    on_cortex = np.asarray(cortex, dtype=bool)[mesh.faces[nearest_face]].all(axis=1)
    if not on_cortex.any():
        raise ValueError("no point of the isosurface lies nearest the cortex")
    return float(np.mean(np.sqrt(sq_dist[on_cortex]) > distance_mm))


def csf_enclosed_ml(mesh: Mesh, csf_fraction: np.ndarray, affine: np.ndarray, depth_mm: float = 2.0) -> float:
    """Volume (mL) of CSF (fraction > 0.5) that ``mesh`` encloses more than ``depth_mm`` deep.

    Inside a white surface there should be white matter (and what the partition filled as
    such): CSF there is a ventricle the partition left open or a sulcus the surface bridges
    instead of following. ``depth_mm`` leaves out the partial volume along the surface itself.

    Args:
        mesh: a closed surface, world RAS mm.
        csf_fraction: (X, Y, Z) CSF fraction of the hemisphere's cortex-only tissue (0 outside
            it, so the other hemisphere and the hindbrain do not count).
        affine: (4, 4) voxel-to-world matrix of the map.
    """
    affine = np.asarray(affine, dtype=np.float64)
    low, high = _voxel_box(mesh, affine, np.shape(csf_fraction))
    box = tuple(slice(a, b) for a, b in zip(low, high))
    candidates = np.argwhere(np.asarray(csf_fraction)[box] > 0.5) + low
    if not len(candidates):
        return 0.0
    depth = -signed_distance(mesh, voxel_to_world(candidates.astype(np.float64), affine))
    return float(np.count_nonzero(depth > depth_mm) * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class SurfaceQC:
    """Quality metrics of one subject's hemisphere; one row of the QC table.

    Attributes:
        subject: the scan prefix, e.g. ``"sub-01"`` or ``"sub-01_ses-1"``.
        hemi: ``"L"`` or ``"R"``.
        n_vertices: vertices of each surface (white, pial and midthickness share them).
        euler_characteristic_white: V − E + F of the white surface; 2 for a sphere's topology.
        euler_characteristic_pial: the same for the pial surface.
        self_intersections_white: number of intersecting triangle pairs of the white surface.
        self_intersections_pial: the same for the pial surface.
        self_intersection_fraction: the larger of the two counts over the number of faces.
        thickness_mean_mm: mean cortical thickness over the cortex vertices (the medial
            wall, whose thickness is 0, is left out).
        thickness_median_mm: median of the same.
        area_mm2: area of the cortex part of the midthickness surface (mm²): the sum of the
            vertex areas (a third of each adjacent face) of the cortex vertices. The medial
            wall closes the hemisphere across white matter and deep grey nuclei, so counting
            it would inflate the cortical area by ~10 %; this is the area FreeSurfer reports
            too (its cortex label).
        white_to_wm_mm: mean distance (mm) from the cortex vertices of the white surface to
            the 0.5 isosurface of the WM fraction map.
        pial_to_gmwm_mm: mean distance (mm) from the cortex vertices of the pial surface to
            the 0.5 isosurface of the GM+WM fraction map.
        white_to_wm_median_mm, white_to_wm_p95_mm: median and 95th percentile of the former.
        pial_to_gmwm_median_mm, pial_to_gmwm_p95_mm: the same of the latter.
        white_missed_wm_fraction: the fraction of the WM boundary (0.5 isosurface) farther than
            3 mm from the white surface (:func:`missed_boundary_fraction`): sulci cut across.
        csf_inside_white_ml: CSF (fraction > 0.5) the white surface encloses more than 2 mm deep
            (:func:`csf_enclosed_ml`): ventricles left open, sulci bridged.
        hindbrain_vertices: cortex vertices of the white or pial surface inside the cerebellum
            or brainstem (nearer a voxel of theirs than any other voxel).
        flags: why the hemisphere needs a look (``; `` between reasons), or ``ok``.
    """

    subject: str
    hemi: str
    n_vertices: int
    euler_characteristic_white: int
    euler_characteristic_pial: int
    self_intersections_white: int
    self_intersections_pial: int
    self_intersection_fraction: float
    thickness_mean_mm: float
    thickness_median_mm: float
    area_mm2: float
    white_to_wm_mm: float
    pial_to_gmwm_mm: float
    white_to_wm_median_mm: float
    white_to_wm_p95_mm: float
    pial_to_gmwm_median_mm: float
    pial_to_gmwm_p95_mm: float
    white_missed_wm_fraction: float
    csf_inside_white_ml: float
    hindbrain_vertices: int
    flags: str


#: The fields of :class:`SurfaceQC` measured against tissue maps (new cortices drawn from the
#: shape model have none).
TISSUE_FIELDS = ("white_to_wm_mm", "pial_to_gmwm_mm", "white_to_wm_median_mm", "white_to_wm_p95_mm",
                 "pial_to_gmwm_median_mm", "pial_to_gmwm_p95_mm", "white_missed_wm_fraction", "csf_inside_white_ml",
                 "hindbrain_vertices")


@dataclass(frozen=True)
class QCLimits:
    """When a hemisphere is flagged (config ``surfaces.qc``).

    Attributes:
        max_hindbrain_vertices: cortex vertices allowed in the cerebellum or brainstem.
        max_boundary_p95_mm: the largest 95th-percentile distance (mm) of the white or pial
            surface to its tissue boundary.
        max_missed_wm_fraction: the largest fraction of the WM boundary the white surface may
            leave more than 3 mm away.
        max_csf_inside_white_ml: the most CSF (mL) the white surface may enclose.
        thickness_mean_range_mm: (low, high) plausible mean thickness over the cortex (mm).
    """

    max_hindbrain_vertices: int = 0
    max_boundary_p95_mm: float = 2.0
    max_missed_wm_fraction: float = 0.15
    max_csf_inside_white_ml: float = 2.0
    thickness_mean_range_mm: tuple[float, float] = (2.0, 3.6)

    @classmethod
    def from_config(cls, section: dict) -> QCLimits:
        values = dict(section)
        values["thickness_mean_range_mm"] = tuple(values.get("thickness_mean_range_mm", cls.thickness_mean_range_mm))
        return cls(**values)


def qc_flags(measures: dict, limits: QCLimits) -> str:
    """The reasons a QC row (its measures by field name) needs a look, ``; ``-joined, or ``ok``.

    Topology (Euler characteristic 2) and self-intersections always count; the tissue-based
    measures count where the row has them.
    """
    reasons = []
    for surface in ("white", "pial"):
        euler = measures[f"euler_characteristic_{surface}"]
        if euler != 2:
            reasons.append(f"{surface} Euler characteristic {euler} (not a sphere's 2)")
        crossings = measures[f"self_intersections_{surface}"]
        if crossings:
            reasons.append(f"{surface} has {crossings} self-intersections")
    hindbrain = measures.get("hindbrain_vertices", 0)
    if hindbrain > limits.max_hindbrain_vertices:
        reasons.append(f"{hindbrain} cortex vertices in the cerebellum/brainstem")
    for surface, key in (("white", "white_to_wm_p95_mm"), ("pial", "pial_to_gmwm_p95_mm")):
        if key in measures and measures[key] > limits.max_boundary_p95_mm:
            reasons.append(f"{surface} surface far from its tissue boundary (95th percentile {measures[key]:.1f} mm)")
    missed = measures.get("white_missed_wm_fraction", 0.0)
    if missed > limits.max_missed_wm_fraction:
        reasons.append(f"white surface misses {100 * missed:.0f}% of the WM boundary (cuts across sulci)")
    enclosed = measures.get("csf_inside_white_ml", 0.0)
    if enclosed > limits.max_csf_inside_white_ml:
        reasons.append(f"white surface encloses {enclosed:.1f} mL of CSF (an open ventricle or bridged sulci)")
    low, high = limits.thickness_mean_range_mm
    if not low <= measures["thickness_mean_mm"] <= high:
        reasons.append(f"mean thickness {measures['thickness_mean_mm']:.2f} mm outside {low}-{high} mm")
    return "; ".join(reasons) or "ok"


def vertices_inside(mesh: Mesh, region: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(V,) bool: vertices nearer a voxel of ``region`` (X, Y, Z) bool than to any other voxel
    (its trilinearly interpolated indicator above 0.5)."""
    from cortexgen.surfaces.fit import sample_at

    return sample_at(np.asarray(region, dtype=np.float32), affine, mesh.vertices) > 0.5


def surface_measures(
    white: Mesh, pial: Mesh, midthickness: Mesh, thickness: np.ndarray, cortex: np.ndarray
) -> dict:
    """The tissue-free part of a QC row: topology, self-intersections, thickness and area.

    Shared by subjects' rows (:func:`surface_qc`) and those of new cortices drawn from the
    shape model, which have no tissue maps to measure distances to.

    Args:
        white, pial, midthickness: one hemisphere's surfaces, world RAS mm, one vertex set.
        thickness: (V,) cortical thickness, mm (0 on the medial wall).
        cortex: (V,) bool, True on cortex vertices, False on the medial wall.

    Returns:
        ``{n_vertices, euler_characteristic_white/_pial, self_intersections_white/_pial,
        self_intersection_fraction, thickness_mean_mm, thickness_median_mm, area_mm2}``
        (see :class:`SurfaceQC`).

    Raises:
        ValueError: surfaces or per-vertex arrays of different lengths, or an empty cortex mask.
    """
    n = len(white.vertices)
    thickness = np.asarray(thickness, dtype=np.float64).ravel()
    cortex = np.asarray(cortex, dtype=bool).ravel()
    lengths = {
        "pial": len(pial.vertices),
        "midthickness": len(midthickness.vertices),
        "thickness": len(thickness),
        "cortex": len(cortex),
    }
    mismatched = {name: length for name, length in lengths.items() if length != n}
    if mismatched:
        raise ValueError(f"the white surface has {n} vertices but {mismatched}")
    if not cortex.any():
        raise ValueError("the cortex mask is empty")
    si_white = count_self_intersections(white)
    si_pial = count_self_intersections(pial)
    cortex_thickness = thickness[cortex]
    return {
        "n_vertices": n,
        "euler_characteristic_white": euler_characteristic(white),
        "euler_characteristic_pial": euler_characteristic(pial),
        "self_intersections_white": si_white,
        "self_intersections_pial": si_pial,
        "self_intersection_fraction": max(si_white / max(len(white.faces), 1), si_pial / max(len(pial.faces), 1)),
        "thickness_mean_mm": float(cortex_thickness.mean()),
        "thickness_median_mm": float(np.median(cortex_thickness)),
        "area_mm2": float(vertex_areas(midthickness)[cortex].sum()),
    }


def surface_qc(
    subject: str,
    hemi: str,
    white: Mesh,
    pial: Mesh,
    midthickness: Mesh,
    thickness: np.ndarray,
    cortex: np.ndarray,
    wm_fraction: np.ndarray,
    gmwm_fraction: np.ndarray,
    csf_fraction: np.ndarray,
    affine: np.ndarray,
    hindbrain: np.ndarray,
    limits: QCLimits = QCLimits(),
) -> SurfaceQC:
    """Measure one hemisphere's surfaces (see :class:`SurfaceQC` for the metrics) and flag them.

    Args:
        subject: the scan prefix, e.g. ``"sub-01"``.
        hemi: ``"L"`` or ``"R"``.
        white, pial, midthickness, thickness, cortex: see :func:`surface_measures`.
        wm_fraction: (X, Y, Z) white-matter fraction map in [0, 1] that the white surface
            should follow (the hemisphere's cortex-only tissue,
            :func:`cortexgen.surfaces.partition.cortex_tissue`).
        gmwm_fraction: (X, Y, Z) grey + white matter fraction map in [0, 1], same grid.
        csf_fraction: (X, Y, Z) CSF fraction map in [0, 1] of the same tissue (0 outside it).
        affine: (4, 4) voxel-to-world matrix of the maps.
        hindbrain: (X, Y, Z) bool, the cerebellum and brainstem, same grid.
        limits: when to flag.

    Raises:
        ValueError: on an unknown hemisphere, surfaces or per-vertex arrays of different
            lengths, an empty cortex mask, or a map that has no boundary near a surface.
    """
    if hemi not in HEMI_NAMES:
        raise ValueError(f"hemi must be 'L' or 'R', got {hemi!r}")
    measures = surface_measures(white, pial, midthickness, thickness, cortex)
    cortex = np.asarray(cortex, dtype=bool).ravel()
    white_distance = isosurface_distance(white, wm_fraction, affine, 0.5)[cortex]
    pial_distance = isosurface_distance(pial, gmwm_fraction, affine, 0.5)[cortex]
    measures.update(
        white_to_wm_mm=float(white_distance.mean()),
        pial_to_gmwm_mm=float(pial_distance.mean()),
        white_to_wm_median_mm=float(np.median(white_distance)),
        white_to_wm_p95_mm=float(np.percentile(white_distance, 95)),
        pial_to_gmwm_median_mm=float(np.median(pial_distance)),
        pial_to_gmwm_p95_mm=float(np.percentile(pial_distance, 95)),
        white_missed_wm_fraction=missed_boundary_fraction(white, cortex, wm_fraction, affine, 0.5),
        csf_inside_white_ml=csf_enclosed_ml(white, csf_fraction, affine),
        hindbrain_vertices=int(np.count_nonzero(
            (vertices_inside(white, hindbrain, affine) | vertices_inside(pial, hindbrain, affine)) & cortex)),
    )
    return SurfaceQC(subject=subject, hemi=hemi, **measures, flags=qc_flags(measures, limits))


def write_qc_tsv(rows: list, path: str | Path) -> None:
    """Write a QC table atomically: a header of the rows' dataclass field names (e.g.
    :class:`SurfaceQC`), then one tab-separated row each, floats with 4 decimals."""
    if not rows:
        raise ValueError(f"no QC rows to write to {path}")
    names = [field.name for field in dataclasses.fields(rows[0])]
    lines = ["\t".join(names)]
    for row in rows:
        lines.append("\t".join(_format_cell(getattr(row, name)) for name in names))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _format_cell(value: object) -> str:
    # Counts stay exact; 4 decimals keep distances to 0.1 µm and thickness well past its precision.
    if isinstance(value, float | np.floating):
        return f"{float(value):.4f}"
    return str(value)


# ----------------------------------------------------------------------------- figure


def plane_intersection_segments(mesh: Mesh, axis: int, coordinate_mm: float) -> np.ndarray:
    """The exact intersection of a mesh with the plane ``x[axis] == coordinate_mm``.

    Every triangle with vertices on both sides contributes one segment, between the points
    where its two crossing edges meet the plane (linear interpolation along the edge). A
    vertex lying exactly on the plane counts as above it, so the segments still join into
    closed contours and an edge lying in the plane is drawn once, not by both its faces.

    Args:
        mesh: any triangle mesh; the coordinates need not be world mm (the figure passes
            one in voxel indices).
        axis: 0, 1 or 2.
        coordinate_mm: the plane's position along ``axis``.

    Returns:
        (S, 2, 3) float64 segment end points in the mesh's coordinates.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    corners = mesh.vertices[mesh.faces]  # (F, 3, 3)
    signed = corners[:, :, axis] - coordinate_mm  # (F, 3)
    above = signed >= 0
    n_above = above.sum(axis=1)
    crossing = (n_above == 1) | (n_above == 2)
    corners, signed, above, n_above = corners[crossing], signed[crossing], above[crossing], n_above[crossing]
    # The lone vertex is the one on its own side; both crossing edges start from it.
    lone_mask = np.where((n_above == 1)[:, None], above, ~above)
    lone = np.argmax(lone_mask, axis=1)
    rows = np.arange(len(lone))
    ends = []
    for step in (1, 2):
        other = (lone + step) % 3
        d_lone, d_other = signed[rows, lone], signed[rows, other]
        # d_lone and d_other have opposite signs (or d_lone is 0), so the denominator is nonzero.
        t = d_lone / (d_lone - d_other)
        point = corners[rows, lone] + t[:, None] * (corners[rows, other] - corners[rows, lone])
        point[:, axis] = coordinate_mm  # exactly in the plane despite rounding
        ends.append(point)
    segments = np.stack(ends, axis=1)
    # A triangle touching the plane at one vertex only yields a point; it draws nothing.
    return segments[np.any(segments[:, 0] != segments[:, 1], axis=1)]


def surface_qc_figure(
    t1: np.ndarray,
    affine: np.ndarray,
    surfaces: dict[str, dict[str, Mesh]],
    thickness: dict[str, np.ndarray],
    title: str,
    flags: dict[str, str] | None = None,
    partition: np.ndarray | None = None,
) -> plt.Figure:
    """T1 slices with the surface contours, and the thickness maps on the midthickness.

    Top row: sagittal, coronal and axial slices of the T1 with the white (yellow) and pial
    (red) contours of every hemisphere, drawn as the exact mesh–slice intersections. The
    coronal and axial slices pass through the centre of the pial surfaces; the sagittal one
    through the centre of the first hemisphere's white surface, since the midline would
    cut only the medial walls. Panels follow the neurological convention (left on the
    left, superior up) with the aspect from the voxel sizes, like the preprocessing montage.

    Bottom row: each hemisphere's midthickness coloured by thickness (0–5 mm), lateral and
    medial views (nilearn, matplotlib engine).

    Args:
        t1: (X, Y, Z) T1 image in RAS+ voxel order.
        affine: (4, 4) voxel-to-world matrix of ``t1``.
        surfaces: hemisphere (``"L"``/``"R"``) → ``{"white", "pial", "midthickness"}`` → Mesh.
        thickness: hemisphere → (V,) thickness in mm.
        title: the figure title, e.g. ``"sub-01 surfaces"``.
        flags: hemisphere → its QC flags (:func:`qc_flags`); any but ``ok`` are printed in red
            under the title, so a flagged subject stands out in the report.
        partition: (X, Y, Z) the cortex-only partition on the grid of ``t1``
            (:mod:`cortexgen.surfaces.partition`): the slices outline what it filled as WM and
            what it took as cerebellum/brainstem, so an open ventricle or a hindbrain that
            reaches into the occipital lobe shows.

    Returns:
        A matplotlib figure; the caller saves and closes it.
    """
    t1 = np.asarray(t1, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    hemis = [h for h in ("L", "R") if h in surfaces]
    if not hemis:
        raise ValueError("no hemisphere surfaces to draw")
    # The intersection is computed in voxel indices, so the slice is exactly the displayed
    # one even for an oblique affine (where a voxel slice is no world plane).
    voxel_meshes = {
        (h, kind): surfaces[h][kind].with_vertices(world_to_voxel(surfaces[h][kind].vertices, affine))
        for h in hemis
        for kind in CONTOUR_COLOURS
    }
    pial_ijk = np.concatenate([voxel_meshes[(h, "pial")].vertices for h in hemis])
    centre = 0.5 * (pial_ijk.min(axis=0) + pial_ijk.max(axis=0))
    centre[0] = voxel_meshes[(hemis[0], "white")].vertices[:, 0].mean()
    index = [int(np.clip(round(c), 0, s - 1)) for c, s in zip(centre, t1.shape)]

    # A grid of 3 × (surface panels) columns: the three slices and the 2 views per
    # hemisphere then split the width evenly.
    n_surface_panels = 2 * len(hemis)
    fig = plt.figure(figsize=(12, 7.5))
    grid = fig.add_gridspec(2, 3 * n_surface_panels, height_ratios=(1.2, 1.0))
    slice_axes = [
        fig.add_subplot(grid[0, i * n_surface_panels : (i + 1) * n_surface_panels]) for i in range(3)
    ]

    dx, dy, dz = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    nx, ny, nz = t1.shape
    low, high = np.percentile(t1, [1, 99.5])
    # (name, slice axis, plane, aspect, voxel-index → panel (column, row) after np.rot90)
    views = [
        ("sagittal", 0, t1[index[0], :, :], dz / dy, lambda p: (p[:, 1], nz - 1 - p[:, 2])),
        ("coronal", 1, t1[:, index[1], :], dz / dx, lambda p: (p[:, 0], nz - 1 - p[:, 2])),
        ("axial", 2, t1[:, :, index[2]], dy / dx, lambda p: (p[:, 0], ny - 1 - p[:, 1])),
    ]
    for ax, (view, axis, plane, aspect, to_panel) in zip(slice_axes, views):
        ax.imshow(np.rot90(plane), cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        if partition is not None:
            regions = np.rot90(np.take(partition, index[axis], axis=axis))
            for values, colour, name in PARTITION_OUTLINES:
                inside = np.isin(regions, values)
                if inside.any() and not inside.all():
                    ax.contour(inside.astype(np.float32), levels=[0.5], colors=colour, linewidths=0.5)
                    ax.plot([], [], color=colour, linewidth=0.6, label=name)
        for kind, colour in CONTOUR_COLOURS.items():
            segments = np.concatenate(
                [plane_intersection_segments(voxel_meshes[(h, kind)], axis, index[axis]) for h in hemis]
            )
            if not len(segments):
                continue
            column, row = to_panel(segments.reshape(-1, 3))
            panel = np.stack([column, row], axis=1).reshape(-1, 2, 2)
            ax.add_collection(LineCollection(panel, colors=colour, linewidths=0.6, label=kind))
        ax.set_xticks([])
        ax.set_yticks([])
        world = voxel_to_world(np.array([index], dtype=np.float64), affine)[0]
        ax.set_title(f"{view}  {'xyz'[axis]} = {world[axis]:.0f} mm", fontsize=9)
    slice_axes[0].legend(loc="lower left", fontsize=7, framealpha=0.5)

    cmap = plt.get_cmap("viridis")
    vmin, vmax = THICKNESS_RANGE_MM
    for i, (h, view) in enumerate((h, v) for h in hemis for v in ("lateral", "medial")):
        ax = fig.add_subplot(grid[1, 3 * i : 3 * (i + 1)], projection="3d", proj_type="ortho")
        # Every face drawn: a QC figure must show the spikes and dents of the fitted mesh.
        draw_surface(ax, surfaces[h]["midthickness"], thickness[h], h, view, cmap, vmin, vmax, max_faces=None)
        ax.set_title(f"{h} {view}", fontsize=9)
    colour_bar(fig, cmap, vmin, vmax, "thickness (mm)", position=(0.35, 0.07, 0.3, 0.015))
    flagged = {h: text for h, text in (flags or {}).items() if text != "ok"}
    if flagged:
        title += "\nFLAGGED: " + " | ".join(f"{h}: {text}" for h, text in flagged.items())
    fig.suptitle(title, color="red" if flagged else "black", fontsize=10 if flagged else None)
    return fig
