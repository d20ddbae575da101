"""New cortices from a shape model: coefficients per kind of shape, and their surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from cortexgen.shape.generate import distance_to_region
from cortexgen.shape.model import fit_shape_model, project
from cortexgen.shape.synthesis import (
    atrophy_retained,
    shape_coefficients,
    shape_qc,
    synthesize_hemisphere,
    thin_hemisphere,
)
from cortexgen.surfaces.extract import HemisphereSurfaces
from cortexgen.surfaces.mesh import icosphere

RADIUS = 40.0


@pytest.fixture(scope="module")
def family():
    """Spheres of radius 40 mm ± a seeded scale, thickness 2.5 mm ± a seeded offset, 8 subjects."""
    sphere = icosphere(3, radius=RADIUS)
    rng = np.random.default_rng(0)
    scales = 1.0 + 0.05 * rng.standard_normal(8)
    thick = 2.5 + 0.2 * rng.standard_normal(8)
    mid = np.stack([sphere.vertices * s for s in scales])
    thickness = np.repeat(thick[:, None], len(sphere.vertices), axis=1)
    model = fit_shape_model(mid, thickness, sphere.faces, "L", [f"sub-{i}" for i in range(8)])
    return model, mid, thickness


def test_sample_is_seeded_per_index(family):
    model, _, _ = family
    spec = {"kind": "sample", "index": 3, "seed": 7, "truncation": 2.0}
    z = shape_coefficients(model, spec)
    assert z.shape == (model.n_modes,) and np.all(np.abs(z) <= 2.0)
    assert np.array_equal(z, shape_coefficients(model, spec))
    assert not np.array_equal(z, shape_coefficients(model, {**spec, "index": 4}))


def test_interpolation_ends_and_midpoint(family):
    model, mid, thickness = family
    endpoints = {"sub-0": (mid[0], thickness[0]), "sub-1": (mid[1], thickness[1])}
    spec = {"kind": "interpolation", "from": "sub-0", "to": "sub-1", "method": "linear"}
    z0 = project(model, mid[0], thickness[0])
    assert np.allclose(shape_coefficients(model, {**spec, "weight": 0.0}, endpoints), z0)
    half = shape_coefficients(model, {**spec, "weight": 0.5}, endpoints)
    assert np.allclose(half, 0.5 * (z0 + project(model, mid[1], thickness[1])))
    with pytest.raises(ValueError, match="needs both"):
        shape_coefficients(model, {**spec, "weight": 0.5}, None)


def test_atrophy_thins_the_region_by_the_fraction_and_nothing_else(family):
    model, _, _ = family
    atrophy = {"region": {"type": "box", "low_mm": [-100, -100, 20], "high_mm": [100, 100, 100]}, "fraction": 0.3,
               "taper_mm": 0.0}
    z = shape_coefficients(model, {"kind": "atrophy", **atrophy})
    assert np.array_equal(z, np.zeros(model.n_modes))
    # Straight offsets realise the thickness exactly.
    base = synthesize_hemisphere(model, z, flow=None)
    thinned = synthesize_hemisphere(model, z, atrophy, flow=None)
    inside = model.mean_mid_vertices[:, 2] >= 20
    assert 0 < inside.sum() < len(inside)
    assert np.allclose(thinned.thickness[inside], 0.7 * base.thickness[inside], atol=1e-9)
    assert np.allclose(thinned.thickness[~inside], base.thickness[~inside], atol=1e-9)
    assert np.allclose(base.thickness, model.mean_thickness, atol=1e-9)
    # The (default) flow smooths the step at the region's edge over about its sigma (3 mm).
    flowed = synthesize_hemisphere(model, z, atrophy)
    away = np.abs(model.mean_mid_vertices[:, 2] - 20) > 9
    assert np.allclose(flowed.thickness[inside & away], 0.7 * base.thickness[inside & away], rtol=0.01)
    assert np.allclose(flowed.thickness[~inside & away], base.thickness[~inside & away], rtol=0.01)
    # A disk in the other hemisphere leaves this one untouched.
    other = {"region": {"type": "disk", "hemi": "R", "centre_vertex": 0, "radius_mm": 30.0}, "fraction": 0.5}
    assert np.allclose(synthesize_hemisphere(model, z, other, flow=None).thickness, base.thickness)


def test_surfaces_are_valid_and_straddle_the_midthickness(family):
    model, _, _ = family
    shape = synthesize_hemisphere(model, shape_coefficients(model, {"kind": "sample", "index": 1, "seed": 0}))
    row = shape_qc("sample0001", "L", shape)
    assert row.euler_characteristic_white == row.euler_characteristic_pial == 2
    assert row.self_intersections_white == row.self_intersections_pial == 0
    radius_white = np.linalg.norm(shape.white.vertices, axis=1)
    radius_pial = np.linalg.norm(shape.pial.vertices, axis=1)
    assert np.allclose(radius_pial - radius_white, shape.thickness, atol=0.05)
    assert 2.0 < row.thickness_mean_mm < 3.0
    # Area of the midthickness sphere, within the icosphere's faceting error.
    mid_radius = np.linalg.norm(shape.midthickness.vertices, axis=1).mean()
    assert row.area_mm2 == pytest.approx(4 * np.pi * mid_radius**2, rel=0.02)


def test_mean_shape_is_the_unthinned_twin_of_an_atrophy(family):
    model, _, _ = family
    atrophy = {"region": {"type": "box", "low_mm": [-100, -100, 20], "high_mm": [100, 100, 100]}, "fraction": 0.3}
    z = shape_coefficients(model, {"kind": "mean"})
    assert np.array_equal(z, shape_coefficients(model, {"kind": "atrophy", **atrophy}))
    twin = synthesize_hemisphere(model, z, flow=None)
    thinned = synthesize_hemisphere(model, z, atrophy, flow=None)
    outside = model.mean_mid_vertices[:, 2] < 20
    assert np.array_equal(twin.white.vertices[outside], thinned.white.vertices[outside])


def test_held_out_atrophy_thins_only_inside_the_region():
    """A subject's own surfaces (a sphere 40 mm out, 2.5 mm thick, thinner on one side) thinned
    by 30 % in the cap z ≥ 20 mm, with a 5 mm taper: thickness × 0.7 inside, × 1 beyond the
    taper with every vertex where it was, the midthickness unchanged."""
    sphere = icosphere(4, radius=RADIUS)
    unit = sphere.vertices / RADIUS
    thickness = 2.5 - 0.5 * unit[:, 0]
    white = sphere.with_vertices(sphere.vertices - 0.5 * thickness[:, None] * unit)
    pial = sphere.with_vertices(sphere.vertices + 0.5 * thickness[:, None] * unit)
    cortex = unit[:, 1] > -0.9  # a medial wall around the -y pole
    own = HemisphereSurfaces.from_white_pial(white, pial, cortex)
    atrophy = {"region": {"type": "box", "low_mm": [-100, -100, 20], "high_mm": [100, 100, 100]}, "fraction": 0.3,
               "taper_mm": 5.0}
    thinned = thin_hemisphere(own, "L", atrophy)
    ratio = thinned.thickness / own.thickness
    inside = (own.midthickness.vertices[:, 2] >= 20) & cortex
    distance = distance_to_region(own.midthickness, inside)
    away = distance > 5.0
    assert inside.sum() > 100 and away.sum() > 1000
    assert np.allclose(ratio[inside], 0.7, atol=1e-9)
    assert np.array_equal(ratio[away], np.ones(away.sum()))
    assert np.array_equal(thinned.white.vertices[away], own.white.vertices[away])
    assert np.array_equal(thinned.pial.vertices[away], own.pial.vertices[away])
    # The taper: between the two, falling linearly with the distance to the region.
    taper = ~inside & ~away
    assert np.allclose(ratio[taper], 1 - 0.3 * (1 - distance[taper] / 5.0), atol=1e-9)
    assert np.allclose(thinned.midthickness.vertices, own.midthickness.vertices, atol=1e-12)
    assert np.allclose(atrophy_retained(own.midthickness, "L", atrophy, cortex), ratio, atol=1e-9)
    # No thinning (another hemisphere's disk): the subject's own surfaces, bit for bit.
    elsewhere = thin_hemisphere(own, "L", {"region": {"type": "disk", "hemi": "R", "centre_vertex": 0,
                                                      "radius_mm": 30.0}, "fraction": 0.3, "taper_mm": 5.0})
    assert np.array_equal(elsewhere.white.vertices, own.white.vertices)
    assert np.array_equal(elsewhere.pial.vertices, own.pial.vertices)
