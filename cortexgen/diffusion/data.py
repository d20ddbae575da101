"""Volumes on disk <-> tensors in the networks' scaling, on a generator's own training grid.

Model-ready images are [0, 1] on ``preprocess.shape``; a generator may train on a coarser
grid (the CPU demo: 44×64×44), so volumes are resized here, keeping the field of view
(voxel edges stay put, as :func:`cortexgen.preprocess.normalize.resized_affine`).
Networks see values of about [-1, 1]: images 2x - 1, signed distances / clip, masks 2m - 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F


def resize_volume(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize (C, X, Y, Z) or (B, C, X, Y, Z) to ``shape`` over the same field of view.

    Shrinking averages the voxels each new voxel covers (no aliasing); growing is trilinear.
    """
    shape = tuple(int(side) for side in shape)
    batched = volume.dim() == 5
    x = volume if batched else volume[None]
    if tuple(x.shape[2:]) != shape:
        if all(new <= old for new, old in zip(shape, x.shape[2:])):
            x = F.adaptive_avg_pool3d(x, shape)
        else:
            x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    return x if batched else x[0]


def image_to_network(image: np.ndarray) -> torch.Tensor:
    """A [0, 1] image (X, Y, Z) as a (1, X, Y, Z) float tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32))[None] * 2.0 - 1.0


def network_to_image(volume: torch.Tensor) -> np.ndarray:
    """(1, X, Y, Z) or (X, Y, Z) network output back to a [0, 1] float32 image (clipped)."""
    volume = volume.detach().float().cpu()
    if volume.dim() == 4:
        volume = volume[0]
    return ((volume + 1.0) / 2.0).clamp(0.0, 1.0).numpy().astype(np.float32)


def condition_to_network(volume: np.ndarray, role: str, sdf_clip_mm: float) -> torch.Tensor:
    """A condition volume (X, Y, Z) scaled to [-1, 1]: SDFs by their clip distance, masks 2m - 1."""
    volume = torch.from_numpy(np.asarray(volume, dtype=np.float32))
    if role.endswith("sdf"):
        return (volume / float(sdf_clip_mm)).clamp(-1.0, 1.0)[None]
    return (volume > 0).float()[None] * 2.0 - 1.0


def load_image(path, grid: Sequence[int]) -> torch.Tensor:
    """A model-ready image file as (1, *grid) in [-1, 1]."""
    return resize_volume(image_to_network(nib.load(str(path)).get_fdata(dtype=np.float32)), grid)


def load_conditions(paths: dict[str, str], roles: Sequence[str], grid: Sequence[int],
                    sdf_clip_mm: float) -> torch.Tensor:
    """The condition volumes named by ``roles`` (keys of ``paths``) stacked as (C, *grid)."""
    volumes = [condition_to_network(nib.load(str(paths[role])).get_fdata(dtype=np.float32), role, sdf_clip_mm)
               for role in roles]
    return resize_volume(torch.cat(volumes), grid)
