"""Rule qc_surfaces: per-hemisphere surface QC row (TSV, with flags) and a figure (contours + thickness)."""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads

limit_threads(snakemake.threads)

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import atomic_output, voxel_sizes  # noqa: E402
from cortexgen.surfaces.mesh import load_shape, load_surface  # noqa: E402
from cortexgen.surfaces.partition import HINDBRAIN, cortex_tissue  # noqa: E402
from cortexgen.surfaces.qc import QCLimits, surface_qc, surface_qc_figure, write_qc_tsv  # noqa: E402
from cortexgen.surfaces.segment import tissue_from_fractions  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.brain) as log:
    scan = snakemake.wildcards.scan
    brain = nib.load(snakemake.input.brain)
    tissue = tissue_from_fractions(
        *(nib.load(path).get_fdata(dtype=np.float32) for path in (snakemake.input.csf, snakemake.input.gm, snakemake.input.wm))
    )
    partition = np.asarray(nib.load(snakemake.input.partition).dataobj)
    limits = QCLimits.from_config(snakemake.params.qc)
    rows, surfaces, thickness, flags = [], {}, {}, {}
    for i, hemi in enumerate(snakemake.params.hemis):
        meshes = {
            name: load_surface(getattr(snakemake.input, name)[i]) for name in ("white", "pial", "midthickness")
        }
        surfaces[hemi] = meshes
        thickness[hemi] = load_shape(snakemake.input.thickness[i])
        cortex = load_shape(snakemake.input.template_cortex[i]) > 0.5
        hemi_tissue = cortex_tissue(tissue, partition, voxel_sizes(brain), hemi)
        row = surface_qc(scan, hemi, meshes["white"], meshes["pial"], meshes["midthickness"], thickness[hemi],
                         cortex, hemi_tissue.wm, hemi_tissue.gm_wm,
                         hemi_tissue.csf, brain.affine, partition == HINDBRAIN, limits)
        log.info("%s", row)
        if row.flags != "ok":
            log.warning("%s hemi-%s flagged: %s", scan, hemi, row.flags)
        rows.append(row)
        flags[hemi] = row.flags
    write_qc_tsv(rows, snakemake.output.tsv)
    figure = surface_qc_figure(brain.get_fdata(dtype=np.float32), brain.affine, surfaces, thickness,
                               f"{scan} surfaces", flags, partition)
    with atomic_output(snakemake.output.png) as tmp:
        figure.savefig(tmp, dpi=80)
    plt.close(figure)
exit_without_teardown()
