"""Rule qc_preproc: one PNG with three orthogonal slices after each preprocessing step."""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads

limit_threads(snakemake.threads)

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402

from cortexgen.io import atomic_output, load_t1w  # noqa: E402
from cortexgen.qc import QCRow, preproc_montage  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.params.raw):
    inputs = snakemake.input
    rows = [
        QCRow("raw", load_t1w(snakemake.params.raw, max_voxel_size_mm=snakemake.params.max_voxel_size_mm)),
        QCRow("denoised", nib.load(inputs.denoised)),
        QCRow("N4 (head mask)", nib.load(inputs.corrected), nib.load(inputs.head_mask)),
        QCRow("affine to template", nib.load(inputs.head), nib.load(inputs.brain_mask)),
        QCRow("skull-stripped", nib.load(inputs.brain), nib.load(inputs.brain_mask)),
        QCRow("normalized", nib.load(inputs.image), nib.load(inputs.image_mask)),
    ]
    figure = preproc_montage(rows, title=snakemake.wildcards.scan)
    with atomic_output(snakemake.output.png) as tmp:
        figure.savefig(tmp, dpi=72)
    plt.close(figure)
exit_without_teardown()
