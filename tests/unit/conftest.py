"""Shared synthetic phantoms for the unit tests.

The phantom is a "head": a scalp ellipsoid, a dark skull shell, a brighter "brain"
ellipsoid, a "neck" cylinder below it, and internal structures that make it asymmetric
(so that a registration cannot succeed with a flipped or rotated solution):

* dark CSF: two lateral "ventricles" of unequal size and a midline "fissure",
* a bright "nucleus" sphere right-anterior-superior,
* small dark and bright spots spread through the brain.

It is rendered analytically from world (RAS mm) coordinates with 2 x 2 x 2 sub-voxel
sampling, so a moved copy (a known transform applied in world space) is exact rather
than interpolated. At ``scale=1`` the brain has the semi-axes 65 x 80 x 55 mm (1198 mL,
a real brain's volume); most tests use ``scale=0.5`` on a 2 mm grid to stay small and fast.

Test modules reach the helpers through the ``phantom_lib`` fixture.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

# Labels of the phantom and their (noise-free) intensities.
BACKGROUND, SCALP, SKULL, BRAIN, VENTRICLE, NUCLEUS = range(6)
INTENSITY = np.array([0.0, 70.0, 15.0, 100.0, 35.0, 140.0], dtype=np.float32)

# Geometry at scale 1, in mm relative to the phantom centre: (centre, semi-axes).
# The skull and scalp keep their thickness (mm) at every scale, as real ones would.
BRAIN_AXES = np.array([65.0, 80.0, 55.0])
SKULL_MM, SCALP_MM = 5.0, 6.0
NECK_RADIUS = 28.0
# Dark CSF: two lateral ventricles of unequal size and the interhemispheric fissure (a
# midline sheet in the upper brain); a bright "nucleus" on the right. Elongated and
# off-centre, they fix the orientation (the ellipsoids alone barely constrain rotation).
VENTRICLES = (
    (np.array([-13.0, 2.0, 10.0]), np.array([6.0, 28.0, 9.0])),
    (np.array([11.0, -4.0, 8.0]), np.array([5.0, 20.0, 7.0])),
)
FISSURE_HALF_WIDTH_MM = 1.5
NUCLEUS_CENTRE, NUCLEUS_RADIUS = np.array([24.0, 30.0, 14.0]), 12.0
# Small spots spread through the brain (like a brain's folds, they pin down the
# orientation far from the centre): alternately dark and bright, 4 mm radius at any scale.
SPOT_RADIUS_MM = 4.0
SPOT_CENTRES = np.array([
    [-40.0, 45.0, 10.0], [35.0, -50.0, 5.0], [-30.0, -40.0, 30.0], [45.0, 10.0, -15.0],
    [-45.0, -5.0, -20.0], [10.0, 60.0, -10.0], [-5.0, -62.0, -12.0], [25.0, 15.0, 38.0],
])


def ras_affine(shape, voxel_mm: float = 2.0, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS+ affine of an isotropic grid whose central point sits at ``centre_mm``."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = np.asarray(centre_mm, float) - voxel_mm * (np.asarray(shape, float) - 1) / 2
    return affine


def world_coords(shape, affine) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shape ``shape + (3,)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _inside(points, centre, axes) -> np.ndarray:
    """Which of ``points`` (N x 3) lie in the axis-aligned ellipsoid (``centre``, ``axes``)."""
    centre = np.broadcast_to(np.asarray(centre, dtype=np.float32), (3,))
    axes = np.broadcast_to(np.asarray(axes, dtype=np.float32), (3,))
    distance = np.zeros(len(points), dtype=np.float32)
    for axis in range(3):
        distance += ((points[:, axis] - centre[axis]) / axes[axis]) ** 2
    return distance <= 1.0


def phantom_labels(points: np.ndarray, scale: float = 0.5, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Label of each world point (``(..., 3)`` mm) in a phantom centred at ``centre``."""
    rel = (points.reshape(-1, 3) - np.asarray(centre, float)).astype(np.float32)
    labels = np.zeros(len(rel), dtype=np.uint8)
    labels[_inside(rel, 0.0, scale * BRAIN_AXES + SKULL_MM + SCALP_MM)] = SCALP
    labels[_inside(rel, 0.0, scale * BRAIN_AXES + SKULL_MM)] = SKULL
    # The neck: soft tissue below the head's centre, joining scalp and brain as in a real
    # head (head_mask keeps the largest connected component).
    neck = (rel[:, 2] < 0) & ((rel[:, 0] / 1.2) ** 2 + rel[:, 1] ** 2 <= (scale * NECK_RADIUS) ** 2)
    labels[neck] = SCALP
    # Everything else lies inside the brain: label only those points (much faster).
    in_brain = np.flatnonzero(_inside(rel, 0.0, scale * BRAIN_AXES))
    inner = rel[in_brain]
    inner_labels = np.full(len(inner), BRAIN, dtype=np.uint8)
    fissure = (np.abs(inner[:, 0]) < FISSURE_HALF_WIDTH_MM) & (inner[:, 2] > -0.1 * scale * BRAIN_AXES[2])
    inner_labels[fissure] = VENTRICLE
    for centre_mm, axes_mm in VENTRICLES:
        inner_labels[_inside(inner, scale * centre_mm, scale * axes_mm)] = VENTRICLE
    inner_labels[_inside(inner, scale * NUCLEUS_CENTRE, scale * NUCLEUS_RADIUS)] = NUCLEUS
    for k, spot in enumerate(SPOT_CENTRES):
        inner_labels[_inside(inner, scale * spot, SPOT_RADIUS_MM)] = VENTRICLE if k % 2 == 0 else NUCLEUS
    labels[in_brain] = inner_labels
    return labels.reshape(points.shape[:-1])


@dataclass
class Phantom:
    """A rendered phantom: the image, its labels, and the geometry it was made with."""

    img: nib.Nifti1Image
    labels: np.ndarray
    scale: float
    centre: np.ndarray

    @property
    def data(self) -> np.ndarray:
        """A copy of the voxels (float32): session fixtures must not be changed in place."""
        return np.array(self.img.dataobj, dtype=np.float32)

    @property
    def head(self) -> np.ndarray:
        return self.labels > BACKGROUND

    @property
    def brain(self) -> np.ndarray:
        """Brain including its internal structures."""
        return self.labels >= BRAIN


def make_phantom(
    shape=(56, 64, 52),
    voxel_mm: float = 2.0,
    scale: float = 0.5,
    centre=(4.0, -12.0, 10.0),
    smooth_vox: float = 0.7,
    ras_transform: np.ndarray | None = None,
    brain_only: bool = False,
) -> Phantom:
    """Render the phantom on an isotropic RAS grid.

    Args:
        shape, voxel_mm: the grid (its centre lies at ``centre``).
        scale: size of the phantom relative to a real head (1 = real size).
        centre: world position (mm) of the phantom centre.
        smooth_vox: Gaussian blur (voxels) giving soft partial-volume edges.
        ras_transform: a 4x4 matrix M (RAS mm): the rendered image shows at world point
            ``y`` what the untransformed phantom shows at ``M^-1 y``, i.e. M maps points of
            the untransformed phantom onto this image's (as a registration's
            template -> moving ``ras_matrix`` does).
        brain_only: zero everything outside the brain (a skull-stripped scan).
    """
    affine = ras_affine(shape, voxel_mm, centre)
    centres = world_coords(shape, affine)
    inverse = np.eye(4) if ras_transform is None else np.linalg.inv(ras_transform)

    def labels_at(points):
        labels = phantom_labels(points @ inverse[:3, :3].T + inverse[:3, 3], scale, centre)
        return np.where(labels >= BRAIN, labels, BACKGROUND).astype(np.uint8) if brain_only else labels

    labels = labels_at(centres)
    # Partial volume: average the intensity of 2 x 2 x 2 sub-voxel samples, so that edges
    # are anti-aliased and a moved copy differs from the original only by the motion.
    data = np.zeros(shape, dtype=np.float64)
    for offset in itertools.product((-0.25, 0.25), repeat=3):
        data += INTENSITY[labels_at(centres + affine[:3, :3] @ np.asarray(offset))]
    data /= 8.0
    if smooth_vox > 0:
        data = ndimage.gaussian_filter(data, smooth_vox)
    if brain_only:
        data[labels == BACKGROUND] = 0.0
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    return Phantom(img=img, labels=labels, scale=scale, centre=np.asarray(centre, float))


def add_rician_noise(data: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: sqrt((x+n1)^2 + n2^2)."""
    rng = np.random.default_rng(seed)
    n1 = rng.normal(0.0, sigma, data.shape)
    n2 = rng.normal(0.0, sigma, data.shape)
    return np.sqrt((data + n1) ** 2 + n2**2).astype(np.float32)


def psnr(estimate: np.ndarray, truth: np.ndarray, region: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio (dB) of ``estimate`` against ``truth`` inside ``region``."""
    mse = float(np.mean((estimate[region].astype(float) - truth[region].astype(float)) ** 2))
    return 10.0 * np.log10(peak**2 / mse)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="session")
def phantom_lib():
    """This module, for tests that need the helpers above (make_phantom, psnr, the labels):
    test modules cannot import a conftest reliably (it depends on pytest's import mode)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def small_head() -> Phantom:
    """Half-size head on a 56 x 64 x 52 grid of 2 mm voxels, noise-free, smooth edges."""
    return make_phantom()


@pytest.fixture(scope="session")
def noisy_head() -> Phantom:
    """``small_head`` with Rician noise (sigma 3, i.e. ~2 % of the maximum) everywhere,
    background included, as a raw scanner image has."""
    phantom = make_phantom()
    noisy = add_rician_noise(phantom.data, sigma=3.0, seed=1)
    return Phantom(nib.Nifti1Image(noisy, phantom.img.affine), phantom.labels, phantom.scale, phantom.centre)


@pytest.fixture(scope="session")
def full_size_brain() -> Phantom:
    """A skull-stripped real-size brain (~1200 mL) on an 88 x 104 x 80 grid of 2 mm voxels."""
    return make_phantom(shape=(88, 104, 80), scale=1.0, brain_only=True)


@pytest.fixture(scope="session")
def full_size_head() -> Phantom:
    """A real-size raw head with a noisy (non-zero) background, same grid as ``full_size_brain``."""
    phantom = make_phantom(shape=(88, 104, 80), scale=1.0)
    noisy = add_rician_noise(phantom.data, sigma=3.0, seed=2)
    return Phantom(nib.Nifti1Image(noisy, phantom.img.affine), phantom.labels, phantom.scale, phantom.centre)
