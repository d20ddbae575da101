"""Rule mni_affine: affine registration of the head to the MNI head template."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import ants  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import atomic_output, save_nifti  # noqa: E402
from cortexgen.preprocess.bias import looks_skull_stripped  # noqa: E402
from cortexgen.preprocess.register import affine_to_template  # noqa: E402

with job_log(snakemake.log[0]) as log:
    head = nib.load(snakemake.input.corrected)
    template = nib.load(snakemake.input.template)
    if looks_skull_stripped(head, max_volume_ml=snakemake.params.skullstripped_max_volume_ml):
        # A brain without its skull is matched to the template's brain, not its head.
        log.info("%s looks skull-stripped: registering to the template's brain", snakemake.input.corrected)
        template_mask = np.asarray(nib.load(snakemake.input.template_brain_mask).dataobj) > 0
        template = nib.Nifti1Image(np.where(template_mask, np.asarray(template.dataobj, np.float32), 0), template.affine)
    result = affine_to_template(
        head, template, type_of_transform=snakemake.params.type_of_transform, random_seed=snakemake.params.seed
    )
    log.info("template RAS mm -> scan RAS mm:\n%s", np.array2string(result.ras_matrix, precision=4))
    save_nifti(result.warped, snakemake.output.head)
    with atomic_output(snakemake.output.xfm) as tmp:
        ants.write_transform(result.transform, str(tmp))
