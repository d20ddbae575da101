"""The bridge on a real cohort: held-out paired fidelity after a fixed training time, as JSON.

    python benchmarks/generators.py --results RESULTS --out DIR [--bridge-minutes 60] [--threads 2]

RESULTS is a cortexgen results folder with preprocessed images, brain masks and surface SDFs
(e.g. the workflow run on the 14 ds000022 heads). Subjects are split as the workflow splits
them (config ``split``: the shipped 0.25 held out, seed 0, gives 10 training and 4 held-out
heads of 14). The bridge of the config (the demo's network and settings) trains through the
workflow's own training job for about ``--bridge-minutes`` (steps from a 4-step probe's seconds per step),
samples each held-out subject from its own surfaces, and the JSON reports paired SSIM / PSNR /
MAE against the real images beside two references without a network: the surface prior alone
(the bridge's starting point) and the training set's mean image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_check import find_subjects  # noqa: E402
from cortexgen.diffusion.data import load_conditions, network_to_image  # noqa: E402
from cortexgen.diffusion.run import sample_bridge_job, train_job  # noqa: E402
from cortexgen.diffusion.training import load_model  # noqa: E402
from cortexgen.evaluate.metrics import paired_fidelity  # noqa: E402
from cortexgen.split import split_subjects  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def scores_of(pairs: list[tuple[dict, np.ndarray]]) -> dict:
    """Paired fidelity of each (subject, image in [0, 1]) and the means."""
    scores = {}
    for subject, fake in pairs:
        real = nib.load(subject["image"]).get_fdata(dtype=np.float32)
        mask = nib.load(subject["mask"]).get_fdata(dtype=np.float32) > 0
        scores[subject["id"]] = {key: round(value, 4) for key, value in
                                 paired_fidelity(real, fake.astype(np.float32), mask).items()}
    means = {f"mean_{key}": round(float(np.mean([s[key] for s in scores.values()])), 4) for key in ("ssim", "psnr", "mae")}
    return {"per_subject": scores, **means}


def train_bridge(section: dict, train: list[dict], folder: Path, steps: int, clip: float) -> float:
    """Train the workflow's bridge job for ``steps`` steps; its wall seconds."""
    training = dict(section["training"])
    training.update(steps=steps, log_every=max(1, steps // 20), checkpoint_every=steps, keep_checkpoints=1)
    roles = list(section["conditions"])
    spec = {"model": "bridge", "settings": {**section, "training": training}, "device": "cpu", "cuda": {},
            "sdf_clip_mm": clip, "checkpoints": str(folder / "checkpoints"), "progress": False,
            "inputs": {"images": [s["image"] for s in train], **{role: [s[role] for s in train] for role in roles}},
            "outputs": {"model": str(folder / "model.pt"), "log": str(folder / "train_log.tsv"),
                        "png": str(folder / "loss.png")}}
    start = time.perf_counter()
    train_job(spec)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--bridge-minutes", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    section, clip = config["diffusion"]["bridge"], float(config["surfaces"]["sdf_clip_mm"])
    subjects = {s["id"]: s for s in find_subjects(args.results)}
    split = split_subjects(sorted(subjects), config["split"]["held_out"], config["split"]["held_out_fraction"],
                           config["split"]["seed"])
    train = [subjects[name] for name in split.train]
    test = [subjects[name] for name in split.held_out]
    args.out.mkdir(parents=True, exist_ok=True)

    train_bridge(section, train, args.out / "probe", 4, clip)
    # Seconds per step from the probe's log (one row per step), not its wall time, which
    # includes loading and caching the volumes once.
    rows = (args.out / "probe" / "train_log.tsv").read_text().splitlines()[1:]
    step_seconds = float(np.median([float(row.split("\t")[4]) for row in rows]))
    steps = max(4, int(args.bridge_minutes * 60.0 / step_seconds))
    folder = args.out / "bridge"
    train_seconds = train_bridge(section, train, folder, steps, clip)

    samples = [str(folder / f"{s['id']}_sample.nii.gz") for s in test]
    start = time.perf_counter()
    roles = list(section["conditions"])
    sample_bridge_job({"model_file": str(folder / "model.pt"), "settings": {"sampling": {"seed": 0, "batch_size": 1}},
                       "device": "cpu", "cuda": {}, "sdf_clip_mm": clip,
                       "conditions": [{"id": s["id"], "kind": "held_out", "real": s["image"],
                                       **{role: s[role] for role in roles}} for s in test],
                       "outputs": samples, "table": str(folder / "samples.tsv")})
    sample_seconds = time.perf_counter() - start

    trained = load_model(folder / "model.pt")
    report = {
        "results": str(args.results), "config": str(args.config), "threads": args.threads,
        "train": list(split.train), "held_out": list(split.held_out),
        "endpoint": trained.generator.settings.endpoint, "packing": trained.generator.settings.packing,
        "conditions": roles, "network": section["network"],
        "steps": steps, "train_seconds": round(train_seconds, 1), "probe_seconds_per_step": round(step_seconds, 2),
        "sample_seconds_per_volume": round(sample_seconds / len(test), 1),
        "bridge": scores_of([(s, nib.load(f).get_fdata(dtype=np.float32)) for s, f in zip(test, samples)]),
        "train_mean_image": scores_of([(s, np.mean([nib.load(t["image"]).get_fdata(dtype=np.float32)
                                                    for t in train], axis=0)) for s in test]),
    }
    if trained.generator.prior is not None:
        rendered = []
        for s in test:
            condition = load_conditions(s, roles, trained.grid, clip)[None]
            rendered.append((s, network_to_image(trained.generator.prior.render(condition)[0])))
        report["surface_prior_alone"] = scores_of(rendered)
    text = json.dumps(report, indent=1)
    (args.out / "generators.json").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
