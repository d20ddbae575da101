"""Preprocessing speed, memory and quality; prints JSON.

    python benchmarks/preprocess.py --bids ../shared/data/ds000022 [--defaults-subjects 3]

For every subject: seconds and peak RSS (MB) of each step of cortexgen's chain (the library
functions the rules call, with config/config.yaml's settings), skull-strip checks (deepbet
brain volume, the template mask's volume, their Dice). For the first --defaults-subjects
subjects the same chain with ANTsPy defaults (denoise_image defaults, N4 without a mask,
'Affine') runs in the same process, and the ratio of total times is reported.

Quality: Colin27 (an average of 27 scans, nearly noise-free) times a known smooth bias field
plus Rician noise is denoised and bias-corrected by both chains; PSNR and SSIM against the
clean phantom inside the head, after a least-squares intensity scale (N4 does not keep scale).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.measure import timed
from cortexgen.runtime import limit_threads


def ants_default_affine(moving, template):
    """ANTsPy's registration(type_of_transform='Affine') with its defaults, as an AffineResult."""
    import ants

    from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants
    from cortexgen.preprocess.register import AffineResult, itk_affine_to_ras

    fixed = nib_to_ants(template)
    registration = ants.registration(fixed=fixed, moving=nib_to_ants(moving), type_of_transform="Affine")
    transform = ants.read_transform(registration["fwdtransforms"][0])
    warped = ants_to_nib(registration["warpedmovout"], like=template)
    return AffineResult(warped=warped, transform=transform, ras_matrix=itk_affine_to_ras(transform))


def run_chain(raw_path: Path, template, template_mask, settings: dict, defaults: bool) -> dict:
    """One subject through the chain; returns per-step timings and skull-strip figures."""
    import numpy as np

    from cortexgen.io import load_t1w
    from cortexgen.preprocess.bias import head_mask, n4_correct
    from cortexgen.preprocess.denoise import denoise_rician
    from cortexgen.preprocess.normalize import normalize_and_resize
    from cortexgen.preprocess.register import AffineSettings, affine_to_template
    from cortexgen.preprocess.skullstrip import mask_dice, skull_strip, template_brain_mask

    steps: dict = {}
    pre = settings["preprocess"]
    raw = timed(steps, "load", load_t1w, raw_path, pre["max_voxel_size_mm"])
    if defaults:
        denoised = timed(steps, "denoise", denoise_rician, raw, method="ants")
        corrected = timed(steps, "n4", n4_correct, denoised, None, 4, (50, 50, 50, 50), 1e-7, None)
        registered = timed(steps, "mni_affine", ants_default_affine, corrected, template)
    else:
        denoise = pre["denoise"]
        denoised = timed(
            steps, "denoise", denoise_rician, raw, denoise["method"], denoise["strength"], denoise["head_margin_voxels"]
        )
        n4 = pre["n4"]

        def masked_n4(image):
            return n4_correct(
                image, head_mask(image), n4["shrink_factor"], tuple(n4["iterations"]), n4["tolerance"],
                n4["spline_distance_mm"],
            )

        corrected = timed(steps, "n4", masked_n4, denoised)
        registered = timed(
            steps, "mni_affine", affine_to_template, corrected, template, template_mask,
            AffineSettings.from_config(pre["registration"]),
        )
    strip = pre["skullstrip"]
    brain, mask = timed(
        steps, "skullstrip", skull_strip, registered.warped, strip["method"], template_mask, strip["threshold"],
        strip["n_dilate"], (0.0, 1e9),
    )
    timed(steps, "normalize", normalize_and_resize, brain, mask, tuple(pre["shape"]), tuple(pre["normalize"]["percentiles"]))
    deepbet_mask = np.asarray(mask.dataobj) > 0
    template_mask_here = template_brain_mask(template_mask, registered.warped)
    return {
        "steps": steps,
        "total_seconds": round(sum(step["seconds"] for step in steps.values()), 2),
        "total_cpu_seconds": round(sum(step["cpu_seconds"] for step in steps.values()), 2),
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps.values()),
        "brain_ml_deepbet": round(float(deepbet_mask.sum()) / 1000.0, 1),
        "brain_ml_template": round(float(template_mask_here.sum()) / 1000.0, 1),
        "dice_deepbet_vs_template": round(mask_dice(deepbet_mask, template_mask_here), 4),
    }


def phantom_quality(template, settings: dict, sigma: float, seed: int) -> dict:
    """PSNR/SSIM of denoise+N4 against the clean phantom, for both chains."""
    import nibabel as nib
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from cortexgen.preprocess.bias import head_mask, n4_correct
    from cortexgen.preprocess.denoise import denoise_rician

    clean = np.asarray(template.dataobj, dtype=np.float32)
    clean /= clean.max()
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in clean.shape], indexing="ij")
    bias = np.exp(0.2 * grid[0] - 0.15 * grid[1] + 0.1 * grid[2] * grid[0])  # smooth, +-~25 %
    rng = np.random.default_rng(seed)
    biased = clean * bias
    noisy = np.sqrt((biased + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
    noisy_img = nib.Nifti1Image(noisy.astype(np.float32), template.affine)
    head = head_mask(nib.Nifti1Image(clean, template.affine))

    def score(estimate: np.ndarray) -> dict:
        scale = float((estimate[head] * clean[head]).sum() / (estimate[head] ** 2).sum())
        matched = np.where(head, estimate * scale, 0)
        reference = np.where(head, clean, 0)
        return {
            "psnr_db": round(float(peak_signal_noise_ratio(clean[head], matched[head], data_range=1.0)), 3),
            "ssim": round(float(structural_similarity(reference, matched, data_range=1.0)), 4),
        }

    pre = settings["preprocess"]
    n4 = pre["n4"]
    ours = n4_correct(
        denoise_rician(noisy_img, pre["denoise"]["method"], pre["denoise"]["strength"], pre["denoise"]["head_margin_voxels"]),
        head,
        n4["shrink_factor"], tuple(n4["iterations"]), n4["tolerance"], n4["spline_distance_mm"],
    )
    defaults = n4_correct(denoise_rician(noisy_img, method="ants"), None)
    result = {
        "phantom": "Colin27 x smooth bias (+-25 %) + Rician noise",
        "noise_sigma_fraction_of_max": sigma,
        "input": score(noisy),
        "cortexgen": score(np.asarray(ours.dataobj)),
        "ants_defaults": score(np.asarray(defaults.dataobj)),
    }
    result["psnr_difference_db"] = round(result["cortexgen"]["psnr_db"] - result["ants_defaults"]["psnr_db"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bids", type=Path, default=REPO.parent / "shared" / "data" / "ds000022")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--subjects", type=int, default=0, help="first N subjects (0 = all)")
    parser.add_argument("--defaults-subjects", type=int, default=3, help="subjects also run with ANTsPy defaults")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--noise-sigma", type=float, default=0.04)
    parser.add_argument("--skip-phantom", action="store_true")
    args = parser.parse_args()

    limit_threads(args.threads)
    import nibabel as nib
    import yaml

    from cortexgen.bids import discover_scans

    settings = yaml.safe_load(args.config.read_text())
    pre = settings["preprocess"]
    template = nib.load(REPO / pre["template"])
    template_mask = nib.load(REPO / pre["template_brain_mask"])
    scans = discover_scans(args.bids)
    if args.subjects:
        scans = scans[: args.subjects]

    subjects = {}
    for index, scan in enumerate(scans):
        entry = {"cortexgen": run_chain(scan.path, template, template_mask, settings, defaults=False)}
        if index < args.defaults_subjects:
            entry["ants_defaults"] = run_chain(scan.path, template, template_mask, settings, defaults=True)
            entry["speedup"] = round(entry["ants_defaults"]["total_seconds"] / entry["cortexgen"]["total_seconds"], 2)
            entry["cpu_speedup"] = round(
                entry["ants_defaults"]["total_cpu_seconds"] / entry["cortexgen"]["total_cpu_seconds"], 2
            )
        subjects[scan.prefix] = entry
        print(f"{scan.prefix}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    ours = [s["cortexgen"]["total_seconds"] for s in subjects.values()]
    speedups = [s["speedup"] for s in subjects.values() if "speedup" in s]
    step_names = next(iter(subjects.values()))["cortexgen"]["steps"].keys()
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "config": str(args.config),
        "n_subjects": len(subjects),
        "median_seconds_per_subject": round(statistics.median(ours), 2),
        "median_seconds_per_step": {
            name: round(statistics.median(s["cortexgen"]["steps"][name]["seconds"] for s in subjects.values()), 2)
            for name in step_names
        },
        "median_cpu_seconds_per_step": {
            name: round(statistics.median(s["cortexgen"]["steps"][name]["cpu_seconds"] for s in subjects.values()), 2)
            for name in step_names
        },
        "max_peak_rss_mb": max(s["cortexgen"]["peak_rss_mb"] for s in subjects.values()),
        "median_speedup_vs_ants_defaults": round(statistics.median(speedups), 2) if speedups else None,
        "median_cpu_speedup_vs_ants_defaults": (
            round(statistics.median(s["cpu_speedup"] for s in subjects.values() if "cpu_speedup" in s), 2)
            if speedups else None
        ),
        "brain_ml_deepbet_range": [
            min(s["cortexgen"]["brain_ml_deepbet"] for s in subjects.values()),
            max(s["cortexgen"]["brain_ml_deepbet"] for s in subjects.values()),
        ],
        "dice_deepbet_vs_template_median": round(
            statistics.median(s["cortexgen"]["dice_deepbet_vs_template"] for s in subjects.values()), 4
        ),
        "quality": None if args.skip_phantom else phantom_quality(template, settings, args.noise_sigma, seed=0),
        "subjects": subjects,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
