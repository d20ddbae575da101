"""Brain extraction in MNI space: deepbet (weights ship in its wheel) or the template mask."""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

from cortexgen.errors import InputImageError
from cortexgen.preprocess.bias import foreground_volume_ml

SKULLSTRIP_METHODS = ("deepbet", "template")


@functools.cache
def deepbet_extractor():
    """deepbet's two networks on the CPU, loaded once per process (about 1.2 s with torch's
    import). CPU on purpose: preprocessing jobs are CPU jobs, and CPU results are reproducible."""
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def deepbet_brain_mask(
    img: nib.Nifti1Image, threshold: float = 0.5, n_dilate: int = 0, bfloat16: bool = False
) -> np.ndarray:
    """Brain mask from deepbet's two-stage CNN, on the CPU, from the weights in its wheel.

    Args:
        img: 3D head or brain image, any intensity scale (deepbet rescales by percentiles).
        threshold: probability above which a voxel is brain.
        n_dilate: voxel layers to grow (positive) or shrink (negative) the mask by.
        bfloat16: run the networks in bfloat16 where the CPU computes it natively
            (avx512_bf16 or AMX; elsewhere float32, which emulated bfloat16 would only slow).

    Returns:
        bool array of ``img``'s shape (largest component, holes filled).
    """
    import torch

    extractor = deepbet_extractor()
    data = np.asarray(img.dataobj, dtype=np.float32)
    if nib.aff2axcodes(img.affine) != ("R", "A", "S"):
        raise ValueError("deepbet_brain_mask expects an image in RAS+ orientation (e.g. on the template grid)")
    native = bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    # BrainExtraction.run's steps up to its mask; the masked image, volume and reorientation
    # it also makes (the image is RAS+ already) are not needed.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native):
        probability = extractor.run_model(data.copy())
    return np.asarray(extractor.postprocess(probability > threshold, n_dilate), dtype=bool)


def template_brain_mask(template_mask: nib.Nifti1Image, target: nib.Nifti1Image) -> np.ndarray:
    """The template's brain mask on ``target``'s grid (nearest neighbour), as bool."""
    if template_mask.shape[:3] == target.shape[:3] and np.allclose(template_mask.affine, target.affine):
        data = np.asarray(template_mask.dataobj)
    else:
        data = np.asarray(resample_from_to(template_mask, (target.shape[:3], target.affine), order=0).dataobj)
    return data > 0.5


def skull_strip(
    img: nib.Nifti1Image,
    method: str = "deepbet",
    template_mask: nib.Nifti1Image | None = None,
    threshold: float = 0.5,
    n_dilate: int = 0,
    volume_range_ml: tuple[float, float] = (1500.0, 2400.0),
    source: str | None = None,
    bfloat16: bool = False,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Brain-extract an MNI-space head.

    Args:
        img: head image on the template grid.
        method: ``"deepbet"`` or ``"template"`` (the template's own mask, trusted because
            the head is already affinely aligned to that template).
        template_mask: the template's brain mask; required for ``"template"``.
        threshold, n_dilate, bfloat16: passed to deepbet (:func:`deepbet_brain_mask`).
        volume_range_ml: plausible brain-mask volume (mL). A mask outside it means the
            extraction failed (or the scan is not a brain) and is refused.
        source: the file ``img`` came from, for error messages.

    Returns:
        ``(brain, mask)``: the masked image (float32, 0 outside) and the mask (uint8).
    """
    if method == "deepbet":
        mask = deepbet_brain_mask(img, threshold=threshold, n_dilate=n_dilate, bfloat16=bfloat16)
    elif method == "template":
        if template_mask is None:
            raise ValueError("skull_strip(method='template') needs template_mask")
        mask = template_brain_mask(template_mask, img)
    else:
        raise ValueError(f"unknown skull-strip method {method!r}; expected one of {SKULLSTRIP_METHODS}")

    volume_ml = foreground_volume_ml(img, mask)
    low, high = volume_range_ml
    if not low <= volume_ml <= high:
        raise InputImageError(
            source,
            f"brain mask from {method} is {volume_ml:.0f} mL, outside the plausible range "
            f"[{low:.0f}, {high:.0f}] mL (config preprocess.skullstrip.volume_range_ml): "
            "skull stripping failed or the image is not a whole brain",
        )
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = nib.Nifti1Image(np.where(mask, data, 0).astype(np.float32), img.affine)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    for out in (brain, mask_img):
        out.header.set_xyzt_units("mm", "sec")
    return brain, mask_img


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two bool masks of the same shape."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)
