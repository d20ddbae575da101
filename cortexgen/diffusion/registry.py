"""The generators the workflow trains and samples, one entry each.

An entry says what a generator trains on, whether it is conditioned, how it learns and what
its sampling writes. The rules (``train_generator`` over a ``{model}`` wildcard, one sampling
rule per entry from one definition), the training and sampling jobs
(:mod:`cortexgen.diffusion.run`) and the evaluation read these entries instead of testing
generator names. Plain values only: the Snakefile imports this module while it is read,
so nothing heavy (torch) is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: What a generator's training subjects contribute (the key of its training files):
#: ``images``, their model-ready images ((X, Y, Z) in [0, 1] on ``preprocess.shape``), or
#: ``fields``, their displacement fields from the template (rule deformation_field, (X, Y, Z, 3)
#: mm), which it learns as stationary velocities or displacements on its grid (config ``field``).
DATA = ("images", "fields")

#: How a generator learns: the diffusion process of its UNet (``bridge``, ``ddpm``), or ``pca``
#: (no network: a statistical model of the training fields, :mod:`cortexgen.diffusion.sdm`).
PROCESSES = ("bridge", "ddpm", "pca")


@dataclass(frozen=True)
class GeneratorEntry:
    """One generator.

    Attributes:
        name: the ``{model}`` wildcard, its config section ``diffusion.<name>``, its folders
            results/models/<name> and results/samples/<name>, its resources ``train_<name>``
            and ``sample_<name>``.
        data: what each training subject contributes (:data:`DATA`).
        conditional: it samples one image per condition set (the cortical SDFs of config
            ``diffusion.<name>.conditions``, from held-out subjects and new cortices), paired in
            the evaluation with the real image it came from; otherwise ``sampling.n`` images
            from noise (``pca``: from random mode coefficients).
        process: how it learns (:data:`PROCESSES`).
        channels: channels of each volume it generates: 1 for an image, 3 for a field.
        settings_keys: the keys of its config section its generator object takes (besides
            grid, network, training, sampling, which the jobs read themselves).
        baseline: the generator it must beat, if any: the evaluation reports its RBF MMD minus
            the baseline's against the same real images, with a paired bootstrap interval.
    """

    name: str
    data: str
    conditional: bool
    process: str
    channels: int
    settings_keys: tuple[str, ...] = ()
    baseline: str = ""

    def __post_init__(self) -> None:
        if self.data not in DATA or self.process not in PROCESSES:
            raise ValueError(f"generator {self.name}: data must be one of {DATA} and process one of {PROCESSES}")

    @property
    def network(self) -> bool:
        """It trains a UNet (by optimiser steps, resumable, on several GPUs with DDP), with a
        loss curve; else it is fitted in one go and its training log is its PCA spectrum."""
        return self.process != "pca"

    @property
    def sample_outputs(self) -> tuple[str, ...]:
        """What its sampling writes for each sample: the image, and for a field generator the
        displacement (mm) that warped the template into it (its post-processing: a sampled
        field is upsampled to the template's grid, integrated when it is a velocity, and warps
        the template; the table gets each warp's folding fraction)."""
        return ("images", "fields") if self.data == "fields" else ("images",)

    def training_roles(self, conditions: Sequence[str]) -> tuple[str, ...]:
        """Keys of its training files: its :attr:`data`, then for a conditional generator the
        condition roles ``conditions`` (config ``diffusion.<name>.conditions``)."""
        return (self.data, *(conditions if self.conditional else ()))

    def generator_settings(self, section: Mapping) -> dict:
        """The part of its config section its generator object takes (:attr:`settings_keys`)."""
        return {key: section[key] for key in self.settings_keys if key in section}


GENERATORS: dict[str, GeneratorEntry] = {entry.name: entry for entry in (
    # Shape-to-image Brownian bridge conditioned on the cortical SDFs (Cor2Vox).
    GeneratorEntry("bridge", "images", True, "bridge", 1,
                   ("schedule", "objective", "conditions", "endpoint", "sample_steps", "eta", "clip_denoised",
                    "packing")),
    # Unconditional 3D DDPM on the images.
    GeneratorEntry("ddpm", "images", False, "ddpm", 1, ("schedule", "sample_steps", "eta", "packing", "center")),
    # DDPM on the fields' velocities; a sample warps the template.
    GeneratorEntry("deform", "fields", False, "ddpm", 3, ("schedule", "sample_steps", "eta", "center"), baseline="sdm"),
    # Statistical deformation model, the baseline beside deform: PCA of the same velocities.
    GeneratorEntry("sdm", "fields", False, "pca", 3),
)}


def generator(name: str) -> GeneratorEntry:
    """The entry of generator ``name``.

    Raises:
        ValueError: no generator of that name.
    """
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; expected one of {tuple(GENERATORS)}") from None
