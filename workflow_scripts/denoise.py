"""Rule denoise: read and check the raw T1w, denoise it (Rician noise model)."""

from cortexgen.runtime import job_log, limit_threads

limit_threads(snakemake.threads)

from cortexgen.io import load_t1w, save_nifti  # noqa: E402
from cortexgen.preprocess.denoise import denoise_rician  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.params.raw) as log:
    raw = load_t1w(snakemake.params.raw, max_voxel_size_mm=snakemake.params.max_voxel_size_mm)
    log.info("%s: %s voxels, denoising with %s", snakemake.params.raw, raw.shape, snakemake.params.method)
    denoised = denoise_rician(
        raw,
        method=snakemake.params.method,
        strength=snakemake.params.strength,
        head_margin_voxels=snakemake.params.head_margin_voxels,
    )
    save_nifti(denoised, snakemake.output.denoised)
