"""Rule deform_template: the brain the deform model warps, on the model grid, scaled like the subjects' images.

``diffusion.deform.template.kind: study``: the training subjects' own average (ANTs template
building, started from the space's template); ``space``, or no training subject: the space's template.
"""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.derivatives import bids_uri, resolution_sidecar, write_json  # noqa: E402
from cortexgen.diffusion.fields import FieldSettings, study_template, template_image  # noqa: E402
from cortexgen.io import save_nifti, voxel_sizes  # noqa: E402
from cortexgen.preprocess.normalize import resized_affine  # noqa: E402

with job_log(snakemake.log[0]) as log:
    params = snakemake.params
    template = nib.load(snakemake.input.template)
    shape = tuple(params.shape)
    percentiles = tuple(params.percentiles)
    grid = nib.Nifti1Image(np.zeros(shape, np.uint8), resized_affine(template.affine, template.shape, shape))
    image = template_image(template, nib.load(snakemake.input.mask), grid, percentiles)
    subjects = list(snakemake.input.images)
    if subjects:
        settings = params.template
        log.info("study template: %d training images, %d iterations, from the %s template",
                 len(subjects), settings["iterations"], params.space)
        image = study_template([nib.load(path) for path in subjects], image,
                               FieldSettings.from_config(params.registration), iterations=settings["iterations"],
                               percentiles=percentiles)
        description = (f"The average brain of {len(subjects)} training subjects (ANTs template building, "
                       f"{settings['iterations']} iterations, from the {params.space} template) on the models' grid, "
                       "intensities scaled as the subjects' preprocessed images")
        sources = [bids_uri(path, snakemake.output.image_json) for path in subjects]
    else:
        description = (f"The {params.space} template's brain on the models' grid, "
                       "intensities scaled as the subjects' preprocessed images")
        sources = []
    log.info("template on %s voxels, %d in the brain", "x".join(map(str, shape)), int((image.get_fdata() > 0).sum()))
    save_nifti(image, snakemake.output.image)
    extra = {"Sources": sources} if sources else {}
    write_json(resolution_sidecar(shape, voxel_sizes(image).round(4).tolist(), params.space,
                                  Description=description, **extra),
               snakemake.output.image_json)
