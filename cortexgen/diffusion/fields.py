"""Deformation fields for the "deform" generator: template → subject displacements.

Each training subject's model-ready image is registered to the template image (on the same
84 x 128 x 84 model grid) with ANTs SyN; the stored field ``u`` is what a DDPM learns, and a
sampled field warps the template into a new image.

Conventions used throughout this module:

* A field is a **displacement in millimetres along the RAS world axes**, sampled at the
  voxel centres of the grid whose affine it comes with.
* It is a *pull-back* field: ``warped(x) = template(x + u(x))`` for each world point ``x``
  of the grid. This is the mapping ANTs' forward transforms encode (fixed-space point →
  moving-space point) when the subject is the fixed image and the template the moving one,
  and it is what resampling needs (every output voxel looks up where to read).
* On disk (NIfTI) a field is ``(X, Y, Z, 3)``, the NIfTI vector layout; in memory for torch
  it is channels-first, ``(3, X, Y, Z)`` or a batch ``(B, 3, X, Y, Z)``, the layout a 3D
  U-Net takes. :func:`field_array` converts the former to the latter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from cortexgen.preprocess.convert import nib_to_ants
from cortexgen.preprocess.normalize import normalize_and_resize, resized_affine
from cortexgen.preprocess.register import ants_seed

#: ITK stores vectors in LPS world coordinates; nibabel's world is RAS.
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0], dtype=np.float32)

#: Largest difference (mm) tolerated between the template's resized affine and the target
#: grid's: subjects' affines are rebuilt from float32 headers, ~1e-5 mm off.
_AFFINE_TOLERANCE_MM = 1e-3


def template_image(
    template: nib.Nifti1Image,
    brain_mask: nib.Nifti1Image,
    like: nib.Nifti1Image,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> nib.Nifti1Image:
    """The template brain prepared exactly as subjects are, on ``like``'s model grid.

    Masked by ``brain_mask``, scaled to [0, 1] in the brain by robust percentiles with
    background 0, and resized to ``like``'s shape over the template's field of view
    (:func:`cortexgen.preprocess.normalize.normalize_and_resize`). Subjects are resampled
    onto the template's 1 mm grid before that resize, so the result lands on their grid.

    Args:
        template: the 1 mm template head (e.g. MNI Colin27, 181 x 217 x 181).
        brain_mask: its brain mask, same grid.
        like: a model-ready image whose grid (shape and affine) the output takes.
        percentiles: the in-brain percentiles mapped to 0 and 1 (as for the subjects).

    Returns:
        float32 ``(X, Y, Z)`` image in [0, 1] with ``like``'s affine.

    Raises:
        ValueError: ``like`` is not the template's field of view resized (its grid would
            not be the one subjects are on).
    """
    shape = tuple(int(n) for n in like.shape[:3])
    expected = resized_affine(template.affine, template.shape[:3], shape)
    if np.abs(expected - like.affine).max() > _AFFINE_TOLERANCE_MM:
        raise ValueError(
            "template_image: the target grid is not the template's field of view resized to "
            f"{shape}; expected affine\n{expected}\ngot\n{like.affine}"
        )
    image, _ = normalize_and_resize(template, brain_mask, shape=shape, percentiles=percentiles)
    out = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), like.affine)
    out.header.set_xyzt_units("mm", "sec")
    return out


@dataclass(frozen=True)
class FieldSettings:
    """How SyN computes a subject's field (no rigid or affine stage: images are already in MNI).

    Measured on ds000022 sub-01 against the Colin27 template image (84 x 128 x 84, one ITK
    thread): 'meansquares' with iterations (40, 20, 0) took 14 s and raised the in-brain
    correlation with the subject from 0.63 to 0.83; a further 10 full-grid iterations
    (40, 20, 10) took 45 s for 0.86; 'CC' (radius 2) 57 s for 0.84; 'mattes' 13 s for 0.80.
    With 0 full-grid iterations the field is the half-grid solution upsampled, smooth
    enough for a model trained at about half resolution anyway.

    Attributes:
        iterations: SyN iterations per level, coarse to fine; ANTs halves the grid per
            level (shrink factors 2^(n-1) ... 1) and smooths by (n-1 ... 0) voxels.
        gradient_step: SyN's step size.
        flow_sigma: Gaussian sigma (voxels) of the update field; larger is smoother.
        total_sigma: Gaussian sigma (voxels) of the total field; 0 lets it accumulate freely.
        metric: ANTs similarity metric: 'meansquares' (both images are [0, 1] with the same
            normalisation), 'CC' or 'mattes'.
        metric_parameter: the metric's 4th ANTs argument: the neighbourhood radius (voxels)
            for 'CC', the histogram bins for 'mattes'; unused by 'meansquares'.
        random_seed: ANTs' seed. Reruns give the same field only with one ITK thread
            (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` before ants is imported, as
            :func:`cortexgen.runtime.limit_threads` sets): threaded sums change order.
    """

    iterations: tuple[int, ...] = (40, 20, 0)
    gradient_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    metric: str = "meansquares"
    metric_parameter: int = 32
    random_seed: int = 42

    @classmethod
    def from_config(cls, section: dict) -> FieldSettings:
        """Settings from a config section (lists become tuples)."""
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in section.items()})

    def syn_arguments(self) -> dict:
        """The SyN keyword arguments ``ants.registration`` and ``ants.build_template`` share."""
        return {
            "syn_metric": self.metric,
            "syn_sampling": int(self.metric_parameter),
            "reg_iterations": tuple(int(n) for n in self.iterations),
            "grad_step": float(self.gradient_step),
            "flow_sigma": float(self.flow_sigma),
            "total_sigma": float(self.total_sigma),
        }


@contextlib.contextmanager
def _stdout_discarded() -> Iterator[None]:
    """Standard output (file descriptor 1) goes nowhere inside the block: ANTs' template
    building prints every warp's norm and its C++ code every transform it writes."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def study_template(
    images: Sequence[nib.Nifti1Image],
    initial: nib.Nifti1Image,
    settings: FieldSettings,
    iterations: int = 3,
    percentiles: tuple[float, float] = (0.5, 99.5),
    mask_threshold: float = 0.05,
) -> nib.Nifti1Image:
    """The training subjects' own average brain, on the model grid: the deform model's template.

    ANTs' template building (``ants.build_template``): each iteration registers every image
    to the current average (affine + SyN with the fields' settings), averages the warped
    images and moves the average by minus the mean warp (a fifth of it per iteration), so the
    template sits at the images' mean shape rather than at the start's. Starting from
    ``initial`` (the space's template on the same grid) keeps it in that space.

    Args:
        images: model-ready images (X, Y, Z) in [0, 1], all on ``initial``'s grid.
        initial: the starting average, e.g. :func:`template_image`.
        settings: SyN iterations, step, smoothing and seed (as for :func:`register_to_template`).
        iterations: template-building iterations.
        percentiles, mask_threshold: the average is masked where it exceeds ``mask_threshold``
            (largest component, holes filled: in-brain CSF is dark, the air exactly 0) and
            scaled to [0, 1] inside by these percentiles, as subjects are.

    Returns:
        float32 (X, Y, Z) image in [0, 1], 0 outside the brain, with ``initial``'s affine.
    """
    import ants
    from scipy import ndimage

    from cortexgen.preprocess.normalize import normalize_intensity

    if not images:
        raise ValueError("study_template needs at least one image")
    for image in images:
        if image.shape[:3] != initial.shape[:3] or not np.allclose(image.affine, initial.affine, atol=_AFFINE_TOLERANCE_MM):
            raise ValueError("study_template: every image must be on the initial template's grid")
    with ants_seed(settings.random_seed), _stdout_discarded():
        average = ants.build_template(
            initial_template=nib_to_ants(initial),
            image_list=[nib_to_ants(image) for image in images],
            iterations=int(iterations),
            type_of_transform="SyN",
            aff_metric="meansquares",  # like SyN's: one intensity scale; Mattes' threaded sums do not rerun the same
            **settings.syn_arguments(),
        ).numpy().astype(np.float32)
    labels, count = ndimage.label(average > mask_threshold)
    if count == 0:
        raise ValueError(f"study_template: the average is below {mask_threshold} everywhere")
    brain = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    scaled = normalize_intensity(nib.Nifti1Image(average, initial.affine), brain, percentiles)
    out = nib.Nifti1Image(scaled.astype(np.float32), initial.affine)
    out.header.set_xyzt_units("mm", "sec")
    return out


def register_to_template(
    subject: nib.Nifti1Image,
    template: nib.Nifti1Image,
    settings: FieldSettings = FieldSettings(),
) -> nib.Nifti1Image:
    """SyN from the template to a subject; the displacement that warps the template onto it.

    The subject is ANTs' *fixed* image, so the forward transforms map subject-grid points to
    template points: ``template(x + u(x))`` approximates ``subject(x)``. The transforms ANTs
    writes (an identity affine and the SyN warp) are composed into one displacement field,
    read back, converted from LPS to RAS, and their temporary files removed.

    Args:
        subject: model-ready subject image (3D, e.g. 84 x 128 x 84, [0, 1]).
        template: the template image on the same grid (:func:`template_image`).
        settings: see :class:`FieldSettings`.

    Returns:
        float32 ``(X, Y, Z, 3)`` NIfTI: displacement in mm along RAS world axes, on the
        subject's grid with the subject's affine, intent 'vector'.
    """
    import ants

    if subject.shape[:3] != template.shape[:3] or not np.allclose(subject.affine, template.affine, atol=_AFFINE_TOLERANCE_MM):
        raise ValueError("register_to_template: subject and template must be on the same grid")
    fixed = nib_to_ants(subject)
    moving = nib_to_ants(template)
    with ants_seed(settings.random_seed):
        registration = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="SyNOnly",
            **settings.syn_arguments(),
        )
    # ANTs leaves every transform in a temporary file; a cohort would fill /tmp with them.
    temporary = set(registration["fwdtransforms"]) | set(registration["invtransforms"])
    try:
        with tempfile.TemporaryDirectory(prefix="cortexgen_field_") as folder:
            composed = ants.apply_transforms(
                fixed, moving, registration["fwdtransforms"], compose=os.path.join(folder, "field_")
            )
            displacement_lps = ants.image_read(composed).numpy().astype(np.float32)
    finally:
        for path in temporary:
            Path(path).unlink(missing_ok=True)
    if displacement_lps.shape != subject.shape[:3] + (3,):
        raise RuntimeError(f"register_to_template: ANTs field has shape {displacement_lps.shape}")
    displacement = (displacement_lps * _LPS_TO_RAS).astype(np.float32)
    out = nib.Nifti1Image(displacement, subject.affine)
    out.header.set_intent("vector")
    out.header.set_xyzt_units("mm", "sec")
    return out


def field_array(field: nib.Nifti1Image) -> np.ndarray:
    """A stored ``(X, Y, Z, 3)`` field as the channels-first float32 ``(3, X, Y, Z)`` array."""
    data = np.asarray(field.dataobj, dtype=np.float32)
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images may carry an empty time axis
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"field_array: expected an (X, Y, Z, 3) field, got shape {data.shape}")
    return np.ascontiguousarray(np.moveaxis(data, -1, 0))


def _as_tensor(array) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)``; float64 stays float64, anything else becomes float32."""
    if isinstance(array, torch.Tensor):
        tensor = array
        was_numpy = False
    else:
        tensor = torch.from_numpy(np.asarray(array))
        was_numpy = True
    if tensor.dtype != torch.float64:
        tensor = tensor.to(torch.float32)
    return tensor, was_numpy


def _sample_at(values: torch.Tensor, field: torch.Tensor, affine: np.ndarray, padding_mode: str) -> torch.Tensor:
    """``values`` (B, C, X, Y, Z) read at ``x + field(x)`` (field (B, 3, X, Y, Z), mm, world axes), trilinear."""
    dtype, device = field.dtype, field.device
    shape = tuple(field.shape[2:])
    # mm along world axes -> voxels along array axes: v = A^-1 d (the offset cancels).
    world_to_voxel = torch.as_tensor(
        np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3]), dtype=dtype, device=device
    )
    voxel_shift = torch.einsum("ij,bj...->bi...", world_to_voxel, field)
    # grid_sample (align_corners=True) wants -1..1 over voxel centres 0..n-1; the size-1
    # guard keeps a flat axis finite.
    sizes = torch.tensor([max(n - 1, 1) for n in shape], dtype=dtype, device=device)
    axes = [torch.arange(n, dtype=dtype, device=device) for n in shape]
    identity = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)  # (3, X, Y, Z)
    position = identity[None] + voxel_shift
    normalised = 2.0 * position / sizes.view(1, 3, 1, 1, 1) - 1.0
    # grid_sample's last axis is (x, y, z) = (W, H, D): the reverse of the tensor's (X, Y, Z).
    grid = normalised.flip(1).permute(0, 2, 3, 4, 1)
    return F.grid_sample(values, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def warp_image(image, field_mm, affine: np.ndarray):
    """Resample ``image`` at ``x + field(x)``: trilinear, zero outside the grid.

    Args:
        image: ``(X, Y, Z)`` volume, or ``(B, 1, X, Y, Z)`` / ``(1, 1, X, Y, Z)`` (the
            latter is shared by every field of the batch); numpy array or torch tensor.
        field_mm: channels-first displacement in mm along RAS world axes, ``(3, X, Y, Z)``
            or a batch ``(B, 3, X, Y, Z)``, on the grid of ``affine`` (same shape as the image).
        affine: ``(4, 4)`` voxel-to-world (RAS mm) matrix of the grid.

    Returns:
        The warped volume, of the image's type: ``(X, Y, Z)`` when neither input is batched,
        else ``(B, 1, X, Y, Z)``. Tensors stay on the field's device.
    """
    image_t, image_numpy = _as_tensor(image)
    field_t, _ = _as_tensor(field_mm)
    unbatched = image_t.ndim == 3 and field_t.ndim == 4
    if image_t.ndim == 3:
        image_t = image_t[None, None]
    if field_t.ndim == 4:
        field_t = field_t[None]
    if image_t.ndim != 5 or image_t.shape[1] != 1 or field_t.ndim != 5 or field_t.shape[1] != 3:
        raise ValueError(f"warp_image: bad shapes image {tuple(image_t.shape)}, field {tuple(field_t.shape)}")
    shape = tuple(field_t.shape[2:])
    if tuple(image_t.shape[2:]) != shape:
        raise ValueError(f"warp_image: image grid {tuple(image_t.shape[2:])} differs from field grid {shape}")
    batch = field_t.shape[0]
    if image_t.shape[0] not in (1, batch):
        raise ValueError(f"warp_image: {image_t.shape[0]} images for {batch} fields")
    dtype = torch.promote_types(image_t.dtype, field_t.dtype)
    image_t = image_t.to(device=field_t.device, dtype=dtype).expand(batch, -1, -1, -1, -1)
    warped = _sample_at(image_t, field_t.to(dtype), affine, "zeros")
    if unbatched:
        warped = warped[0, 0]
    return warped.cpu().numpy() if image_numpy else warped


def integrate_velocity(velocity_mm, affine: np.ndarray, steps: int = 7):
    """The displacement of exp(v) for a stationary velocity field ``v``, by scaling and squaring.

    ``v / 2**steps`` is taken as the displacement of a map close to the identity, and the map is
    composed with itself ``steps`` times: ``u(x) <- u(x) + u(x + u(x))`` (pull-back fields, as
    :func:`warp_image`; values beyond the grid held at its edge). Each small map is invertible
    when its displacement changes by less than a voxel per voxel, so the result does not fold.

    Args:
        velocity_mm: ``(3, X, Y, Z)`` or ``(B, 3, X, Y, Z)``, mm along RAS world axes, on ``affine``'s grid.
        steps: squarings (2**steps sub-steps).

    Returns:
        The displacement in mm, of the input's shape and type.
    """
    velocity, was_numpy = _as_tensor(velocity_mm)
    unbatched = velocity.ndim == 4
    displacement = (velocity[None] if unbatched else velocity) / 2.0**steps
    for _ in range(steps):
        displacement = displacement + _sample_at(displacement, displacement, affine, "border")
    if unbatched:
        displacement = displacement[0]
    return displacement.cpu().numpy() if was_numpy else displacement


def velocity_from_displacement(displacement_mm, affine: np.ndarray, iterations: int = 4, steps: int = 7):
    """A stationary velocity field whose exponential is about ``displacement_mm`` (its logarithm).

    Fixed-point iteration ``v <- v + (u - exp(v))`` from ``v = u``: for the smooth, moderate
    fields of a registration to a template each iteration shrinks the residual several-fold
    (a field that folds has no logarithm; the result then only approximates it).

    Args and returns: as :func:`integrate_velocity`, with ``iterations`` corrections.
    """
    target, was_numpy = _as_tensor(displacement_mm)
    velocity = target.clone()
    for _ in range(iterations):
        velocity = velocity + (target - integrate_velocity(velocity, affine, steps))
    return velocity.cpu().numpy() if was_numpy else velocity


def resize_field(field_mm, shape: tuple[int, int, int]):
    """Resample a channels-first field to another grid over the same field of view.

    The grids share voxel *edges* (``align_corners=False``), the convention of
    :func:`cortexgen.preprocess.normalize.resized_affine`, which gives the new grid's affine.
    Values are millimetres, so they are interpolated (trilinear, edge values held beyond
    the outer voxel centres) but not rescaled. No anti-aliasing: SyN fields are smooth on the
    scale of a few voxels already.

    Args:
        field_mm: ``(3, X, Y, Z)`` or ``(B, 3, X, Y, Z)``, numpy array or torch tensor.
        shape: the new ``(X', Y', Z')``.

    Returns:
        ``(3, X', Y', Z')`` or ``(B, 3, X', Y', Z')``, of the input's type.
    """
    field_t, was_numpy = _as_tensor(field_mm)
    unbatched = field_t.ndim == 4
    if unbatched:
        field_t = field_t[None]
    if field_t.ndim != 5 or field_t.shape[1] != 3:
        raise ValueError(f"resize_field: expected (3, X, Y, Z) or (B, 3, X, Y, Z), got {tuple(field_t.shape)}")
    resized = F.interpolate(field_t, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=False)
    if unbatched:
        resized = resized[0]
    return resized.cpu().numpy() if was_numpy else resized


def field_scale(fields: Iterable, percentile: float = 99.5) -> float:
    """The one scalar the DDPM divides fields by (and multiplies samples by).

    The ``percentile`` of ``|component|`` pooled over every component and voxel of every
    training field, so that ``field / scale`` lies in [-1, 1] for all but ~0.5 % of values
    (those few beyond are kept, not clipped, by this function). One scalar for all three
    components keeps the vectors' directions; a robust percentile rather than the maximum
    keeps one badly registered subject from squeezing everyone else's fields towards 0.
    Background voxels count too: the network has to produce them as well.

    Args:
        fields: training fields, each ``(3, X, Y, Z)`` / ``(X, Y, Z, 3)`` arrays or tensors
            or ``(X, Y, Z, 3)`` NIfTI images, or one stacked array (mm; the layout does not
            matter since every component is pooled).
        percentile: in (0, 100].

    Returns:
        The scale in mm (> 0).
    """
    if isinstance(fields, (np.ndarray, torch.Tensor)):
        fields = [fields]
    magnitudes = []
    for item in fields:
        if isinstance(item, nib.Nifti1Image):
            values = np.asarray(item.dataobj, dtype=np.float32)
        elif isinstance(item, torch.Tensor):
            values = item.detach().cpu().numpy()
        else:
            values = np.asarray(item)
        magnitudes.append(np.abs(values.astype(np.float32, copy=False)).ravel())
    if not magnitudes:
        raise ValueError("field_scale: no fields")
    scale = float(np.percentile(np.concatenate(magnitudes), percentile))
    if not scale > 0.0:
        raise ValueError("field_scale: every field is zero")
    return scale
