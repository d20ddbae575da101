"""Cortical cycle consistency: surface distances, thickness correlation and Dice with known answers,
the synthetic image's tissue on a phantom, and one whole cycle on a star-shaped "hemisphere"."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cortexgen.evaluate.cycle import (
    SURFACE_METRICS,
    VOLUME_METRICS,
    CycleSettings,
    SegmentSettings,
    assd,
    brain_mask_from_image,
    condition_tissue,
    cycle_consistency,
    dice,
    hd95,
    load_conditioning,
    point_to_surface_distances,
    surface_distances,
    synthetic_tissue,
    thickness_correlation,
)
from cortexgen.surfaces.fit import FitSettings
from cortexgen.surfaces.mesh import Mesh, icosphere, save_shape, save_surface
from cortexgen.surfaces.sdf import grid_points
from cortexgen.surfaces.template import HemisphereMeshes, SurfaceTemplate
from cortexgen.surfaces.warp import WarpSettings

#: Intensities of the phantom images (a normalised T1w: CSF dark, GM mid, WM bright, background 0).
CSF_I, GM_I, WM_I = 0.3, 0.6, 0.95


def plane(size_mm: float = 40.0, spacing_mm: float = 1.0) -> Mesh:
    """A flat square in z = 0, triangulated on a regular grid (normal +z)."""
    n = round(size_mm / spacing_mm) + 1
    x, y = np.meshgrid(np.arange(n) * spacing_mm, np.arange(n) * spacing_mm, indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    return Mesh(vertices, faces)


# ----------------------------------------------------------------------------- surface distances


def test_distances_of_a_mesh_to_itself_are_zero():
    sphere = icosphere(3, 20.0)
    assert assd(sphere, sphere) == pytest.approx(0.0, abs=1e-9)
    assert hd95(sphere, sphere) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("d", [0.5, 2.0, 7.25])
def test_a_plane_shifted_along_its_normal_is_d_away(d):
    a = plane()
    b = a.with_vertices(a.vertices + [0.0, 0.0, d])
    a_to_b, b_to_a = surface_distances(a, b)
    assert a_to_b.shape == (len(a.vertices),) and b_to_a.shape == (len(b.vertices),)
    np.testing.assert_allclose(a_to_b, d, atol=1e-6)
    assert assd(a, b) == pytest.approx(d, abs=1e-6)
    assert hd95(a, b) == pytest.approx(d, abs=1e-6)


def test_concentric_spheres_are_delta_apart_within_the_tessellation_error():
    r, delta = 20.0, 1.5
    small, large = icosphere(4, r), icosphere(4, r + delta)
    # Point-to-triangle, the tessellation only ever shortens a distance: the large mesh's
    # flat triangles sag up to r(1 - cos θ) ≈ 0.1 % of the radius (0.02 mm at 21.5 mm for
    # the order-4 icosphere, θ ≈ 0.045) inside its sphere, towards the small sphere's
    # vertices; the small mesh lies inside its own sphere, touching it only at its vertices,
    # so the large sphere's vertices are exactly delta from it (at the vertex in the same
    # direction). Measured: small→large 1.4983-1.4986 mm, large→small 1.5 mm, ASSD 1.4993 mm.
    a_to_b, b_to_a = surface_distances(small, large)
    assert np.all(a_to_b > delta - 0.02) and np.all(a_to_b <= delta + 1e-9)
    np.testing.assert_allclose(b_to_a, delta, atol=1e-9)
    assert assd(small, large) == pytest.approx(delta, abs=0.02)
    assert hd95(small, large) == pytest.approx(delta, abs=1e-9)


def test_distance_is_to_the_triangle_not_to_its_vertices():
    big = Mesh(np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 30.0, 0.0]]), np.array([[0, 1, 2]]))
    inside = np.array([[10.0, 10.0, 2.5], [5.0, 20.0, -1.0]])  # above and below the face
    np.testing.assert_allclose(point_to_surface_distances(inside, big), [2.5, 1.0], atol=1e-12)
    # Beyond the hypotenuse the nearest point is on that edge, not on a corner.
    outside = np.array([[20.0, 20.0, 0.0]])
    np.testing.assert_allclose(point_to_surface_distances(outside, big), [10.0 / np.sqrt(2.0)], atol=1e-12)


def test_masks_choose_where_distances_are_measured_from():
    a = plane()
    b = a.with_vertices(a.vertices + [0.0, 0.0, 1.0])
    # Raise a corner of b far away and leave its vertices out: the mask hides them, while
    # a's vertices still measure to b's whole surface (the raised triangles included).
    vertices = b.vertices.copy()
    far = (vertices[:, 0] > 30) & (vertices[:, 1] > 30)
    vertices[far, 2] = 50.0
    b = b.with_vertices(vertices)
    mask_a = ~((a.vertices[:, 0] > 29) & (a.vertices[:, 1] > 29))  # a's vertices under the slope
    assert assd(a, b, mask_a, ~far) == pytest.approx(1.0, abs=1e-6)
    assert hd95(a, b, mask_a, ~far) == pytest.approx(1.0, abs=1e-6)
    assert assd(a, b) > 2.0
    with pytest.raises(ValueError, match="vertex mask"):
        assd(a, b, mask_a[:-1])


# ----------------------------------------------------------------------------- thickness, Dice


def test_thickness_correlation():
    rng = np.random.default_rng(0)
    n = 20000
    thickness = rng.uniform(1.5, 4.0, n)
    cortex = rng.random(n) > 0.1
    assert thickness_correlation(thickness, thickness, cortex) == pytest.approx(1.0, abs=1e-12)
    assert thickness_correlation(thickness, 0.8 * thickness + 0.3, cortex) == pytest.approx(1.0, abs=1e-12)
    assert thickness_correlation(thickness, -thickness, cortex) == pytest.approx(-1.0, abs=1e-12)
    # Independent maps: r ~ N(0, 1/sqrt(n) = 0.007); measured -0.004.
    assert abs(thickness_correlation(thickness, rng.uniform(1.5, 4.0, n), cortex)) < 0.03
    noisy = thickness + rng.normal(0, 0.5, n)
    r = thickness_correlation(thickness, noisy, cortex)
    assert 0.7 < r < 0.9  # measured 0.82 (signal sd 0.72 mm, noise 0.5 mm)
    # Garbage on the medial wall changes nothing.
    garbage = noisy.copy()
    garbage[~cortex] = rng.normal(0, 1e3, (~cortex).sum())
    assert thickness_correlation(thickness, garbage, cortex) == r
    assert thickness_correlation(thickness, garbage) < 0.1  # ...but it would, unmasked
    assert np.isnan(thickness_correlation(np.full(n, 2.5), thickness, cortex))  # constant: undefined


def test_dice():
    a = np.zeros((10, 10, 10), dtype=bool)
    a[:5] = True
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    b = np.zeros_like(a)
    b[2:7] = True  # overlaps 3 of a's 5 slabs
    assert dice(a, b) == pytest.approx(2 * 3 / (5 + 5))
    c = np.zeros_like(a)
    c[:, :5] = True  # half of a
    assert dice(a, c) == pytest.approx(0.5)
    assert dice(np.zeros(5, bool), np.zeros(5, bool)) == 1.0  # both empty: agreement


def test_condition_tissue_follows_the_sdf_sign_convention():
    from cortexgen.surfaces.sdf import ConditionVolumes

    pial = np.array([-3.0, -1.0, -0.5, 0.5, 2.0])
    white = np.array([-1.0, 0.0, 1.0, 2.0, 4.0])
    gm, wm = condition_tissue(ConditionVolumes(pial_sdf=pial, white_sdf=white, ribbon=None))
    np.testing.assert_array_equal(wm, [True, False, False, False, False])
    np.testing.assert_array_equal(gm, [False, True, True, False, False])


# ----------------------------------------------------------------------------- synthetic tissue


def ball_fractions(points: np.ndarray, centre, radii) -> list[np.ndarray]:
    """Inside-fractions of concentric balls at points (..., S, 3): the mean over the S sub-samples."""
    r = np.linalg.norm(points - np.asarray(centre), axis=-1)
    return [(r < radius).mean(axis=-1) for radius in radii]


def supersampled_points(shape, affine, n=4) -> np.ndarray:
    """World points (I*J*K, n³, 3) spread evenly over each voxel."""
    offsets = (np.arange(n) + 0.5) / n - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    centres = grid_points(shape, affine)
    return centres[:, None, :] + (sub @ affine[:3, :3].T)[None]


# The image's voxel size, and how far the volumes inside the 0.5 levels (WM >= 0.5, and
# GM+WM >= 0.5 less that: the tissue the surfaces are fitted to) may stray from the truth.
# Measured with noise 0.02: at 1 mm, WM -0.9 %, GM -1.7 %. At 2 mm, WM -21 %, GM +24 %:
# AMAP puts the GM/WM boundary of the 2 mm image, resampled to 1 mm, ~1.1 mm deeper (the
# WM ball's radius 12.9 mm for 14), while the pial boundary stays within 0.2 mm (18.15
# for 18). The summed fractions stray more (GM +20 % at 1 mm, +31 % at 2 mm): AMAP
# leaves ~4 % GM in pure WM and 10-20 % in the CSF, which no 0.5 level sees.
@pytest.mark.parametrize("voxel_mm, origin, size, tolerance", [(1.0, -30.0, 61, 0.05), (2.0, -29.0, 30, 0.3)])
def test_synthetic_tissue_of_a_ball_phantom(voxel_mm, origin, size, tolerance):
    centre = np.array([0.7, -0.4, 0.3])
    wm_r, pial_r, csf_r = 14.0, 18.0, 22.0
    coarse = np.diag([voxel_mm] * 3 + [1.0])
    coarse[:3, 3] = origin
    coarse_shape = (size,) * 3
    wm, gm_wm, brain = ball_fractions(supersampled_points(coarse_shape, coarse), centre, (wm_r, pial_r, csf_r))
    values = CSF_I * (brain - gm_wm) + GM_I * (gm_wm - wm) + WM_I * wm
    # Some noise is needed: AMAP cannot fit class variances to a noise-free piecewise-constant image.
    values = values.reshape(coarse_shape) + np.random.default_rng(1).normal(0, 0.02, coarse_shape)
    image = nib.Nifti1Image(np.clip(values, 0, 1).astype(np.float32), coarse)

    fine = np.eye(4)
    fine[:3, 3] = -30.0
    fine_shape = (61, 61, 61)
    tissue, affine = synthetic_tissue(image, fine, fine_shape, CycleSettings(segment=SegmentSettings(iterations=20)))
    np.testing.assert_array_equal(affine, fine)
    assert tissue.wm.shape == fine_shape
    wm_volume = (tissue.wm >= 0.5).sum()
    gm_volume = ((tissue.gm_wm >= 0.5) & (tissue.wm < 0.5)).sum()
    assert wm_volume == pytest.approx(4 / 3 * np.pi * wm_r**3, rel=tolerance)
    assert gm_volume == pytest.approx(4 / 3 * np.pi * (pial_r**3 - wm_r**3), rel=tolerance)
    # The brain mask comes from the image: all of the CSF ball, none of the background.
    radius = np.linalg.norm(grid_points(fine_shape, fine) - centre, axis=1).reshape(fine_shape)
    in_brain = tissue.label > 0
    assert in_brain[radius < csf_r - 1.5].all()
    assert not in_brain[radius > csf_r + 2.0].any()
    assert tissue.csf[(radius > pial_r + 1.5) & (radius < csf_r - 1.5)].mean() > 0.8


def test_brain_mask_keeps_the_largest_component_and_fills_its_holes():
    volume = np.zeros((40, 40, 40), dtype=np.float32)
    volume[5:30, 5:30, 5:30] = 0.6
    volume[14:20, 14:20, 14:20] = 0.0  # a dark "ventricle" inside
    volume[35:38, 35:38, 35:38] = 0.9  # a bright speck in the background
    mask = brain_mask_from_image(volume, np.ones(3))
    assert mask[14:20, 14:20, 14:20].all()
    assert not mask[33:, 33:, 33:].any()
    assert not brain_mask_from_image(np.zeros((8, 8, 8)), np.ones(3)).any()


# ----------------------------------------------------------------------------- the whole cycle


class StarShell:
    """A closed "hemisphere" whose surfaces are star-shaped about ``centre``: in direction d
    (unit), white at radius ``white(d)`` and pial at ``white(d) + thickness(d)``.

    Its tissue is analytic at any point, so images and labels of it are exact at any
    resolution (partial volumes by sub-sampling), and its meshes are an icosphere's
    directions scaled to those radii (so vertex i lies in direction i on every shell).
    """

    def __init__(self, centre, base_mm, bumps, thickness):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.base_mm = base_mm
        self.bumps = [(np.asarray(axis, float) / np.linalg.norm(axis), height, width) for axis, height, width in bumps]
        self.thickness = thickness

    def white_radius(self, d: np.ndarray) -> np.ndarray:
        radius = np.full(d.shape[:-1], self.base_mm)
        for axis, height, width in self.bumps:
            radius += height * np.exp(-(1 - d @ axis) / (width**2 / 2))
        return radius

    def radii(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance from the centre, white radius and pial radius in each point's direction."""
        offset = points - self.centre
        r = np.linalg.norm(offset, axis=-1)
        d = offset / np.maximum(r, 1e-9)[..., None]
        white = self.white_radius(d)
        return r, white, white + self.thickness(d)

    def meshes(self, order: int = 4) -> HemisphereMeshes:
        sphere = icosphere(order)
        d = sphere.vertices
        white = self.white_radius(d)
        pial = white + self.thickness(d)
        return HemisphereMeshes(
            white=Mesh(self.centre + d * white[:, None], sphere.faces),
            pial=Mesh(self.centre + d * pial[:, None], sphere.faces),
            cortex=np.ones(len(d), dtype=bool),
        )

    def label(self, shape, affine, csf_mm: float) -> np.ndarray:
        """Hard tissue label at the voxel centres: 3 WM, 2 GM, 1 CSF (a ``csf_mm`` shell), 0 beyond."""
        r, white, pial = self.radii(grid_points(shape, affine))
        label = np.select([r < white, r < pial, r < pial + csf_mm], [3.0, 2.0, 1.0], 0.0)
        return label.reshape(shape).astype(np.float32)

    def image(self, shape, affine, csf_mm: float, noise: float, seed: int = 0) -> nib.Nifti1Image:
        """A T1w-like image with exact partial volumes and a little Gaussian noise."""
        r, white, pial = self.radii(supersampled_points(shape, affine))
        wm, gm_wm, brain = (r < white).mean(-1), (r < pial).mean(-1), (r < pial + csf_mm).mean(-1)
        values = CSF_I * (brain - gm_wm) + GM_I * (gm_wm - wm) + WM_I * wm
        values = values.reshape(shape) + np.random.default_rng(seed).normal(0.0, noise, shape)
        return nib.Nifti1Image(np.clip(values, 0.0, 1.0).astype(np.float32), affine)


#: The template: bumps of three sizes, a constant 2.5 mm cortex.
TEMPLATE_SHELL_BUMPS = [((1, 0, 0), 3.0, 0.5), ((0, 1, 0.3), 2.0, 0.35), ((-0.4, -0.2, 1), 2.5, 0.6)]
TEMPLATE_SHELL = StarShell((0.0, 0.0, 0.0), 18.0, TEMPLATE_SHELL_BUMPS, lambda d: np.full(d.shape[:-1], 2.5))
#: The subject: moved, smaller, bumps moved and resized, cortex 2-3.5 mm thick (thickest at +x+z).
SUBJECT_SHELL = StarShell((1.5, -1.0, 0.5), 17.0, [((1, 0.2, 0), 3.5, 0.55), ((0, 1, 0.1), 1.5, 0.4),
                                                   ((-0.3, -0.3, 1), 3.0, 0.5)],
                          lambda d: 2.75 + 0.75 * (d @ (np.array([0.6, 0.0, 0.8]))))


def test_cycle_consistency_recovers_the_conditioning_surfaces_of_a_phantom():
    """The surface stage run on a 2 mm image of a known shell finds that shell again.

    The template is one star-shaped shell, the "subject" another (moved, resized, other
    bumps, a 2-3.5 mm cortex); its image is drawn at 2 mm like a generator's, and the
    cycle runs the template → subject registration, AMAP and the fit on a 1 mm grid.
    """
    grid = np.eye(4)
    grid[:3, 3] = -35.0
    shape = (71, 71, 71)
    template_label = TEMPLATE_SHELL.label(shape, grid, csf_mm=4.0)
    template = SurfaceTemplate(
        hemispheres={"L": TEMPLATE_SHELL.meshes()},
        label=nib.Nifti1Image(template_label, grid),
        mask=nib.Nifti1Image((template_label > 0).astype(np.uint8), grid),
    )
    image_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image_affine[:3, 3] = -35.0
    image = SUBJECT_SHELL.image((36, 36, 36), image_affine, csf_mm=4.0, noise=0.02)
    asked = SUBJECT_SHELL.meshes()
    # A coarser, shorter SyN than the workflow's keeps the test fast; this shell needs no more.
    # The phantom has no cerebellum or brainstem to partition away.
    settings = CycleSettings(partition=None, warp=WarpSettings(resolution_mm=3.0, iterations=(20, 10, 0)),
                             fit=FitSettings())
    result = cycle_consistency(image, {"L": asked}, template, grid, shape, settings)

    m = result.metrics
    assert set(m) == {f"{n}_L" for n in SURFACE_METRICS} | set(SURFACE_METRICS) | set(VOLUME_METRICS)
    assert all(m[n] == m[f"{n}_L"] for n in SURFACE_METRICS)  # one hemisphere: its mean is itself
    found = result.surfaces["L"]
    np.testing.assert_array_equal(found.white.faces, template.hemispheres["L"].white.faces)
    assert result.tissue.wm.shape == shape
    # Measured (seed 42): white ASSD 0.95 / HD95 1.20 mm, pial 0.06 / 0.17 mm, thickness
    # r 0.93-0.94 (MAE 0.90 mm), GM Dice 0.86, WM Dice 0.92. The white surface sits ~0.9 mm
    # inside the true one at every vertex: AMAP puts the GM/WM boundary of a 2 mm image,
    # resampled to 1 mm, that much deeper, so the cortex measures ~0.9 mm too thick. The
    # same image drawn at 1 mm scores white 0.13, pial 0.03 mm, r 0.99: the loss is the
    # image's resolution, not the cycle. The template's own white surface, unfitted, is
    # 1.26 mm from the subject's.
    assert m["white_assd_mm"] < 1.5 and m["white_hd95_mm"] < 2.0
    assert m["pial_assd_mm"] < 0.5 and m["pial_hd95_mm"] < 1.0
    assert m["thickness_r"] > 0.8
    assert m["gm_dice"] > 0.75 and m["wm_dice"] > 0.85

    # A cortex other than the one asked for scores clearly worse on the same found surfaces:
    # a thinner, differently bumped shell whose thickness runs the other way.
    from cortexgen.evaluate.cycle import surface_metrics

    other = StarShell((0.0, 0.0, 0.0), 18.0, TEMPLATE_SHELL_BUMPS, lambda d: 2.75 - 0.75 * (d @ np.array([0.6, 0.0, 0.8])))
    # Measured: pial ASSD 1.79 mm, thickness r -0.94.
    wrong = surface_metrics(found, other.meshes(), template.hemispheres["L"].cortex)
    assert wrong["pial_assd_mm"] > 1.0 > m["pial_assd_mm"]
    assert wrong["thickness_r"] < -0.5


def test_load_conditioning_reads_the_surface_stage_files(tmp_path):
    """Surfaces, thickness and SDFs as the surface stage writes them come back as the cycle takes them:
    the midthickness half-way, the template's cortex mask, the ribbon where pial < 0 <= white."""
    white = icosphere(2).with_vertices(10.0 * icosphere(2).vertices)
    pial = white.with_vertices(13.0 * icosphere(2).vertices)
    cortex = np.arange(len(white.vertices)) % 3 != 0
    thickness = np.full(len(white.vertices), 3.0)
    save_surface(white, tmp_path / "white.surf.gii")
    save_surface(pial, tmp_path / "pial.surf.gii")
    save_shape(thickness, tmp_path / "thickness.shape.gii")
    pial_sdf = np.array([[[-2.0, -1.0, 0.5]]], dtype=np.float32)
    white_sdf = np.array([[[-0.5, 0.0, 3.5]]], dtype=np.float32)
    for name, values in (("pial", pial_sdf), ("white", white_sdf)):
        nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / f"{name}_sdf.nii.gz")
    label = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    template = SurfaceTemplate(hemispheres={"L": HemisphereMeshes(white=white, pial=pial, cortex=cortex)},
                               label=label, mask=label)

    surfaces, condition = load_conditioning(template, {"L": str(tmp_path / "white.surf.gii")},
                                            {"L": str(tmp_path / "pial.surf.gii")},
                                            {"L": str(tmp_path / "thickness.shape.gii")},
                                            str(tmp_path / "pial_sdf.nii.gz"), str(tmp_path / "white_sdf.nii.gz"))

    found = surfaces["L"]
    np.testing.assert_allclose(np.linalg.norm(found.midthickness.vertices, axis=1), 11.5, rtol=1e-5)
    np.testing.assert_array_equal(found.cortex, cortex)
    np.testing.assert_allclose(found.thickness, 3.0)
    np.testing.assert_array_equal(condition.ribbon[0, 0], [0, 1, 0])
    np.testing.assert_allclose(condition.pial_sdf, pial_sdf)
