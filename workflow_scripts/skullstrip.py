"""Rule skullstrip: brain mask in MNI space and the masked head."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402

from cortexgen.io import save_nifti  # noqa: E402
from cortexgen.preprocess.skullstrip import skull_strip  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.head) as log:
    settings = snakemake.params.skullstrip
    head = nib.load(snakemake.input.head)
    brain, mask = skull_strip(
        head,
        method=settings["method"],
        template_mask=nib.load(snakemake.input.template_brain_mask),
        threshold=settings["threshold"],
        n_dilate=settings["n_dilate"],
        volume_range_ml=tuple(settings["volume_range_ml"]),
        source=snakemake.input.head,
    )
    log.info("brain mask (%s): %.0f mL", settings["method"], mask.get_fdata().sum() / 1000.0)
    save_nifti(brain, snakemake.output.brain)
    save_nifti(mask, snakemake.output.mask)
