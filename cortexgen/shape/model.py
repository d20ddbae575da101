"""A statistical shape model (PCA) of one cortical hemisphere.

Every subject's surfaces share the template's vertex order, so a hemisphere is one point
in a feature space: its mid-thickness vertices, flattened vertex-major
``(x0, y0, z0, x1, y1, z1, ...)`` (3V values, world RAS mm), followed by its thickness per
vertex (V values, mm), F = 4V features in all. The model is the mean of these feature
vectors plus the principal directions of their variation, found in a standardised copy of
the feature space (see :func:`fit_shape_model` for the two standardisations).

A shape is written as ``mean + scale * Σ_k z_k sqrt(variance_k) component_k``, where the
standardised coefficients z are ~N(0, 1) over the training set: :func:`project` and
:func:`reconstruct` go between shapes and z, :func:`sample_coefficients` draws new z.

The model is saved as a plain ``.npz`` file (no pickles), see :func:`save_shape_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cortexgen.errors import InputImageError
from cortexgen.io import atomic_output
from cortexgen.pca import principal_modes
from cortexgen.surfaces.template import HEMISPHERES

#: Version of the ``.npz`` layout written by :func:`save_shape_model`.
FORMAT_VERSION = 1
SCALINGS = ("block", "feature")


@dataclass(frozen=True, eq=False)
class ShapeModel:
    """PCA shape model of one hemisphere; F = 4V features (3V mid-thickness xyz mm, V thickness mm).

    Attributes:
        hemi: ``"L"`` or ``"R"``.
        mean: (F,) float64 mean feature vector (mm), unstandardised.
        components: (K, F) float64, orthonormal rows: the principal directions in the
            standardised feature space, by decreasing variance.
        variances: (K,) float64 eigenvalues (sample variance, N−1 denominator, along each
            component, standardised units²), descending.
        feature_scale: (F,) float64 (mm): the standard deviation each feature was divided by.
        total_variance: total sample variance of the standardised training data (sum over
            all N−1 possible modes, kept or not), the denominator of explained variance.
        n_vertices: V.
        faces: (M, 3) int32 triangles of the template (outward orientation).
        subjects: the training subjects' ids, in training order.
        scaling: ``"block"`` or ``"feature"`` (see :func:`fit_shape_model`).
    """

    hemi: str
    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    feature_scale: np.ndarray
    total_variance: float
    n_vertices: int
    faces: np.ndarray
    subjects: tuple[str, ...]
    scaling: str = "block"

    def __post_init__(self) -> None:
        # Read-only arrays: the model is shared by every sample drawn from it, and views
        # such as mean_mid_vertices must not let a caller edit it by accident.
        for name, dtype in (("mean", np.float64), ("components", np.float64), ("variances", np.float64),
                            ("feature_scale", np.float64), ("faces", np.int32)):
            array = np.array(getattr(self, name), dtype=dtype)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "subjects", tuple(str(s) for s in self.subjects))
        object.__setattr__(self, "total_variance", float(self.total_variance))
        object.__setattr__(self, "n_vertices", int(self.n_vertices))
        _check_model(self)

    @property
    def n_modes(self) -> int:
        """K, the number of modes kept."""
        return len(self.variances)

    @property
    def mean_mid_vertices(self) -> np.ndarray:
        """(V, 3) float64 mm: the mean mid-thickness surface's vertices."""
        return self.mean[: 3 * self.n_vertices].reshape(self.n_vertices, 3)

    @property
    def mean_thickness(self) -> np.ndarray:
        """(V,) float64 mm: the mean thickness."""
        return self.mean[3 * self.n_vertices :]


# ----------------------------------------------------------------------------- features


def shape_features(mid_vertices: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Feature vectors of one or several hemispheres.

    Args:
        mid_vertices: (V, 3) or (N, V, 3) mid-thickness vertices, mm.
        thickness: (V,) or (N, V) thickness, mm.

    Returns:
        (4V,) or (N, 4V) float64: xyz vertex-major, then thickness.
    """
    mid = np.asarray(mid_vertices, dtype=np.float64)
    thick = np.asarray(thickness, dtype=np.float64)
    single = mid.ndim == 2
    if single:
        mid, thick = mid[None], thick[None]
    if mid.ndim != 3 or mid.shape[2] != 3:
        raise ValueError(f"mid_vertices must have shape (V, 3) or (N, V, 3), got {np.shape(mid_vertices)}")
    if thick.shape != mid.shape[:2]:
        raise ValueError(
            f"thickness must have shape {mid.shape[:2] if not single else mid.shape[1:2]} to match "
            f"mid_vertices {np.shape(mid_vertices)}, got {np.shape(thickness)}"
        )
    features = np.concatenate([mid.reshape(len(mid), -1), thick], axis=1)
    return features[0] if single else features


def split_features(features: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`shape_features`: (..., 4V) → mid vertices (..., V, 3) and thickness (..., V)."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[-1] != 4 * n_vertices:
        raise ValueError(f"expected {4 * n_vertices} features, got {features.shape[-1]}")
    lead = features.shape[:-1]
    mid = features[..., : 3 * n_vertices].reshape(lead + (n_vertices, 3))
    return mid, features[..., 3 * n_vertices :]


# ----------------------------------------------------------------------------- fitting


def fit_shape_model(
    mid_vertices: np.ndarray,
    thickness: np.ndarray,
    faces: np.ndarray,
    hemi: str,
    subjects: Sequence[str],
    variance_threshold: float = 0.95,
    max_modes: int | None = None,
    scaling: str = "block",
) -> ShapeModel:
    """Fit a PCA shape model to N hemispheres that share one vertex order.

    Args:
        mid_vertices: (N, V, 3) mid-thickness vertices, world RAS mm.
        thickness: (N, V) thickness, mm (0 on the medial wall).
        faces: (M, 3) template triangles indexing V vertices.
        hemi: ``"L"`` or ``"R"``.
        subjects: N subject ids, in the order of the arrays.
        variance_threshold: in (0, 1]: keep the fewest modes whose cumulative explained
            variance reaches it.
        max_modes: at most this many modes (None: no cap beyond N − 1).
        scaling: how features are standardised before the PCA:
            ``"block"`` (default) divides every coordinate by ONE pooled standard deviation
            of all coordinate features and every thickness by one pooled standard deviation
            of all thickness features; ``"feature"`` z-scores every feature on its own
            (sklearn's StandardScaler, as Cor2Vox does), with scale 1 where a feature does
            not vary. Both use the population (N) standard deviation, like StandardScaler;
            the pooled one is the root mean of the features' variances.

    Returns:
        The model, with K modes: the smallest k whose cumulative explained variance is
        ≥ ``variance_threshold``, capped at N − 1 (a centred N-sample set spans at most
        N − 1 directions), at ``max_modes``, and at the number of modes with non-zero variance.

    Raises:
        ValueError: N < 2, shapes that do not match, non-finite values, bad arguments,
            or training shapes that are all identical.
    """
    # Why "block" by default: coordinates share one unit (mm) and one Euclidean metric, so
    # one scale for all of them keeps the modes true displacement fields (x, y, z and every
    # vertex weighted alike) and leaves a vertex that hardly moves across subjects with
    # the little weight it deserves; z-scoring it ("feature") would blow its noise up to
    # unit variance. The pooled thickness scale only balances the two blocks, so that the
    # thickness, whose variance in mm² is far below that of positions, is not ignored.
    # "feature" is kept to reproduce Cor2Vox's StandardScaler + PCA.
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if hemi not in HEMISPHERES:
        raise ValueError(f"hemi must be one of {HEMISPHERES}, got {hemi!r}")
    mid = np.asarray(mid_vertices, dtype=np.float64)
    thick = np.asarray(thickness, dtype=np.float64)
    if mid.ndim != 3 or mid.shape[2] != 3:
        raise ValueError(f"mid_vertices must have shape (N, V, 3), got {mid.shape}")
    n_subjects, n_vertices = mid.shape[:2]
    if n_subjects < 2:
        raise ValueError(f"a shape model needs at least 2 subjects, got {n_subjects}")
    if thick.shape != (n_subjects, n_vertices):
        raise ValueError(f"thickness must have shape {(n_subjects, n_vertices)} to match mid_vertices, got {thick.shape}")
    subjects = tuple(str(s) for s in subjects)
    if len(subjects) != n_subjects:
        raise ValueError(f"got {len(subjects)} subject ids for {n_subjects} shapes")
    faces = _check_faces(faces, n_vertices)
    for name, values in (("mid_vertices", mid), ("thickness", thick)):
        bad = ~np.isfinite(values).reshape(n_subjects, -1).all(axis=1)
        if bad.any():
            raise ValueError(f"{name} has non-finite values for subjects {[subjects[i] for i in np.flatnonzero(bad)]}")

    features = shape_features(mid, thick)
    mean = features.mean(axis=0)
    centred = features - mean
    # The mean of N equal values can miss them by a rounding error; a feature that does
    # not vary beyond that (e.g. the medial wall's thickness 0) is exactly constant, or
    # "feature" scaling would blow its rounding noise up to unit variance (sklearn's test).
    rounding = len(features) * np.finfo(np.float64).eps * np.abs(mean)
    centred[:, np.sqrt(np.mean(centred**2, axis=0)) <= rounding] = 0.0
    scale = _feature_scale(centred, n_vertices, scaling)
    modes = principal_modes(centred / scale, variance_threshold, max_modes)
    return ShapeModel(
        hemi=hemi,
        mean=mean,
        components=modes.components,
        variances=modes.variances,
        feature_scale=scale,
        total_variance=modes.total_variance,
        n_vertices=int(n_vertices),
        faces=faces,
        subjects=subjects,
        scaling=scaling,
    )


def _feature_scale(centred: np.ndarray, n_vertices: int, scaling: str) -> np.ndarray:
    """(F,) standard deviations (mm) to divide the centred (N, F) features by; never 0."""
    variance = np.mean(centred**2, axis=0)
    if scaling == "feature":
        std = np.sqrt(variance)
        # A feature that never varies (e.g. thickness 0 on the medial wall) stays as it is.
        return np.where(std > 0.0, std, 1.0)
    blocks = [slice(0, 3 * n_vertices), slice(3 * n_vertices, 4 * n_vertices)]
    scale = np.empty_like(variance)
    for block in blocks:
        pooled = float(np.sqrt(np.mean(variance[block])))
        scale[block] = pooled if pooled > 0.0 else 1.0
    return scale


def _check_faces(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (M, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(f"faces index vertices outside 0..{n_vertices - 1}")
    return np.ascontiguousarray(faces, dtype=np.int32)


# ----------------------------------------------------------------------------- using a model


def project(model: ShapeModel, mid_vertices: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Standardised mode coefficients of one or several hemispheres.

    Args:
        model: the shape model.
        mid_vertices: (V, 3) or (N, V, 3) mid-thickness vertices, mm, in the template order.
        thickness: (V,) or (N, V) mm.

    Returns:
        (K,) or (N, K) float64 z: each mode's coefficient divided by the mode's standard
        deviation, so training shapes have z with mean 0 and variance 1 per mode.
    """
    features = shape_features(mid_vertices, thickness)
    if features.shape[-1] != len(model.mean):
        raise ValueError(f"model has {model.n_vertices} vertices, the shape has {features.shape[-1] // 4}")
    if not np.all(np.isfinite(features)):
        raise ValueError("the shape has non-finite values")
    coefficients = ((features - model.mean) / model.feature_scale) @ model.components.T
    return coefficients / np.sqrt(model.variances)


def reconstruct(model: ShapeModel, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hemisphere(s) of standardised coefficients z.

    Args:
        model: the shape model.
        z: (k,) or (n, k) standardised coefficients of the first k ≤ K modes (the rest are 0).

    Returns:
        mid-thickness vertices (V, 3) or (n, V, 3) mm, and thickness (V,) or (n, V) mm,
        clipped at 0 (a far sample can ask for a negative thickness).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim not in (1, 2):
        raise ValueError(f"z must have shape (k,) or (n, k), got {z.shape}")
    k = z.shape[-1]
    if k > model.n_modes:
        raise ValueError(f"z has {k} coefficients, the model only {model.n_modes} modes")
    if not np.all(np.isfinite(z)):
        raise ValueError("z has non-finite values")
    deviation = (z * np.sqrt(model.variances[:k])) @ model.components[:k]
    features = model.mean + model.feature_scale * deviation
    mid, thickness = split_features(features, model.n_vertices)
    return mid, np.maximum(thickness, 0.0)


def sample_coefficients(
    n: int, n_modes: int, rng: np.random.Generator | int | None, truncation: float | None = None
) -> np.ndarray:
    """Draw standardised coefficients z ~ N(0, I).

    Args:
        n: number of samples.
        n_modes: K, coefficients per sample.
        rng: a generator or a seed (``np.random.default_rng`` accepts both).
        truncation: if given (> 0), every |z| ≤ truncation: values beyond it are drawn
            again (a truncated normal), not clipped, which would pile samples on the edge.

    Returns:
        (n, n_modes) float64.
    """
    if int(n) != n or n < 0 or int(n_modes) != n_modes or n_modes < 0:
        raise ValueError(f"n and n_modes must be non-negative integers, got {n} and {n_modes}")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be positive or None, got {truncation}")
    rng = np.random.default_rng(rng)
    z = rng.standard_normal((int(n), int(n_modes)))
    if truncation is not None:
        outside = np.abs(z) > truncation
        while outside.any():
            z[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(z) > truncation
    return z


# ----------------------------------------------------------------------------- files


def save_shape_model(model: ShapeModel, path: str | Path) -> None:
    """Write the model as a plain ``.npz`` (no pickled objects), atomically.

    Strings are fixed-width unicode arrays, so :func:`load_shape_model` reads the file with
    ``allow_pickle=False``.
    """
    arrays = {
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
        "hemi": np.array(model.hemi, dtype=np.str_),
        "mean": model.mean,
        "components": model.components,
        "variances": model.variances,
        "feature_scale": model.feature_scale,
        "total_variance": np.array(model.total_variance, dtype=np.float64),
        "n_vertices": np.array(model.n_vertices, dtype=np.int64),
        "faces": model.faces,
        # np.array of an empty list has dtype float64: spell the unicode dtype out.
        "subjects": np.array(list(model.subjects), dtype=np.str_ if model.subjects else "<U1"),
        "scaling": np.array(model.scaling, dtype=np.str_),
    }
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_shape_model(path: str | Path) -> ShapeModel:
    """Read a model written by :func:`save_shape_model`; errors name the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as err:
        raise InputImageError(path, f"is not a readable shape model (.npz without objects): {err}") from err
    missing = {"version", "hemi", "mean", "components", "variances", "feature_scale", "total_variance",
               "n_vertices", "faces", "subjects", "scaling"} - set(arrays)
    if missing:
        raise InputImageError(path, f"is not a shape model: missing {sorted(missing)}")
    if int(arrays["version"]) != FORMAT_VERSION:
        raise InputImageError(path, f"has shape model format {int(arrays['version'])}, expected {FORMAT_VERSION}")
    try:
        model = ShapeModel(
            hemi=str(arrays["hemi"]),
            mean=arrays["mean"],
            components=arrays["components"],
            variances=arrays["variances"],
            feature_scale=arrays["feature_scale"],
            total_variance=float(arrays["total_variance"]),
            n_vertices=int(arrays["n_vertices"]),
            faces=arrays["faces"],
            subjects=tuple(arrays["subjects"]),
            scaling=str(arrays["scaling"]),
        )
    except (ValueError, TypeError) as err:
        raise InputImageError(path, f"is not a consistent shape model: {err}") from err
    return model


def _check_model(model: ShapeModel) -> None:
    n_features = 4 * model.n_vertices
    k = len(model.variances)
    if model.variances.ndim != 1 or not np.all(model.variances > 0) or not model.total_variance > 0:
        raise ValueError("variances must be a vector of positive values, and the total variance positive")
    if model.mean.shape != (n_features,) or model.feature_scale.shape != (n_features,):
        raise ValueError(f"mean and feature_scale must have {n_features} values")
    if model.components.shape != (k, n_features):
        raise ValueError(f"components have shape {model.components.shape}, expected {(k, n_features)}")
    if model.hemi not in HEMISPHERES or model.scaling not in SCALINGS:
        raise ValueError(f"unknown hemi {model.hemi!r} or scaling {model.scaling!r}")
    _check_faces(model.faces, model.n_vertices)
