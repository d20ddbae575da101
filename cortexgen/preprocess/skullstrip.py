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
        probability = deepbet_probability(extractor, data)
    return np.asarray(extractor.postprocess(probability > threshold, n_dilate), dtype=bool)


def deepbet_probability(extractor, data: np.ndarray) -> np.ndarray:
    """Brain probability per voxel, as deepbet 1.0.2's ``BrainExtraction.run_model`` makes it.

    The same steps and the same numbers (tested against it), but its two intensity
    percentiles are found by selection rather than by sorting the 128^3 copy twice:
    0.06 instead of 0.4 s of one core, which nothing else overlaps. Sets
    ``extractor.bbox``, which its ``postprocess`` reads.

    Args:
        extractor: :func:`deepbet_extractor`'s networks.
        data: float32 head, RAS+ (not modified).

    Returns:
        float32 array of ``data``'s shape, in [0, 1].
    """
    import torch
    import torch.nn.functional as F
    from deepbet.utils import keep_largest_connected_component, normalize

    device = next(extractor.model.parameters()).device
    x = torch.nan_to_num(torch.from_numpy(np.array(data, dtype=np.float32)).to(device))
    probability = torch.zeros_like(x)
    # The bounding-box network sees a 128^3 copy; its percentiles scale both networks' input.
    x_small = F.interpolate(x[None, None], (128, 128, 128), mode="nearest-exact")[0, 0]
    low, high = (sorted_quantile(x_small, q) for q in (0.005, 0.995))
    with torch.no_grad():
        small = extractor.bbox_model(normalize(x_small, low, high)[None, None])[0, 1]
    small = torch.from_numpy(keep_largest_connected_component((small > 0.5).float().cpu().numpy())).to(device)
    extractor.bbox = extractor.get_bbox_with_margin(small, probability.shape, 0.1)
    # The brain network sees the box with a 10 % margin on a 256^3 grid.
    x = F.interpolate(x[extractor.bbox][None, None], (256, 256, 256), mode="nearest-exact")[0, 0]
    with torch.no_grad():
        boxed = extractor.model(normalize(x, low, high)[None, None])[0, 1]
    probability[extractor.bbox] = F.interpolate(boxed[None, None], probability[extractor.bbox].shape,
                                                mode="nearest-exact")[0, 0]
    return probability.cpu().numpy()


def sorted_quantile(values, q: float):
    """``torch.quantile(values, q)`` (linear interpolation), bit for bit, from the two order
    statistics it interpolates (``torch.kthvalue``, linear time) instead of a full sort.

    Args:
        values: a float tensor, any shape, no NaN.
        q: in [0, 1].

    Returns:
        0-d tensor of ``values``' dtype.
    """
    import torch

    flat = values.reshape(-1)
    # torch.quantile's rank, in the tensor's dtype: q * (n - 1).
    rank = torch.tensor(q, dtype=flat.dtype) * (flat.numel() - 1)
    below, above = int(rank.long()), int(rank.ceil().long())
    low = torch.kthvalue(flat, below + 1).values
    high = low if above == below else torch.kthvalue(flat, above + 1).values
    return torch.lerp(low, high, rank - below)


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
