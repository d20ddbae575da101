"""Nonlinear registration of the template's tissue label to a subject's, and moving points with it.

The template label is drawn from the template meshes (WM inside white, GM in the ribbon,
CSF around); the subject's comes from its segmentation. Registering labels (1 CSF, 2 GM,
3 WM) with a mean-squares metric is contrast-free and deterministic. It runs on coarse
copies (``resolution_mm``): the meshes are fitted to the 1 mm tissue boundaries
afterwards, so the warp only has to bring them within a few millimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage

from cortexgen.preprocess.convert import nib_to_ants, resampled_to_spacing
from cortexgen.preprocess.register import ants_seed
from cortexgen.surfaces.mesh import world_to_voxel
from cortexgen.surfaces.sdf import grid_points


@dataclass(frozen=True)
class WarpSettings:
    """SyN settings (config ``surfaces.warp``).

    Attributes:
        resolution_mm: isotropic voxel size the labels are resampled to before SyN.
        iterations: per level, coarse to fine (ANTs halves the resolution per level).
        gradient_step: SyN's step size.
        flow_sigma: smoothing (voxels) of the update field; larger is smoother.
        total_sigma: smoothing (voxels) of the total field.
        seed: ANTs' random seed (positive); unseeded, ANTs seeds its affine stage's metric
            sampling from the clock and every run differs.
    """

    resolution_mm: float = 2.0
    iterations: tuple[int, ...] = field(default=(60, 30, 10))
    gradient_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    seed: int = 42

    @classmethod
    def from_config(cls, section: dict) -> WarpSettings:
        values = dict(section)
        values["iterations"] = tuple(values.get("iterations", cls.iterations))
        return cls(**values)


@dataclass
class PointWarp:
    """A template → subject point mapping held as a displacement field.

    ``map(points)`` takes (N, 3) template-space world RAS mm to subject-space world RAS mm
    (trilinear in the field; points outside the grid take the nearest edge value).
    """

    displacement: np.ndarray  # (X, Y, Z, 3) world RAS mm, on the grid of ``affine``
    affine: np.ndarray

    def map(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        coords = world_to_voxel(points, self.affine).T
        shift = np.stack(
            [ndimage.map_coordinates(self.displacement[..., k], coords, order=1, mode="nearest") for k in range(3)],
            axis=1,
        )
        return points + shift


def register_labels(
    template_label: nib.Nifti1Image,
    subject_label: nib.Nifti1Image,
    settings: WarpSettings,
    template_mask: nib.Nifti1Image | None = None,
) -> PointWarp:
    """Affine then SyN from the template's tissue label to the subject's; returns the point mapping.

    The template is ANTs' *fixed* image: a forward transform then maps fixed-space points
    to moving-space points, which is exactly "where does this template vertex lie in the
    subject". The metric is evaluated inside ``template_mask`` only (the cerebrum the
    template meshes describe, so the subject's cerebellum does not pull on them). The
    mapping is sampled into a displacement field on the template's grid so the temporary
    transform files can be removed at once.
    """
    import ants

    fixed = nib_to_ants(template_label)
    spacing = (float(settings.resolution_mm),) * 3
    fixed_coarse = resampled_to_spacing(fixed, spacing)
    moving_coarse = resampled_to_spacing(nib_to_ants(subject_label), spacing)
    extra = {}
    if template_mask is not None:
        mask = ants.resample_image_to_target(nib_to_ants(template_mask), fixed_coarse, interp_type="nearestNeighbor")
        extra["mask"] = mask
    with ants_seed(settings.seed):
        registration = ants.registration(
            fixed=fixed_coarse,
            moving=moving_coarse,
            type_of_transform="SyN",
            syn_metric="meansquares",
            aff_metric="meansquares",
            reg_iterations=tuple(settings.iterations),
            grad_step=float(settings.gradient_step),
            flow_sigma=float(settings.flow_sigma),
            total_sigma=float(settings.total_sigma),
            **extra,
        )
    transforms = registration["fwdtransforms"]
    try:
        grid = ants.to_nibabel_nifti(fixed_coarse)
        centres = grid_points(grid.shape[:3], grid.affine)
        mapped = _apply_to_points(centres, transforms)
    finally:
        for path in set(registration["fwdtransforms"]) | set(registration["invtransforms"]):
            if os.path.exists(path):
                os.remove(path)
    displacement = (mapped - centres).reshape(grid.shape[:3] + (3,)).astype(np.float32)
    return PointWarp(displacement, grid.affine.copy())


def _apply_to_points(points_ras: np.ndarray, transforms: list[str]) -> np.ndarray:
    """ANTs point transform; ANTs works in LPS, so x and y flip sign on the way in and out."""
    import ants
    import pandas as pd

    lps = points_ras * np.array([-1.0, -1.0, 1.0])
    table = pd.DataFrame(lps, columns=["x", "y", "z"])
    moved = ants.apply_transforms_to_points(3, table, transforms).to_numpy()[:, :3]
    return moved * np.array([-1.0, -1.0, 1.0])
