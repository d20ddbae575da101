"""Rule atrophy_effect: each atrophied cortex's bridge sample against its unthinned twin's (same
noise), inside the atrophy region's cortex and outside it; a figure of one pair."""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.evaluate.atrophy import region_cortex, twin_difference  # noqa: E402
from cortexgen.evaluate.figures import twin_figure  # noqa: E402
from cortexgen.io import atomic_output, voxel_sizes, write_table  # noqa: E402
from cortexgen.shape.synthesis import atrophy_retained  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402


def volume(path):
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


with job_log(snakemake.log[0]) as log:
    inputs = job_inputs(snakemake)
    hemis = snakemake.params.hemis
    cortex = [load_shape(path) > 0.5 for path in inputs.cortex]
    rows, shown = [], None
    for pair in snakemake.params.pairs:
        atrophied, twin = pair["atrophied"], pair["twin"]
        # The region as the thinning found it, on the twin's own midthickness surface.
        midthickness, retained = [], []
        for i, hemi in enumerate(hemis):
            white, pial = (load_surface(inputs[f"{name}_{hemi}_{twin}"]) for name in ("white", "pial"))
            midthickness.append(white.with_vertices(0.5 * (white.vertices + pial.vertices)))
            retained.append(atrophy_retained(midthickness[-1], hemi, pair["atrophy"], cortex[i]))
        ribbon_image = nib.load(inputs[f"ribbon_{twin}"])
        twin_ribbon = np.asarray(ribbon_image.dataobj) > 0
        region = region_cortex(twin_ribbon, ribbon_image.affine, midthickness, retained)
        images = {label: volume(inputs[f"image_{label}"]) for label in (atrophied, twin)}
        row = {"atrophied": atrophied, "twin": twin, "kind": pair["kind"], **twin_difference(
            images[atrophied], images[twin], region, twin_ribbon, volume(inputs[f"ribbon_{atrophied}"]) > 0)}
        log.info("%s", row)
        rows.append(row)
        # The figure shows the first pair on a subject's own cortex, else the first pair.
        if shown is None or (pair["kind"] == "held_out_atrophy" and shown[0]["kind"] != "held_out_atrophy"):
            shown = (row, images[twin], images[atrophied], region, voxel_sizes(ribbon_image))
    write_table(rows, snakemake.output.tsv)
    row, twin_volume, atrophied_volume, region, voxel_mm = shown
    title = (f"cond-{row['atrophied']} and its twin cond-{row['twin']} (same noise)\nmean |difference| "
             f"{row['mad_region']:.4f} in the region's cortex, {row['mad_outside']:.4f} in the rest of the cortex")
    with atomic_output(snakemake.output.png) as tmp:
        twin_figure(twin_volume, atrophied_volume, region, title, voxel_mm).savefig(tmp, dpi=90, format="png")
