"""Rule mni_affine: affine registration of the head to the MNI head template."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.preprocess.register import AffineSettings, register_head, save_transform  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.corrected) as log:
    result, skull_stripped = register_head(
        nib.load(snakemake.input.corrected),
        nib.load(snakemake.input.template),
        nib.load(snakemake.input.template_brain_mask),
        skullstripped_max_volume_ml=snakemake.params.skullstripped_max_volume_ml,
        settings=AffineSettings.from_config(snakemake.params.registration),
    )
    if skull_stripped:
        log.info("%s looks skull-stripped: registered to the template's brain", snakemake.input.corrected)
    log.info("template RAS mm -> scan RAS mm:\n%s", np.array2string(result.ras_matrix, precision=4))
    save_nifti(result.warped, snakemake.output.head)
    save_transform(result.transform, snakemake.output.xfm)
