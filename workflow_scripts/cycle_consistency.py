"""Rule cycle_consistency: the surface stage re-run on one bridge sample (or a held-out subject's
real image), compared with the surfaces (and SDFs) that conditioned it.

A synthetic image the surface stage cannot analyse is an evaluation result, not a broken
workflow: the row says 'failed: <reason>' with empty metrics and the evaluation counts it.
"""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402

from cortexgen.evaluate.cycle import CycleSettings, cycle_consistency, load_conditioning  # noqa: E402
from cortexgen.io import write_table  # noqa: E402
from cortexgen.surfaces.mesh import save_shape, save_surface  # noqa: E402
from cortexgen.surfaces.template import load_template  # noqa: E402

with job_log(snakemake.log[0]) as log:
    inputs = job_inputs(snakemake)
    hemis = snakemake.params.hemis
    label = snakemake.wildcards.label
    template = load_template(hemis, inputs.template_white, inputs.template_pial, inputs.template_cortex,
                             inputs.template_label, inputs.template_mask)
    conditioning, condition = load_conditioning(
        template, {hemi: getattr(inputs, f"white_{hemi}") for hemi in hemis},
        {hemi: getattr(inputs, f"pial_{hemi}") for hemi in hemis},
        {hemi: getattr(inputs, f"thickness_{hemi}") for hemi in hemis}, inputs.pial_sdf, inputs.white_sdf,
    )
    grid = nib.load(inputs.grid)
    settings = CycleSettings.from_config(
        {"segment": snakemake.params.segment, "warp": snakemake.params.warp, "fit": snakemake.params.fit,
         "max_thickness_mm": snakemake.params.max_thickness_mm,
         "repair_self_intersections": snakemake.params.repair},
        mask_threshold=snakemake.params.mask["threshold"], mask_smoothing_mm=snakemake.params.mask["smoothing_mm"],
        workers=snakemake.threads,
    )
    row = {"condition": label, "status": "ok"}
    try:
        result = cycle_consistency(nib.load(inputs.image), conditioning, template, grid.affine, grid.shape[:3],
                                   settings, condition=condition)
    except (ValueError, RuntimeError) as err:
        log.exception("%s: the surface stage failed on this image", inputs.image)
        row["status"] = f"failed: {err}"
    else:
        row.update(result.metrics)
        # The extracted surfaces go beside the table (for inspection; the table is the output).
        folder = Path(snakemake.output.table).parent
        for hemi, surfaces in result.surfaces.items():
            stem = folder / f"cond-{label}_hemi-{hemi}"
            save_surface(surfaces.white, f"{stem}_white.surf.gii")
            save_surface(surfaces.pial, f"{stem}_pial.surf.gii")
            save_shape(surfaces.thickness, f"{stem}_thickness.shape.gii")
        log.info("%s: %s", label, {key: round(value, 3) for key, value in result.metrics.items()})
    write_table([row], snakemake.output.table)
