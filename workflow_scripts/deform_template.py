"""Rule deform_template: the template brain on the model grid, scaled like the subjects' images."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.derivatives import resolution_sidecar, write_json  # noqa: E402
from cortexgen.diffusion.fields import template_image  # noqa: E402
from cortexgen.io import save_nifti, voxel_sizes  # noqa: E402
from cortexgen.preprocess.normalize import resized_affine  # noqa: E402

with job_log(snakemake.log[0]) as log:
    template = nib.load(snakemake.input.template)
    shape = tuple(snakemake.params.shape)
    grid = nib.Nifti1Image(np.zeros(shape, np.uint8), resized_affine(template.affine, template.shape, shape))
    image = template_image(template, nib.load(snakemake.input.mask), grid, tuple(snakemake.params.percentiles))
    log.info("template on %s voxels, %d in the brain", "x".join(map(str, shape)), int((image.get_fdata() > 0).sum()))
    save_nifti(image, snakemake.output.image)
    write_json(resolution_sidecar(shape, voxel_sizes(image).round(4).tolist(), snakemake.params.space,
                                  Description=f"The {snakemake.params.space} template's brain on the models' grid, "
                                              "intensities scaled as the subjects' preprocessed images"),
               snakemake.output.image_json)
