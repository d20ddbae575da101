"""Statistical shape model (PCA) of the cortex, per hemisphere, and new cortices drawn from it."""

from cortexgen.shape.generate import (
    apply_atrophy,
    atrophy_region_box,
    atrophy_region_disk,
    distance_to_region,
    geodesic_distance,
    interpolate,
    surfaces_from_midthickness,
)
from cortexgen.shape.model import (
    ShapeModel,
    fit_shape_model,
    load_shape_model,
    project,
    reconstruct,
    sample_coefficients,
    save_shape_model,
    shape_features,
    split_features,
)
from cortexgen.shape.quality import (
    compactness,
    folding_agreement,
    generalisation,
    generalisation_by_training_size,
    normal_and_tangential,
    specificity,
)

__all__ = [
    "ShapeModel",
    "apply_atrophy",
    "atrophy_region_box",
    "atrophy_region_disk",
    "compactness",
    "distance_to_region",
    "fit_shape_model",
    "folding_agreement",
    "generalisation",
    "generalisation_by_training_size",
    "normal_and_tangential",
    "geodesic_distance",
    "interpolate",
    "load_shape_model",
    "project",
    "reconstruct",
    "sample_coefficients",
    "save_shape_model",
    "shape_features",
    "specificity",
    "split_features",
    "surfaces_from_midthickness",
]
