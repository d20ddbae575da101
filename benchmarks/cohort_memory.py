"""Peak memory of the bridge's training data against the cohort size; prints JSON.

    python benchmarks/cohort_memory.py [--subjects 10 100 1000] [--grid 24 32 24]

Synthetic subjects (a [0, 1] image and two SDFs each, uncompressed NIfTI on ``--grid``) are
written once to a temporary folder. For each cohort size, a fresh process loads them the way
the training job does (:func:`cortexgen.diffusion.run.load_data`: a float16 cache on disk,
then one epoch of batches of 2 read from it) and, for comparison, the way it did before: every
volume as a float32 tensor in a list. Reported: that process's peak resident memory (MB,
sampled every 20 ms) above its resident memory after the imports, and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROLES = ["pialsdf", "whitesdf"]
CLIP_MM = 10.0


def write_subjects(folder: Path, count: int, grid) -> dict:
    """``count`` subjects' image and SDF files (random values: memory does not depend on them)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = {"images": [], **{role: [] for role in ROLES}}
    for i in range(count):
        for key in inputs:
            path = folder / f"sub-{i:05d}_{key}.nii"
            values = rng.random(grid, dtype=np.float32) if key == "images" else rng.uniform(-15, 15, grid)
            nib.save(nib.Nifti1Image(values.astype(np.float32), np.eye(4)), path)
            inputs[key].append(str(path))
    return inputs


def child(mode: str, count: int, folder: Path, grid) -> dict:
    """In a fresh process: the first ``count`` subjects' training data by ``mode`` ('disk' or 'ram')."""
    import torch

    from benchmarks.measure import PeakRSS
    from cortexgen.diffusion import data as volumes
    from cortexgen.diffusion.run import load_data
    from cortexgen.diffusion.training import batch_at

    inputs = {key: paths[:count] for key, paths in json.loads((folder / "inputs.json").read_text()).items()}
    baseline = PeakRSS().process.memory_info().rss / 2**20
    start = time.perf_counter()
    with PeakRSS() as rss:
        if mode == "disk":
            data = load_data("bridge", inputs, {"conditions": ROLES}, grid, CLIP_MM, folder / f"cache-{count}")
        else:
            data = {"image": [volumes.load_image(path, grid) for path in inputs["images"]],
                    "condition": [volumes.load_conditions({role: inputs[role][i] for role in ROLES}, ROLES, grid,
                                                          CLIP_MM) for i in range(count)]}
        total = 0.0
        for first in range(0, count, 2):
            batch = batch_at(data, range(first, min(count, first + 2)), torch.device("cpu"))
            total += float(batch["image"].sum())
    return {"peak_rss_above_imports_mb": round(rss.peak_mb - baseline, 1), "rss_after_imports_mb": round(baseline, 1),
            "seconds": round(time.perf_counter() - start, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--grid", type=int, nargs=3, default=[24, 32, 24])
    parser.add_argument("--child", nargs=3, metavar=("MODE", "COUNT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, count, folder = args.child
        print(json.dumps(child(mode, int(count), Path(folder), args.grid)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = write_subjects(folder, max(args.subjects), args.grid)
        (folder / "inputs.json").write_text(json.dumps(inputs))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        cohorts = {}
        for count in args.subjects:
            cohorts[count] = {}
            for mode in ("disk", "ram"):
                out = subprocess.run([sys.executable, __file__, "--grid", *map(str, args.grid),
                                      "--child", mode, str(count), str(folder)],
                                     check=True, capture_output=True, text=True, env=env).stdout
                cohorts[count][mode] = json.loads(out.strip().splitlines()[-1])
    volume_mb = 3 * 4 * args.grid[0] * args.grid[1] * args.grid[2] / 2**20
    print(json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                      "grid": args.grid, "float32_mb_per_subject": round(volume_mb, 3),
                      "disk": "float16 cache written once, then one epoch of batches of 2 read from it",
                      "ram": "every volume as a float32 tensor in memory (the loading before the cache)",
                      "cohorts": cohorts}, indent=1))


if __name__ == "__main__":
    main()
