"""Intensity normalisation inside the brain and resampling to the model grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def normalize_intensity(
    img: nib.Nifti1Image, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map intensities inside ``mask`` to [0, 1] by robust percentiles; background 0.

    Args:
        img: 3D image.
        mask: bool array of ``img``'s shape.
        percentiles: the in-mask percentiles mapped to 0 and 1; values beyond are clipped,
            so a few hot voxels (vessels, fat) do not compress the brain's contrast.

    Returns:
        float32 array, in [0, 1] inside the mask and exactly 0 outside.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("normalize_intensity: the brain mask is empty")
    low, high = np.percentile(data[mask], percentiles)
    scale = high - low if high > low else 1.0
    scaled = np.clip((data - low) / scale, 0.0, 1.0)
    return np.where(mask, scaled, 0.0).astype(np.float32)


def resized_affine(affine: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """Affine of a grid of ``out_shape`` voxels covering the same field of view as ``in_shape``.

    Voxel edges stay where they were (the convention of ``align_corners=False`` resizing):
    output voxel ``i`` has its centre at input voxel coordinate ``(i + 0.5) * s - 0.5`` with
    ``s = in / out`` per axis, so the voxel size is ``in/out`` times the input's.
    """
    scale = np.asarray(in_shape[:3], dtype=float) / np.asarray(out_shape[:3], dtype=float)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = (scale - 1.0) / 2.0
    return affine @ index_map


def resize_to_shape(data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], order: int = 1):
    """Resample a volume to ``shape`` over the same field of view.

    Args:
        data: 3D array.
        affine: its 4x4 voxel-to-world (RAS mm) matrix.
        shape: the output grid, e.g. (84, 128, 84).
        order: 1 (trilinear, anti-aliased: a Gaussian of the downsampling factor first,
            as skimage does) for images, 0 for labels/masks.

    Returns:
        ``(resized, new_affine)``: float32 array of ``shape`` and the affine whose voxel
        size is the true one (e.g. 2.155 x 1.695 x 2.155 mm for 181x217x181 -> 84x128x84).
    """
    from skimage.transform import resize

    resized = resize(
        data.astype(np.float32),
        shape,
        order=order,
        mode="edge",
        anti_aliasing=order > 0,
        preserve_range=True,
    ).astype(np.float32)
    return resized, resized_affine(affine, data.shape, shape)


def normalize_and_resize(
    brain: nib.Nifti1Image,
    mask: nib.Nifti1Image,
    shape: tuple[int, int, int] = (84, 128, 84),
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The model-ready image: [0, 1] in the brain, 0 outside, float32, on ``shape``.

    The mask is resampled by thresholding its trilinear resampling at 0.5 (a partial-volume
    majority vote), and the image is zeroed outside it *after* resizing, so that
    interpolation cannot leak non-zero values into the background.

    Returns:
        ``(image, mask)`` on the new grid with the affine of :func:`resized_affine`.
    """
    mask_data = np.asarray(mask.dataobj) > 0
    normalized = normalize_intensity(brain, mask_data, percentiles)
    resized, affine = resize_to_shape(normalized, brain.affine, shape, order=1)
    mask_fraction, _ = resize_to_shape(mask_data.astype(np.float32), brain.affine, shape, order=1)
    small_mask = mask_fraction >= 0.5
    image = np.where(small_mask, np.clip(resized, 0.0, 1.0), 0.0).astype(np.float32)
    image_img = nib.Nifti1Image(image, affine)
    mask_img = nib.Nifti1Image(small_mask.astype(np.uint8), affine)
    for out in (image_img, mask_img):
        out.header.set_xyzt_units("mm", "sec")
    return image_img, mask_img
