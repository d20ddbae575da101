"""Cycle consistency of a trained bridge on held-out heads, beside the real-image ceiling; prints JSON.

    python benchmarks/cycle.py --results RESULTS --model MODEL.pt --subjects sub-01,sub-03 [--threads 2]

RESULTS is a workflow results folder holding those subjects' preprocessed images, surfaces and
SDFs and the surface template (e.g. ``snakemake --until surface_sdf`` on them). The bridge in
MODEL (e.g. the one ``benchmarks/generators.py`` trains) samples each subject from its own SDFs
(sampling seed 0, the subject as noise key, as the workflow does); the workflow's surface stage
(config ``surfaces``, ``evaluate.cycle_consistency.mask``) re-runs on the sample and on the
subject's real image, and both are compared with the subject's own surfaces. The real image's
numbers are the ceiling: the surface stage on a ~2 mm image does not find the 1 mm surfaces
exactly either. With ``--prior-alone`` the image the bridge starts from (its surface prior, no
network) is measured the same way, which tells what the network adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexgen.runtime import limit_threads  # noqa: E402

HEMIS = ("L", "R")
SUMMARY = ("white_assd_mm", "pial_assd_mm", "white_hd95_mm", "pial_hd95_mm", "thickness_r", "gm_dice", "wm_dice")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--subjects", required=True, help="comma-separated, e.g. sub-01,sub-03")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prior-alone", action="store_true",
                        help="also the bridge's surface prior without the network")
    args = parser.parse_args(argv)
    limit_threads(args.threads)

    import nibabel as nib
    import numpy as np
    import yaml

    from cortexgen.diffusion.data import load_conditions, network_to_image, resize_volume
    from cortexgen.diffusion.run import sample_bridge_job
    from cortexgen.diffusion.training import load_model
    from cortexgen.evaluate.cycle import CycleSettings, cycle_consistency, load_conditioning
    from cortexgen.io import save_nifti
    from cortexgen.surfaces.template import load_template

    config = yaml.safe_load(args.config.read_text())
    surfaces, mask = config["surfaces"], config["evaluate"]["cycle_consistency"]["mask"]
    settings = CycleSettings.from_config(surfaces, mask_threshold=mask["threshold"],
                                         mask_smoothing_mm=mask["smoothing_mm"], workers=args.threads)
    folder = args.results / "surfaces" / "tpl-fsaverage"
    stem = folder / "tpl-fsaverage"
    template = load_template(list(HEMIS), [f"{stem}_hemi-{h}_white.surf.gii" for h in HEMIS],
                             [f"{stem}_hemi-{h}_pial.surf.gii" for h in HEMIS],
                             [f"{stem}_hemi-{h}_desc-cortex_mask.shape.gii" for h in HEMIS],
                             f"{stem}_desc-tissue_dseg.nii.gz", f"{stem}_desc-tissue_mask.nii.gz")
    grid = nib.load(REPO / config["preprocess"]["template"])
    space, res = config["preprocess"]["template_space"], "x".join(str(n) for n in config["preprocess"]["shape"])
    rows: dict[str, dict] = {"real": {}, "bridge": {}, **({"prior": {}} if args.prior_alone else {})}
    trained = load_model(args.model, "cpu") if args.prior_alone else None
    if trained is not None and trained.generator.prior is None:
        sys.exit(f"--prior-alone: the bridge in {args.model} has no surface prior (endpoint is not 'prior')")
    with tempfile.TemporaryDirectory(prefix="cortexgen-cycle-") as scratch:
        for subject in args.subjects.split(","):
            anat = args.results / "surfaces" / subject / "anat"
            sdf = {kind: str(anat / f"{subject}_space-{space}_res-{res}_desc-{kind}_sdf.nii.gz") for kind in ("pial", "white")}
            real = args.results / "preproc" / subject / "anat" / f"{subject}_space-{space}_res-{res}_desc-preproc_T1w.nii.gz"
            sample = Path(scratch) / f"{subject}_bridge.nii.gz"
            sample_bridge_job({"model_file": str(args.model), "settings": {"sampling": {"seed": 0, "batch_size": 1}},
                               "device": "cpu", "cuda": {}, "sdf_clip_mm": float(surfaces["sdf_clip_mm"]),
                               "conditions": [{"id": subject, "noise": subject, "kind": "held_out", "real": str(real),
                                               "pialsdf": sdf["pial"], "whitesdf": sdf["white"]}],
                               "outputs": [str(sample)], "table": str(Path(scratch) / f"{subject}_samples.tsv")})
            files = {kind: {h: str(anat / f"{subject}_hemi-{h}_{kind}.{'shape' if kind == 'thickness' else 'surf'}.gii")
                            for h in HEMIS} for kind in ("white", "pial", "thickness")}
            conditioning, condition = load_conditioning(template, files["white"], files["pial"], files["thickness"],
                                                        sdf["pial"], sdf["white"])
            images = {"real": real, "bridge": sample}
            if trained is not None:
                reference = nib.load(sdf["pial"])
                volume = load_conditions({"pialsdf": sdf["pial"], "whitesdf": sdf["white"]},
                                         trained.generator.settings.conditions, trained.grid,
                                         float(surfaces["sdf_clip_mm"]))
                rendered = resize_volume(trained.generator.prior.render(volume[None]), reference.shape[:3])[0]
                images["prior"] = Path(scratch) / f"{subject}_prior.nii.gz"
                save_nifti(nib.Nifti1Image(network_to_image(rendered), reference.affine), images["prior"])
            for source, image in images.items():
                start = time.perf_counter()
                try:
                    metrics = cycle_consistency(nib.load(str(image)), conditioning, template, grid.affine,
                                                grid.shape[:3], settings, condition=condition).metrics
                    rows[source][subject] = {key: round(float(value), 3) for key, value in metrics.items()}
                except (ValueError, RuntimeError) as err:
                    rows[source][subject] = {"failed": str(err)}
                rows[source][subject]["seconds"] = round(time.perf_counter() - start, 1)
                print(source, subject, rows[source][subject], file=sys.stderr, flush=True)
    means = {source: {key: round(float(np.mean([row[key] for row in by_subject.values() if key in row])), 3)
                      for key in SUMMARY} for source, by_subject in rows.items()}
    report = {"results": str(args.results), "model": str(args.model), "threads": args.threads,
              "mean": means, "gap_to_ceiling_mm": {key: round(means["bridge"][key] - means["real"][key], 3)
                                                   for key in ("white_assd_mm", "pial_assd_mm")},
              "thickness_r_fraction_of_ceiling": {
                  source: round(means[source]["thickness_r"] / means["real"]["thickness_r"], 3)
                  for source in rows if source != "real"},
              "per_subject": rows}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
