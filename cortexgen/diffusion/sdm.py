"""A statistical deformation model (SDM): PCA of the training subjects' stationary velocity fields.

The baseline beside the deform DDPM, without a network. It models the very fields that DDPM
learns (each training subject's displacement from the template as a stationary velocity on the
generator's coarse grid, loaded by :func:`cortexgen.diffusion.run.load_data`) as a Gaussian:
their mean plus the principal modes that hold a configured fraction of their variance
(:func:`cortexgen.pca.principal_modes`). A sample draws each mode's coefficient from
N(0, its variance); the sampler then integrates and applies it exactly as a DDPM sample
(:func:`cortexgen.diffusion.run.warped_template`), so its warp of the template does not fold.

Fields are channels-first ``(3, X, Y, Z)``, millimetres along the RAS world axes
(:mod:`cortexgen.diffusion.fields`), flattened to D = 3·X·Y·Z values in that order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cortexgen.io import atomic_output
from cortexgen.pca import principal_modes

#: The ``format`` of a model file written by :func:`save_deformation_model`.
MODEL_FORMAT = "cortexgen-sdm-1"


@dataclass(frozen=True, eq=False)
class DeformationModel:
    """PCA of N fields on one grid.

    Attributes:
        mean: (3, X, Y, Z) float64, mm: the training fields' mean.
        components: (K, 3·X·Y·Z) float64, orthonormal rows: the principal directions, by
            decreasing variance.
        variances: (K,) float64, mm²: the training fields' sample variance along each (of
            their projection onto the unit mode, so summed over the field's 3·X·Y·Z values).
        total_variance: mm²: their total variance (all N − 1 possible modes; the sum of every
            value's variance).
        n_subjects: N.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    total_variance: float
    n_subjects: int

    def __post_init__(self) -> None:
        if self.mean.ndim != 4 or self.mean.shape[0] != 3:
            raise ValueError(f"the mean field must be (3, X, Y, Z), got {self.mean.shape}")
        if self.components.shape != (len(self.variances), self.mean.size):
            raise ValueError(f"components {self.components.shape} do not match {len(self.variances)} modes of "
                             f"{self.mean.size} values")

    @property
    def grid(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the fields."""
        return tuple(int(side) for side in self.mean.shape[1:])

    @property
    def n_modes(self) -> int:
        """K, the modes kept."""
        return len(self.variances)


def _flat(fields: Iterable) -> np.ndarray:
    """(N, D) float64 of fields given as (3, X, Y, Z) arrays or tensors (or one (N, 3, X, Y, Z) stack)."""
    rows = [(item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)).astype(np.float64)
            for item in fields]
    return np.stack([row.ravel() for row in rows]) if rows else np.zeros((0, 0))


def fit_deformation_model(fields: Iterable, variance_threshold: float = 0.95,
                          max_modes: int | None = None) -> DeformationModel:
    """Fit the model to N training fields.

    Args:
        fields: N fields (3, X, Y, Z) in mm on one grid, as arrays or tensors (a
            :class:`~cortexgen.diffusion.data.VolumeStore` too), or one (N, 3, X, Y, Z) stack.
            All N are held in memory as float64: 8·N·D bytes (200 subjects at 20×32×20: 61 MB).
        variance_threshold: in (0, 1]: keep the fewest modes whose cumulative explained
            variance reaches it (see :func:`cortexgen.pca.principal_modes`).
        max_modes: at most this many modes (None: at most N − 1).

    Raises:
        ValueError: fewer than 2 fields, fields of different shapes or not (3, X, Y, Z),
            non-finite values, or fields that are all the same.
    """
    fields = list(fields)
    shapes = {tuple(item.shape) for item in fields}
    if len(shapes) > 1:
        raise ValueError(f"the fields have different shapes: {sorted(shapes)}")
    if len(fields) < 2:
        raise ValueError(f"a deformation model needs at least 2 fields, got {len(fields)}")
    shape = shapes.pop()
    if len(shape) != 4 or shape[0] != 3:
        raise ValueError(f"fields must be (3, X, Y, Z), got {shape}")
    flat = _flat(fields)
    if not np.isfinite(flat).all():
        raise ValueError("the fields have non-finite values")
    mean = flat.mean(axis=0)
    modes = principal_modes(flat - mean, variance_threshold, max_modes)
    return DeformationModel(mean.reshape(shape), modes.components, modes.variances, modes.total_variance,
                            len(fields))


def draw_coefficients(model: DeformationModel, seed: int, index: int) -> np.ndarray:
    """The mode coefficients (K,) of sample ``index``: each mode's ~ N(0, its variance) (mm).

    Drawn from (``seed``, ``index``) alone, so a sample does not depend on how many others are drawn.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    return rng.standard_normal(model.n_modes) * np.sqrt(model.variances)


def field_of(model: DeformationModel, coefficients: np.ndarray) -> np.ndarray:
    """The field (3, X, Y, Z) float64 mm of mode coefficients (k,) (mm; modes beyond k are 0)."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    if coefficients.ndim != 1 or len(coefficients) > model.n_modes:
        raise ValueError(f"expected at most {model.n_modes} coefficients, got shape {coefficients.shape}")
    deviation = coefficients @ model.components[:len(coefficients)]
    return model.mean + deviation.reshape(model.mean.shape)


def explained_variance(model: DeformationModel, fields: Iterable) -> np.ndarray:
    """How much of other fields' variance the first k modes hold, k = 1..K: their generalisation.

    Args:
        fields: fields (3, X, Y, Z) mm on the model's grid, e.g. validation subjects'.

    Returns:
        (K,) float64: 1 − Σ‖x − mean − P_k(x − mean)‖² / Σ‖x − mean‖² over the fields, P_k the
        projection onto the first k modes; empty without fields.
    """
    flat = _flat(fields)
    if not len(flat):
        return np.zeros(0)
    deviation = flat - model.mean.ravel()
    coefficients = deviation @ model.components.T
    total = float((deviation**2).sum())
    # Orthonormal modes: the residual after k modes is the total minus the first k squared coefficients.
    return np.cumsum((coefficients**2).sum(axis=0)) / total


def save_deformation_model(model: DeformationModel, path: str | Path, extra: dict | None = None) -> None:
    """Write the model atomically: tensors, numbers and strings only, so it loads with ``weights_only=True``.

    ``extra``: plain values stored beside it (the grid and field settings the sampler needs).
    """
    content = {
        "format": MODEL_FORMAT,
        "mean": torch.from_numpy(model.mean),
        "components": torch.from_numpy(model.components),
        "variances": torch.from_numpy(model.variances),
        "total_variance": float(model.total_variance),
        "n_subjects": int(model.n_subjects),
        "extra": json.dumps(extra or {}),
    }
    with atomic_output(path) as tmp:
        torch.save(content, tmp)


def load_deformation_model(path: str | Path) -> tuple[DeformationModel, dict]:
    """A model written by :func:`save_deformation_model` (``weights_only=True``) and its ``extra``."""
    content = torch.load(path, map_location="cpu", weights_only=True)
    if content.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a cortexgen statistical deformation model (format {content.get('format')!r})")
    model = DeformationModel(content["mean"].numpy(), content["components"].numpy(), content["variances"].numpy(),
                             float(content["total_variance"]), int(content["n_subjects"]))
    return model, json.loads(content["extra"])


def spectrum_rows(model: DeformationModel, validation: Sequence[float] = ()) -> list[dict]:
    """The model's training log: per mode its variance (mm², see :class:`DeformationModel`), the
    fraction of the training variance it holds, with the modes before it, and that of the
    validation fields (:func:`explained_variance`; NaN without)."""
    fractions = model.variances / model.total_variance
    cumulative = np.cumsum(fractions)
    return [{"mode": k + 1, "variance_mm2": float(model.variances[k]), "explained_variance": float(fractions[k]),
             "cumulative_explained_variance": float(cumulative[k]),
             "validation_cumulative_explained_variance": float(validation[k]) if len(validation) else float("nan")}
            for k in range(model.n_modes)]


def spectrum_figure(rows: Sequence[dict], title: str):
    """Explained variance per mode (bars) and cumulated (training, validation); a matplotlib Figure."""
    from cortexgen.plotting import agg_figure

    fig = agg_figure((6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    modes = [row["mode"] for row in rows]
    ax.bar(modes, [row["explained_variance"] for row in rows], color="0.75", label="per mode")
    ax.plot(modes, [row["cumulative_explained_variance"] for row in rows], "o-", label="cumulative (training)")
    validation = [row["validation_cumulative_explained_variance"] for row in rows]
    if any(np.isfinite(validation)):
        ax.plot(modes, validation, "s--", label="cumulative (validation)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mode")
    ax.set_ylabel("fraction of the variance")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig
