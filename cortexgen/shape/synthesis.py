"""New cortices as surfaces: a model's coefficients (sampled, interpolated or atrophied) to meshes.

A *shape spec* (a plain dict, from config ``shape_model``) says how one new cortex is made:

* ``{"kind": "sample", "index": i, "seed": s, "truncation": t}``: z drawn from the model,
  seeded by (s, i) so that sample i is the same whatever the number of samples;
* ``{"kind": "interpolation", "from": "sub-01", "to": "sub-02", "weight": w, "method": "slerp"}``:
  between two subjects' projections;
* ``{"kind": "atrophy", "region": {...}, "fraction": f, "taper_mm": d}``: the mean shape (z = 0)
  thinned by f inside a region (see :func:`atrophy_region`);
* ``{"kind": "mean"}``: the mean shape as it is, the unthinned twin of every atrophy.

:func:`thin_hemisphere` applies an atrophy to a subject's own surfaces instead.

:func:`synthesize_hemisphere` turns z into white, pial and mid-thickness meshes with the
template's faces and vertex order, self-intersections repaired, like a subject's surfaces.
"""

from __future__ import annotations

from dataclasses import fields, make_dataclass

import numpy as np

from cortexgen.shape.generate import (
    apply_atrophy,
    atrophy_region_box,
    atrophy_region_disk,
    distance_to_region,
    interpolate,
    surfaces_from_midthickness,
    thin_surfaces,
)
from cortexgen.shape.model import ShapeModel, project, reconstruct, sample_coefficients
from cortexgen.surfaces.extract import HemisphereSurfaces, repair_self_intersections
from cortexgen.surfaces.fit import FitSettings, flow_to_targets
from cortexgen.surfaces.mesh import Mesh
from cortexgen.surfaces.qc import TISSUE_FIELDS, SurfaceQC, surface_measures
from cortexgen.surfaces.template import MEDIAL_WALL_THICKNESS_MM

SHAPE_KINDS = ("sample", "interpolation", "atrophy", "mean")


def shape_coefficients(
    model: ShapeModel, spec: dict, endpoints: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> np.ndarray:
    """The standardised coefficients z (K,) of the shape that ``spec`` describes.

    Args:
        model: one hemisphere's model.
        spec: see the module docstring.
        endpoints: for an interpolation, ``{subject: (mid vertices (V, 3) mm, thickness (V,) mm)}``
            of its two subjects in this hemisphere.
    """
    kind = spec["kind"]
    if kind == "sample":
        rng = np.random.default_rng([int(spec["seed"]), int(spec["index"])])
        return sample_coefficients(1, model.n_modes, rng, spec.get("truncation"))[0]
    if kind == "interpolation":
        if endpoints is None or spec["from"] not in endpoints or spec["to"] not in endpoints:
            raise ValueError(f"interpolation {spec['from']} → {spec['to']} needs both subjects' surfaces")
        z_from, z_to = (project(model, *endpoints[spec[end]]) for end in ("from", "to"))
        return interpolate(z_from, z_to, [float(spec["weight"])], spec.get("method", "slerp"))[0]
    if kind in ("atrophy", "mean"):
        return np.zeros(model.n_modes)
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")


def atrophy_region(mesh: Mesh, hemi: str, region: dict) -> np.ndarray:
    """(V,) bool: the vertices of ``mesh`` in an atrophy region (config ``shape_model.atrophy``).

    ``{"type": "box", "low_mm": [x, y, z], "high_mm": [x, y, z]}`` selects by world
    coordinates (a lobe, e.g. y < −60 mm for the occipital lobe in MNI space) in both
    hemispheres; ``{"type": "disk", "hemi": "L", "centre_vertex": i, "radius_mm": r}`` a
    geodesic disk in one hemisphere (empty in the other).
    """
    if region["type"] == "box":
        return atrophy_region_box(mesh, region["low_mm"], region["high_mm"])
    if region["type"] == "disk":
        if region["hemi"] != hemi:
            return np.zeros(len(mesh.vertices), dtype=bool)
        return atrophy_region_disk(mesh, int(region["centre_vertex"]), float(region["radius_mm"]))
    raise ValueError(f"unknown atrophy region type {region['type']!r}; expected 'box' or 'disk'")


def atrophy_retained(mesh: Mesh, hemi: str, atrophy: dict, cortex: np.ndarray) -> np.ndarray:
    """(V,) the fraction of its thickness each vertex of ``mesh`` keeps under ``atrophy``.

    ``atrophy``: ``{"region": {...}, "fraction": f, "taper_mm": d}`` (config
    ``shape_model.atrophy``). 1 − f on the region's cortex vertices (:func:`atrophy_region`
    ∩ ``cortex`` (V,) bool), rising linearly to 1 over d mm of geodesic distance outside it
    (:func:`cortexgen.shape.generate.apply_atrophy`), 1 elsewhere; all 1 when the region holds
    no cortex in this hemisphere.
    """
    region = atrophy_region(mesh, hemi, atrophy["region"]) & cortex
    retained = np.ones(len(mesh.vertices))
    if not region.any():
        return retained
    taper = float(atrophy.get("taper_mm", 0.0))
    distance = distance_to_region(mesh, region) if taper > 0 else None
    return apply_atrophy(retained, region, float(atrophy["fraction"]), taper, distance)


def thin_hemisphere(surfaces: HemisphereSurfaces, hemi: str, atrophy: dict) -> HemisphereSurfaces:
    """A subject's hemisphere with ``atrophy`` applied to its own surfaces.

    The region is found on the subject's midthickness surface (world mm: a box selects the
    same MNI coordinates as on the mean shape, a disk the same template vertex) and its
    ``cortex``; white and pial move towards each other along each vertex's segment
    (:func:`cortexgen.shape.generate.thin_surfaces`), so the thickness becomes
    :func:`atrophy_retained` × the subject's, the midthickness stays, and every vertex the
    atrophy does not reach keeps its position bit for bit: the unthinned twin of the result is
    the subject's surfaces themselves. No self-intersection repair: the thinned surfaces lie
    between the subject's (repaired) white and pial, and a repair would move untouched vertices.
    """
    retained = atrophy_retained(surfaces.midthickness, hemi, atrophy, surfaces.cortex)
    white, pial = thin_surfaces(surfaces.white, surfaces.pial, retained)
    return HemisphereSurfaces.from_white_pial(white, pial, surfaces.cortex)


def synthesize_hemisphere(
    model: ShapeModel, z: np.ndarray, atrophy: dict | None = None, repair: bool = True,
    flow: FitSettings | None = FitSettings(),
) -> HemisphereSurfaces:
    """White, pial and mid-thickness meshes (and thickness) of the shape with coefficients z.

    Args:
        model: one hemisphere's model.
        z: (k,) standardised coefficients, k ≤ K.
        atrophy: ``{"region": {...}, "fraction": f, "taper_mm": d}``: thin the reconstructed
            thickness by f inside the region (on the model's mean mesh, so the same vertices
            in every shape), tapering to no loss over d mm of geodesic distance outside it.
        repair: remove self-intersections of the white and pial meshes (cat-surf) that
            building them from the mid-thickness surface left (few with ``flow``).
        flow: the invertible flow (config ``surfaces.fit``: its ``sigma_mm``, the white fit's
            width) that carries the model's mean mid-thickness surface onto the sample's and
            moves white and pial out of it; None uses the reconstructed vertices and ± thickness/2 as
            they are, which folds and crosses facing banks in tight sulci.

    The returned thickness is |pial − white|, as for a subject: with ``flow`` it is the
    requested thickness up to the flow's stopping where banks meet.

    Returns:
        The surfaces, with ``cortex`` the vertices where the model's mean thickness is at
        least the template's medial-wall threshold (0.5 mm).
    """
    mid_vertices, thickness = reconstruct(model, z)
    mean_mesh = Mesh(model.mean_mid_vertices, model.faces)
    if flow is None:
        mid = Mesh(mid_vertices, model.faces)
    else:
        # A sample mixes the training subjects' vertex jitter with mixed signs, which
        # crumples folds (a real 8-mode sample: 1141 intersecting face pairs). The mean
        # surface is smooth; carried onto the sample's vertices by the invertible flow it
        # lands 0.25-0.3 mm from them on average (sigma 3 mm) without folding.
        mid = flow_to_targets(mean_mesh, mid_vertices, flow)
    # The template's medial-wall rule: the repair and the flow leave the medial wall a few
    # hundredths of a mm thick in some subjects, so "> 0" would count it as cortex.
    cortex = model.mean_thickness >= MEDIAL_WALL_THICKNESS_MM
    if atrophy is not None:
        thickness = thickness * atrophy_retained(mean_mesh, model.hemi, atrophy, cortex)
    thickness = np.where(cortex, thickness, 0.0)
    white, pial = surfaces_from_midthickness(mid, thickness, flow=flow)
    if repair:
        white = repair_self_intersections(white)
        pial = repair_self_intersections(pial, reference=white)
    return HemisphereSurfaces.from_white_pial(white, pial, cortex)


#: One row of a new cortex's QC table: a subject's row (:class:`cortexgen.surfaces.qc.SurfaceQC`)
#: keyed by the shape id instead of the subject, without the distances to tissue boundaries
#: (a shape drawn from the model has no tissue maps). Derived from SurfaceQC so that a
#: measure added there (and to :func:`surface_measures`) reaches both tables.
ShapeQC = make_dataclass(
    "ShapeQC",
    [("shape", str)] + [(field.name, field.type) for field in fields(SurfaceQC)
                        if field.name not in ("subject", "flags", *TISSUE_FIELDS)],
    frozen=True,
)


def shape_qc(shape: str, hemi: str, surfaces: HemisphereSurfaces):
    """QC row of one hemisphere of a new cortex (thickness and area over its cortex vertices)."""
    return ShapeQC(shape=shape, hemi=hemi, **surface_measures(
        surfaces.white, surfaces.pial, surfaces.midthickness, surfaces.thickness, surfaces.cortex))
