"""Diffusion generators' training and sampling speed and memory; prints JSON.

    python benchmarks/diffusion.py [--device cpu|cuda] [--grid 84 128 84]
        [--channels 128 128 256] [--res-blocks 2] [--batch 2] [--steps 5] [--sample-steps 10]
        [--generators bridge ddpm deform] [--packing none|haar]

Per generator, on random volumes of the grid (speed does not depend on the values):
seconds per training step (median after one warm-up step), volumes per second, peak
memory (CUDA: torch.cuda.max_memory_allocated; CPU: peak RSS of this process), and seconds
per sampled volume with ``--sample-steps`` network evaluations (the bridge's 10, a DDIM of
that many steps for ddpm/deform). bf16 autocast on CUDA, as in training. Defaults: the
default UNet (MONAI 3D DDPM: channels 128/128/256, 2 residual blocks, bottleneck attention)
at 84x128x84. ``--packing haar``: the bridge and the DDPM on Haar-packed volumes (a UNet on the half grid
with 8 channels per volume channel; see cortexgen/diffusion/packing.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.measure import PeakRSS  # noqa: E402
from cortexgen.diffusion.generators import make_generator  # noqa: E402
from cortexgen.diffusion.networks import NetworkSettings, build_unet, check_grid  # noqa: E402
from cortexgen.diffusion.registry import generator as registry_entry  # noqa: E402
from cortexgen.diffusion.training import CudaSettings, apply_cuda_settings  # noqa: E402


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_generator(name, args, device):
    # Only the generators whose config takes a packing (the registry's keys) get it.
    generator = make_generator(name, registry_entry(name).generator_settings(
        {"sample_steps": args.sample_steps, "packing": args.packing}))
    groups = min(32, min(args.channels))
    settings = NetworkSettings(channels=tuple(args.channels), attention_levels=(False,) * (len(args.channels) - 1) + (True,),
                               num_res_blocks=args.res_blocks, norm_num_groups=groups)
    check_grid(settings, generator.network_grid(args.grid))
    torch.manual_seed(0)
    network = build_unet(settings, generator.in_channels, generator.out_channels).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    shape = (args.batch, 1, *args.grid)
    batch = {"image": torch.rand(shape[0], 3 if name == "deform" else 1, *args.grid, device=device) * 2 - 1}
    if name == "bridge":
        batch["condition"] = torch.rand(shape[0], 2, *args.grid, device=device) * 2 - 1
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with PeakRSS() as rss:
        for step in range(args.steps + 1):
            synchronize(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = generator.loss(network, batch, list(range(step * args.batch, (step + 1) * args.batch)), 0)
            loss.backward()
            optimizer.step()
            synchronize(device)
            if step:  # the first step pays for allocation and kernel selection
                times.append(time.perf_counter() - start)
    train_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else rss.peak_mb
    network.eval()
    n_sample = args.sample_batch
    with PeakRSS() as rss, torch.no_grad(), autocast:
        synchronize(device)
        start = time.perf_counter()
        rng = torch.Generator(device=device).manual_seed(0)
        if name == "bridge":
            generator.sample(network, batch["condition"][:1].expand(n_sample, -1, -1, -1, -1).contiguous(), generator=rng)
        else:
            generator.sample(network, (n_sample, generator.channels, *args.grid), generator=rng, device=device)
        synchronize(device)
        sample_seconds = time.perf_counter() - start
    step_seconds = statistics.median(times)
    return {
        "train_step_seconds": round(step_seconds, 4),
        "train_volumes_per_second": round(args.batch / step_seconds, 3),
        "train_peak_memory_mb": round(train_peak, 1),
        "sample_seconds_per_volume": round(sample_seconds / n_sample, 4),
        "sample_network_evaluations": args.sample_steps,
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", type=int, nargs=3, default=[84, 128, 84])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 128, 256])
    parser.add_argument("--res-blocks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sample-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--generators", nargs="+", default=["bridge", "ddpm", "deform"])
    parser.add_argument("--packing", choices=["none", "haar"], default="none", help="the bridge's and the DDPM's packing")
    args = parser.parse_args()
    device = torch.device(args.device)
    apply_cuda_settings(CudaSettings(), device)  # as training jobs do with diffusion.cuda's defaults
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                    "threads": torch.get_num_threads()},
        "settings": {"grid": args.grid, "channels": args.channels, "res_blocks": args.res_blocks,
                     "batch": args.batch, "steps": args.steps, "sample_steps": args.sample_steps,
                     "packing": args.packing,
                     "bf16": device.type == "cuda"},
        "generators": {name: bench_generator(name, args, device) for name in args.generators},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
