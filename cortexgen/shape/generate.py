"""New cortices from the shape model: surfaces from a sample, interpolation, atrophy.

A sample of the model is a mid-thickness surface plus a thickness per vertex;
:func:`surfaces_from_midthickness` turns it into the white and pial surfaces the
conditioning volumes (:func:`cortexgen.surfaces.sdf.condition_volumes`) are made of.
:func:`interpolate` walks between two sets of standardised coefficients, and the atrophy
functions thin the cortex in a region (a geodesic disk or a box of coordinates), with
everything else left exactly as it was.

Coordinates are world RAS mm, like the meshes of :mod:`cortexgen.surfaces.mesh`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from cortexgen.surfaces.extract import smoothed_normals
from cortexgen.surfaces.fit import FitSettings, flow_to_targets
from cortexgen.surfaces.mesh import Mesh, edges

INTERPOLATIONS = ("linear", "slerp")
#: Below this sine of the angle between two coefficient vectors (or this norm), slerp has
#: no unique great circle (or no direction), and the interpolation is linear.
SLERP_DEGENERATE = 1e-9


def surfaces_from_midthickness(
    mid: Mesh, thickness: np.ndarray, normal_smoothing: int = 3, flow: FitSettings | None = None,
) -> tuple[Mesh, Mesh]:
    """White and pial surfaces half a thickness inside and outside the mid-thickness surface.

    The targets are ``white = mid − t/2 · n`` and ``pial = mid + t/2 · n``, with n the
    smoothed unit outward vertex normals of ``mid`` (as
    :func:`cortexgen.surfaces.extract.smoothed_normals`, so a crumpled patch still points
    outwards). Without ``flow`` the vertices are put there, so ``|pial_i − white_i| = t_i``
    exactly, but in tight sulci the offsets of facing banks cross (on a real mean cortex,
    309 white and 2609 pial intersecting face pairs of 81920). With ``flow`` both surfaces
    move there by the invertible flow of :func:`cortexgen.surfaces.fit.flow_to_targets`,
    which stops facing banks where they meet: no intersections on that cortex, thickness
    within 0.07 mm (sigma 2 mm) or 0.13 mm (3 mm) of t on average, about 7 s for both.

    Args:
        mid: mid-thickness mesh (V vertices, world mm, faces outwards).
        thickness: (V,) mm, ≥ 0 (0 on the medial wall, where white = pial = mid).
        normal_smoothing: neighbour-averaging rounds applied to the normals.
        flow: the flow's settings, or None for straight offsets.

    Returns:
        (white, pial) meshes with the faces of ``mid``.
    """
    thickness = np.asarray(thickness, dtype=np.float64)
    if thickness.shape != (len(mid.vertices),):
        raise ValueError(f"thickness must have shape ({len(mid.vertices)},), got {thickness.shape}")
    if not np.all(np.isfinite(thickness)) or thickness.min(initial=0.0) < 0:
        raise ValueError("thickness must be finite and non-negative")
    offset = 0.5 * thickness[:, None] * smoothed_normals(mid, normal_smoothing)
    if flow is None:
        return mid.with_vertices(mid.vertices - offset), mid.with_vertices(mid.vertices + offset)
    return flow_to_targets(mid, mid.vertices - offset, flow), flow_to_targets(mid, mid.vertices + offset, flow)


# ----------------------------------------------------------------------------- interpolation


def interpolate(
    z_a: np.ndarray, z_b: np.ndarray, weights: Sequence[float] | np.ndarray, method: str = "linear"
) -> np.ndarray:
    """Coefficient vectors between ``z_a`` (weight 0) and ``z_b`` (weight 1).

    ``"linear"``: ``(1 − w) z_a + w z_b``. ``"slerp"``: along the great circle from the
    direction of z_a to that of z_b, with the norm interpolated linearly; under a Gaussian
    prior a linear path cuts through the low-norm centre where no training shape lies,
    slerp keeps the samples as typical as their endpoints. Slerp falls back to linear when
    either vector is zero or they are (anti)parallel (no unique great circle).

    Args:
        z_a, z_b: (K,) standardised coefficients.
        weights: (W,) in [0, 1].
        method: ``"linear"`` or ``"slerp"``.

    Returns:
        (W, K) float64.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"method must be one of {INTERPOLATIONS}, got {method!r}")
    z_a = np.asarray(z_a, dtype=np.float64)
    z_b = np.asarray(z_b, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if z_a.ndim != 1 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must be vectors of one length, got {z_a.shape} and {z_b.shape}")
    if w.ndim != 1 or not np.all((w >= 0.0) & (w <= 1.0)):
        raise ValueError("weights must be a sequence of values in [0, 1]")
    w = w[:, None]
    linear = (1.0 - w) * z_a + w * z_b
    norm_a, norm_b = np.linalg.norm(z_a), np.linalg.norm(z_b)
    if method == "linear" or min(norm_a, norm_b) < SLERP_DEGENERATE:
        return linear
    u_a, u_b = z_a / norm_a, z_b / norm_b
    cosine = float(u_a @ u_b)
    # The sine from the component of u_b orthogonal to u_a: accurate near 0 and π, where
    # arccos of a rounded cosine is off by ~1e-8.
    sine = float(np.linalg.norm(u_b - cosine * u_a))
    if sine < SLERP_DEGENERATE:
        return linear
    angle = np.arctan2(sine, cosine)
    direction = (np.sin((1.0 - w) * angle) * u_a + np.sin(w * angle) * u_b) / np.sin(angle)
    return ((1.0 - w) * norm_a + w * norm_b) * direction


# ----------------------------------------------------------------------------- atrophy


def geodesic_distance(mesh: Mesh, source: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """Distance (mm) along the mesh's edges from the nearest source vertex to every vertex.

    Shortest paths on the edge graph (Dijkstra, edge weight = edge length) overestimate the
    true geodesic distance by the zig-zag of the path, a few % on a regular mesh.

    Args:
        mesh: V vertices, world mm.
        source: one vertex index or several.

    Returns:
        (V,) float64 mm; inf for vertices not connected to any source.
    """
    sources = np.atleast_1d(np.asarray(source))
    n = len(mesh.vertices)
    if sources.size == 0 or sources.dtype.kind not in "iu" or sources.min() < 0 or sources.max() >= n:
        raise ValueError(f"source must be vertex indices in 0..{n - 1}, got {source!r}")
    e = edges(mesh.faces)
    length = np.linalg.norm(mesh.vertices[e[:, 0]] - mesh.vertices[e[:, 1]], axis=1)
    # A zero-length edge would be read as "no edge" in a sparse matrix: give it a tiny length.
    graph = sp.coo_matrix((np.maximum(length, 1e-12), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False, indices=sources, min_only=True)


def distance_to_region(mesh: Mesh, region: np.ndarray) -> np.ndarray:
    """Geodesic distance (V,) mm from every vertex to the nearest vertex of ``region`` (V,) bool (0 inside)."""
    region = _region(region, len(mesh.vertices))
    if not region.any():
        raise ValueError("the region has no vertices")
    return geodesic_distance(mesh, np.flatnonzero(region))


def atrophy_region_disk(mesh: Mesh, centre_vertex: int, radius_mm: float) -> np.ndarray:
    """(V,) bool: the vertices within ``radius_mm`` geodesic distance of ``centre_vertex``.

    Use the model's mean mesh, so that the region is the same vertices in every sample.
    """
    if not radius_mm >= 0:
        raise ValueError(f"radius_mm must be non-negative, got {radius_mm}")
    return geodesic_distance(mesh, int(centre_vertex)) <= radius_mm


def atrophy_region_box(mesh: Mesh, low_xyz: Sequence[float], high_xyz: Sequence[float]) -> np.ndarray:
    """(V,) bool: the vertices inside the axis-aligned box ``low_xyz ≤ v ≤ high_xyz`` (mm).

    A lobe given by coordinates, e.g. the occipital lobe as y < −70 mm in MNI space; use
    the model's mean mesh so that the region is the same vertices in every sample.
    """
    low = np.asarray(low_xyz, dtype=np.float64)
    high = np.asarray(high_xyz, dtype=np.float64)
    if low.shape != (3,) or high.shape != (3,) or np.any(low > high):
        raise ValueError(f"the box needs low ≤ high, three values each, got {low_xyz} and {high_xyz}")
    return np.all((mesh.vertices >= low) & (mesh.vertices <= high), axis=1)


def apply_atrophy(
    thickness: np.ndarray, region: np.ndarray, fraction: float, taper_mm: float = 0.0,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """Thin the cortex by ``fraction`` inside ``region``.

    Inside the region the thickness becomes ``t × (1 − fraction)``; outside it is unchanged,
    except within ``taper_mm`` of the region, where the loss falls off linearly with the
    geodesic distance to it (a smooth edge, no step in the pial surface).

    Args:
        thickness: (V,) mm.
        region: (V,) bool.
        fraction: the thickness lost, in [0, 1).
        taper_mm: width of the linear taper outside the region (0: a sharp edge).
        distance: (V,) mm geodesic distance to the region (:func:`distance_to_region`),
            needed when ``taper_mm > 0``.

    Returns:
        (V,) float64 mm.
    """
    thickness = np.asarray(thickness, dtype=np.float64)
    region = _region(region, len(thickness))
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if not taper_mm >= 0:
        raise ValueError(f"taper_mm must be non-negative, got {taper_mm}")
    loss = np.where(region, float(fraction), 0.0)
    if taper_mm > 0:
        if distance is None:
            raise ValueError("a taper needs the distance to the region (distance_to_region)")
        distance = np.asarray(distance, dtype=np.float64)
        if distance.shape != thickness.shape:
            raise ValueError(f"distance must have shape {thickness.shape}, got {distance.shape}")
        ramp = np.clip(1.0 - distance / taper_mm, 0.0, 1.0)
        loss = np.where(region, loss, fraction * ramp)
    return thickness * (1.0 - loss)


def thin_surfaces(white: Mesh, pial: Mesh, retained: np.ndarray) -> tuple[Mesh, Mesh]:
    """White and pial moved towards each other so that each vertex keeps ``retained`` of its thickness.

    Each vertex moves along its own white–pial segment, by ``(1 − r)/2`` of it from each end:
    ``white + (1 − r)/2 (pial − white)`` and ``pial − (1 − r)/2 (pial − white)``. The thickness
    becomes ``r |pial − white|`` and the midthickness surface is unchanged; a vertex with
    ``r = 1`` stays exactly where it was, so thinning a region leaves every other vertex as it was
    (bit for bit). The thinned surfaces lie between the given white and pial surfaces.

    Args:
        white, pial: one hemisphere's meshes (V vertices, world mm), one vertex order.
        retained: (V,) in (0, 1], e.g. ``apply_atrophy`` of unit thicknesses.

    Returns:
        (white, pial) meshes with the faces of ``white``.
    """
    retained = np.asarray(retained, dtype=np.float64)
    if retained.shape != (len(white.vertices),) or len(pial.vertices) != len(white.vertices):
        raise ValueError(f"white, pial and retained need one length, got {len(white.vertices)}, "
                         f"{len(pial.vertices)} and {retained.shape}")
    if not np.all((retained > 0) & (retained <= 1)):
        raise ValueError("retained must be in (0, 1]")
    step = 0.5 * (1.0 - retained)[:, None] * (pial.vertices - white.vertices)
    return white.with_vertices(white.vertices + step), pial.with_vertices(pial.vertices - step)


def _region(region: np.ndarray, n_vertices: int) -> np.ndarray:
    region = np.asarray(region)
    if region.dtype != bool or region.shape != (n_vertices,):
        raise ValueError(f"region must be a ({n_vertices},) bool array, got {region.dtype} {region.shape}")
    return region
