"""Rule qc_surfaces: per-hemisphere surface QC row (TSV) and a figure (contours + thickness)."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import atomic_output  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402
from cortexgen.surfaces.qc import surface_qc, surface_qc_figure, write_qc_tsv  # noqa: E402

with job_log(snakemake.log[0]) as log:
    scan = snakemake.wildcards.scan
    brain = nib.load(snakemake.input.brain)
    wm = nib.load(snakemake.input.wm).get_fdata(dtype=np.float32)
    gm_wm = wm + nib.load(snakemake.input.gm).get_fdata(dtype=np.float32)
    rows, surfaces, thickness = [], {}, {}
    for i, hemi in enumerate(snakemake.params.hemis):
        meshes = {
            name: load_surface(getattr(snakemake.input, name)[i]) for name in ("white", "pial", "midthickness")
        }
        surfaces[hemi] = meshes
        thickness[hemi] = load_shape(snakemake.input.thickness[i])
        cortex = load_shape(snakemake.input.template_cortex[i]) > 0.5
        row = surface_qc(scan, hemi, meshes["white"], meshes["pial"], meshes["midthickness"], thickness[hemi],
                         cortex, wm, gm_wm, brain.affine)
        log.info("%s", row)
        rows.append(row)
    write_qc_tsv(rows, snakemake.output.tsv)
    figure = surface_qc_figure(brain.get_fdata(dtype=np.float32), brain.affine, surfaces, thickness, f"{scan} surfaces")
    with atomic_output(snakemake.output.png) as tmp:
        figure.savefig(tmp, dpi=80)
    plt.close(figure)
