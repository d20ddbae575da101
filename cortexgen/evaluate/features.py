"""Feature vectors of image sets for the distribution metrics (FID, RBF MMD).

Two kinds: MedicalNet's 3D ResNet (Med3D, Chen et al. 2019), pretrained on 23 medical
segmentation datasets, when a weights file is configured (``evaluate.medicalnet.weights``;
nothing is downloaded), and the weight-free fallback: images average-pooled by a factor.

Volumes are (N, X, Y, Z) arrays of [0, 1] model-ready images; features are (N, D) float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet

# MONAI's constructors of MedicalNet's depths. Their shortcut and downsample-bias settings come
# from MONAI's record of the MedicalNet files (get_medicalnet_pretrained_resnet_args): shortcut B
# without bias for 10/50/101/152/200, shortcut A (no downsample weights) for 18/34.
RESNETS = {
    10: resnet.resnet10,
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
    101: resnet.resnet101,
    152: resnet.resnet152,
    200: resnet.resnet200,
}
# How many offending keys an error message names.
_SHOWN_KEYS = 5


def build_medicalnet(depth: int = 50) -> torch.nn.Module:
    """A randomly initialised MONAI 3D ResNet in MedicalNet's layout, without the fc head.

    One input channel, a stride-2 7³ first convolution (MedicalNet's, as MONAI's ResNetFeatures),
    ``forward`` ending in the global average pool: (B, 1, X, Y, Z) -> (B, C), C = 2048 for
    depth 50 (512 for 10/18/34). MONAI's network strides layers 3 and 4 where MedicalNet's own
    code dilates them; the parameters are the same, the last feature map is coarser.
    """
    if depth not in RESNETS:
        raise ValueError(f"MedicalNet depth must be one of {sorted(RESNETS)}, got {depth}")
    bias_downsample, shortcut_type = resnet.get_medicalnet_pretrained_resnet_args(depth)
    return RESNETS[depth](spatial_dims=3, n_input_channels=1, conv1_t_stride=2, shortcut_type=shortcut_type,
                          bias_downsample=bias_downsample, feed_forward=False)


def _medicalnet_state(path: Path) -> dict[str, torch.Tensor]:
    """The parameters in a MedicalNet file, without DataParallel's "module." and the segmentation head."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error says little about which file
        raise ValueError(f"MedicalNet weights {path}: not a readable torch weights file ({error})") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):  # ValueError: the file's content is wrong, not an argument's type
        message = f"MedicalNet weights {path}: expected a dict with a 'state_dict', got {type(checkpoint)}"
        raise ValueError(message)  # noqa: TRY004
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("conv_seg.")}


def load_medicalnet(path, depth: int = 50) -> torch.nn.Module:
    """MedicalNet's pretrained ResNet of ``depth`` from a weights file, in eval mode.

    MedicalNet files are ``{"state_dict": {"module.conv1.weight": ..., ...}}`` (saved from
    DataParallel), often with the segmentation head ``conv_seg.*``; the prefix is stripped and
    the head dropped. Every remaining key must match the network's, in name and shape, so a
    file of another depth or layout fails here rather than giving features from half-loaded
    weights. Only BatchNorm's ``num_batches_tracked`` counters may be absent (files saved by
    older PyTorch lack them; evaluation does not read them).

    Raises FileNotFoundError for a missing file, ValueError naming the file and the first
    offending keys otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MedicalNet weights file not found: {path}")
    model = build_medicalnet(depth)
    state = _medicalnet_state(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
                   for key in expected if key in state and state[key].shape != expected[key].shape]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:_SHOWN_KEYS])}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                if keys]
    if problems:
        raise ValueError(f"MedicalNet weights {path} do not fit a depth-{depth} ResNet: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)  # only num_batches_tracked may be left out, checked above
    return model.eval()


def medicalnet_normalize(volume: torch.Tensor) -> torch.Tensor:
    """MedicalNet's input scaling: z-score over the nonzero voxels, zero voxels stay 0.

    MedicalNet's loader fills the background with N(0, 1) noise instead; a metric's features
    should not be random, so the background stays 0 (its mean after the z-score is about 0 too).
    """
    inside = volume != 0
    if not inside.any():
        return volume
    values = volume[inside]
    std = values.std(unbiased=False)
    scaled = (volume - values.mean()) / (std if std > 0 else 1.0)
    return torch.where(inside, scaled, torch.zeros_like(volume))


def medicalnet_features(model: torch.nn.Module, volumes: np.ndarray, batch_size: int = 4,
                        device: str = "cpu") -> np.ndarray:
    """Global-average-pooled last-layer features (N, C) of volumes (N, X, Y, Z) in [0, 1].

    Each volume is z-scored over its nonzero voxels (:func:`medicalnet_normalize`) and run
    through ``model`` (a :func:`load_medicalnet` network, whose forward ends in the pool).
    """
    model = model.to(device).eval()
    features = []
    with torch.inference_mode():
        for start in range(0, len(volumes), batch_size):
            batch = torch.from_numpy(np.asarray(volumes[start:start + batch_size], dtype=np.float32))
            batch = torch.stack([medicalnet_normalize(volume) for volume in batch])[:, None]
            features.append(model(batch.to(device)).double().cpu().numpy())
    return np.concatenate(features)


def pooled_features(volumes: np.ndarray, factor: int, batch_size: int = 16) -> np.ndarray:
    """Each volume (N, X, Y, Z) average-pooled by ``factor`` along every axis and flattened: (N, D).

    Adaptive average pooling to ceil(side / factor) voxels a side (84×128×84 by 4: 21×32×21,
    D = 14112). These are the features of the RBF MMD when no MedicalNet file is configured:
    voxel statistics at a coarser scale, not a learned embedding, so they compare intensity
    layouts rather than anatomy as a radiologist would see it.
    """
    if factor < 1:
        raise ValueError(f"feature pooling factor must be ≥ 1, got {factor}")
    shape = tuple(math.ceil(side / factor) for side in volumes.shape[1:])
    pooled = []
    for start in range(0, len(volumes), batch_size):  # batches: no float copy of the whole stack
        batch = torch.from_numpy(np.asarray(volumes[start:start + batch_size], dtype=np.float32))
        pooled.append(F.adaptive_avg_pool3d(batch[:, None], shape).flatten(1).double().numpy())
    return np.concatenate(pooled)
