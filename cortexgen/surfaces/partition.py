"""Cortex only: the brain split into what the cortical surfaces may enclose and what they may not.

FreeSurfer fits its surfaces to a "filled" volume and CAT12 to a hemispheric partition: the
cerebellum and brainstem removed, the deep grey nuclei and ventricles filled as white matter,
and the hemispheres cut apart at the midline. Without this, the template's inferior occipital
and temporal cortex is pulled onto the cerebellum's grey matter below the tentorium, and the
medial cortex of one hemisphere onto the other's.

The labels come from the IBSR atlas in MNI152NLin2009cAsym that ships in the deepmriprep wheel
(no download), carried onto the subject by a SyN of the tissue template of the same wheel (CAT12's
GM/WM/CSF template) to the subject's tissue label. A registration is a few millimetres off where
brains differ most, and the tentorium is thinner than that, so the warped atlas only *seeds* the
partition: its regions, eroded, grow over the subject's own tissue by a watershed whose ridges are
the CSF (the tentorium, the interhemispheric fissure), so the boundaries follow the subject's
anatomy, not the atlas's.

Partition labels (:data:`PARTITION_LABELS`): 0 outside the brain, 1/2 left/right cerebrum,
3/4 left/right deep grey matter and ventricles (filled as white matter), 5 cerebellum and brainstem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from cortexgen.surfaces.segment import TissueMaps, tissue_from_label

OUTSIDE, LEFT, RIGHT, LEFT_FILL, RIGHT_FILL, HINDBRAIN = 0, 1, 2, 3, 4, 5
PARTITION_LABELS = {
    OUTSIDE: "outside the brain",
    LEFT: "left cerebrum",
    RIGHT: "right cerebrum",
    LEFT_FILL: "left deep grey matter and ventricles (filled as white matter)",
    RIGHT_FILL: "right deep grey matter and ventricles (filled as white matter)",
    HINDBRAIN: "cerebellum and brainstem",
}
#: Partition labels of each hemisphere: its cerebral tissue and its filled part.
HEMISPHERE_LABELS = {"L": (LEFT, LEFT_FILL), "R": (RIGHT, RIGHT_FILL)}

# IBSR (FreeSurfer aseg numbering) regions.
_IBSR_LEFT = (2, 3, 4, 5, 10, 11, 12, 13, 17, 18, 26, 28)
_IBSR_RIGHT = (41, 42, 43, 44, 49, 50, 51, 52, 53, 54, 58, 60)
_IBSR_HINDBRAIN = (7, 8, 15, 16, 46, 47)  # cerebellar cortex and WM, 4th ventricle, brainstem
# Lateral and inferior lateral ventricles, thalamus, caudate, putamen, pallidum, accumbens,
# ventral diencephalon, and the 3rd ventricle between them: what FreeSurfer's fill makes WM.
_IBSR_FILL = (4, 5, 10, 11, 12, 13, 14, 26, 28, 43, 44, 49, 50, 51, 52, 58, 60)
# Lateral, inferior lateral and 3rd ventricles: grown through the subject's CSF before the fill.
_IBSR_VENTRICLES = (4, 5, 14, 43, 44)


@dataclass(frozen=True)
class PartitionSettings:
    """How the partition is made (config ``surfaces.partition``).

    Attributes:
        resolution_mm: voxel size the atlas template and the subject's label are registered at.
        iterations: SyN iterations per level, coarse to fine.
        seed_erosion_mm: how far the warped atlas regions shrink before they seed the
            watershed; more than the registration's error at the region boundaries.
        fill_dilation_mm: how far the warped deep grey matter and ventricles grow before they
            are filled, so the fill reaches the white matter around them.
        ventricle_growth_mm: how far (geodesic, through the subject's CSF in the cerebrum) the
            warped ventricles grow first, so the fill takes ventricles larger than the atlas's
            or reaching where the registration does not carry it (on sub-01 of ds000022 the
            warped ventricles stop 10 mm below the top of its own; sub-06's atria lie 15-40
            voxels of CSF from the warped ventricles); 0: the atlas's alone.
        ventricle_exterior_margin_mm: the growth keeps this far from the brain's exterior
            (outside the brain mask, the cerebellum and brainstem): the ventricles open to the
            cisterns through the choroidal fissure, and a growth along it would fill them.
        seed: ANTs' random seed (positive).
    """

    resolution_mm: float = 3.0
    iterations: tuple[int, ...] = (40, 20, 0)
    seed_erosion_mm: float = 3.0
    fill_dilation_mm: float = 1.0
    ventricle_growth_mm: float = 40.0
    ventricle_exterior_margin_mm: float = 8.0
    seed: int = 42

    @classmethod
    def from_config(cls, section: dict) -> PartitionSettings:
        values = dict(section)
        values["iterations"] = tuple(values.get("iterations", cls.iterations))
        return cls(**values)


def atlas_dir() -> Path:
    """The folder of MNI152NLin2009cAsym templates and atlases inside the deepmriprep wheel."""
    import deepmriprep

    return Path(os.path.dirname(deepmriprep.__file__)) / "data" / "templates"


def load_atlas() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The IBSR label atlas and a tissue label (1 CSF .. 3 WM, 0 outside) of the same space.

    The tissue label is CSF + 2 GM + 3 WM of CAT12's Template_4_GS probability maps, so it
    reads like a subject's AMAP label and the two register with mean squares.
    """
    folder = atlas_dir()
    atlas = nib.load(folder / "ibsr.nii.gz")
    template = nib.load(folder / "Template_4_GS.nii.gz")
    gm, wm, csf = (np.asarray(template.dataobj[..., k], dtype=np.float32) for k in range(3))
    label = csf + 2.0 * gm + 3.0 * wm
    return atlas, nib.Nifti1Image(label.astype(np.float32), template.affine)


def warp_atlas(subject_label: nib.Nifti1Image, settings: PartitionSettings = PartitionSettings()) -> np.ndarray:
    """The IBSR atlas on the subject's grid (X, Y, Z) int, after affine + SyN of the atlas's tissue
    template onto the subject's tissue label (both coarsened to ``settings.resolution_mm``)."""
    import ants

    from cortexgen.preprocess.convert import nib_to_ants, resampled_to_spacing
    from cortexgen.preprocess.register import ants_seed

    atlas, atlas_label = load_atlas()
    spacing = (float(settings.resolution_mm),) * 3
    fixed = nib_to_ants(subject_label)
    fixed_coarse = resampled_to_spacing(fixed, spacing)
    moving_coarse = resampled_to_spacing(nib_to_ants(atlas_label), spacing)
    with ants_seed(settings.seed):
        registration = ants.registration(
            fixed=fixed_coarse, moving=moving_coarse, type_of_transform="SyN", syn_metric="meansquares",
            aff_metric="meansquares", reg_iterations=tuple(settings.iterations),
        )
    try:
        warped = ants.apply_transforms(fixed, nib_to_ants(atlas), registration["fwdtransforms"],
                                       interpolator="genericLabel")
    finally:
        for path in set(registration["fwdtransforms"]) | set(registration["invtransforms"]):
            if os.path.exists(path):
                os.remove(path)
    return np.rint(warped.numpy()).astype(np.int16)


def _ball(radius_vox: float) -> np.ndarray:
    r = int(np.floor(radius_vox))
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (np.sum(grid**2, axis=0) <= radius_vox**2 + 1e-6)


def partition_brain(label: np.ndarray, atlas: np.ndarray, voxel_size_mm: np.ndarray,
                    settings: PartitionSettings = PartitionSettings()) -> np.ndarray:
    """Split a brain into cerebrum (per hemisphere), its filled deep part, and the hindbrain.

    Args:
        label: (X, Y, Z) the subject's continuous tissue label (0 outside, 1 CSF .. 3 WM).
        atlas: (X, Y, Z) the IBSR atlas on the same grid (:func:`warp_atlas`).
        voxel_size_mm: (3,) voxel edges (the erosion and dilation radii are in mm).
        settings: see :class:`PartitionSettings`.

    Returns:
        (X, Y, Z) uint8 partition (:data:`PARTITION_LABELS`); every brain voxel gets 1–5.
    """
    from skimage.segmentation import watershed

    label = np.asarray(label, dtype=np.float32)
    brain = label > 0
    voxel_mm = float(np.mean(voxel_size_mm))
    tissue = label >= 1.5
    erode = _ball(settings.seed_erosion_mm / voxel_mm)
    markers = np.zeros(label.shape, dtype=np.int32)
    for value, ids in ((LEFT, _IBSR_LEFT), (RIGHT, _IBSR_RIGHT), (HINDBRAIN, _IBSR_HINDBRAIN)):
        region = ndimage.binary_erosion(np.isin(atlas, ids), erode)
        markers[region & tissue] = value
    if not all(np.any(markers == value) for value in (LEFT, RIGHT, HINDBRAIN)):
        missing = [PARTITION_LABELS[v] for v in (LEFT, RIGHT, HINDBRAIN) if not np.any(markers == v)]
        raise ValueError(f"the warped atlas seeds no {', '.join(missing)}: the registration failed")
    # CSF is the ridge the fronts meet on; in tissue the fronts advance at one speed, so they
    # meet half-way between the seeds (e.g. in the corpus callosum).
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
    elevation = np.where(brain[box], 3.0 - label[box], 3.0)
    partition = np.zeros(label.shape, dtype=np.uint8)
    partition[box] = watershed(elevation, markers[box], mask=brain[box]).astype(np.uint8)

    exterior = ~brain | (partition == HINDBRAIN)
    open_csf = np.isin(partition, (LEFT, RIGHT)) & (label < 1.5) \
        & (ndimage.distance_transform_edt(~exterior, sampling=voxel_size_mm) > settings.ventricle_exterior_margin_mm)
    fill_atlas = np.isin(atlas, _IBSR_FILL) | _ventricles_grown(atlas, open_csf, settings.ventricle_growth_mm / voxel_mm)
    fill_atlas = ndimage.binary_dilation(fill_atlas, _ball(settings.fill_dilation_mm / voxel_mm))
    for cerebrum, fill in (HEMISPHERE_LABELS["L"], HEMISPHERE_LABELS["R"]):
        side = partition == cerebrum
        # The ventricles and nuclei, and whatever the white matter with them encloses.
        filled = ndimage.binary_fill_holes((fill_atlas | (label >= 2.5)) & side) & side
        partition[filled & (fill_atlas | ~(label >= 2.5))] = fill
    return partition


def cortex_label(label: np.ndarray, partition: np.ndarray, hemi: str | None = None) -> np.ndarray:
    """The tissue label the cortical surfaces are fitted to: cerebrum only, filled parts as WM.

    Args:
        label: (X, Y, Z) continuous tissue label (0 outside, 1 CSF .. 3 WM).
        partition: (X, Y, Z) from :func:`partition_brain`.
        hemi: "L" or "R" for one hemisphere (the other one is then outside too), None for both.

    Returns:
        (X, Y, Z) float32 label: 0 in the hindbrain (and the other hemisphere), 3 where filled.
    """
    hemis = ("L", "R") if hemi is None else (hemi,)
    keep = np.isin(partition, [value for h in hemis for value in HEMISPHERE_LABELS[h]])
    filled = np.isin(partition, [HEMISPHERE_LABELS[h][1] for h in hemis])
    return np.where(filled, 3.0, np.where(keep, label, 0.0)).astype(np.float32)


#: GM+WM fraction given to the skeleton of a glued sulcus: just under the pial level (0.5).
SKELETON_GMWM = 0.4


def sulcal_skeleton(label: np.ndarray, voxel_size_mm: np.ndarray, min_separation_mm: float = 3.0) -> np.ndarray:
    """The midline of sulci whose banks touch: where the grey matter of two banks meets.

    In a sulcus without visible CSF the label never drops to CSF between the banks, so no
    isosurface separates them. The fronts of a distance transform from the white matter of
    both banks collide on the sulcal midline, which is where the nearest white-matter voxel
    jumps from one bank to the other between two neighbouring voxels (by more than
    ``min_separation_mm``, while on one bank it moves by about a voxel). Of each such pair the
    voxel farther from the white matter is the skeleton, as in CAT12's PBT.

    Args:
        label: (X, Y, Z) continuous tissue label (0 outside, 1 CSF .. 3 WM).
        voxel_size_mm: (3,) voxel edges.
        min_separation_mm: how far apart the nearest white matter of two neighbours must be
            for them to lie on different banks.

    Returns:
        (X, Y, Z) bool: grey-matter voxels (label ≥ 1.5) on a sulcal midline, at least a voxel
        away from the white matter.
    """
    label = np.asarray(label, dtype=np.float32)
    spacing = np.asarray(voxel_size_mm, dtype=np.float64)
    white = label >= 2.5
    grey = (label >= 1.5) & ~white
    skeleton = np.zeros(label.shape, dtype=bool)
    if not white.any() or not grey.any():
        return skeleton
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(grey))
    distance, nearest = ndimage.distance_transform_edt(~white[box], sampling=spacing, return_indices=True)
    grey_box = grey[box]
    marked = np.zeros(grey_box.shape, dtype=bool)
    for axis in range(3):
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        ahead, behind = tuple(ahead), tuple(behind)
        jump = np.sqrt(sum(((nearest[k][ahead] - nearest[k][behind]) * spacing[k]) ** 2 for k in range(3)))
        collide = (jump > min_separation_mm) & grey_box[ahead] & grey_box[behind]
        farther_ahead = distance[ahead] >= distance[behind]
        marked[ahead] |= collide & farther_ahead
        marked[behind] |= collide & ~farther_ahead
    skeleton[box] = marked & (distance > float(spacing.max()))
    return skeleton


def cortex_tissue(tissue: TissueMaps, partition: np.ndarray, voxel_size_mm: np.ndarray,
                  hemi: str | None = None) -> TissueMaps:
    """:func:`cortex_label` as tissue fractions, with the midline of sulci whose banks touch
    (:func:`sulcal_skeleton`) just below the GM+WM = 0.5 level, so the pial surface has a
    boundary to find there. ``voxel_size_mm`` (3,): the grid's voxel edges.

    The skeleton voxels get GM+WM = :data:`SKELETON_GMWM`, not 0: the CSF of a glued sulcus is
    a sheet far thinner than a voxel, so the pial surfaces of both banks belong on the midline
    (where PBT measures thickness to), not half a voxel short of it on either side.
    """
    label = cortex_label(tissue.label, partition, hemi)
    skeleton = sulcal_skeleton(label, voxel_size_mm)
    label[skeleton] = np.minimum(label[skeleton], 1.0 + SKELETON_GMWM)
    return tissue_from_label(label)


def _ventricles_grown(atlas: np.ndarray, csf: np.ndarray, steps: float) -> np.ndarray:
    """The atlas's ventricles grown ``steps`` voxels (6-connected) through ``csf`` (X, Y, Z) bool,
    the cerebrum's CSF away from the brain's exterior: (X, Y, Z) bool, the CSF the subject's
    ventricles hold beyond the warped ones. Sulcal CSF is not reached: the ventricles' walls
    are tissue, and the CSF that leaves them (the choroidal fissure) leads to the cisterns,
    which lie by the exterior."""
    seeds = np.isin(atlas, _IBSR_VENTRICLES) & csf
    steps = int(round(steps))
    if steps < 1 or not seeds.any():
        return seeds
    return ndimage.binary_dilation(seeds, ndimage.generate_binary_structure(3, 1), iterations=steps, mask=csf)


def cortex_partition(label: np.ndarray, affine: np.ndarray,
                     settings: PartitionSettings = PartitionSettings()) -> np.ndarray:
    """:func:`partition_brain` of a tissue label (X, Y, Z) on the grid of ``affine`` (4, 4), the
    atlas carried there by :func:`warp_atlas`."""
    label = np.asarray(label, dtype=np.float32)
    atlas = warp_atlas(nib.Nifti1Image(label, affine), settings)
    return partition_brain(label, atlas, np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)), settings)
