"""The template meshes every subject's surfaces are made from: fsaverage, fitted to the MNI template.

Correspondence comes from construction: each subject's white and pial meshes are the
template's meshes moved onto that subject, so vertex i is the same place on every brain.
The template is FreeSurfer's fsaverage5 (shipped inside nilearn, no download), split
once (10242 → 40962 vertices per hemisphere, the fsaverage6 density, ~1.4 mm edges);
its first 10242 vertices stay fsaverage5's, so fsaverage atlases index them directly.
fsaverage lives in MNI305 space; each subject's tissue label is registered (affine, then
SyN) to fsaverage drawn as a tissue label, which carries the meshes onto the subject.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cortexgen.surfaces.mesh import Mesh, load_shape, load_surface, subdivide

HEMISPHERES = ("L", "R")
_NILEARN_HEMI = {"L": "left", "R": "right"}
#: fsaverage sets white = pial on the medial wall (thickness 0); below this it is not cortex.
MEDIAL_WALL_THICKNESS_MM = 0.5


@dataclass(frozen=True)
class HemisphereMeshes:
    """White and pial meshes of one hemisphere sharing faces and vertex order.

    Attributes:
        white, pial: meshes in world RAS mm.
        cortex: (V,) bool, False on the medial wall (where the hemisphere is cut through
            the corpus callosum and deep grey matter, and white = pial).
    """

    white: Mesh
    pial: Mesh
    cortex: np.ndarray


def fsaverage5_dir() -> Path:
    """Folder of the fsaverage5 GIfTI files nilearn ships in its wheel."""
    import nilearn.datasets

    return Path(os.path.dirname(nilearn.datasets.__file__)) / "data" / "fsaverage5"


def load_fsaverage(hemi: str, subdivisions: int = 1) -> HemisphereMeshes:
    """fsaverage5 white/pial of ``hemi`` ("L"/"R"), split ``subdivisions`` times, in MNI305 mm."""
    folder = fsaverage5_dir()
    name = _NILEARN_HEMI[hemi]
    white = load_surface(folder / f"white_{name}.gii.gz")
    pial = load_surface(folder / f"pial_{name}.gii.gz")
    thickness = load_shape(folder / f"thick_{name}.gii.gz")
    if not np.array_equal(white.faces, pial.faces):
        raise ValueError(f"fsaverage5 {hemi} white and pial meshes do not share faces")
    for _ in range(subdivisions):
        n = len(white.vertices)
        white, pial = subdivide(white), subdivide(pial)
        # A new (midpoint) vertex is cortex when both ends of its edge were.
        thickness = np.concatenate([thickness, _midpoint_values(thickness, pial, n)])
    return HemisphereMeshes(white=white, pial=pial, cortex=thickness >= MEDIAL_WALL_THICKNESS_MM)


def _midpoint_values(values: np.ndarray, fine: Mesh, n_coarse: int) -> np.ndarray:
    """Per-vertex values of the midpoints a subdivision appended: min of the edge's two ends."""
    from cortexgen.surfaces.mesh import edges

    # Midpoint vertex n_coarse + k sits on the k-th sorted unique edge of the coarse mesh;
    # in the fine mesh it is joined to both ends, which are the only coarse neighbours it has.
    e = edges(fine.faces)
    coarse_end = e[:, 0] < n_coarse
    fine_end = e[:, 1] >= n_coarse
    links = e[coarse_end & fine_end]
    out = np.full(len(fine.vertices) - n_coarse, np.inf)
    np.minimum.at(out, links[:, 1] - n_coarse, values[links[:, 0]])
    return out


def synthetic_label(hemispheres: dict[str, HemisphereMeshes], shape: tuple[int, int, int], affine: np.ndarray,
                    csf_margin_mm: float = 3.0) -> np.ndarray:
    """A tissue label (1 CSF, 2 GM, 3 WM, 0 elsewhere) drawn from meshes on a grid.

    WM inside the white surfaces, GM between white and pial, CSF in a ``csf_margin_mm``
    shell outside the pial surface, 0 beyond: the image of the meshes that the template's
    real tissue label is registered to.
    """
    from cortexgen.surfaces.sdf import signed_distance_volume

    white = signed_distance_volume([h.white for h in hemispheres.values()], shape, affine)
    pial = signed_distance_volume([h.pial for h in hemispheres.values()], shape, affine)
    label = np.zeros(shape, dtype=np.float32)
    label[pial < csf_margin_mm] = 1.0
    label[pial < 0] = 2.0
    label[white < 0] = 3.0
    return label


@dataclass(frozen=True)
class SurfaceTemplate:
    """What every subject's surfaces start from.

    Attributes:
        hemispheres: "L"/"R" → fsaverage white/pial meshes (MNI305 mm) and cortex mask.
        label: the meshes drawn as a tissue label (see :func:`synthetic_label`).
        mask: where the label is defined (the cerebrum and a CSF margin), 1/0.
    """

    hemispheres: dict[str, HemisphereMeshes]
    label: nib.Nifti1Image
    mask: nib.Nifti1Image


def build_template(subdivisions: int = 1, resolution_mm: float = 2.0, csf_margin_mm: float = 3.0,
                   padding_mm: float = 12.0) -> SurfaceTemplate:
    """fsaverage5 split ``subdivisions`` times and drawn on a ``resolution_mm`` grid around it."""
    hemispheres = {hemi: load_fsaverage(hemi, subdivisions) for hemi in HEMISPHERES}
    corners = np.concatenate([h.pial.vertices for h in hemispheres.values()])
    low = np.floor(corners.min(axis=0) - padding_mm)
    shape = tuple(int(n) for n in np.ceil((corners.max(axis=0) + padding_mm - low) / resolution_mm) + 1)
    affine = np.diag([resolution_mm] * 3 + [1.0])
    affine[:3, 3] = low
    label = synthetic_label(hemispheres, shape, affine, csf_margin_mm)
    return SurfaceTemplate(
        hemispheres=hemispheres,
        label=nib.Nifti1Image(label, affine),
        mask=nib.Nifti1Image((label > 0).astype(np.uint8), affine),
    )


def load_template(hemis: list[str], white: list[str | Path], pial: list[str | Path], cortex: list[str | Path],
                  label: str | Path, mask: str | Path) -> SurfaceTemplate:
    """A template as the surface_template rule writes it: per-hemisphere GIfTIs (in ``hemis``
    order) and the label/mask NIfTIs."""
    return SurfaceTemplate(
        hemispheres={
            hemi: HemisphereMeshes(
                white=load_surface(white[i]), pial=load_surface(pial[i]), cortex=load_shape(cortex[i]) > 0.5
            )
            for i, hemi in enumerate(hemis)
        },
        label=nib.load(label),
        mask=nib.load(mask),
    )
