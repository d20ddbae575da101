"""Rule normalize: intensities to [0, 1] in the brain, background 0, resized to the model grid."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

import os  # noqa: E402

import nibabel as nib  # noqa: E402

from cortexgen.derivatives import resolution_sidecar, write_json  # noqa: E402

from cortexgen.io import save_nifti, voxel_sizes  # noqa: E402
from cortexgen.preprocess.normalize import normalize_and_resize  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.brain) as log:
    image, mask = normalize_and_resize(
        nib.load(snakemake.input.brain),
        nib.load(snakemake.input.mask),
        shape=tuple(snakemake.params.shape),
        percentiles=tuple(snakemake.params.percentiles),
    )
    log.info("grid %s, voxel size %s mm", image.shape, voxel_sizes(image).round(3).tolist())
    save_nifti(image, snakemake.output.image)
    save_nifti(mask, snakemake.output.mask)
    source = os.path.relpath(snakemake.params.raw, snakemake.params.bids_dir)
    sidecar = resolution_sidecar(image.shape, voxel_sizes(image).round(4).tolist(), snakemake.params.space, source)
    write_json(sidecar, snakemake.output.image_json)
    write_json(sidecar, snakemake.output.mask_json)
