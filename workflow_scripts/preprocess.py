"""Rule preprocess: one head from raw T1w to the model grid, writing every intermediate.

One job per head instead of one per step: each step's own job cost a Python start, its
imports and a NIfTI write and read, about as much as the steps themselves.
"""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads, lower_thread_priority

limit_threads(snakemake.threads)

import os  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.derivatives import bids_uri, resolution_sidecar, write_json  # noqa: E402
from cortexgen.io import load_t1w, save_nifti, voxel_sizes  # noqa: E402
from cortexgen.preprocess.bias import foreground_volume_ml  # noqa: E402
from cortexgen.preprocess.chain import preprocess_head  # noqa: E402
from cortexgen.preprocess.register import save_transform  # noqa: E402

params, output = snakemake.params, snakemake.output
with job_log(snakemake.log[0], source=params.raw) as log:
    settings = params.preprocess
    raw = load_t1w(params.raw, max_voxel_size_mm=settings["max_voxel_size_mm"])
    log.info("%s: %s voxels", params.raw, raw.shape)

    # Every image is written by background threads (ISA-L compresses with the GIL released)
    # at a lower priority, so that the writes take the cycles the steps leave idle (the
    # one-thread affine, resampling, deepbet's own pre- and post-processing) rather than theirs.
    writer = ThreadPoolExecutor(snakemake.threads, initializer=lower_thread_priority)
    written = []

    def write_later(images: dict) -> None:
        """``{output name: image}``, written in the background."""
        written.extend(writer.submit(save_nifti, image, getattr(output, name)) for name, image in images.items())

    result = preprocess_head(
        raw, nib.load(snakemake.input.template), nib.load(snakemake.input.template_brain_mask), settings,
        source=params.raw, on_ready=write_later,
    )
    log.info("head mask %.0f mL", foreground_volume_ml(raw, result.head_mask))
    if result.skull_stripped:
        log.info("%s looks skull-stripped: registered to the template's brain", params.raw)
    log.info("template RAS mm -> scan RAS mm:\n%s", np.array2string(result.ras_matrix, precision=4))
    log.info("brain mask (%s): %.0f mL", settings["skullstrip"]["method"],
             foreground_volume_ml(result.brain_mask, np.asarray(result.brain_mask.dataobj) > 0))
    log.info("grid %s, voxel size %s mm", result.image.shape, voxel_sizes(result.image).round(3).tolist())
    log.info("seconds per step (head mask and denoising beside the imports): %s", result.seconds)
    save_transform(result.transform, output.xfm)
    write_later({"image": result.image, "image_mask": result.image_mask})
    for image in written:
        image.result()
    writer.shutdown()
    source = os.path.relpath(params.raw, params.bids_dir)
    grid = (result.image.shape, voxel_sizes(result.image).round(4).tolist(), params.space, source)
    write_json(resolution_sidecar(*grid), output.image_json)
    write_json(resolution_sidecar(*grid, skull_stripped=None, Type="Brain"), output.image_mask_json)

    # The images before skull stripping keep the raw scan's skull, if it had one. Sources: the
    # file each step read (BIDS URIs; bids:: is this dataset, results/preproc).
    def here(*paths):
        return [bids_uri(path, output.image_json) for path in paths]

    for path, stripped, description, sources in (
        (output.denoised_json, result.skull_stripped, "Adaptive non-local means (Rician), native space",
         [f"bids:raw:{source}"]),
        (output.corrected_json, result.skull_stripped, "N4 bias-field corrected, native space", here(output.denoised)),
        (output.head_json, result.skull_stripped, f"Affine to the {params.space} head template",
         here(output.corrected, output.xfm)),
        (output.brain_json, True, f"In {params.space}, brain mask applied", here(output.head, output.brain_mask)),
    ):
        write_json({"SkullStripped": bool(stripped), "Description": description, "Sources": sources}, path)
exit_without_teardown()
