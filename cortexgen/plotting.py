"""Drawing cortical surfaces with nilearn into matplotlib figures (QC and shape-model figures).

Orthographic lateral/medial views look exactly along ±x, so faces turned away from the
viewer can be dropped (they are hidden on a closed surface anyway; matplotlib's 3D drawing
costs per polygon) and the rest shaded by their obliquity, as under a headlight: nilearn's
flat colours hide the folds and any spike or dent in a mesh.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cortexgen.surfaces.mesh import Mesh, face_normals, subdivide

HEMI_NAMES = {"L": "left", "R": "right"}
#: Colour scale of thickness maps (mm): the range of a human cortex.
THICKNESS_RANGE_MM = (0.0, 5.0)
#: Faces drawn per panel at most (when the mesh is a subdivision that can be undone):
#: a 40962-vertex hemisphere (81920 faces) is drawn with 20480.
MAX_FACES = 25000


def draw_surface(
    ax, mesh: Mesh, values: np.ndarray, hemi: str, view: str, cmap, vmin: float, vmax: float,
    max_faces: int | None = MAX_FACES,
) -> None:
    """Draw ``mesh`` coloured by per-vertex ``values`` (V,) into a 3D orthographic axis.

    Faces turned away from a lateral or medial viewer are dropped (hidden on a closed
    surface anyway) and the rest darkened by their obliquity, as under a headlight.
    A subdivided mesh with more than ``max_faces`` faces is drawn at the level it was
    split from (:func:`coarsen`); None draws every face.
    """
    from nilearn import plotting

    values = np.asarray(values, dtype=np.float64)
    if max_faces is not None:
        mesh, values = coarsen(mesh, values, max_faces)
    if view in ("lateral", "medial"):
        faces, facing = facing_faces(mesh, eye_x(hemi, view))
        draw = Mesh(mesh.vertices, faces)
    else:
        draw, facing = mesh, None
    plotting.plot_surf(
        (draw.vertices, draw.faces), surf_map=values, hemi=HEMI_NAMES[hemi], view=view, engine="matplotlib",
        cmap=cmap, vmin=vmin, vmax=vmax, colorbar=False, axes=ax, figure=ax.figure,
    )
    # nilearn fits a cube to the mesh; give every axis the mesh's own extent so 1 mm is 1 mm.
    centred = draw.vertices - draw.vertices.mean(axis=0)
    low, high = centred.min(axis=0), centred.max(axis=0)
    ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), zlim=(low[2], high[2]))
    ax.set_box_aspect(np.maximum(high - low, 1e-6), zoom=1.1)
    if facing is not None:
        colours = cmap(np.clip((values[draw.faces].mean(axis=1) - vmin) / (vmax - vmin), 0.0, 1.0))
        colours[:, :3] *= (0.35 + 0.65 * facing)[:, None]
        surface = ax.collections[-1]
        surface.set_facecolors(colours)
        surface.set_edgecolors(colours)


def coarsen(mesh: Mesh, values: np.ndarray, max_faces: int) -> tuple[Mesh, np.ndarray]:
    """Undo :func:`cortexgen.surfaces.mesh.subdivide` while the mesh has more than ``max_faces`` faces.

    A subdivided mesh keeps its coarse vertices first and lists, for every coarse face,
    its corner triangles in three blocks of F/4 faces; the coarse faces are read back from
    those corners and accepted only if splitting them again gives exactly the same faces.
    A mesh that is not such a subdivision is returned as it is.

    Returns:
        The coarse mesh (its vertices are the first ones of ``mesh``) and ``values`` (V,)
        restricted to them.
    """
    while len(mesh.faces) > max_faces and len(mesh.faces) % 4 == 0:
        quarter = len(mesh.faces) // 4
        coarse_faces = np.stack([mesh.faces[i * quarter : (i + 1) * quarter, 0] for i in range(3)], axis=1)
        n_coarse = int(coarse_faces.max()) + 1
        coarse = Mesh(mesh.vertices[:n_coarse], coarse_faces)
        if len(np.unique(coarse_faces)) != n_coarse or not np.array_equal(subdivide(coarse).faces, mesh.faces):
            break
        mesh, values = coarse, values[:n_coarse]
    return mesh, values


def agg_figure(size: tuple[float, float]) -> Figure:
    # A figure on its own Agg canvas, outside pyplot: no global backend to switch, and
    # nothing kept alive in pyplot's registry when a caller forgets to close it.
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def colour_bar(fig: Figure, cmap, vmin: float, vmax: float, label: str,
               position: tuple[float, float, float, float] = (0.35, 0.03, 0.3, 0.012)) -> None:
    """A horizontal colour bar at ``position`` (figure fraction: left, bottom, width, height)."""
    colour_axes = fig.add_axes(position)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap), cax=colour_axes, orientation="horizontal")
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def eye_x(hemi: str, view: str) -> float:
    """The x component (±1) of the direction towards the viewer in nilearn's lateral and
    medial views (elevation 0, azimuth 0 or 180 degrees)."""
    lateral_sign = -1.0 if hemi == "L" else 1.0
    return lateral_sign if view == "lateral" else -lateral_sign


def facing_faces(mesh: Mesh, eye_direction_x: float) -> tuple[np.ndarray, np.ndarray]:
    """The faces of a closed mesh that face a viewer looking along x, and their facing.

    On a closed surface a face turned away from an orthographic viewer is always hidden
    behind another, so dropping it changes no pixel; it halves what matplotlib, whose 3D
    drawing costs per polygon, must sort and draw.

    Returns:
        (K, 3) int32 faces and (K,) cosine in (0, 1] between their normal and the view.
    """
    cosine = face_normals(mesh)[:, 0] * eye_direction_x
    keep = cosine > 0
    return mesh.faces[keep], cosine[keep]
