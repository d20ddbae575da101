"""Rule n4: head mask and N4 bias-field correction inside it."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.preprocess.bias import foreground_volume_ml, head_mask, n4_correct  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.denoised) as log:
    denoised = nib.load(snakemake.input.denoised)
    mask = head_mask(denoised)
    log.info("head mask %.0f mL", foreground_volume_ml(denoised, mask))
    n4 = snakemake.params.n4
    corrected = n4_correct(
        denoised,
        mask,
        shrink_factor=n4["shrink_factor"],
        iterations=tuple(n4["iterations"]),
        tolerance=n4["tolerance"],
        spline_distance_mm=n4["spline_distance_mm"],
    )
    save_nifti(corrected, snakemake.output.corrected)
    save_nifti(nib.Nifti1Image(mask.astype(np.uint8), denoised.affine), snakemake.output.head_mask)
