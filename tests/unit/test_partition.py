"""Cortex only: the partition of a phantom brain, surfaces kept out of a cerebellum, glued sulci."""

from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cortexgen.surfaces.extract import extract_surfaces, keep_out, native_thickness
from cortexgen.surfaces.fit import FitSettings
from cortexgen.surfaces.mesh import Mesh, count_self_intersections, icosphere
from cortexgen.surfaces.partition import (
    HINDBRAIN,
    LEFT,
    LEFT_FILL,
    RIGHT,
    RIGHT_FILL,
    PartitionSettings,
    cortex_label,
    partition_brain,
    sulcal_skeleton,
)
from cortexgen.surfaces.qc import vertices_inside
from cortexgen.surfaces.segment import tissue_from_label
from cortexgen.surfaces.template import HemisphereMeshes, SurfaceTemplate, synthetic_label
from cortexgen.surfaces.warp import WarpSettings
from tests.conftest import world_grid

SHAPE = (72, 56, 72)


def ball(points: np.ndarray, centre, radius: float) -> np.ndarray:
    return np.linalg.norm(points - np.asarray(centre, dtype=float), axis=-1) < radius


@pytest.fixture(scope="module")
def phantom_brain():
    """Two cerebral hemispheres 2 mm apart, a cerebellum 1.2 mm under them, and an atlas 2 mm off.

    Each hemisphere: a GM ball with a WM core, a deep GM nucleus and a ventricle (CSF) inside
    the WM. The "atlas" holds the true IBSR labels shifted by (2, 2, 2) mm, the kind of error a
    registration leaves at the tentorium, which is thinner than that.
    """
    affine, points = world_grid(SHAPE)
    label = np.zeros(SHAPE, dtype=np.float32)
    atlas = np.zeros(SHAPE, dtype=np.int16)
    truth = np.zeros(SHAPE, dtype=np.uint8)
    regions = [  # centre, GM radius, WM radius, IBSR GM/WM ids, partition value
        ((-17.0, 0.0, 8.0), 16.0, 12.0, (3, 2), LEFT),
        ((17.0, 0.0, 8.0), 16.0, 12.0, (42, 41), RIGHT),
        ((0.0, -5.0, -14.0), 11.0, 6.0, (8, 7), HINDBRAIN),
    ]
    near_tissue = np.zeros(SHAPE, dtype=bool)
    for centre, gm_r, wm_r, ids, value in regions:
        gm, wm = ball(points, centre, gm_r), ball(points, centre, wm_r)
        near_tissue |= ball(points, centre, gm_r + 3.0)
        label[gm] = 2.0
        label[wm] = 3.0
        truth[gm] = value
    label[near_tissue & (label == 0)] = 1.0
    fills = {}
    for side, x, ids, value in (("L", -17.0, (10, 4), LEFT_FILL), ("R", 17.0, (49, 43), RIGHT_FILL)):
        nucleus, ventricle = ball(points, (x, 4.0, 8.0), 4.0), ball(points, (x, -5.0, 8.0), 3.0)
        label[nucleus], label[ventricle] = 2.0, 1.0
        truth[nucleus | ventricle] = value
        fills[side] = nucleus | ventricle
    # The atlas: the true regions, 2 mm off in every direction.
    shifted = np.roll(truth, (2, 2, 2), axis=(0, 1, 2))
    shifted_label = np.roll(label, (2, 2, 2), axis=(0, 1, 2))
    for value, (gm_id, wm_id) in ((LEFT, (3, 2)), (RIGHT, (42, 41)), (HINDBRAIN, (8, 7))):
        atlas[(shifted == value) & (shifted_label < 2.5)] = gm_id
        atlas[(shifted == value) & (shifted_label >= 2.5)] = wm_id
    atlas[np.roll(fills["L"], (2, 2, 2), axis=(0, 1, 2))] = 10
    atlas[np.roll(fills["R"], (2, 2, 2), axis=(0, 1, 2))] = 49
    return label, atlas, truth, affine


def test_partition_follows_the_subject_not_the_atlas(phantom_brain):
    label, atlas, truth, _ = phantom_brain
    partition = partition_brain(label, atlas, np.ones(3))
    tissue = label >= 1.5
    assert np.all(partition[truth == HINDBRAIN] == HINDBRAIN)
    for cerebrum, fill in ((LEFT, LEFT_FILL), (RIGHT, RIGHT_FILL)):
        # Every voxel on its side; the fill reaches past the nuclei into white matter only.
        side = partition[truth == cerebrum]
        assert np.all((side == cerebrum) | (side == fill))
        assert np.all(label[(truth == cerebrum) & (partition == fill)] == 3.0)
    # The atlas alone, 2 mm off, puts tissue of the cerebrum into the cerebellum and back.
    assert np.count_nonzero(np.isin(atlas, (7, 8)) & tissue & (truth != HINDBRAIN)) > 50
    # Deep grey matter and ventricles are filled, on their own side.
    for value in (LEFT_FILL, RIGHT_FILL):
        region = truth == value
        assert np.mean(partition[region] == value) > 0.99
    assert np.all(partition[label == 0] == 0) and np.all(partition[label > 0] > 0)


def test_cortex_label_removes_the_hindbrain_and_fills(phantom_brain):
    label, atlas, truth, _ = phantom_brain
    partition = partition_brain(label, atlas, np.ones(3))
    both = cortex_label(label, partition)
    assert np.all(both[partition == HINDBRAIN] == 0)
    assert np.all(both[(partition == LEFT_FILL) | (partition == RIGHT_FILL)] == 3.0)
    left = cortex_label(label, partition, "L")
    assert np.all(left[truth == RIGHT] == 0) and np.array_equal(left[truth == LEFT], label[truth == LEFT])


def test_fill_takes_a_ventricle_larger_than_the_atlas_s(phantom_brain):
    """A ventricle (CSF tube) rising through the left WM to the cortex, which the atlas's
    ventricle covers only below z = 10 mm: not a hole of the WM, so only its growth through the
    subject's CSF fills the rest; the CSF around the brain, behind the cortex, stays."""
    label, atlas, _, affine = phantom_brain
    label, atlas = label.copy(), atlas.copy()
    _, points = world_grid(SHAPE)
    tube = (np.hypot(points[..., 0] + 10.0, points[..., 1] + 5.0) < 2.5) & (points[..., 2] > 2.0) \
        & (points[..., 2] < 21.0) & (label == 3.0)
    label[tube] = 1.0
    atlas[tube & (points[..., 2] < 10.0)] = 4  # IBSR left lateral ventricle
    upper = tube & (points[..., 2] > 12.0)
    # The phantom's hemispheres are a quarter of a brain's size: so is the growth's margin.
    settings = PartitionSettings(ventricle_exterior_margin_mm=2.0)
    without = partition_brain(label, atlas, np.ones(3), replace(settings, ventricle_growth_mm=0.0))
    assert np.mean(without[upper] == LEFT_FILL) < 0.1
    partition = partition_brain(label, atlas, np.ones(3), settings)
    assert np.mean(partition[upper] == LEFT_FILL) > 0.95
    # What the growth adds is the tube and the 1 mm rim of WM the fill takes around it.
    near_tube = ndimage.binary_dilation(tube, iterations=2)
    changed = partition != without
    assert changed.sum() > upper.sum() and not np.any(changed & ~near_tube)


def test_ventricle_growth_keeps_out_of_the_cisterns(phantom_brain):
    """The ventricle of the test above, opened by a CSF channel (a choroidal fissure) to the CSF
    around the hemisphere (a cistern): without a margin the growth runs out through it and fills
    that CSF; with it the outer CSF stays, and the ventricle is still filled."""
    label, atlas, _, affine = phantom_brain
    label, atlas = label.copy(), atlas.copy()
    _, points = world_grid(SHAPE)
    around = np.hypot(points[..., 0] + 10.0, points[..., 1] + 5.0)
    tube = (around < 2.5) & (points[..., 2] > 2.0) & (points[..., 2] < 21.0) & (label == 3.0)
    channel = (around < 1.5) & (points[..., 2] > -12.0) & (points[..., 2] <= 2.0) & (label > 0)
    label[tube | channel] = 1.0
    atlas[tube & (points[..., 2] < 10.0)] = 4  # IBSR left lateral ventricle
    outer_csf = (label == 1.0) & ~ball(points, (-17.0, 0.0, 8.0), 16.0) & (points[..., 0] < -1.0)
    upper = tube & (points[..., 2] > 12.0)
    unbounded = partition_brain(label, atlas, np.ones(3), PartitionSettings(ventricle_exterior_margin_mm=0.0))
    assert np.sum(unbounded[outer_csf] == LEFT_FILL) > 1000
    partition = partition_brain(label, atlas, np.ones(3), PartitionSettings(ventricle_exterior_margin_mm=2.0))
    assert not np.any(partition[outer_csf] == LEFT_FILL)
    assert np.mean(partition[upper] == LEFT_FILL) > 0.95


def test_partition_refuses_an_atlas_that_seeds_nothing(phantom_brain):
    label, atlas, _, _ = phantom_brain
    with pytest.raises(ValueError, match="cerebellum and brainstem"):
        partition_brain(label, np.where(np.isin(atlas, (7, 8)), 0, atlas), np.ones(3))


def test_no_surface_enters_a_cerebellum_under_the_cortex():
    """A shell "cortex" whose grey matter touches a cerebellum-like ball below it (no CSF between).

    Without the partition the pial surface grows into the cerebellum's grey matter, since
    GM+WM never drops there; with it no cortex vertex of either surface lies inside.
    """
    affine, points = world_grid((64, 64, 80))
    # The cerebellum's top (z = -10.5) is 4 mm above the cortex's bottom (-14.3): it fills a cap
    # under the cortex's pial surface, as the cerebellum does under the occipital lobe.
    centre, below = np.array([0.3, -0.4, 8.2]), np.array([0.3, -0.4, -22.0])
    label = np.where(ball(points, centre, 25.5) | ball(points, below, 12.0), 1.0, 0.0).astype(np.float32)
    label[ball(points, centre, 22.5)] = 2.0
    label[ball(points, centre, 20.0)] = 3.0
    cerebellum = ball(points, below, 11.5) & ~ball(points, centre, 22.5)
    label[cerebellum] = 2.0
    label[ball(points, below, 6.0)] = 3.0
    tissue = tissue_from_label(label)
    partition = np.where(label > 0, LEFT, 0).astype(np.uint8)
    partition[cerebellum] = HINDBRAIN
    sphere = icosphere(4, 1.0)
    meshes = HemisphereMeshes(white=Mesh(centre + 20.0 * sphere.vertices, sphere.faces),
                              pial=Mesh(centre + 22.5 * sphere.vertices, sphere.faces),
                              cortex=np.ones(len(sphere.vertices), dtype=bool))
    template_label = synthetic_label({"L": meshes}, label.shape, affine, csf_margin_mm=3.0)
    template = SurfaceTemplate(hemispheres={"L": meshes}, label=nib.Nifti1Image(template_label, affine),
                               mask=nib.Nifti1Image((template_label > 0).astype(np.uint8), affine))
    settings = (WarpSettings(resolution_mm=3.0, iterations=(20, 10, 0)), FitSettings())

    def inside(result) -> int:
        return int(np.count_nonzero(vertices_inside(result.white, cerebellum, affine)
                                    | vertices_inside(result.pial, cerebellum, affine)))

    leaked = extract_surfaces(tissue, affine, template, *settings)["L"]
    kept = extract_surfaces(tissue, affine, template, *settings, partition=partition)["L"]
    assert inside(leaked) > 20
    assert inside(kept) == 0
    # Elsewhere the cortex is found as before: 2.5 mm thick.
    top = kept.white.vertices[:, 2] > centre[2]
    assert abs(np.median(kept.thickness[top]) - 2.5) < 0.3


def test_hemispheres_fitted_in_parallel_match_the_serial_fit():
    """Two shell "hemispheres" side by side: fitted in two forked processes, every vertex and
    thickness is what the one-after-the-other fit gives."""
    affine, points = world_grid((88, 48, 48))
    centres = {"L": np.array([-21.0, 0.3, -0.2]), "R": np.array([21.0, -0.3, 0.2])}
    label = np.zeros(points.shape[:3], dtype=np.float32)
    for centre in centres.values():
        label[ball(points, centre, 17.5)] = 1.0
    for centre in centres.values():
        label[ball(points, centre, 15.0)] = 2.0
        label[ball(points, centre, 12.5)] = 3.0
    sphere = icosphere(3, 1.0)
    hemispheres = {hemi: HemisphereMeshes(white=Mesh(c + 12.5 * sphere.vertices, sphere.faces),
                                          pial=Mesh(c + 15.0 * sphere.vertices, sphere.faces),
                                          cortex=np.ones(len(sphere.vertices), dtype=bool))
                   for hemi, c in centres.items()}
    template_label = synthetic_label(hemispheres, label.shape, affine, csf_margin_mm=2.5)
    template = SurfaceTemplate(hemispheres=hemispheres, label=nib.Nifti1Image(template_label, affine),
                               mask=nib.Nifti1Image((template_label > 0).astype(np.uint8), affine))
    settings = (WarpSettings(resolution_mm=3.0, iterations=(10, 0, 0)), FitSettings(refine_iterations=10))
    serial = extract_surfaces(tissue_from_label(label), affine, template, *settings, workers=1)
    parallel = extract_surfaces(tissue_from_label(label), affine, template, *settings, workers=2)
    for hemi in ("L", "R"):
        np.testing.assert_array_equal(parallel[hemi].white.vertices, serial[hemi].white.vertices)
        np.testing.assert_array_equal(parallel[hemi].pial.vertices, serial[hemi].pial.vertices)
        np.testing.assert_array_equal(parallel[hemi].thickness, serial[hemi].thickness)
        assert abs(np.median(serial[hemi].thickness) - 2.5) < 0.3


def test_keep_out_pulls_vertices_back_to_their_anchor():
    affine, points = world_grid((40, 40, 40))
    forbidden = points[..., 2] < -5.0  # everything below z = -5 (voxel centres at ...-5.5, -4.5...)
    sphere = icosphere(3, 10.0)
    moved = keep_out(sphere, forbidden, affine, anchors=np.zeros_like(sphere.vertices))
    assert not vertices_inside(moved, forbidden, affine).any()
    inside = sphere.vertices[:, 2] < -5.5
    # Each vertex that was in moved towards the origin, to just outside the border (z = -5):
    # within the margin and a bisection step of it, and still outside once saved as float32.
    assert np.all((moved.vertices[inside, 2] >= -4.95 - 1e-9) & (moved.vertices[inside, 2] < -4.9))
    assert not vertices_inside(moved.with_vertices(moved.vertices.astype(np.float32).astype(np.float64)),
                               forbidden, affine).any()
    np.testing.assert_allclose(np.cross(moved.vertices[inside], sphere.vertices[inside]), 0.0, atol=1e-9)
    np.testing.assert_array_equal(moved.vertices[sphere.vertices[:, 2] > -4.0], sphere.vertices[sphere.vertices[:, 2] > -4.0])
    # Without anchors, towards the nearest allowed voxel centre.
    free = keep_out(sphere, forbidden, affine)
    assert not vertices_inside(free, forbidden, affine).any()
    assert np.all(free.vertices[inside, 2] > -5.1)


def test_native_thickness_undoes_the_affines_scale():
    white = icosphere(3, 20.0)
    pial = white.with_vertices(white.vertices * 22.5 / 20.0)
    to_native = np.diag([1 / 1.14, 1 / 1.14, 1 / 1.14, 1.0])
    to_native[:3, 3] = [4.0, -2.0, 7.0]
    np.testing.assert_allclose(native_thickness(white, pial, to_native), 2.5 / 1.14)


def glued_sulcus(fundus_z: float = 2.0, half_width: float = 2.5):
    """A WM block with a slot cut from its top down to ``fundus_z``, filled with the GM of both
    banks (touching: no CSF in it), under a 2.5 mm GM layer and CSF."""
    affine, points = world_grid((48, 40, 56))
    x, z = points[..., 0], points[..., 2]
    inner = (np.abs(points) < [18.0, 14.0, 18.0]).all(axis=-1)
    slot = (np.abs(x) < half_width) & (z > fundus_z)
    wm = inner & ~slot & (z < 15.0)
    gm = inner & ~wm & (z < 17.5)
    label = np.where((np.abs(points) < [21.0, 17.0, 21.0]).all(axis=-1), 1.0, 0.0).astype(np.float32)
    label[gm], label[wm] = 2.0, 3.0
    return label, affine, points


def test_sulcal_skeleton_is_the_midline_of_a_glued_sulcus():
    label, _, points = glued_sulcus()
    skeleton = sulcal_skeleton(label, np.ones(3))
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    in_slot = (np.abs(y) < 12.0) & (z > 4.0) & (z < 14.0)
    # The skeleton is the slot's midline plane (x = 0 falls between voxel centres: one of the
    # two central columns), and nothing of the solid GM layer above the WM.
    assert np.all(np.abs(x[skeleton & in_slot]) <= 0.5)
    # ... everywhere along the slot: every (y, z) of it has a skeleton voxel.
    assert np.all((skeleton & in_slot).any(axis=0)[in_slot.any(axis=0)])
    assert not np.any(skeleton & (np.abs(x) > 4.0) & (z > 15.0))


def test_surfaces_reach_the_fundus_and_the_skeleton_of_a_glued_sulcus():
    """The white surface goes down a 5 mm wide, 13 mm deep slot to within 1 mm of its fundus,
    and the pial surfaces of both banks meet on the slot's midline, where no CSF is visible.

    The fit starts from the boundary of a blurred white matter whose slot is 6 mm shallower (a
    template's sulcus carried onto a subject whose sulcus is deeper)."""
    from scipy import ndimage
    from skimage.measure import marching_cubes

    from cortexgen.surfaces.extract import fit_hemisphere
    from cortexgen.surfaces.mesh import voxel_to_world

    fundus_z = 2.0
    label, affine, points = glued_sulcus(fundus_z=fundus_z)
    shallow, _, _ = glued_sulcus(fundus_z=fundus_z + 6.0)
    blurred = ndimage.gaussian_filter((shallow >= 2.5).astype(np.float32), 1.5)
    vertices, faces, _, _ = marching_cubes(blurred, level=0.5)
    start = Mesh(voxel_to_world(vertices.astype(np.float64), affine), faces[:, ::-1].astype(np.int64))
    in_slot = lambda mesh: ((np.abs(mesh.vertices[:, 0]) < 2.4) & (np.abs(mesh.vertices[:, 1]) < 10.0)  # noqa: E731
                            & (mesh.vertices[:, 2] > -5.0))
    assert start.vertices[in_slot(start), 2].min() > fundus_z + 3.0  # the start misses the fundus

    carved = label.copy()
    carved[sulcal_skeleton(label, np.ones(3))] = 1.4  # as cortex_tissue does
    result = fit_hemisphere(start, np.ones(len(start.vertices), dtype=bool), tissue_from_label(carved), affine,
                            FitSettings())
    assert result.white.vertices[in_slot(result.white), 2].min() < fundus_z + 1.0
    # The pial vertices of the banks (white vertices on the slot's walls) end on the midline,
    # within the voxel the skeleton has there (x = 0 lies between two columns of voxel centres,
    # so that voxel spans |x| < 1 mm); the pial flow keeps the two banks a little apart.
    wall = in_slot(result.white) & (result.white.vertices[:, 2] > 6.0) & (result.white.vertices[:, 2] < 13.0)
    assert wall.sum() > 50
    assert np.median(np.abs(result.pial.vertices[wall, 0])) < 0.85
    assert np.percentile(np.abs(result.pial.vertices[wall, 0]), 90) < 1.0
    assert count_self_intersections(result.pial) == 0
