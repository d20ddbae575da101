"""Preprocessing speed, memory and quality; prints JSON.

    python benchmarks/preprocess.py --bids ../shared/data/ds000022 [--defaults-subjects 3]

cortexgen: the workflow itself (``snakemake --until preprocess``, one job at a time on
--threads cores, each head alone), timed by the rule's own benchmark file (wall and CPU
seconds, peak RSS of the job and its forked child), with the step times its log reports and
skull-strip checks on its outputs (deepbet brain volume, Dice with the template brain mask).
ANTsPy defaults: for the first --defaults-subjects subjects, the chain a user would write with
ANTsPy's defaults (denoise_image, N4 without a mask, registration 'Affine', then cortexgen's
skull strip and normalisation), timed in this process in the same run; the ratio of the
totals is reported per subject.

Quality: Colin27 (an average of 27 scans, nearly noise-free) times a known smooth bias field
plus Rician noise is denoised and bias-corrected by both chains; PSNR and SSIM against the
clean phantom inside the head and inside the brain, after a least-squares intensity scale
(N4 does not keep scale).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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


def ants_defaults_chain(raw_path: Path, template, template_mask, settings: dict) -> dict:
    """One subject through the ANTsPy-defaults chain; per-step timings and skull-strip figures."""
    import numpy as np

    from cortexgen.io import load_t1w
    from cortexgen.preprocess.bias import n4_correct
    from cortexgen.preprocess.denoise import denoise_rician
    from cortexgen.preprocess.normalize import normalize_and_resize
    from cortexgen.preprocess.skullstrip import mask_dice, skull_strip, template_brain_mask

    steps: dict = {}
    pre = settings["preprocess"]
    raw = timed(steps, "load", load_t1w, raw_path, pre["max_voxel_size_mm"])
    denoised = timed(steps, "denoise", denoise_rician, raw, method="ants")
    corrected = timed(steps, "n4", n4_correct, denoised, None, 4, (50, 50, 50, 50), 1e-7, None)
    registered = timed(steps, "mni_affine", ants_default_affine, corrected, template)
    strip = pre["skullstrip"]
    brain, mask = timed(
        steps, "skullstrip", skull_strip, registered.warped, strip["method"], template_mask, strip["threshold"],
        strip["n_dilate"], (0.0, 1e9), None, strip["bfloat16"],
    )
    timed(steps, "normalize", normalize_and_resize, brain, mask, tuple(pre["shape"]), tuple(pre["normalize"]["percentiles"]))
    deepbet_mask = np.asarray(mask.dataobj) > 0
    return {
        "steps": steps,
        "total_seconds": round(sum(step["seconds"] for step in steps.values()), 2),
        "total_cpu_seconds": round(sum(step["cpu_seconds"] for step in steps.values()), 2),
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps.values()),
        "dice_deepbet_vs_template": round(mask_dice(deepbet_mask, template_brain_mask(template_mask, registered.warped)), 4),
    }


def workflow_run(bids: Path, config: Path, scans: list, threads: int, workdir: Path) -> dict:
    """The workflow's preprocess rule on ``scans``, one job at a time; per-subject figures."""
    import nibabel as nib
    import numpy as np
    import yaml

    from cortexgen.preprocess.skullstrip import mask_dice, template_brain_mask

    labels = sorted({scan.subject for scan in scans})
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(config), "--config", f"bids_dir={bids}", f"participants={json.dumps(labels)}",
        "--until", "preprocess", "--jobs", "1", "--cores", str(threads), "--keep-going", "--quiet",
    ]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        print(finished.stderr[-3000:], file=sys.stderr)
    settings = yaml.safe_load(config.read_text())["preprocess"]
    template_mask = nib.load(REPO / settings["template_brain_mask"])
    space = settings["template_space"]
    results = {}
    for scan in scans:
        folder = workdir / "results" / "preproc" / scan.subdir / "anat"
        benchmark = workdir / "results" / "benchmarks" / "preprocess" / scan.subdir / f"{scan.prefix}.tsv"
        if not benchmark.exists():
            results[scan.prefix] = {"failed": True}
            continue
        with open(benchmark, newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        log = (workdir / "logs" / "preprocess" / scan.subdir / f"{scan.prefix}.log").read_text()
        steps = ast.literal_eval(log.split("seconds per step (head mask and denoising beside the imports): ", 1)[1].splitlines()[0])
        head = nib.load(folder / f"{scan.prefix}_space-{space}_desc-head_T1w.nii.gz")
        mask = np.asarray(nib.load(folder / f"{scan.prefix}_space-{space}_desc-brain_mask.nii.gz").dataobj) > 0
        template_here = template_brain_mask(template_mask, head)
        results[scan.prefix] = {
            "rule_seconds": round(float(row["s"]), 2),
            "rule_cpu_seconds": round(float(row["cpu_time"]), 2),
            "rule_max_rss_mb": round(float(row["max_rss"]), 1),
            "steps_seconds": steps,
            "brain_ml_deepbet": round(float(mask.sum()) / 1000.0, 1),
            "dice_deepbet_vs_template": round(mask_dice(mask, template_here), 4),
        }
    return results


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
    denoise = pre["denoise"]
    denoised = denoise_rician(noisy_img, denoise["method"], denoise["strength"], denoise["head_margin_voxels"])
    ours = np.asarray(n4_correct(denoised, head, n4["shrink_factor"], tuple(n4["iterations"]), n4["tolerance"],
                                 n4["spline_distance_mm"]).dataobj)
    defaults = n4_correct(denoise_rician(noisy_img, method="ants"), None)
    result = {
        "phantom": "Colin27 x smooth bias (+-25 %) + Rician noise",
        "noise_sigma_fraction_of_max": sigma,
        "input": score(noisy),
        "cortexgen": score(ours),
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

    with tempfile.TemporaryDirectory(prefix="cortexgen-bench-") as workdir:
        subjects = {prefix: {"cortexgen": entry} for prefix, entry in
                    workflow_run(args.bids, args.config, scans, args.threads, Path(workdir)).items()}
    for scan in scans[: args.defaults_subjects]:
        entry = subjects[scan.prefix]
        entry["ants_defaults"] = ants_defaults_chain(scan.path, template, template_mask, settings)
        if "rule_seconds" in entry["cortexgen"]:
            entry["speedup"] = round(entry["ants_defaults"]["total_seconds"] / entry["cortexgen"]["rule_seconds"], 2)
            entry["cpu_speedup"] = round(
                entry["ants_defaults"]["total_cpu_seconds"] / entry["cortexgen"]["rule_cpu_seconds"], 2
            )
        print(f"{scan.prefix}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    done = [s["cortexgen"] for s in subjects.values() if "rule_seconds" in s["cortexgen"]]
    speedups = [s["speedup"] for s in subjects.values() if "speedup" in s]
    step_names = done[0]["steps_seconds"].keys()
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "config": str(args.config),
        "n_subjects": len(subjects),
        "failed": sorted(prefix for prefix, s in subjects.items() if s["cortexgen"].get("failed")),
        "median_rule_seconds_per_subject": round(statistics.median(s["rule_seconds"] for s in done), 2),
        "median_rule_cpu_seconds_per_subject": round(statistics.median(s["rule_cpu_seconds"] for s in done), 2),
        "median_step_seconds": {
            name: round(statistics.median(s["steps_seconds"][name] for s in done), 2) for name in step_names
        },
        "max_rule_rss_mb": max(s["rule_max_rss_mb"] for s in done),
        "speedups_vs_ants_defaults": speedups,
        "median_speedup_vs_ants_defaults": round(statistics.median(speedups), 2) if speedups else None,
        "median_cpu_speedup_vs_ants_defaults": (
            round(statistics.median(s["cpu_speedup"] for s in subjects.values() if "cpu_speedup" in s), 2)
            if speedups else None
        ),
        "brain_ml_deepbet_range": [min(s["brain_ml_deepbet"] for s in done), max(s["brain_ml_deepbet"] for s in done)],
        "dice_deepbet_vs_template_median": round(statistics.median(s["dice_deepbet_vs_template"] for s in done), 4),
        "quality": None if args.skip_phantom else phantom_quality(template, settings, args.noise_sigma, seed=0),
        "subjects": subjects,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
