"""Speed and memory of the evaluation's set metrics (cortexgen.evaluate.metrics); prints JSON.

    python benchmarks/evaluate.py [--n 400] [--resamples 1000] [--shape 84 128 84]
        [--pairs 100] [--kernel 5] [--pool 4] [--medicalnet-timing]

Builds ``--n`` real-like and ``--n`` synthetic-like volumes: smooth random intensities inside a
brain-sized ellipsoid, zero outside, seeded. They are synthetic stand-ins (speed does not depend
on what the images show), so the metric values printed mean nothing. Runs ``set_metrics``
without MedicalNet (RBF MMD on pooled features, no FID) and reports seconds per metric, the
total, and the process's peak RSS (resource.getrusage, which includes the volumes themselves).

``--medicalnet-timing`` also times a randomly initialised MedicalNet ResNet-50 on a few volumes
and extrapolates to 2n volumes: timing only, random weights, not a metric.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch
import torch.nn.functional as F

from cortexgen.evaluate.features import build_medicalnet, medicalnet_features
from cortexgen.evaluate.metrics import SetMetricSettings, set_metrics


def _nan_to_null(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_null(item) for item in value]
    return value


def brain_like(n: int, shape, mean: float, contrast: float, seed: int, batch: int = 50) -> np.ndarray:
    """(n, *shape) float32 in [0, 1]: upsampled coarse noise inside an ellipsoid, 0 outside."""
    generator = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, side) for side in shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    inside = (grid[0] / 0.8) ** 2 + (grid[1] / 0.85) ** 2 + (grid[2] / 0.75) ** 2 < 1
    coarse = tuple(max(2, side // 8) for side in shape)
    volumes = np.empty((n, *shape), dtype=np.float32)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        noise = torch.randn(count, 1, *coarse, generator=generator)
        smooth = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=False)[:, 0]
        image = (mean + contrast * smooth).clamp(0, 1) * inside
        volumes[start:start + count] = image.numpy()
    return volumes


def medicalnet_timing(volumes: np.ndarray, n_total: int) -> dict:
    """Seconds per volume of a random-weight ResNet-50's features, extrapolated to ``n_total`` volumes."""
    torch.manual_seed(0)
    model = build_medicalnet(50).eval()
    medicalnet_features(model, volumes[:1], batch_size=1)  # warm-up: allocation and kernel selection
    start = time.perf_counter()
    features = medicalnet_features(model, volumes, batch_size=2)
    per_volume = (time.perf_counter() - start) / len(volumes)
    return {
        "label": "timing only, random weights, not a metric",
        "depth": 50,
        "volumes_timed": len(volumes),
        "feature_dim": int(features.shape[1]),
        "seconds_per_volume": round(per_volume, 3),
        "extrapolated_volumes": n_total,
        "extrapolated_seconds": round(per_volume * n_total, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images per set (real and synthetic)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--shape", type=int, nargs=3, default=[84, 128, 84])
    parser.add_argument("--pairs", type=int, default=100, help="MS-SSIM pairs per set")
    parser.add_argument("--kernel", type=int, default=5, help="MS-SSIM kernel size")
    parser.add_argument("--pool", type=int, default=4, help="feature pooling factor of the RBF MMD")
    parser.add_argument("--medicalnet-timing", action="store_true")
    parser.add_argument("--medicalnet-volumes", type=int, default=4)
    args = parser.parse_args()

    start = time.perf_counter()
    real = brain_like(args.n, args.shape, mean=0.55, contrast=0.25, seed=0)
    fake = brain_like(args.n, args.shape, mean=0.5, contrast=0.3, seed=1)
    data_seconds = time.perf_counter() - start

    settings = SetMetricSettings(n_resamples=args.resamples, ms_ssim_pairs=args.pairs, ms_ssim_kernel=args.kernel,
                                 feature_pool=args.pool)
    timings = {}
    start = time.perf_counter()
    results = set_metrics("benchmark", real, fake, settings, timings=timings)
    total = time.perf_counter() - start
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "data": "synthetic stand-ins (smooth noise in an ellipsoid, seeded); values are not meaningful",
        "settings": {"n_per_set": args.n, "shape": args.shape, "resamples": args.resamples, "ms_ssim_pairs": args.pairs,
                     "ms_ssim_kernel": args.kernel, "feature_pool": args.pool, "medicalnet": False},
        "data_seconds": round(data_seconds, 1),
        "seconds": {name: round(seconds, 2) for name, seconds in timings.items()},
        "total_seconds": round(total, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": [result.as_row() for result in results],
    }
    if args.medicalnet_timing:
        report["medicalnet_timing"] = medicalnet_timing(real[:args.medicalnet_volumes], 2 * args.n)
    # NaN (a metric not computed) as null: strict JSON readers refuse NaN.
    print(json.dumps(_nan_to_null(report), indent=1))


if __name__ == "__main__":
    main()
