"""Which subjects train the models and which are held out for evaluation.

The split is by subject, never by scan: every session of a held-out subject stays out of
the shape model and the generators, so that no evaluation image has a sibling in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def subject_id(name: str) -> str:
    """``"sub-<label>"`` for a label given with or without its ``sub-`` prefix."""
    name = str(name)
    return name if name.startswith("sub-") else f"sub-{name}"


@dataclass(frozen=True)
class SubjectSplit:
    """Subject ids (``"sub-01"``), sorted."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]
    # Not trained on by the generators, which log their loss on them (empty by default).
    validation: tuple[str, ...] = ()


def split_subjects(
    subjects: Sequence[str], held_out: Sequence[str] = (), held_out_fraction: float = 0.0, seed: int = 0,
    validation_fraction: float = 0.0,
) -> SubjectSplit:
    """Split subject ids into training and held-out sets (config ``split``).

    Args:
        subjects: subject ids, ``"sub-<label>"`` (duplicates, e.g. one per session, are merged).
        held_out: subjects to hold out, with or without ``sub-``; when given, the fraction is ignored.
        held_out_fraction: otherwise, this fraction of the subjects (rounded half up) is
            drawn with ``seed``, leaving at least two subjects to train on.
        seed: seed of that draw; the same subjects and seed give the same split.
        validation_fraction: this fraction of all subjects (rounded half up) is drawn from the
            rest as a validation set, again leaving at least two subjects to train on.

    A dataset of one subject gives one training subject and none held out: the stages
    before the shape model still run, and the shape model's job says what it lacks.

    Raises:
        ValueError: a listed subject that is not in the dataset, or a fraction outside [0, 1).
    """
    everyone = sorted(set(subjects))
    wanted = sorted({subject_id(name) for name in held_out})
    if wanted:
        everyone_set = set(everyone)
        unknown = [name for name in wanted if name not in everyone_set]
        if unknown:
            raise ValueError(f"split.held_out names subjects that are not in the dataset: {unknown}")
        chosen = wanted
    else:
        if not 0.0 <= held_out_fraction < 1.0:
            raise ValueError(f"split.held_out_fraction must be in [0, 1), got {held_out_fraction}")
        count = min(math.floor(held_out_fraction * len(everyone) + 0.5), max(len(everyone) - 2, 0))
        order = np.random.default_rng(seed).permutation(len(everyone))
        chosen = sorted(everyone[i] for i in order[:count])
    chosen_set = set(chosen)  # sets: a cohort of 33,000 subjects must not cost O(N^2)
    rest = [name for name in everyone if name not in chosen_set]
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"split.validation_fraction must be in [0, 1), got {validation_fraction}")
    count = min(math.floor(validation_fraction * len(everyone) + 0.5), max(len(rest) - 2, 0))
    order = np.random.default_rng([seed, 1]).permutation(len(rest))
    validation = sorted(rest[i] for i in order[:count])
    validation_set = set(validation)
    train = [name for name in rest if name not in validation_set]
    return SubjectSplit(train=tuple(train), held_out=tuple(chosen), validation=tuple(validation))
