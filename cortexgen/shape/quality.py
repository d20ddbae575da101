"""How good a shape model is: compactness, generalisation and specificity (Davies et al.).

* compactness: how much of the training variance the first k modes hold;
* generalisation: how well a model that has not seen a subject reconstructs it from k modes
  (leave-one-out), in mm, and how that falls with the number of training subjects;
* specificity: how close shapes sampled from the first k modes are to a real (training)
  shape, in mm; a model that generates implausible shapes has a large value.

Every function returns plain floats, lists and dicts, ready for ``json.dump``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cortexgen.shape.model import ShapeModel, fit_shape_model, project, reconstruct, sample_coefficients
from cortexgen.surfaces.mesh import Mesh, vertex_normals


def compactness(model: ShapeModel) -> np.ndarray:
    """(K,) cumulative fraction of the training variance explained by the first 1..K modes."""
    return np.cumsum(model.variances) / model.total_variance


def normal_and_tangential(displacement: np.ndarray, vertices: np.ndarray,
                          faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vertex's displacement split along the surface's unit normal there and across it.

    Args:
        displacement: (V, 3) mm.
        vertices: (V, 3) mm, the mesh whose normals are used.
        faces: (M, 3).

    Returns:
        (V,) |component along the normal| and (V,) |component in the tangent plane|, mm. The first
        moves the surface; the second slides a vertex along it, which changes only correspondence.
    """
    normals = vertex_normals(Mesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces)))
    along = np.einsum("ij,ij->i", displacement, normals)
    across = displacement - along[:, None] * normals
    return np.abs(along), np.linalg.norm(across, axis=1)


def generalisation(
    mid_vertices: np.ndarray,
    thickness: np.ndarray,
    faces: np.ndarray,
    modes: Sequence[int],
    scaling: str = "block",
    hemi: str = "L",
) -> dict:
    """Leave-one-out reconstruction error against the number of modes.

    For each subject, a model is fitted to the other N − 1 with every mode they span
    (N − 2, fewer only where the data have fewer non-zero modes), the held-out subject is
    projected onto it and reconstructed from its first k modes.

    Args:
        mid_vertices: (N, V, 3) mm, N ≥ 3.
        thickness: (N, V) mm.
        faces: (M, 3) template triangles.
        modes: the k to evaluate (≥ 1); a k beyond what a fold's model has uses all its modes.
        scaling: passed to :func:`fit_shape_model`.
        hemi: passed to :func:`fit_shape_model` (labels only).

    Returns:
        ``{"modes": [k...], "vertex_error_mm_mean": [...], "vertex_error_mm_std": [...],
        "normal_error_mm_mean": [...], "tangential_error_mm_mean": [...],
        "thickness_mae_mm_mean": [...], "thickness_mae_mm_std": [...],
        "mean_shape_error_mm_mean": float, "n_subjects": N}``: per k, the mean Euclidean vertex
        distance (mean over vertices), its parts along and across the held-out surface's normals
        (:func:`normal_and_tangential`) and the thickness mean absolute error, each then mean (and
        std, population) over held-out subjects; and the vertex distance of the other subjects'
        mean shape (no mode), the baseline the modes improve on.
    """
    mid = np.asarray(mid_vertices, dtype=np.float64)
    thick = np.asarray(thickness, dtype=np.float64)
    n = len(mid)
    if n < 3:
        raise ValueError(f"leave-one-out needs at least 3 subjects, got {n}")
    modes = _modes(modes)
    vertex_error = np.empty((n, len(modes)))
    normal_error = np.empty((n, len(modes)))
    tangential_error = np.empty((n, len(modes)))
    thickness_error = np.empty((n, len(modes)))
    mean_shape_error = np.empty(n)
    for held_out in range(n):
        model, z = _held_out_projection(mid, thick, faces, np.flatnonzero(np.arange(n) != held_out), held_out,
                                        scaling, hemi)
        mean_shape_error[held_out] = np.linalg.norm(reconstruct(model, z[:0])[0] - mid[held_out], axis=1).mean()
        for column, k in enumerate(modes):
            k = min(k, model.n_modes)
            rec_mid, rec_thick = reconstruct(model, z[:k])
            residual = rec_mid - mid[held_out]
            along, across = normal_and_tangential(residual, mid[held_out], faces)
            vertex_error[held_out, column] = np.linalg.norm(residual, axis=1).mean()
            normal_error[held_out, column] = along.mean()
            tangential_error[held_out, column] = across.mean()
            thickness_error[held_out, column] = np.abs(rec_thick - thick[held_out]).mean()
    return {
        "modes": modes,
        "vertex_error_mm_mean": vertex_error.mean(axis=0).tolist(),
        "vertex_error_mm_std": vertex_error.std(axis=0).tolist(),
        "normal_error_mm_mean": normal_error.mean(axis=0).tolist(),
        "tangential_error_mm_mean": tangential_error.mean(axis=0).tolist(),
        "thickness_mae_mm_mean": thickness_error.mean(axis=0).tolist(),
        "thickness_mae_mm_std": thickness_error.std(axis=0).tolist(),
        "mean_shape_error_mm_mean": float(mean_shape_error.mean()),
        "n_subjects": int(n),
    }


def generalisation_by_training_size(
    mid_vertices: np.ndarray,
    thickness: np.ndarray,
    faces: np.ndarray,
    sizes: Sequence[int],
    draws: int = 8,
    seed: int = 0,
    scaling: str = "block",
    hemi: str = "L",
) -> dict:
    """Held-out reconstruction error against the number of training subjects: how many a cohort needs.

    For each held-out subject and each size n, ``draws`` models are fitted to n subjects drawn
    from the others (the others themselves, once, where n = N − 1), each with every mode they
    span; the held-out subject is reconstructed from all of them. No linear model of those n
    shapes can do better, so the curve bounds the leave-one-out error of any number of modes.

    Args:
        mid_vertices: (N, V, 3) mm, N ≥ 3.
        thickness: (N, V) mm.
        faces: (M, 3) template triangles.
        sizes: training subjects per model, each in [2, N − 1].
        draws: random training sets per held-out subject and size.
        seed: for the draws.
        scaling, hemi: passed to :func:`fit_shape_model`.

    Returns:
        ``{"training_subjects": [n...], "vertex_error_mm_mean": [...], "mean_shape_error_mm_mean":
        [...], "draws": draws, "n_subjects": N}``: per n, the mean Euclidean vertex distance (mean
        over vertices, then over held-out subjects and draws) of the reconstruction from all modes
        and of the training mean shape alone.
    """
    mid = np.asarray(mid_vertices, dtype=np.float64)
    thick = np.asarray(thickness, dtype=np.float64)
    n = len(mid)
    sizes = [int(k) for k in sizes]
    if n < 3 or not sizes or min(sizes) < 2 or max(sizes) > n - 1:
        raise ValueError(f"training sizes must lie in [2, {n - 1}] for {n} subjects, got {sizes}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    rng = np.random.default_rng(seed)
    all_modes = np.zeros(len(sizes))
    mean_shape = np.zeros(len(sizes))
    for column, size in enumerate(sizes):
        errors, baseline = [], []
        for held_out in range(n):
            others = np.flatnonzero(np.arange(n) != held_out)
            for _ in range(1 if size == n - 1 else draws):
                train = np.sort(rng.choice(others, size, replace=False))
                model, z = _held_out_projection(mid, thick, faces, train, held_out, scaling, hemi)
                errors.append(np.linalg.norm(reconstruct(model, z)[0] - mid[held_out], axis=1).mean())
                baseline.append(np.linalg.norm(reconstruct(model, z[:0])[0] - mid[held_out], axis=1).mean())
        all_modes[column], mean_shape[column] = np.mean(errors), np.mean(baseline)
    return {
        "training_subjects": sizes,
        "vertex_error_mm_mean": all_modes.tolist(),
        "mean_shape_error_mm_mean": mean_shape.tolist(),
        "draws": int(draws),
        "n_subjects": int(n),
    }


def _held_out_projection(mid: np.ndarray, thick: np.ndarray, faces: np.ndarray, train: np.ndarray, held_out: int,
                         scaling: str, hemi: str) -> tuple[ShapeModel, np.ndarray]:
    """A model of subjects ``train`` with every mode they span, and subject ``held_out``'s coefficients in it."""
    model = fit_shape_model(
        mid[train], thick[train], faces, hemi, [str(i) for i in train],
        variance_threshold=1.0, max_modes=None, scaling=scaling,
    )
    return model, project(model, mid[held_out], thick[held_out])


def folding_agreement(mid_vertices: np.ndarray, faces: np.ndarray, cortex: np.ndarray | None = None) -> dict:
    """Whether vertex i lies on the same fold in every subject, measured from the folds themselves.

    Each subject's mean curvature (CAT12's ``CAT_SurfCurvature``, averaged over 3 mm, degrees)
    is correlated over the cortex vertices with the mean of the other subjects' curvature. The
    correspondence comes from a registration of tissue labels and a fit to tissue boundaries, not
    from curvature, so this is an independent check of it: 1 when every subject has its gyri
    and sulci at the same vertices, near 0 when the vertices slid by half a fold. Sliding towards
    the other subjects' folds raises it; sliding towards their vertex positions (what lowers
    :func:`generalisation`'s error) need not.

    Args:
        mid_vertices: (N, V, 3) mm, N >= 2 subjects on one mesh.
        faces: (M, 3).
        cortex: (V,) bool, the vertices to correlate over (None: all).

    Returns:
        ``{"curvature_r": [...], "curvature_r_mean": float, "curvature_r_min": float,
        "n_subjects": N}``: each subject's Pearson r, their mean and minimum.
    """
    import cat_surf

    mids = np.asarray(mid_vertices, dtype=np.float64)
    if mids.ndim != 3 or mids.shape[2] != 3 or len(mids) < 2:
        raise ValueError(f"mid_vertices must have shape (N >= 2, V, 3), got {mids.shape}")
    keep = np.ones(mids.shape[1], dtype=bool) if cortex is None else np.asarray(cortex, dtype=bool).ravel()
    if len(keep) != mids.shape[1] or not keep.any():
        raise ValueError(f"cortex must be a non-empty (V,) mask of {mids.shape[1]} vertices, got {len(keep)}")
    faces = np.asarray(faces, dtype=np.int32)
    curvature = np.stack([cat_surf.surf_curvature(vertices, faces, curvtype=0)[keep] for vertices in mids])
    total = curvature.sum(axis=0)
    r = [float(np.corrcoef(own, (total - own) / (len(curvature) - 1))[0, 1]) for own in curvature]
    return {"curvature_r": [round(value, 4) for value in r], "curvature_r_mean": round(float(np.mean(r)), 4),
            "curvature_r_min": round(float(np.min(r)), 4), "n_subjects": len(curvature)}


def specificity(
    model: ShapeModel,
    mid_vertices: np.ndarray,
    n_samples: int,
    rng: np.random.Generator | int | None,
    modes: Sequence[int],
    truncation: float | None = None,
) -> dict:
    """Distance from sampled shapes to the nearest training shape, against the number of modes.

    The same n_samples draws of z are used for every k (their first k values), so the
    values for different k differ only by the modes.

    Args:
        model: the shape model.
        mid_vertices: (N, V, 3) mm, the training mid-thickness surfaces.
        n_samples: number of sampled shapes per k.
        rng: generator or seed.
        modes: the k to evaluate; a k beyond K uses all K modes.
        truncation: passed to :func:`sample_coefficients`.

    Returns:
        ``{"modes": [k...], "distance_mm_mean": [...], "distance_mm_std": [...],
        "n_samples": n}``: per k, the mean Euclidean vertex distance (mean over vertices)
        of each sample to its nearest training shape, then mean and std over samples.
    """
    training = np.asarray(mid_vertices, dtype=np.float64)
    if training.ndim != 3 or training.shape[1:] != (model.n_vertices, 3):
        raise ValueError(f"mid_vertices must have shape (N, {model.n_vertices}, 3), got {training.shape}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    modes = _modes(modes)
    z = sample_coefficients(int(n_samples), model.n_modes, rng, truncation)
    mean_distance, std_distance = [], []
    for k in modes:
        k = min(k, model.n_modes)
        nearest = np.empty(len(z))
        for i, sample_z in enumerate(z):
            sample_mid, _ = reconstruct(model, sample_z[:k])
            nearest[i] = np.linalg.norm(training - sample_mid, axis=2).mean(axis=1).min()
        mean_distance.append(float(nearest.mean()))
        std_distance.append(float(nearest.std()))
    return {
        "modes": modes,
        "distance_mm_mean": mean_distance,
        "distance_mm_std": std_distance,
        "n_samples": int(n_samples),
    }


def _modes(modes: Sequence[int]) -> list[int]:
    modes = [int(k) for k in modes]
    if not modes or min(modes) < 1:
        raise ValueError(f"modes must be a non-empty list of positive integers, got {modes}")
    return modes
