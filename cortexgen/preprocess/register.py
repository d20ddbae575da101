"""Affine registration of a head to an MNI-space head template (ANTsPy)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cortexgen.io import voxel_sizes
from cortexgen.preprocess.convert import ants_to_nib, nib_to_ants, resampled_to_spacing

#: ITK's LPS world vs nibabel's RAS world.
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class AffineResult:
    """An image resampled into template space and the transform that took it there.

    Attributes:
        warped: the moving image on the template grid (float32).
        transform: the ANTs (ITK) affine transform, template -> moving point mapping as
            ITK stores it; write it with ``ants.write_transform``.
        ras_matrix: the same transform as a 4x4 matrix mapping template-space RAS mm
            to moving-space RAS mm (how a point in the template finds its voxel in the scan).
    """

    warped: nib.Nifti1Image
    transform: object
    ras_matrix: np.ndarray


def itk_affine_to_ras(transform) -> np.ndarray:
    """4x4 RAS matrix of an ANTs affine transform (fixed/template point -> moving point)."""
    params = np.asarray(transform.parameters, dtype=float)
    center = np.asarray(transform.fixed_parameters, dtype=float)
    linear = params[:9].reshape(3, 3)
    translation = params[9:12]
    # ITK: y = A (x - c) + t + c, all in LPS.
    offset = translation + center - linear @ center
    lps = np.eye(4)
    lps[:3, :3] = linear
    lps[:3, 3] = offset
    flip = np.eye(4)
    flip[:3, :3] = _LPS
    return flip @ lps @ flip


@dataclass(frozen=True)
class AffineSettings:
    """How the affine is optimised; fields match config ``preprocess.registration``.

    The optimisation is ANTs' 'AffineFast' schedule (2100 then 1200 iterations at 6 and
    4 mm voxels, smoothed by 3 and 2 mm) run on 2 mm copies of both images: AffineFast
    never iterates at its 2 mm and 1 mm levels, yet ITK still smooths full-resolution
    images for them, which made up most of its run time. Measured on ds000022 heads with
    one thread: both stages in 5-6 s, against 10-19 s for AffineFast's first stage alone.

    Attributes:
        resolution_mm: grid both images are resampled to for the optimisation.
        iterations: iterations per level, coarse to fine.
        shrink_factors: level grids as multiples of ``resolution_mm``.
        smoothing_sigmas_vox: Gaussian sigma per level, in ``resolution_mm`` voxels.
        head_stage_levels: how many of those levels (coarse first) the head-to-head stage
            runs; the brain stage runs them all.
        brain_mask_dilation_mm: the second stage scores only inside the template brain mask
            grown by this much, so that the brain (not the scalp, neck or a defaced
            face) decides the final alignment.
        seed: ANTs' random metric sampling seed.
    """

    resolution_mm: float = 2.0
    iterations: tuple[int, ...] = (2100, 1200)
    shrink_factors: tuple[int, ...] = (3, 2)
    smoothing_sigmas_vox: tuple[float, ...] = (1.5, 1.0)
    head_stage_levels: int = 1
    brain_mask_dilation_mm: float = 5.0
    seed: int = 42

    @classmethod
    def from_config(cls, section: dict) -> AffineSettings:
        """Settings from the config section (lists become tuples)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in section.items()})


@contextlib.contextmanager
def ants_seed(seed: int) -> Iterator[None]:
    """Seed ANTs' registrations inside the block, and restore the previous seed after.

    antspyx 0.6 ignores a random_seed keyword (its **kwargs swallow it) and reads the seed
    from ants.config. ANTs takes a seed of 0 to mean "seed from the clock", so 0 is refused:
    with it, a registration's random metric sampling differs on every run. A non-zero seed
    gives the same result on every run with the same ITK thread count.
    """
    import ants

    if int(seed) < 1:
        raise ValueError(f"ANTs seed must be a positive integer (ANTs reads 0 as 'use the clock'), got {seed}")

    previous_seed = ants.config._random_seed
    ants.config._random_seed = int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = previous_seed


def _seeded_affine(fixed, moving, settings: AffineSettings, levels: int | None = None, **kwargs) -> str:
    """One ANTs affine registration over the first ``levels`` levels of the schedule (all if
    ``None``); returns the path of its (collapsed) transform."""
    import ants

    levels = slice(None) if levels is None else slice(0, levels)
    with ants_seed(settings.seed):
        registration = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="Affine",
            aff_iterations=tuple(settings.iterations[levels]),
            aff_shrink_factors=tuple(settings.shrink_factors[levels]),
            aff_smoothing_sigmas=tuple(settings.smoothing_sigmas_vox[levels]),
            **kwargs,
        )
    return registration["fwdtransforms"][0]


_COARSE_TARGETS: dict = {}


def coarse_target(template: nib.Nifti1Image, template_brain_mask: nib.Nifti1Image | None, settings: AffineSettings):
    """The template and its brain mask grown by ``settings.brain_mask_dilation_mm`` on the
    optimisation grid (ANTs images; the mask ``None`` without ``template_brain_mask``).

    Kept per process, keyed by the images' content and the settings: every head of a cohort
    is registered to the same template, and these took 0.6 s of each registration.
    """
    from scipy import ndimage

    digest = hashlib.blake2b(digest_size=16)
    for img in (template, template_brain_mask):
        if img is not None:
            digest.update(np.ascontiguousarray(img.dataobj).tobytes())
            digest.update(np.asarray(img.affine, dtype=float).tobytes())
    key = (digest.hexdigest(), template_brain_mask is None, settings.resolution_mm, settings.brain_mask_dilation_mm)
    if key not in _COARSE_TARGETS:
        spacing = (settings.resolution_mm,) * 3
        fixed_coarse = resampled_to_spacing(nib_to_ants(template), spacing)
        mask_coarse = None
        if template_brain_mask is not None:
            brain = np.asarray(template_brain_mask.dataobj) > 0
            voxel_mm = float(voxel_sizes(template).min())
            grown = ndimage.binary_dilation(brain, iterations=max(1, round(settings.brain_mask_dilation_mm / voxel_mm)))
            mask = nib_to_ants(nib.Nifti1Image(grown.astype(np.float32), template.affine))
            mask_coarse = resampled_to_spacing(mask, spacing, nearest=True)
        _COARSE_TARGETS[key] = (fixed_coarse, mask_coarse)
    return _COARSE_TARGETS[key]


def coarse_moving(moving: nib.Nifti1Image, settings: AffineSettings):
    """``moving`` on the optimisation grid: ``settings.resolution_mm`` voxels, linear
    interpolation (an ANTs image; the same with any ITK thread count)."""
    return resampled_to_spacing(nib_to_ants(moving), settings.resolution_mm)


def affine_to_template(
    moving: nib.Nifti1Image,
    template: nib.Nifti1Image,
    template_brain_mask: nib.Nifti1Image | None = None,
    settings: AffineSettings = AffineSettings(),
    resample: bool = True,
) -> AffineResult:
    """Register ``moving`` to ``template`` with an affine transform and resample it there.

    Stage 1 matches the whole images (head to head). With ``template_brain_mask``, stage 1
    runs only the schedule's first ``settings.head_stage_levels`` levels, and stage 2
    starts from it and scores only inside the dilated template brain: head-to-head
    alone let a defaced ds000022 head with its neck come out 20 % too large (brain mask
    2.39 L against the template's 1.96 L, Dice 0.888 with the template brain; 0.961 after
    stage 2).

    Reruns give the same transform only with one ITK thread: with more, the metric's
    threaded sums change order and the optimiser can end in another optimum (hence one
    thread for the rule).

    Args:
        moving: the subject's head (skull on), any grid.
        template: an MNI-space head template; its grid (Colin27: 181x217x181, 1 mm) is the
            output grid.
        template_brain_mask: the template's brain mask (template grid), for stage 2.
        settings: the optimisation schedule (see :class:`AffineSettings`).
        resample: also resample ``moving`` onto the template grid; ``False`` leaves
            ``warped`` as ``None`` (for a caller that resamples another image with it).

    Returns:
        :class:`AffineResult` with the moving image resampled once, by linear
        interpolation, from its own grid onto the template grid (float32).
    """
    import ants

    fixed_coarse, mask_coarse = coarse_target(template, template_brain_mask, settings)
    moving_coarse = coarse_moving(moving, settings)
    transform_file = _seeded_affine(fixed_coarse, moving_coarse, settings,
                                    levels=settings.head_stage_levels if template_brain_mask is not None else None)
    # ANTs leaves each transform in a temporary file; a cohort would fill /tmp with them.
    temporary_files = [transform_file]
    if template_brain_mask is not None:
        transform_file = _seeded_affine(
            fixed_coarse, moving_coarse, settings, initial_transform=[transform_file], mask=mask_coarse
        )
        temporary_files.append(transform_file)
    try:
        transform = ants.read_transform(transform_file)
    finally:
        for path in temporary_files:
            Path(path).unlink(missing_ok=True)
    warped = resample_to_template(moving, template, transform) if resample else None
    return AffineResult(warped=warped, transform=transform, ras_matrix=itk_affine_to_ras(transform))


def resample_to_template(moving: nib.Nifti1Image, template: nib.Nifti1Image, transform) -> nib.Nifti1Image:
    """``moving`` resampled onto ``template``'s grid through an ANTs affine, by linear
    interpolation (float32)."""
    import ants

    warped = ants.apply_ants_transform_to_image(transform, nib_to_ants(moving), nib_to_ants(template),
                                                interpolation="linear")
    warped_img = ants_to_nib(warped, like=template)
    warped_img.set_data_dtype(np.float32)
    return warped_img


def register_head(
    head: nib.Nifti1Image,
    template: nib.Nifti1Image,
    template_brain_mask: nib.Nifti1Image,
    skullstripped_max_volume_ml: float = 2000.0,
    settings: AffineSettings = AffineSettings(),
    resample: bool = True,
) -> tuple[AffineResult, bool]:
    """Affine of a scan to the head template, or to its brain if the scan has no skull.

    Matching a head template's skull to a skull-stripped scan's empty background pulls the
    brain outward, so for a scan that :func:`looks_skull_stripped` stage 1 matches the
    template masked by ``template_brain_mask``. Stage 2 is brain-driven either way.

    Returns:
        ``(result, skull_stripped)``: the registration and whether the brain target was used.
    """
    from cortexgen.preprocess.bias import looks_skull_stripped

    skull_stripped = looks_skull_stripped(head, max_volume_ml=skullstripped_max_volume_ml)
    if skull_stripped:
        brain = np.asarray(template_brain_mask.dataobj) > 0
        template_data = np.asarray(template.dataobj, dtype=np.float32)
        template = nib.Nifti1Image(np.where(brain, template_data, 0).astype(np.float32), template.affine)
    result = affine_to_template(head, template, template_brain_mask, settings, resample)
    return result, skull_stripped


def save_transform(transform, path) -> None:
    """Write an ANTs transform (ITK ``.mat``) atomically."""
    import ants

    from cortexgen.io import atomic_output

    with atomic_output(path) as tmp:
        ants.write_transform(transform, str(tmp))
