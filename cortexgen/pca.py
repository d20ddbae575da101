"""Principal components of a few samples in many dimensions (N ≪ F).

Shared by the statistical shape model (:mod:`cortexgen.shape.model`: hemispheres as vertex
coordinates and thickness) and the statistical deformation model
(:mod:`cortexgen.diffusion.sdm`: velocity fields on a coarse grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Eigenvalues below this fraction of the largest are rounding noise of the Gram matrix
#: (its eigenvalues are accurate to ~eps·λ_max): their directions are arbitrary and their
#: standardised coefficients would divide by ~0, so such modes are never kept.
NULL_MODE_TOLERANCE = 1e-12
#: Float slack when comparing the cumulative explained variance with the threshold, so
#: that a threshold of 1.0 is reached by the last mode despite rounding.
THRESHOLD_SLACK = 1e-12


@dataclass(frozen=True)
class PrincipalModes:
    """The modes kept of N centred samples.

    Attributes:
        components: (K, F) float64, orthonormal rows: the principal directions, by decreasing variance.
        variances: (K,) float64 sample variance (N−1 denominator) along each, in the samples' units².
        total_variance: the samples' total variance (sum over all N−1 possible modes, kept or
            not): the denominator of explained variance.
    """

    components: np.ndarray
    variances: np.ndarray
    total_variance: float


def principal_modes(centred: np.ndarray, variance_threshold: float = 0.95,
                    max_modes: int | None = None) -> PrincipalModes:
    """The principal modes of N samples in F dimensions, from their N × N Gram matrix.

    Args:
        centred: (N, F) float64, each row a sample minus the samples' mean (N ≥ 2).
        variance_threshold: in (0, 1]: keep the fewest modes whose cumulative explained
            variance reaches it.
        max_modes: at most this many modes (None: no cap beyond N − 1).

    Returns:
        K modes: the smallest k whose cumulative explained variance is ≥ ``variance_threshold``,
        capped at N − 1 (a centred N-sample set spans at most N − 1 directions), at
        ``max_modes``, and at the number of modes with non-zero variance.

    Raises:
        ValueError: bad arguments, or samples that are all identical.
    """
    if not 0.0 < variance_threshold <= 1.0:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold}")
    if max_modes is not None and (int(max_modes) != max_modes or max_modes < 1):
        raise ValueError(f"max_modes must be a positive integer or None, got {max_modes}")
    n_samples = len(centred)
    if n_samples < 2:
        raise ValueError(f"principal modes need at least 2 samples, got {n_samples}")
    # N ≪ F: the eigenvectors U of the N × N Gram matrix X Xᵀ give the principal axes as
    # Uᵀ X / s (the economy SVD X = U S Vᵀ), at O(N² F) time and no F × F matrix.
    gram = centred @ centred.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    total = float(np.trace(gram))
    if not eigenvalues[0] > 0.0:
        raise ValueError("all samples are identical: there is no variation to model")
    usable = int(np.sum(eigenvalues > NULL_MODE_TOLERANCE * eigenvalues[0]))
    cumulative = np.cumsum(eigenvalues) / total
    n_modes = int(np.searchsorted(cumulative, variance_threshold - THRESHOLD_SLACK) + 1)
    n_modes = min(n_modes, n_samples - 1, usable, max_modes if max_modes is not None else n_samples)

    singular = np.sqrt(eigenvalues[:n_modes])
    components = (eigenvectors[:, :n_modes].T @ centred) / singular[:, None]
    # Rows are orthonormal up to rounding; renormalise so that projections are unbiased.
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    return PrincipalModes(components, eigenvalues[:n_modes] / (n_samples - 1), total / (n_samples - 1))
