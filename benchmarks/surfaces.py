"""Surface stage speed, memory and quality; prints JSON.

    python benchmarks/surfaces.py --results /path/to/workdir/results [--subjects 3]

Reads the preprocessed 1 mm brains (and the 84x128x84 model grid) that the workflow wrote
under ``--results``, and runs the surface stage's library functions on each, with
config/config.yaml's settings, in one process: AMAP segmentation, the template carried
onto the subject (affine + SyN), the white fit, thickness and pial growth of each
hemisphere (self-intersection repair included), the signed distance volumes, and the QC
measures. For every step: seconds and peak RSS (MB). The template is built once (a
cohort-level job in the workflow) and reported apart. Quality per subject and hemisphere:
Euler characteristics, self-intersections, thickness, area and surface-to-isosurface
distances (the QC row of the workflow).
"""

from __future__ import annotations

import argparse
import dataclasses
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

STEPS_PER_SUBJECT = ("segment", "register", "fit_L", "fit_R", "surface_sdf")


def run_subject(brain_path: Path, mask_path: Path, grid_path: Path, template, settings: dict) -> dict:
    """Run the surface stage on one preprocessed brain; steps' cost and the QC rows."""
    import nibabel as nib
    import numpy as np

    from cortexgen.io import voxel_sizes
    from cortexgen.surfaces.extract import fit_hemisphere
    from cortexgen.surfaces.fit import FitSettings
    from cortexgen.surfaces.qc import surface_qc
    from cortexgen.surfaces.sdf import condition_volumes
    from cortexgen.surfaces.segment import segment_tissue
    from cortexgen.surfaces.warp import WarpSettings, register_labels

    steps: dict = {}
    brain = nib.load(brain_path)
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    tissue = timed(steps, "segment", segment_tissue, brain.get_fdata(dtype=np.float32), mask, voxel_sizes(brain),
                   iterations=settings["segment"]["iterations"], mrf_weight=settings["segment"]["mrf_weight"],
                   source=brain_path)
    warp = timed(steps, "register", register_labels, template.label, nib.Nifti1Image(tissue.label, brain.affine),
                 WarpSettings.from_config(settings["warp"]), template.mask)
    fit_settings = FitSettings.from_config(settings["fit"])
    results = {}
    for hemi, meshes in template.hemispheres.items():
        results[hemi] = timed(steps, f"fit_{hemi}", fit_hemisphere,
                              meshes.white.with_vertices(warp.map(meshes.white.vertices)), meshes.cortex, tissue,
                              brain.affine, fit_settings, settings["max_thickness_mm"],
                              repair=settings["repair_self_intersections"])
    grid = nib.load(grid_path)
    volumes = timed(steps, "surface_sdf", condition_volumes, [r.white for r in results.values()],
                    [r.pial for r in results.values()], grid.shape[:3], grid.affine, clip_mm=settings["sdf_clip_mm"])
    qc = {}
    qc_rows = timed(steps, "qc", lambda: [
        surface_qc(brain_path.name.split("_")[0], hemi, r.white, r.pial, r.midthickness, r.thickness, r.cortex,
                   tissue.wm, tissue.gm_wm, brain.affine)
        for hemi, r in results.items()
    ])
    for row in qc_rows:
        qc[row.hemi] = {key: (round(value, 4) if isinstance(value, float) else value)
                        for key, value in dataclasses.asdict(row).items() if key not in ("subject", "hemi")}
    ribbon_ml = float(volumes.ribbon.sum() * np.prod(voxel_sizes(grid)) / 1000.0)
    return {
        "steps": steps,
        "seconds": round(sum(steps[name]["seconds"] for name in STEPS_PER_SUBJECT), 2),
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps.values()),
        "ribbon_ml": round(ribbon_ml, 1),
        "qc": qc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a workflow's results/ folder (preproc done)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--subjects", type=int, default=0, help="first N subjects (0 = all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    limit_threads(args.threads)

    import yaml

    from cortexgen.surfaces.template import build_template

    config = yaml.safe_load(args.config.read_text())
    settings = config["surfaces"]
    space = config["preprocess"]["template_space"]
    shape = "x".join(str(n) for n in config["preprocess"]["shape"])
    brains = sorted(args.results.glob(f"preproc/*/anat/*_space-{space}_desc-brain_T1w.nii.gz"))
    if args.subjects:
        brains = brains[: args.subjects]
    if not brains:
        sys.exit(f"no preprocessed brains (*_space-{space}_desc-brain_T1w.nii.gz) under {args.results}/preproc")

    template_cost: dict = {}
    template = timed(template_cost, "surface_template", build_template,
                     settings["template_subdivisions"], settings["template_resolution_mm"])
    subjects = {}
    for brain_path in brains:
        prefix = brain_path.name.split(f"_space-{space}")[0]
        entry = run_subject(
            brain_path,
            brain_path.with_name(f"{prefix}_space-{space}_desc-brain_mask.nii.gz"),
            brain_path.with_name(f"{prefix}_space-{space}_res-{shape}_desc-preproc_T1w.nii.gz"),
            template,
            settings,
        )
        subjects[prefix] = entry
        print(f"{prefix}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    rows = [row for entry in subjects.values() for row in entry["qc"].values()]

    def value_range(key: str) -> list[float]:
        return [min(row[key] for row in rows), max(row[key] for row in rows)]

    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "config": str(args.config),
        "n_subjects": len(subjects),
        "n_vertices_per_hemisphere": rows[0]["n_vertices"],
        "template": template_cost["surface_template"],
        "median_seconds_per_subject": round(statistics.median(e["seconds"] for e in subjects.values()), 2),
        "median_seconds_per_step": {
            name: round(statistics.median(e["steps"][name]["seconds"] for e in subjects.values()), 2)
            for name in (*STEPS_PER_SUBJECT, "qc")
        },
        "max_peak_rss_mb": max(e["peak_rss_mb"] for e in subjects.values()),
        "quality": {
            "euler_characteristics": sorted({row[k] for row in rows for k in
                                             ("euler_characteristic_white", "euler_characteristic_pial")}),
            "self_intersection_fraction_max": max(row["self_intersection_fraction"] for row in rows),
            "thickness_mean_mm_range": value_range("thickness_mean_mm"),
            "white_to_wm_mm_range": value_range("white_to_wm_mm"),
            "pial_to_gmwm_mm_range": value_range("pial_to_gmwm_mm"),
            "area_mm2_range": value_range("area_mm2"),
            "ribbon_ml_range": [min(e["ribbon_ml"] for e in subjects.values()),
                                max(e["ribbon_ml"] for e in subjects.values())],
        },
        "subjects": subjects,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
