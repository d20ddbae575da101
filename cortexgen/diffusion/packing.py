"""One-level orthonormal 3D Haar packing: a volume at full resolution as 8 half-resolution channels.

Each 2×2×2 block of voxels becomes its 8 Haar coefficients (one average, seven differences),
so a (B, C, X, Y, Z) volume becomes (B, 8C, X/2, Y/2, Z/2) and back exactly. The transform is
orthonormal, so i.i.d. Gaussian noise stays i.i.d. Gaussian of the same variance and the
bridge and DDPM maths apply unchanged to the packed tensors; the UNet then runs on the half
grid (WDM, Friedrich et al. 2024) but learns every voxel of the full one.

Sides are padded at their far end (replicating the edge) to a multiple of :data:`PACK_MULTIPLE`
before packing, so the packed grid suits a UNet of up to three levels (84×128×84 → 88×128×88
→ 44×64×44); :func:`unpack` crops back to the original shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Full-resolution sides are padded to a multiple of this: 2 for the packing × 4 for the two
#: halvings of a three-level UNet.
PACK_MULTIPLE = 8
#: Channels per input channel.
PACKED_CHANNELS = 8


def _haar_matrix(dtype: torch.dtype, device) -> torch.Tensor:
    """(8, 8) orthonormal matrix: row k holds the signs of coefficient k over the block's voxels
    (voxel index 4i + 2j + l for the block offset (i, j, l)), scaled by 1/sqrt(8)."""
    one_d = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    matrix = torch.kron(torch.kron(one_d, one_d), one_d) / 8.0**0.5
    return matrix.to(dtype=dtype, device=device)


def packed_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    """The half-resolution grid a full-resolution ``grid`` packs to (after its padding)."""
    return tuple(-(-int(side) // PACK_MULTIPLE) * PACK_MULTIPLE // 2 for side in grid)


def pack(volume: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, 8C, X'/2, Y'/2, Z'/2), X' = X padded to a multiple of 8; channel c*8 + k
    is coefficient k of input channel c."""
    batch, channels, *grid = volume.shape
    padding = []
    for side in reversed(grid):
        padding += [0, -side % PACK_MULTIPLE]
    if any(padding):
        volume = F.pad(volume, padding, mode="replicate")
    x, y, z = (side // 2 for side in volume.shape[2:])
    # (B, C, x, 2, y, 2, z, 2) -> (B, C, x, y, z, 8 block voxels) -> coefficients.
    blocks = volume.reshape(batch, channels, x, 2, y, 2, z, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
    blocks = blocks.reshape(batch, channels, x, y, z, 8)
    coefficients = blocks @ _haar_matrix(volume.dtype, volume.device).T
    return coefficients.permute(0, 1, 5, 2, 3, 4).reshape(batch, channels * 8, x, y, z)


def unpack(packed: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack`: (B, 8C, x, y, z) -> (B, C, *grid), cropping the padding."""
    batch, packed_channels, x, y, z = packed.shape
    if packed_channels % PACKED_CHANNELS:
        raise ValueError(f"a packed volume has a multiple of 8 channels, got {packed_channels}")
    channels = packed_channels // PACKED_CHANNELS
    coefficients = packed.reshape(batch, channels, 8, x, y, z).permute(0, 1, 3, 4, 5, 2)
    blocks = coefficients @ _haar_matrix(packed.dtype, packed.device)
    volume = blocks.reshape(batch, channels, x, y, z, 2, 2, 2).permute(0, 1, 2, 5, 3, 6, 4, 7)
    volume = volume.reshape(batch, channels, 2 * x, 2 * y, 2 * z)
    gx, gy, gz = (int(side) for side in grid)
    return volume[:, :, :gx, :gy, :gz]
