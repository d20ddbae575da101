"""The cortical shape model on synthetic families of icospheres with known modes and known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cortexgen.shape import (
    apply_atrophy,
    atrophy_region_box,
    atrophy_region_disk,
    compactness,
    distance_to_region,
    fit_shape_model,
    folding_agreement,
    generalisation,
    generalisation_by_training_size,
    geodesic_distance,
    interpolate,
    load_shape_model,
    normal_and_tangential,
    project,
    reconstruct,
    sample_coefficients,
    save_shape_model,
    specificity,
    surfaces_from_midthickness,
)
from cortexgen.surfaces.mesh import Mesh, icosphere

RADIUS_MM = 50.0
THICKNESS_MM = 2.5


@pytest.fixture(scope="module")
def sphere() -> Mesh:
    """162 vertices, 320 faces, radius 50 mm."""
    return icosphere(order=2, radius=RADIUS_MM)


def orthonormal_rows(rng: np.random.Generator, n_rows: int, size: int) -> np.ndarray:
    """(n_rows, size) random orthonormal rows."""
    q, _ = np.linalg.qr(rng.standard_normal((size, n_rows)))
    return q.T


def family(sphere: Mesh, coefficients: np.ndarray, bases: np.ndarray, thickness_bases: np.ndarray | None = None):
    """Mid vertices (N, V, 3) = sphere + Σ_j a_ij basis_j, thickness (N, V) = 2.5 + Σ_j a_ij thickness_basis_j."""
    n_vertices = len(sphere.vertices)
    mids = sphere.vertices[None] + (coefficients @ bases).reshape(len(coefficients), n_vertices, 3)
    thickness = np.full((len(coefficients), n_vertices), THICKNESS_MM)
    if thickness_bases is not None:
        thickness = thickness + coefficients @ thickness_bases
    return mids, thickness


def subject_ids(n: int) -> list[str]:
    return [f"{i:02d}" for i in range(n)]


@pytest.fixture(scope="module")
def random_cohort(sphere):
    """8 full-rank subjects: coordinates and thickness vary, 10 'medial wall' vertices stay at 0 mm."""
    rng = np.random.default_rng(1)
    n, v = 8, len(sphere.vertices)
    mids = sphere.vertices[None] + rng.normal(0.0, 1.5, (n, v, 3))
    thickness = THICKNESS_MM + rng.normal(0.0, 0.3, (n, v))
    thickness[:, :10] = 0.0
    return mids, thickness


# ----------------------------------------------------------------------------- PCA


def test_pca_recovers_a_known_two_mode_family(sphere):
    rng = np.random.default_rng(0)
    n, n_features = 40, 3 * len(sphere.vertices)
    bases = orthonormal_rows(rng, 2, n_features)
    coefficients = rng.standard_normal((n, 2)) * np.array([3.0, 1.0])  # variances 9 and 1 (mm²)
    mids, thickness = family(sphere, coefficients, bases)

    model = fit_shape_model(mids, thickness, sphere.faces, "L", subject_ids(n), variance_threshold=0.95)

    # Thickness never varies: its scale is 1 and it adds nothing; the coordinates share one
    # scale s, so the model's variances are those of the drawn coefficients divided by s².
    coord_scale = model.feature_scale[0]
    assert np.all(model.feature_scale[:n_features] == coord_scale)
    assert np.all(model.feature_scale[n_features:] == 1.0)
    sample_cov = np.cov(coefficients, rowvar=False)
    expected_variances, expected_axes = np.linalg.eigh(sample_cov)
    expected_variances, expected_axes = expected_variances[::-1], expected_axes[:, ::-1]
    assert model.n_modes == 2
    assert compactness(model)[0] < 0.95  # one mode is not enough ...
    np.testing.assert_allclose(compactness(model)[-1], 1.0, atol=1e-9)  # ... two are everything
    np.testing.assert_allclose(model.variances * coord_scale**2, expected_variances, rtol=1e-8)
    np.testing.assert_allclose(model.variances * coord_scale**2, coefficients.var(axis=0, ddof=1), rtol=0.15)
    for mode in range(2):
        component = model.components[mode, :n_features]
        assert abs(component @ bases[mode]) > 0.99
        # Exactly the principal axis of the drawn coefficients, up to sign.
        assert abs(component @ (expected_axes[:, mode] @ bases)) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(2), atol=1e-12)
    assert model.subjects == tuple(subject_ids(n))
    assert model.faces.dtype == np.int32
    with pytest.raises(ValueError, match="read-only"):
        model.mean_mid_vertices[0, 0] = 0.0


@pytest.mark.parametrize("scaling", ["block", "feature"])
def test_training_shapes_are_reconstructed_exactly_from_all_modes(random_cohort, sphere, scaling):
    mids, thickness = random_cohort
    model = fit_shape_model(mids, thickness, sphere.faces, "R", subject_ids(8), variance_threshold=1.0,
                            scaling=scaling)
    assert model.n_modes == 7  # N − 1
    z = project(model, mids, thickness)
    assert z.shape == (8, 7)
    # Standardised coefficients: mean 0 and variance 1 per mode over the training set.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.var(axis=0, ddof=1), 1.0, rtol=1e-9)
    rec_mid, rec_thick = reconstruct(model, z)
    np.testing.assert_allclose(rec_mid, mids, rtol=0, atol=1e-8)
    np.testing.assert_allclose(rec_thick, thickness, rtol=0, atol=1e-8)
    # One subject at a time gives the same.
    single_mid, single_thick = reconstruct(model, project(model, mids[3], thickness[3]))
    np.testing.assert_allclose(single_mid, mids[3], rtol=0, atol=1e-8)
    np.testing.assert_allclose(single_thick, thickness[3], rtol=0, atol=1e-8)
    # z = 0 is the mean shape.
    mean_mid, mean_thick = reconstruct(model, np.zeros(model.n_modes))
    np.testing.assert_allclose(mean_mid, mids.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_thick, thickness.mean(axis=0), rtol=0, atol=1e-12)
    if scaling == "feature":
        # The never-varying medial-wall thickness keeps scale 1 instead of dividing by 0.
        assert np.all(model.feature_scale[3 * 162 : 3 * 162 + 10] == 1.0)


def test_mode_count_follows_threshold_and_caps(random_cohort, sphere):
    mids, thickness = random_cohort
    ids = subject_ids(8)
    full = fit_shape_model(mids, thickness, sphere.faces, "L", ids, variance_threshold=1.0)
    fractions = compactness(full)
    threshold = 0.5 * (fractions[2] + fractions[3])  # between 3 and 4 modes
    assert fit_shape_model(mids, thickness, sphere.faces, "L", ids, variance_threshold=threshold).n_modes == 4
    assert fit_shape_model(mids, thickness, sphere.faces, "L", ids, variance_threshold=fractions[2]).n_modes == 3
    assert fit_shape_model(mids, thickness, sphere.faces, "L", ids, variance_threshold=1.0, max_modes=2).n_modes == 2
    assert np.all(np.diff(full.variances) <= 0)


def test_fit_refuses_bad_input(random_cohort, sphere):
    mids, thickness = random_cohort
    ids = subject_ids(8)
    with pytest.raises(ValueError, match="at least 2"):
        fit_shape_model(mids[:1], thickness[:1], sphere.faces, "L", ids[:1])
    with pytest.raises(ValueError, match="thickness must have shape"):
        fit_shape_model(mids, thickness[:, :-1], sphere.faces, "L", ids)
    with pytest.raises(ValueError, match="subject ids"):
        fit_shape_model(mids, thickness, sphere.faces, "L", ids[:-1])
    bad = mids.copy()
    bad[5, 7, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*'05'"):
        fit_shape_model(bad, thickness, sphere.faces, "L", ids)
    with pytest.raises(ValueError, match="scaling"):
        fit_shape_model(mids, thickness, sphere.faces, "L", ids, scaling="minmax")
    with pytest.raises(ValueError, match="identical"):
        fit_shape_model(np.repeat(mids[:1], 3, axis=0), np.repeat(thickness[:1], 3, axis=0), sphere.faces, "L", ids[:3])


def test_truncated_samples_stay_inside_and_repeat_with_the_seed():
    z = sample_coefficients(2000, 5, np.random.default_rng(7), truncation=1.5)
    assert z.shape == (2000, 5)
    assert np.abs(z).max() <= 1.5
    # Resampled, not clipped: nothing piles up on the edge, and the spread is that of a
    # normal truncated at 1.5 (std 0.7375).
    assert np.sum(np.abs(z) == 1.5) == 0
    assert z.std() == pytest.approx(0.7375, abs=0.02)
    np.testing.assert_array_equal(z, sample_coefficients(2000, 5, 7, truncation=1.5))
    assert not np.array_equal(z, sample_coefficients(2000, 5, 8, truncation=1.5))
    assert sample_coefficients(3, 4, 0).shape == (3, 4)


def test_save_load_round_trip_and_no_pickles(random_cohort, sphere, tmp_path):
    mids, thickness = random_cohort
    model = fit_shape_model(mids, thickness, sphere.faces, "R", subject_ids(8), scaling="feature")
    path = tmp_path / "hemi-R_ssm.npz"
    save_shape_model(model, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    loaded = load_shape_model(path)
    for field in ("mean", "components", "variances", "feature_scale", "faces"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(model, field))
    assert loaded.faces.dtype == np.int32
    assert (loaded.hemi, loaded.subjects, loaded.scaling, loaded.n_vertices, loaded.total_variance) == (
        model.hemi, model.subjects, model.scaling, model.n_vertices, model.total_variance
    )
    with np.load(path, allow_pickle=False) as data:
        assert data["subjects"].dtype.kind == "U" and data["hemi"].dtype.kind == "U"

    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["hemi"] = np.array(["R"], dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_shape_model(evil)


# ----------------------------------------------------------------------------- new shapes


def test_interpolation_endpoints_and_slerp_norm():
    z_a = np.array([2.0, 0.0, 1.0])
    z_b = np.array([-0.5, 1.5, 0.0])
    weights = np.linspace(0.0, 1.0, 5)
    for method in ("linear", "slerp"):
        path = interpolate(z_a, z_b, weights, method=method)
        assert path.shape == (5, 3)
        np.testing.assert_allclose(path[0], z_a, atol=1e-12)
        np.testing.assert_allclose(path[-1], z_b, atol=1e-12)
    slerp = interpolate(z_a, z_b, weights, method="slerp")
    expected_norm = (1 - weights) * np.linalg.norm(z_a) + weights * np.linalg.norm(z_b)
    np.testing.assert_allclose(np.linalg.norm(slerp, axis=1), expected_norm, rtol=1e-12)
    # Equal angular steps along the great circle.
    unit = slerp / np.linalg.norm(slerp, axis=1, keepdims=True)
    angles = np.arccos(np.clip(np.sum(unit[1:] * unit[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(angles, angles[0], rtol=1e-9)
    np.testing.assert_allclose(interpolate(z_a, z_b, [0.25], "linear")[0], 0.75 * z_a + 0.25 * z_b)
    # (Anti)parallel or zero vectors: no unique great circle, linear.
    for z_end in (-2 * z_a, 3 * z_a, np.zeros(3)):
        np.testing.assert_allclose(interpolate(z_a, z_end, weights, "slerp"), interpolate(z_a, z_end, weights, "linear"))
    with pytest.raises(ValueError, match="weights"):
        interpolate(z_a, z_b, [1.5])


def test_geodesic_distance_between_poles_is_half_a_great_circle():
    sphere = icosphere(order=3, radius=RADIUS_MM)
    antipode = int(np.argmin(sphere.vertices @ sphere.vertices[0]))
    distance = geodesic_distance(sphere, 0)
    assert distance[0] == 0.0
    # Edge paths zig-zag: here the best one follows three icosahedron edges (3 × 63.4°
    # of arc instead of 180°), 5.7 % long; never shorter than the great circle.
    assert distance[antipode] == pytest.approx(np.pi * RADIUS_MM, rel=0.06)
    assert distance[antipode] >= 0.999 * np.pi * RADIUS_MM
    # Several sources: the distance to the nearest.
    both = geodesic_distance(sphere, [0, antipode])
    np.testing.assert_allclose(both, np.minimum(distance, geodesic_distance(sphere, antipode)))
    # An edge-path is never shorter than the straight line through the sphere.
    assert np.all(distance >= np.linalg.norm(sphere.vertices - sphere.vertices[0], axis=1) - 1e-9)


def test_atrophy_is_exact_inside_the_disk_and_nothing_outside(sphere):
    rng = np.random.default_rng(3)
    thickness = rng.uniform(1.5, 3.5, len(sphere.vertices))
    region = atrophy_region_disk(sphere, centre_vertex=0, radius_mm=25.0)
    assert 5 < region.sum() < len(region) // 2
    thinned = apply_atrophy(thickness, region, fraction=0.3)
    np.testing.assert_allclose(thinned[region], 0.7 * thickness[region], rtol=1e-15)
    np.testing.assert_array_equal(thinned[~region], thickness[~region])

    # A taper thins the rim a little less, and stops at taper_mm.
    distance = distance_to_region(sphere, region)
    tapered = apply_atrophy(thickness, region, 0.3, taper_mm=15.0, distance=distance)
    rim = ~region & (distance < 15.0)
    assert rim.any()
    np.testing.assert_allclose(tapered[region], thinned[region])
    np.testing.assert_allclose(tapered[rim], thickness[rim] * (1 - 0.3 * (1 - distance[rim] / 15.0)))
    np.testing.assert_array_equal(tapered[distance >= 15.0], thickness[distance >= 15.0])
    with pytest.raises(ValueError, match="fraction"):
        apply_atrophy(thickness, region, 1.0)
    with pytest.raises(ValueError, match="distance"):
        apply_atrophy(thickness, region, 0.3, taper_mm=5.0)


def test_box_region_is_the_vertices_inside_the_box(sphere):
    region = atrophy_region_box(sphere, (-100, -100, 30.0), (100, 100, 100))
    np.testing.assert_array_equal(region, sphere.vertices[:, 2] >= 30.0)


def test_white_and_pial_are_a_thickness_apart(sphere):
    thickness = np.linspace(0.0, 4.0, len(sphere.vertices))
    white, pial = surfaces_from_midthickness(sphere, thickness)
    np.testing.assert_allclose(np.linalg.norm(pial.vertices - white.vertices, axis=1), thickness, atol=1e-12)
    np.testing.assert_allclose(0.5 * (white.vertices + pial.vertices), sphere.vertices, atol=1e-12)
    # On a sphere the normals are ~radial: pial outside, white inside by half the thickness.
    np.testing.assert_allclose(np.linalg.norm(pial.vertices, axis=1), RADIUS_MM + thickness / 2, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(white.vertices, axis=1), RADIUS_MM - thickness / 2, atol=1e-3)
    np.testing.assert_array_equal(pial.faces, sphere.faces)


# ----------------------------------------------------------------------------- quality


def test_a_displacement_splits_into_its_normal_and_tangential_parts_on_a_sphere(sphere):
    normals = sphere.vertices / RADIUS_MM
    tangents = np.cross(normals, [0.0, 0.0, 1.0]) + np.cross(normals, [1.0, 0.0, 0.0])
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    along, across = normal_and_tangential(-0.3 * normals + 0.4 * tangents, sphere.vertices, sphere.faces)
    # icosphere vertex normals are radial up to the faces' discretisation
    np.testing.assert_allclose(along, 0.3, atol=0.02)
    np.testing.assert_allclose(across, 0.4, atol=0.02)


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def test_generalisation_error_lies_along_the_normal_for_shape_change_and_across_it_for_sliding(sphere):
    """Subjects that differ by bumps along the normals leave a leave-one-out residual along them;
    subjects that are one sphere rotated (every vertex slides, the surface stays) leave it across."""
    rng = np.random.default_rng(7)
    n, v = 8, len(sphere.vertices)
    normals = sphere.vertices / RADIUS_MM
    fields = np.stack([normals[:, 2], normals[:, 0] * normals[:, 1], normals[:, 0] ** 2 - normals[:, 2] ** 2])
    bumps = (fields[:, :, None] * normals[None]).reshape(3, 3 * v)
    mids, thickness = family(sphere, rng.standard_normal((n, 3)) * 1.5, bumps)
    bumped = generalisation(mids, thickness, sphere.faces, modes=[1])
    assert bumped["vertex_error_mm_mean"][0] > 0.2
    assert bumped["tangential_error_mm_mean"][0] < 0.1 * bumped["normal_error_mm_mean"][0]

    angles = rng.standard_normal((n, 2)) * 0.02  # about 1 mm of sliding at 50 mm
    mids = np.stack([sphere.vertices @ (_rotation(2, a) @ _rotation(0, b)).T for a, b in angles])
    rotated = generalisation(mids, np.full((n, v), THICKNESS_MM), sphere.faces, modes=[1])
    assert rotated["vertex_error_mm_mean"][0] > 0.2
    assert rotated["normal_error_mm_mean"][0] < 0.1 * rotated["tangential_error_mm_mean"][0]
    for result in (bumped, rotated):
        assert result["mean_shape_error_mm_mean"] > result["vertex_error_mm_mean"][0]


def test_generalisation_falls_to_zero_at_the_true_rank_and_specificity_is_finite(sphere):
    rng = np.random.default_rng(5)
    n, v = 10, len(sphere.vertices)
    bases = orthonormal_rows(rng, 3, 4 * v) * 30.0  # position and thickness modes of ~mm size
    coefficients = rng.standard_normal((n, 3)) * np.array([3.0, 2.0, 1.0])
    mids, thickness = family(sphere, coefficients, bases[:, : 3 * v], 0.1 * bases[:, 3 * v :])
    assert thickness.min() > 0

    result = generalisation(mids, thickness, sphere.faces, modes=[1, 2, 3, 4, 5])
    json.dumps(result)
    errors = np.array(result["vertex_error_mm_mean"])
    assert result["modes"] == [1, 2, 3, 4, 5] and result["n_subjects"] == n
    assert np.all(np.diff(errors) <= 1e-12)
    assert errors[0] > 0.1
    assert errors[2] < 1e-8 and result["thickness_mae_mm_mean"][2] < 1e-8

    model = fit_shape_model(mids, thickness, sphere.faces, "L", subject_ids(n), variance_threshold=1.0)
    assert model.n_modes == 3
    spec = specificity(model, mids, n_samples=20, rng=0, modes=[1, 3])
    json.dumps(spec)
    assert all(np.isfinite(spec["distance_mm_mean"])) and min(spec["distance_mm_mean"]) > 0
    assert spec == specificity(model, mids, n_samples=20, rng=0, modes=[1, 3])


def test_error_by_training_size_vanishes_once_the_training_set_spans_the_family(sphere, random_cohort):
    """A rank-3 family: 3 training subjects span 2 modes and leave an error, 4 or more span all 3
    (almost surely) and reconstruct a held-out subject exactly; the mean shape alone does not."""
    rng = np.random.default_rng(11)
    n, v = 9, len(sphere.vertices)
    bases = orthonormal_rows(rng, 3, 4 * v) * 30.0
    mids, thickness = family(sphere, rng.standard_normal((n, 3)) * np.array([3.0, 2.0, 1.0]),
                             bases[:, : 3 * v], 0.1 * bases[:, 3 * v :])
    result = generalisation_by_training_size(mids, thickness, sphere.faces, sizes=[2, 3, 4, 8], draws=3, seed=1)
    json.dumps(result)
    errors = result["vertex_error_mm_mean"]
    assert result["training_subjects"] == [2, 3, 4, 8] and result["n_subjects"] == n and result["draws"] == 3
    assert errors[0] > errors[1] > 0.1
    assert errors[2] < 1e-8 and errors[3] < 1e-8
    assert all(base > 0.1 for base in result["mean_shape_error_mm_mean"])
    assert result == generalisation_by_training_size(mids, thickness, sphere.faces, sizes=[2, 3, 4, 8], draws=3,
                                                     seed=1)
    # With every other subject, the curve's point is the leave-one-out error of all modes.
    mids, thickness = random_cohort
    full = generalisation(mids, thickness, sphere.faces, modes=[len(mids) - 2])
    curve = generalisation_by_training_size(mids, thickness, sphere.faces, sizes=[len(mids) - 1])
    assert full["vertex_error_mm_mean"][0] > 0.1
    assert np.isclose(curve["vertex_error_mm_mean"][0], full["vertex_error_mm_mean"][0], rtol=1e-9, atol=0)
    for bad in ([1], [len(mids)], []):
        with pytest.raises(ValueError, match="training sizes"):
            generalisation_by_training_size(mids, thickness, sphere.faces, sizes=bad)


# ----------------------------------------------------------------------------- figures


def test_figures_have_one_panel_per_shape_and_view(random_cohort, sphere):
    from cortexgen.plotting import coarsen
    from cortexgen.shape.figures import mode_figure, thickness_figure

    mids, thickness = random_cohort
    model = fit_shape_model(mids, thickness, sphere.faces, "L", subject_ids(8))
    for colour_by in ("thickness", "displacement"):
        fig = mode_figure(model, n_modes=2, sd=2.0, colour_by=colour_by)
        assert len(fig.axes) == 2 * 3 + 1  # (−2 SD, mean, +2 SD) per mode, one colour bar
        fig.canvas.draw()
    from cortexgen.shape.figures import quality_figure

    quality = {"compactness": list(compactness(model)),
               "correspondence": folding_agreement(mids[:3], sphere.faces)}
    fig = quality_figure(quality, "hemi-L")
    assert f"curvature r {quality['correspondence']['curvature_r_mean']:.2f}" in fig._suptitle.get_text()
    assert "curvature" not in quality_figure({"compactness": quality["compactness"]}, "t")._suptitle.get_text()
    fig = thickness_figure([(sphere, thickness[0]), (sphere, thickness[1])], ["a", "b"], hemi="L")
    assert len(fig.axes) == 2 * 2 + 1
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a (lateral)", "a (medial)"]

    # Drawing undoes subdivisions (same surface, a quarter of the faces) and nothing else.
    fine = icosphere(order=3)
    values = np.arange(len(fine.vertices), dtype=float)
    coarse, coarse_values = coarsen(fine, values, max_faces=400)
    np.testing.assert_array_equal(coarse.faces, icosphere(order=2).faces)
    np.testing.assert_array_equal(coarse.vertices, fine.vertices[:162])
    np.testing.assert_array_equal(coarse_values, values[:162])
    shuffled = Mesh(fine.vertices, fine.faces[::-1])
    assert len(coarsen(shuffled, values, max_faces=400)[0].faces) == len(fine.faces)


def _folded_sphere(sphere_vertices: np.ndarray, amplitude_mm: float) -> np.ndarray:
    """Points of a sphere folded along longitude (8 gyri round the equator), sampled at the given
    sphere points: the folds stay where they are in space whatever points sample them."""
    unit = sphere_vertices / np.linalg.norm(sphere_vertices, axis=1, keepdims=True)
    longitude = np.arctan2(unit[:, 1], unit[:, 0])
    return unit * (RADIUS_MM + amplitude_mm * np.cos(8 * longitude) * (1 - unit[:, 2] ** 2))[:, None]


def test_folding_agreement_is_high_when_folds_share_vertices_and_low_when_vertices_slid():
    """Subjects folded alike at the same vertices agree; the same folded surface sampled at
    vertices rotated by half a fold (a correspondence slid along the surface) does not."""
    sphere = icosphere(order=4, radius=RADIUS_MM)
    rng = np.random.default_rng(3)
    amplitudes = 3.0 + rng.uniform(-1.0, 1.0, 6)
    aligned = np.stack([_folded_sphere(sphere.vertices, a) for a in amplitudes])
    agree = folding_agreement(aligned, sphere.faces)
    assert agree["n_subjects"] == 6 and agree["curvature_r_min"] > 0.9

    half_fold = np.pi / 8  # the folds repeat every 2 pi / 8 of longitude
    slid = np.stack([_folded_sphere(sphere.vertices @ _rotation(2, half_fold * (i % 2)).T, a)
                     for i, a in enumerate(amplitudes)])
    disagree = folding_agreement(slid, sphere.faces)
    assert disagree["curvature_r_mean"] < 0.2


def test_folding_agreement_counts_only_cortex_vertices_and_refuses_bad_input(sphere):
    mids = np.stack([sphere.vertices * s for s in (1.0, 1.01, 0.99)])
    cortex = np.zeros(len(sphere.vertices), dtype=bool)
    cortex[:40] = True
    assert folding_agreement(mids, sphere.faces, cortex)["n_subjects"] == 3
    with pytest.raises(ValueError, match="N >= 2"):
        folding_agreement(mids[:1], sphere.faces)
    with pytest.raises(ValueError, match="cortex"):
        folding_agreement(mids, sphere.faces, np.zeros(len(sphere.vertices), dtype=bool))
