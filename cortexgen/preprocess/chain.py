"""One head through the whole preprocessing chain, in one process, with its two halves at once.

raw -> SANLM denoise (Rician) -> N4 -> affine to the MNI head template -> deepbet -> normalise.

The denoising filter and the N4 + affine steps do not wait for each other: N4's bias field is
fitted on the raw head (on a grid 6x coarser) and the affine is optimised on 2 mm copies of
the raw head divided by that field, while SANLM filters the raw head in a forked process (the
ANTs calls hold the GIL, so a thread would not run beside them). The denoised head is then
divided by the same field and resampled once with the affine.

ANTs runs with one ITK thread in this process (see :func:`cortexgen.runtime.limit_threads`):
with more, the affine's threaded metric sums change order and reruns end in different optima.
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
from cortexgen.preprocess.register import AffineSettings, register_head, resample_to_template
from cortexgen.preprocess.skullstrip import deepbet_extractor, skull_strip


@dataclass
class Preprocessed:
    """Every intermediate of one head, as the preprocessing rule writes them.

    Attributes:
        denoised: SANLM-filtered head, native grid (float32).
        corrected: ``denoised`` divided by the N4 bias field, native grid (float32).
        head_mask: the head mask N4 was fitted in, native grid (bool array).
        head: ``corrected`` resampled onto the template grid (float32).
        transform: the ANTs affine (template -> scan points), for ``ants.write_transform``.
        ras_matrix: the same as a 4x4 RAS mm matrix.
        skull_stripped: the scan had no skull and was registered to the template's brain.
        brain, brain_mask: the skull-stripped head and its mask, template grid.
        image, image_mask: intensities in [0, 1] in the brain, on the model grid.
        seconds: wall seconds of each step (the denoising filter's overlap the others').
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
    """``function(*args)`` and its wall seconds, as run in the forked process.

    The process yields to its parent (niceness 10): the denoising filter takes every core it
    sees, and the parent's single ANTs thread, which has as much to do, would otherwise wait
    its turn and finish after the filter with one core idle.
    """
    os.nice(10)
    start = time.perf_counter()
    return function(*args), time.perf_counter() - start


def _denoised_data(raw: nib.Nifti1Image, denoise: dict) -> np.ndarray:
    """The denoising step (config ``preprocess.denoise``) as a float32 array."""
    denoised = denoise_rician(raw, denoise["method"], denoise["strength"], denoise["head_margin_voxels"])
    return np.asarray(denoised.dataobj, dtype=np.float32)


def preprocess_head(
    raw: nib.Nifti1Image,
    template: nib.Nifti1Image,
    template_brain_mask: nib.Nifti1Image,
    settings: dict,
    source: str | None = None,
    parallel: bool = True,
) -> Preprocessed:
    """Run the whole chain on one head.

    Args:
        raw: the scan as :func:`cortexgen.io.load_t1w` returns it (RAS+, float32).
        template, template_brain_mask: the MNI head template and its brain mask.
        settings: config ``preprocess`` (validated by config/schema.yaml).
        source: the scan's file, named in error messages.
        parallel: head mask and denoising in a forked process while N4 and the affine run
            here (where the platform can fork); ``False`` runs the same steps one after
            the other, with the same result.

    Returns:
        :class:`Preprocessed`.
    """
    seconds: dict[str, float] = {}
    data = np.clip(np.asarray(raw.dataobj, dtype=np.float32), 0, None)
    raw = nib.Nifti1Image(data, raw.affine)
    fork = parallel and "fork" in multiprocessing.get_all_start_methods()
    # Forked before this process imports ANTs or torch, whose thread pools a fork would break.
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) if fork else None
    try:
        if pool is not None:
            pending_mask = pool.submit(_niced, head_mask, raw)
            pending_denoised = pool.submit(_niced, _denoised_data, raw, settings["denoise"])
            import ants  # noqa: F401  (1.5 s of imports, while the mask is made)

            mask, seconds["head_mask"] = pending_mask.result()
        else:
            start = time.perf_counter()
            mask = head_mask(raw)
            seconds["head_mask"] = time.perf_counter() - start
        n4 = settings["n4"]
        start = time.perf_counter()
        bias = n4_bias_field(raw, mask, n4["shrink_factor"], tuple(n4["iterations"]), n4["tolerance"],
                             n4["spline_distance_mm"])
        seconds["n4"] = time.perf_counter() - start
        start = time.perf_counter()
        registration, skull_stripped = register_head(
            nib.Nifti1Image(bias_corrected(data, bias, mask), raw.affine),
            template,
            template_brain_mask,
            skullstripped_max_volume_ml=settings["skullstripped_max_volume_ml"],
            settings=AffineSettings.from_config(settings["registration"]),
            resample=False,
        )
        seconds["mni_affine"] = time.perf_counter() - start
        if settings["skullstrip"]["method"] == "deepbet":
            start = time.perf_counter()
            deepbet_extractor()  # loaded while the filter finishes
            seconds["deepbet_load"] = time.perf_counter() - start
        if pool is not None:
            denoised_data, seconds["denoise"] = pending_denoised.result()
        else:
            start = time.perf_counter()
            denoised_data = _denoised_data(raw, settings["denoise"])
            seconds["denoise"] = time.perf_counter() - start
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    start = time.perf_counter()
    denoised = nib.Nifti1Image(denoised_data, raw.affine)
    corrected = nib.Nifti1Image(bias_corrected(denoised_data, bias, mask), raw.affine)
    head = resample_to_template(corrected, template, registration.transform)
    seconds["resample"] = time.perf_counter() - start

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
        transform=registration.transform,
        ras_matrix=registration.ras_matrix,
        skull_stripped=skull_stripped,
        brain=brain,
        brain_mask=brain_mask,
        image=image,
        image_mask=image_mask,
        seconds={name: round(value, 2) for name, value in seconds.items()},
    )
