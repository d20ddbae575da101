"""Rule deformation_field: ANTs SyN of the template onto one training image; the displacement (mm, RAS)."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.diffusion.fields import FieldSettings, register_to_template  # noqa: E402
from cortexgen.io import save_nifti  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.image) as log:
    field = register_to_template(nib.load(snakemake.input.image), nib.load(snakemake.input.template),
                                 FieldSettings.from_config(snakemake.params.settings))
    magnitude = np.linalg.norm(np.asarray(field.dataobj), axis=-1)
    log.info("displacement: mean %.2f mm, max %.2f mm", magnitude.mean(), magnitude.max())
    save_nifti(field, snakemake.output.field)
