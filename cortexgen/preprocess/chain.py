"""One head through the whole preprocessing chain in one job, in three processes.

raw -> SANLM denoise (Rician) -> N4 -> affine to the MNI head template -> deepbet -> normalise.

The job forks a worker before it imports ANTs or torch. The worker makes the head mask and
denoises the head and a margin while the job imports ANTs; N4 then runs here with the job's
threads (its result depends on their number, not on the run), and the affine in a second
worker with one ITK thread, with which it is the same on every rerun (with more, the
metric's threaded sums change order and reruns end in different optima), while the job
loads deepbet and scikit-image. Each image is handed to ``on_ready`` as soon as it is made
(the rule writes them in the background). ITK reads its thread count once per process, when
it is first used, hence the second process, forked after the job has imported ANTs.
Every step beside the filter competes with its two threads, so what runs beside it is kept
to the one import the next steps need.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from cortexgen.preprocess.bias import bias_corrected, head_mask, n4_bias_field
from cortexgen.preprocess.denoise import denoise_rician
from cortexgen.preprocess.normalize import normalize_and_resize
from cortexgen.preprocess.register import (
    AffineSettings,
    coarse_target,
    itk_affine_to_ras,
    register_head,
    resample_to_template,
)
from cortexgen.preprocess.skullstrip import deepbet_extractor, skull_strip


@dataclass
class Preprocessed:
    """Every intermediate of one head, as the preprocessing rule writes them.

    Attributes:
        denoised: SANLM-filtered head, native grid (float32).
        corrected: ``denoised`` divided by the N4 bias field, native grid (float32).
        head_mask: the raw head's mask, native grid (bool array): the filter runs on it and
            its margin, N4 fits in it.
        head: ``corrected`` resampled onto the template grid (float32).
        transform: the ANTs affine (template -> scan points), for ``ants.write_transform``.
        ras_matrix: the same as a 4x4 RAS mm matrix.
        skull_stripped: the scan had no skull and was registered to the template's brain.
        brain, brain_mask: the skull-stripped head and its mask, template grid.
        image, image_mask: intensities in [0, 1] in the brain, on the model grid.
        seconds: wall seconds of each step (the head mask's and the filter's overlap the imports).
    """

    denoised: nib.Nifti1Image
    corrected: nib.Nifti1Image
    head_mask: np.ndarray
    head: nib.Nifti1Image
    transform: object
    ras_matrix: np.ndarray
    skull_stripped: bool
    brain: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    image: nib.Nifti1Image
    image_mask: nib.Nifti1Image
    seconds: dict = field(default_factory=dict)


def _niced(function, *args):
    """``function(*args)``, as run in the forked process.

    The process yields to its parent (niceness 10): the denoising filter takes every core it
    sees, and the parent's single-threaded imports, which overlap it, would otherwise wait
    their turn.
    """
    os.nice(max(0, 10 - os.nice(0)))  # the worker runs several calls: niced once
    return function(*args)


def _head_and_denoised(raw: nib.Nifti1Image, denoise: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """The head mask and the denoising step (config ``preprocess.denoise``) on the head and
    its margin: ``(mask, denoised float32 array, seconds of each)``."""
    start = time.perf_counter()
    mask = head_mask(raw)
    seconds = {"head_mask": time.perf_counter() - start}
    start = time.perf_counter()
    denoised = denoise_rician(raw, denoise["method"], denoise["strength"], denoise["head_margin_voxels"], mask)
    seconds["denoise"] = time.perf_counter() - start
    return mask, np.asarray(denoised.dataobj, dtype=np.float32), seconds


def _prepare_registration(template, template_brain_mask, settings: dict) -> None:
    """In the forked registration process, before the affine is asked for (beside the
    filter): one ITK thread, read once, when ITK is first used, and the template on the
    optimisation grid (:func:`coarse_target`, kept for the affine)."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    coarse_target(template, template_brain_mask, AffineSettings.from_config(settings["registration"]))


def _registration(head, template, template_brain_mask, settings: dict, transform_path: str) -> bool:
    """The affine (:func:`register_head`), written to ``transform_path`` (an ANTs transform
    cannot be pickled back from the forked process); returns whether the scan looked
    skull-stripped."""
    import ants

    registration, skull_stripped = register_head(
        head, template, template_brain_mask,
        skullstripped_max_volume_ml=settings["skullstripped_max_volume_ml"],
        settings=AffineSettings.from_config(settings["registration"]),
        resample=False,
    )
    ants.write_transform(registration.transform, transform_path)
    return skull_stripped


def preprocess_head(
    raw: nib.Nifti1Image,
    template: nib.Nifti1Image,
    template_brain_mask: nib.Nifti1Image,
    settings: dict,
    source: str | None = None,
    parallel: bool = True,
    on_ready=None,
) -> Preprocessed:
    """Run the whole chain on one head.

    Args:
        raw: the scan as :func:`cortexgen.io.load_t1w` returns it (RAS+, float32).
        template, template_brain_mask: the MNI head template and its brain mask.
        settings: config ``preprocess`` (validated by config/schema.yaml).
        source: the scan's file, named in error messages.
        parallel: make the head mask and denoise in a forked process while this one
            imports ANTs, and run the affine in another, with one ITK thread (where the
            platform can fork). ``False`` runs every step here, one after the other:
            the same result when this process has one ITK thread.
        on_ready: called as ``on_ready({name: image})`` as soon as intermediates are made
            (``denoised`` and ``head_mask`` (uint8), then ``corrected``, ``head``, ``brain``
            and ``brain_mask``; names as :class:`Preprocessed`'s), e.g. to write them in
            the background; it should return at once.

    Returns:
        :class:`Preprocessed`.
    """
    import tempfile

    def ready(images: dict) -> None:
        if on_ready is not None:
            on_ready(images)

    seconds: dict[str, float] = {}
    data = np.clip(np.asarray(raw.dataobj, dtype=np.float32), 0, None)
    raw = nib.Nifti1Image(data, raw.affine)
    fork = parallel and "fork" in multiprocessing.get_all_start_methods()
    # Both forked before this process starts a thread pool (ITK's, torch's), which a fork
    # would break.
    context = multiprocessing.get_context("fork")
    denoiser = ProcessPoolExecutor(1, mp_context=context) if fork else None
    registrar = ProcessPoolExecutor(1, mp_context=context) if fork else None
    try:
        if fork:
            pending_denoised = denoiser.submit(_niced, _head_and_denoised, raw, settings["denoise"])
        import ants  # 1.1 s of imports, while the head mask and the filter are made

        if fork:
            # Forked with ANTs imported (once for both processes) but before ITK's first use,
            # when it reads its thread count: one in the worker, the job's here.
            registrar.submit(_prepare_registration, template, template_brain_mask, settings)

        mask, denoised_data, denoise_seconds = (
            pending_denoised.result() if fork else _head_and_denoised(raw, settings["denoise"])
        )
        seconds.update(denoise_seconds)
        denoised = nib.Nifti1Image(denoised_data, raw.affine)
        ready({"denoised": denoised, "head_mask": nib.Nifti1Image(mask.astype(np.uint8), raw.affine)})

        n4 = settings["n4"]
        start = time.perf_counter()
        field = n4_bias_field(denoised, mask, n4["shrink_factor"], tuple(n4["iterations"]), n4["tolerance"],
                              n4["spline_distance_mm"])
        corrected = nib.Nifti1Image(bias_corrected(denoised_data, field, mask), raw.affine)
        seconds["n4"] = time.perf_counter() - start

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cortexgen-affine-") as folder:
            path = os.path.join(folder, "affine.mat")
            arguments = (corrected, template, template_brain_mask, settings, path)
            pending = registrar.submit(_registration, *arguments) if fork else None
            ready({"corrected": corrected})
            # The last steps' imports on the core the one-thread affine leaves free, not
            # beside the filter, which takes both: torch and deepbet's weights (1.4 s) and
            # scikit-image's resize (0.2 s).
            loading = time.perf_counter()
            if settings["skullstrip"]["method"] == "deepbet":
                deepbet_extractor()
            from skimage.transform import resize  # noqa: F401  (skimage imports on first use)
            seconds["imports_beside_affine"] = time.perf_counter() - loading
            skull_stripped = pending.result() if fork else _registration(*arguments)
            transform = ants.read_transform(path)
        seconds["mni_affine"] = time.perf_counter() - start
    finally:
        for pool in (denoiser, registrar):
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    start = time.perf_counter()
    head = resample_to_template(corrected, template, transform)
    seconds["resample"] = time.perf_counter() - start
    ready({"head": head})

    strip = settings["skullstrip"]
    start = time.perf_counter()
    brain, brain_mask = skull_strip(
        head,
        method=strip["method"],
        template_mask=template_brain_mask,
        threshold=strip["threshold"],
        n_dilate=strip["n_dilate"],
        volume_range_ml=tuple(strip["volume_range_ml"]),
        source=source,
        bfloat16=strip["bfloat16"],
    )
    seconds["skullstrip"] = time.perf_counter() - start
    ready({"brain": brain, "brain_mask": brain_mask})
    start = time.perf_counter()
    image, image_mask = normalize_and_resize(
        brain, brain_mask, shape=tuple(settings["shape"]), percentiles=tuple(settings["normalize"]["percentiles"])
    )
    seconds["normalize"] = time.perf_counter() - start
    return Preprocessed(
        denoised=denoised,
        corrected=corrected,
        head_mask=mask,
        head=head,
        transform=transform,
        ras_matrix=itk_affine_to_ras(transform),
        skull_stripped=skull_stripped,
        brain=brain,
        brain_mask=brain_mask,
        image=image,
        image_mask=image_mask,
        seconds={name: round(value, 2) for name, value in seconds.items()},
    )
