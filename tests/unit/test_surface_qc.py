"""cortexgen.surfaces.qc: isosurface distances, the metrics table and the figure."""

from __future__ import annotations

import csv
import dataclasses

import matplotlib.colors
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection

from cortexgen.surfaces.mesh import Mesh, icosphere
from cortexgen.surfaces.qc import (
    PARTITION_OUTLINES,
    SurfaceQC,
    isosurface_distance,
    plane_intersection_segments,
    QCLimits,
    missed_boundary_fraction,
    qc_flags,
    surface_qc,
    surface_qc_figure,
    write_qc_tsv,
)

# An off-grid, off-origin centre, so that a voxel/world mix-up or a crop offset left out
# moves the isosurface by millimetres.
CENTRE = np.array([3.3, -2.7, 5.1])
SHAPE = (72, 72, 72)


def grid_affine(shape=SHAPE, flip_x: bool = False) -> np.ndarray:
    """A 1 mm affine whose grid is centred near CENTRE (optionally LAS: x flipped)."""
    affine = np.eye(4)
    affine[:3, 3] = CENTRE + np.array([-1.4, 0.8, -0.6]) - (np.asarray(shape) - 1) / 2
    if flip_x:
        affine[0, 0] = -1.0
        affine[0, 3] = CENTRE[0] + (shape[0] - 1) / 2
    return affine


def ball_fraction(radius_mm: float, affine: np.ndarray, shape=SHAPE) -> np.ndarray:
    """A tissue fraction map of a ball around CENTRE whose 0.5 isosurface is its sphere.

    The fraction falls linearly over 2 mm across the sphere (a partial-volume edge), so
    every grid edge that crosses 0.5 has both samples on the ramp and marching cubes'
    linear interpolation finds the sphere to within the ramp's curvature (~0.01 mm).
    """
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    r = np.linalg.norm(xyz - CENTRE, axis=1).reshape(shape)
    return np.clip((radius_mm - r) / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- distances


@pytest.mark.parametrize("flip_x", [False, True])
def test_isosurface_distance_to_a_ball(flip_x):
    affine = grid_affine(flip_x=flip_x)
    volume = ball_fraction(20.0, affine)
    on = isosurface_distance(icosphere(5, 20.0, CENTRE), volume, affine, 0.5)
    assert on.shape == (10242,)
    assert on.max() < 0.1
    outside = isosurface_distance(icosphere(4, 21.5, CENTRE), volume, affine, 0.5)
    assert np.abs(outside - 1.5).max() < 0.1
    inside = isosurface_distance(icosphere(4, 17.0, CENTRE), volume, affine, 0.5)
    assert np.abs(inside - 3.0).max() < 0.1


def test_isosurface_distance_needs_a_boundary_near_the_mesh():
    affine = grid_affine()
    with pytest.raises(ValueError, match="does not cross"):
        isosurface_distance(icosphere(3, 10.0, CENTRE), np.ones(SHAPE, np.float32), affine, 0.5)
    with pytest.raises(ValueError, match="outside the volume"):
        isosurface_distance(icosphere(3, 5.0, CENTRE + 500.0), ball_fraction(20.0, affine), affine, 0.5)


# ----------------------------------------------------------------------------- plane cuts


@pytest.mark.parametrize(("axis", "offset"), [(0, 7.3), (1, -12.25), (2, 0.0), (2, 24.0)])
def test_plane_intersection_is_the_sphere_circle(axis, offset):
    radius = 30.0
    mesh = icosphere(5, radius, CENTRE)
    plane = CENTRE[axis] + offset
    segments = plane_intersection_segments(mesh, axis, plane)
    assert segments.ndim == 3 and segments.shape[1:] == (2, 3) and len(segments) > 50
    points = segments.reshape(-1, 3)
    assert np.all(points[:, axis] == plane)
    others = [a for a in range(3) if a != axis]
    from_axis = np.linalg.norm(points[:, others] - CENTRE[others], axis=1)
    assert np.abs(from_axis - np.sqrt(radius**2 - offset**2)).max() < 0.05
    # Every crossing triangle once, no gaps or doubles: the contour has the circle's length.
    # (offset 0 cuts through vertices and along edges lying in the plane.)
    length = np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1).sum()
    assert length == pytest.approx(2 * np.pi * np.sqrt(radius**2 - offset**2), rel=2e-3)


def test_plane_missing_the_mesh_gives_no_segments():
    segments = plane_intersection_segments(icosphere(2, 10.0), 1, 10.5)
    assert segments.shape == (0, 2, 3)
    with pytest.raises(ValueError):
        plane_intersection_segments(icosphere(1), 3, 0.0)


# ----------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def shell():
    """A 2.5 mm thick spherical "cortex": white r = 20, pial r = 22.5, with its maps."""
    affine = grid_affine()
    white = icosphere(5, 20.0, CENTRE)
    pial = icosphere(5, 22.5, CENTRE)
    return {
        "white": white,
        "pial": pial,
        "midthickness": icosphere(5, 21.25, CENTRE),
        "wm_fraction": ball_fraction(20.0, affine),
        "gmwm_fraction": ball_fraction(22.5, affine),
        # CSF in a 3 mm layer around the pial sphere, then "outside the hemisphere" (0).
        "csf_fraction": np.minimum(1.0 - ball_fraction(22.5, affine), ball_fraction(25.5, affine)),
        "affine": affine,
        "hindbrain": np.zeros(ball_fraction(20.0, affine).shape, dtype=bool),
    }


def _qc(shell, thickness, cortex, subject="sub-01", hemi="L") -> SurfaceQC:
    return surface_qc(
        subject,
        hemi,
        shell["white"],
        shell["pial"],
        shell["midthickness"],
        thickness,
        cortex,
        shell["wm_fraction"],
        shell["gmwm_fraction"],
        shell["csf_fraction"],
        shell["affine"],
        shell["hindbrain"],
    )


def test_surface_qc_of_a_spherical_shell(shell):
    n = len(shell["white"].vertices)
    row = _qc(shell, np.full(n, 2.5), np.ones(n, bool))
    assert (row.subject, row.hemi, row.n_vertices) == ("sub-01", "L", 10242)
    assert row.euler_characteristic_white == 2 and row.euler_characteristic_pial == 2
    assert row.self_intersections_white == 0 and row.self_intersections_pial == 0
    assert row.self_intersection_fraction == 0.0
    assert row.thickness_mean_mm == pytest.approx(2.5)
    assert row.thickness_median_mm == pytest.approx(2.5)
    assert row.area_mm2 == pytest.approx(4 * np.pi * 21.25**2, rel=0.01)
    assert 0 <= row.white_to_wm_mm < 0.05
    assert 0 <= row.pial_to_gmwm_mm < 0.05
    assert row.white_to_wm_median_mm <= row.white_to_wm_p95_mm < 0.1
    assert row.pial_to_gmwm_median_mm <= row.pial_to_gmwm_p95_mm < 0.1
    assert row.hindbrain_vertices == 0
    assert row.white_missed_wm_fraction == 0.0
    assert row.csf_inside_white_ml == 0.0
    assert row.flags == "ok"


def test_missed_boundary_fraction_sees_a_surface_that_cuts_across(shell):
    """A white surface lying on the WM boundary of a ball but cutting straight across a deep,
    wide groove in it: every vertex is near the boundary, the groove's walls are not reached."""
    affine = shell["affine"]
    ijk = np.indices(shell["wm_fraction"].shape).reshape(3, -1).T
    world = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shell["wm_fraction"].shape, 3) - CENTRE
    grooved = shell["wm_fraction"] * ~((np.abs(world[..., 0]) < 3.0) & (world[..., 2] > 8.0))
    white = shell["white"]
    assert missed_boundary_fraction(white, np.ones(len(white.vertices), bool), shell["wm_fraction"], affine, 0.5) == 0
    missed = missed_boundary_fraction(white, np.ones(len(white.vertices), bool), grooved.astype(np.float32), affine, 0.5)
    # The groove's walls (2 x 12 mm deep x ~30 mm long) against a ball of 5000 mm²: ~10 %.
    assert 0.05 < missed < 0.2
    assert "cuts across sulci" in qc_flags({"euler_characteristic_white": 2, "euler_characteristic_pial": 2,
                                            "self_intersections_white": 0, "self_intersections_pial": 0,
                                            "white_missed_wm_fraction": missed, "thickness_mean_mm": 2.5},
                                           QCLimits(max_missed_wm_fraction=0.04))


def test_csf_inside_white_finds_an_open_ventricle(shell):
    """A CSF ball of radius 6 mm in the middle of the WM (a ventricle left open), 14 mm inside
    the white surface: its volume is what the white surface encloses, and it is flagged."""
    cavity = ball_fraction(6.0, shell["affine"])  # CSF > 0.5 inside r = 6
    gmwm = np.minimum(shell["gmwm_fraction"], 1.0 - cavity)
    csf = np.maximum(shell["csf_fraction"], cavity)
    n = len(shell["white"].vertices)
    row = _qc({**shell, "gmwm_fraction": gmwm, "csf_fraction": csf}, np.full(n, 2.5), np.ones(n, bool))
    assert row.csf_inside_white_ml == pytest.approx(4 / 3 * np.pi * 6.0**3 / 1000.0, rel=0.05)
    assert row.flags == "ok"  # 0.9 mL, under the default limit
    flags = qc_flags(dataclasses.asdict(row), QCLimits(max_csf_inside_white_ml=0.5))
    assert flags == "white surface encloses 0.9 mL of CSF (an open ventricle or bridged sulci)"
    # The CSF just outside the pial surface is not enclosed, nor is the ribbon's own; voxels
    # outside the hemisphere's tissue (the other hemisphere, filled there) are no CSF of its own.
    assert _qc(shell, np.full(n, 2.5), np.ones(n, bool)).csf_inside_white_ml == 0.0
    other_side = {**shell, "gmwm_fraction": gmwm, "csf_fraction": shell["csf_fraction"] * (1.0 - cavity)}
    assert _qc(other_side, np.full(n, 2.5), np.ones(n, bool)).csf_inside_white_ml == 0.0


def test_surface_qc_flags_a_surface_pushed_into_the_cerebellum(shell):
    """A "cerebellum" below the shell: the unpushed surfaces pass; pushing the bottom of the
    white and pial surfaces 6 mm down into it is flagged, with the count of vertices inside."""
    affine = shell["affine"]
    n = len(shell["white"].vertices)
    ijk = np.indices(shell["hindbrain"].shape).reshape(3, -1).T
    world = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shell["hindbrain"].shape, 3)
    # A slab just under the pial sphere's bottom (the sphere reaches CENTRE z - 22.5).
    cerebellum = world[..., 2] < CENTRE[2] - 23.0
    clean = _qc({**shell, "hindbrain": cerebellum}, np.full(n, 2.5), np.ones(n, bool))
    assert clean.hindbrain_vertices == 0 and clean.flags == "ok"

    def pushed(mesh):
        vertices = mesh.vertices.copy()
        bottom = vertices[:, 2] - CENTRE[2] < -15.0
        vertices[bottom, 2] -= 6.0
        return Mesh(vertices, mesh.faces), bottom

    white, _ = pushed(shell["white"])
    pial, _ = pushed(shell["pial"])
    row = _qc({**shell, "white": white, "pial": pial, "hindbrain": cerebellum}, np.full(n, 2.5), np.ones(n, bool))

    def below(depth_mm):
        """Vertices whose white or pial vertex lies this far below the slab's top voxel centres."""
        return np.count_nonzero((np.minimum(white.vertices[:, 2], pial.vertices[:, 2]) < CENTRE[2] - 23.0 - depth_mm))

    # A vertex a voxel inside the slab counts; one a voxel outside it does not.
    assert below(1.0) <= row.hindbrain_vertices <= below(-1.0)
    assert row.hindbrain_vertices > 1000
    assert "cortex vertices in the cerebellum/brainstem" in row.flags
    assert "pial surface far from its tissue boundary" in row.flags


def test_qc_flags_name_every_reason():
    measures = {"euler_characteristic_white": 2, "euler_characteristic_pial": 0, "self_intersections_white": 0,
                "self_intersections_pial": 4, "hindbrain_vertices": 3, "white_to_wm_p95_mm": 0.8,
                "pial_to_gmwm_p95_mm": 2.5, "thickness_mean_mm": 1.2}
    flags = qc_flags(measures, QCLimits(max_hindbrain_vertices=0, max_boundary_p95_mm=2.0,
                                        thickness_mean_range_mm=(2.0, 3.6))).split("; ")
    assert flags == ["pial Euler characteristic 0 (not a sphere's 2)", "pial has 4 self-intersections",
                     "3 cortex vertices in the cerebellum/brainstem",
                     "pial surface far from its tissue boundary (95th percentile 2.5 mm)",
                     "mean thickness 1.20 mm outside 2.0-3.6 mm"]
    fine = {**measures, "euler_characteristic_pial": 2, "self_intersections_pial": 0, "hindbrain_vertices": 0,
            "pial_to_gmwm_p95_mm": 0.9, "thickness_mean_mm": 2.6}
    assert qc_flags(fine, QCLimits()) == "ok"


def test_surface_qc_leaves_out_the_medial_wall(shell):
    white = shell["white"]
    # A "medial wall" cap (thickness 0) at z > 15 mm above the centre; the rest is cortex,
    # where the thickness varies, so that mean and median differ.
    cortex = white.vertices[:, 2] - CENTRE[2] <= 15.0
    thickness = np.where(cortex, 2.0 + (white.vertices[:, 0] > CENTRE[0]), 0.0)
    row = _qc(shell, thickness, cortex, hemi="R")
    assert row.thickness_mean_mm == pytest.approx(thickness[cortex].mean())
    assert 2.3 < row.thickness_mean_mm < 2.7
    assert row.thickness_median_mm in (2.0, 2.5, 3.0)
    # A cap of height 21.25 - 21.25 * 15 / 20 is cut off the midthickness sphere.
    cap = 2 * np.pi * 21.25 * (21.25 - 21.25 * 15.0 / 20.0)
    assert row.area_mm2 == pytest.approx(4 * np.pi * 21.25**2 - cap, rel=0.01)


def test_surface_qc_counts_self_intersections(shell):
    n = len(shell["white"].vertices)
    # Push one vertex of the pial surface through the far side of the sphere.
    vertices = shell["pial"].vertices.copy()
    vertices[0] = CENTRE - 1.2 * (vertices[0] - CENTRE)
    folded = {**shell, "pial": Mesh(vertices, shell["pial"].faces)}
    row = _qc(folded, np.full(n, 2.5), np.ones(n, bool))
    assert row.self_intersections_white == 0
    assert row.self_intersections_pial > 0
    assert row.self_intersection_fraction == pytest.approx(row.self_intersections_pial / 20480)


def test_surface_qc_refuses_mismatched_inputs(shell):
    n = len(shell["white"].vertices)
    with pytest.raises(ValueError, match="thickness"):
        _qc(shell, np.full(n - 1, 2.5), np.ones(n, bool))
    with pytest.raises(ValueError, match="empty"):
        _qc(shell, np.full(n, 2.5), np.zeros(n, bool))
    with pytest.raises(ValueError, match="hemi"):
        _qc(shell, np.full(n, 2.5), np.ones(n, bool), hemi="left")


def test_qc_tsv_round_trip(tmp_path):
    rows = [
        SurfaceQC("sub-01", "L", 40962, 2, 2, 0, 3, 3 / 81920, 2.51234567, 2.5, 91234.56789, 0.123456, 0.3,
                  0.1, 0.5, 0.2, 0.9, 0.05, 0.4, 0, "pial has 3 self-intersections"),
        SurfaceQC("sub-01_ses-2", "R", 40962, 2, 0, 1, 12, 12 / 81920, 2.4, 2.45, 90000.0, 0.2, 0.31,
                  0.1, 0.6, 0.25, 1.1, 0.07, 1.2, 2, "ok"),
    ]
    path = tmp_path / "qc" / "surfaces_qc.tsv"
    write_qc_tsv(rows, path)
    assert [p.name for p in path.parent.iterdir()] == ["surfaces_qc.tsv"]  # no temporary left
    with path.open(newline="") as handle:
        table = list(csv.reader(handle, delimiter="\t"))
    names = [field.name for field in dataclasses.fields(SurfaceQC)]
    assert table[0] == names
    assert len(table) == 3
    first = dict(zip(names, table[1]))
    assert first["subject"] == "sub-01" and first["hemi"] == "L"
    assert first["n_vertices"] == "40962" and first["self_intersections_pial"] == "3"
    assert first["thickness_mean_mm"] == "2.5123"
    assert first["area_mm2"] == "91234.5679"
    assert first["self_intersection_fraction"] == "0.0000"
    second = dict(zip(names, table[2]))
    assert second["subject"] == "sub-01_ses-2" and second["euler_characteristic_pial"] == "0"
    assert float(second["pial_to_gmwm_mm"]) == pytest.approx(0.31)
    assert first["flags"] == "pial has 3 self-intersections" and second["hindbrain_vertices"] == "2"


# ----------------------------------------------------------------------------- figure

FIG_SHAPE = (96, 104, 88)
# Left "hemisphere" radius 24 and right one 18, so that a mirrored panel is caught.
HEMI_SPHERES = {"L": (np.array([-22.0, 3.0, 6.0]), 24.0), "R": (np.array([22.0, 3.0, 6.0]), 18.0)}


@pytest.fixture(scope="module")
def figure_inputs():
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(FIG_SHAPE) - 1) / 2  # world (0, 0, 0) at the grid centre
    ijk = np.indices(FIG_SHAPE, dtype=np.float64).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    t1 = np.zeros(len(xyz), np.float32)
    surfaces, thickness = {}, {}
    for hemi, (centre, radius) in HEMI_SPHERES.items():
        t1 += 100.0 * (np.linalg.norm(xyz - centre, axis=1) < radius)
        surfaces[hemi] = {
            "white": icosphere(4, radius - 2.5, centre),
            "pial": icosphere(4, radius, centre),
            "midthickness": icosphere(4, radius - 1.25, centre),
        }
        # 5 mm on the lateral half, 0 on the medial half: the lateral view must be yellow.
        lateral = np.sign(centre[0]) * (surfaces[hemi]["midthickness"].vertices[:, 0] - centre[0]) > 0
        thickness[hemi] = np.where(lateral, 5.0, 0.0)
    return t1.reshape(FIG_SHAPE), affine, surfaces, thickness


def test_figure_contours_sit_on_the_meshes(figure_inputs):
    t1, affine, surfaces, thickness = figure_inputs
    fig = surface_qc_figure(t1, affine, surfaces, thickness, "sub-01 surfaces")
    try:
        assert fig._suptitle.get_text() == "sub-01 surfaces"
        slice_axes = [ax for ax in fig.axes if ax.get_title().split(" ")[0] in ("sagittal", "coronal", "axial")]
        surface_axes = [ax for ax in fig.axes if ax.name == "3d"]
        assert [ax.get_title().split(" ")[0] for ax in slice_axes] == ["sagittal", "coronal", "axial"]
        assert [ax.get_title() for ax in surface_axes] == ["L lateral", "L medial", "R lateral", "R medial"]
        nx, ny, nz = FIG_SHAPE
        # rot90 panels: sagittal (z, y), coronal (z, x), axial (y, x).
        shapes = [ax.images[0].get_array().shape for ax in slice_axes]
        assert shapes == [(nz, ny), (nz, nx), (ny, nx)]

        # The sagittal slice passes through the left sphere's centre, the coronal and axial
        # ones through the middle of both: each cut is a circle of known radius and centre
        # in panel pixels (column, row), where row 0 is the top (superior / anterior) edge.
        centre_l, radius_l = HEMI_SPHERES["L"]
        to_voxel = lambda p: p - affine[:3, 3]  # noqa: E731
        cl = to_voxel(centre_l)
        expected = {
            "sagittal": [((cl[1], nz - 1 - cl[2]), radius_l)],
            "coronal": [((to_voxel(c)[0], nz - 1 - to_voxel(c)[2]), r) for c, r in HEMI_SPHERES.values()],
            "axial": [((to_voxel(c)[0], ny - 1 - to_voxel(c)[1]), r) for c, r in HEMI_SPHERES.values()],
        }
        for ax in slice_axes:
            view = ax.get_title().split(" ")[0]
            lines = {c.get_label(): c for c in ax.collections if isinstance(c, LineCollection)}
            assert set(lines) == {"white", "pial"}
            pial = np.concatenate([np.asarray(s) for s in lines["pial"].get_segments()])
            # Each pial end point lies on one of the expected circles (the slice misses the
            # sphere centres by 0.5 voxel at most, which shrinks a circle by < 0.01 mm) ...
            off_circle = np.array([np.abs(np.linalg.norm(pial - c, axis=1) - r) for c, r in expected[view]])
            assert off_circle.min(axis=0).max() < 0.05, view
            # ... and every circle is drawn all round: a mirrored panel puts the big left
            # circle where the small right one belongs and fails both checks.
            for i in range(len(expected[view])):
                on_this = pial[off_circle[i] < 0.05] - expected[view][i][0]
                angles = np.arctan2(on_this[:, 1], on_this[:, 0])
                assert len(np.unique(np.floor(angles / (np.pi / 8)) % 16)) == 16, view
            white = np.concatenate([np.asarray(s) for s in lines["white"].get_segments()])
            off_white = [np.abs(np.linalg.norm(white - c, axis=1) - (r - 2.5)) for c, r in expected[view]]
            assert np.min(off_white, axis=0).max() < 0.1, view
    finally:
        plt.close(fig)


def test_figure_outlines_the_partition(figure_inputs):
    """The filled part (a box inside the left sphere) and the hindbrain (a box under it) are
    outlined on the slices, where the partition has them."""
    t1, affine, surfaces, thickness = figure_inputs
    partition = np.zeros(FIG_SHAPE, dtype=np.uint8)
    partition[t1 > 0] = 1
    partition[20:30, 40:60, 40:50] = 3  # around the left sphere's centre, voxel (26, 54.5, 49.5)
    partition[10:40, 30:70, 5:15] = 5
    fig = surface_qc_figure(t1, affine, surfaces, thickness, "sub-01", partition=partition)
    try:
        coronal = next(ax for ax in fig.axes if ax.get_title().startswith("coronal"))
        outlines = {tuple(np.round(c.get_edgecolor()[0][:3], 3)): c for c in coronal.collections
                    if not isinstance(c, LineCollection)}
        assert set(outlines) == {tuple(np.round(matplotlib.colors.to_rgb(colour), 3))
                                 for _, colour, _ in PARTITION_OUTLINES}
        filled = np.concatenate([p.vertices for p in outlines[tuple(np.round(matplotlib.colors.to_rgb("cyan"), 3))]
                                 .get_paths()])
        nz = FIG_SHAPE[2]
        # rot90 coronal panel: column = x index, row = nz - 1 - z index; the outline at 0.5
        # runs half-way between the box's edge voxels and their neighbours.
        assert np.allclose(filled.min(axis=0), [19.5, nz - 1 - 49.5], atol=0.01)
        assert np.allclose(filled.max(axis=0), [29.5, nz - 1 - 39.5], atol=0.01)
        labels = coronal.get_legend_handles_labels()[1]
        assert {"filled as WM", "cerebellum/brainstem"} <= set(labels)
    finally:
        plt.close(fig)


def test_figure_png_shows_the_thickness_views(figure_inputs, tmp_path):
    t1, affine, surfaces, thickness = figure_inputs
    fig = surface_qc_figure(t1, affine, surfaces, thickness, "sub-01")
    try:
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
        height = pixels.shape[0]
        colours = {}
        for ax in (ax for ax in fig.axes if ax.name == "3d"):
            box = ax.get_window_extent()
            column, row = int(box.x0 + box.width / 2), int(height - (box.y0 + box.height / 2))
            colours[ax.get_title()] = np.median(pixels[row - 3 : row + 4, column - 3 : column + 4], axis=(0, 1))
        # viridis(1) is yellow (1.0, 0.9, 0.1); viridis(0) is dark purple (0.27, 0.0, 0.33).
        for title in ("L lateral", "R lateral"):
            red, green, blue = colours[title]
            assert red > 0.8 and green > 0.75 and blue < 0.3, (title, colours[title])
        for title in ("L medial", "R medial"):
            red, green, blue = colours[title]
            assert red < 0.4 and green < 0.1 and blue > 0.2, (title, colours[title])
        path = tmp_path / "surfaces.png"
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
    assert path.stat().st_size > 20_000
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 300 and image.shape[1] > 500
    # The pial contours: thin antialiased lines, so reddish rather than pure red pixels.
    red = image[..., 0] - np.maximum(image[..., 1], image[..., 2]) > 0.3
    assert red.sum() > 200
