"""Rule segment: CSF/GM/WM partial-volume fractions of the 1 mm MNI brain (CAT12 AMAP) and its
cortex-only partition (cerebellum and brainstem apart, deep grey matter filled, hemispheres split)."""

from cortexgen.runtime import exit_without_teardown, job_log, limit_threads

limit_threads(snakemake.threads)

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from cortexgen.io import save_nifti, voxel_sizes  # noqa: E402
from cortexgen.surfaces.partition import PARTITION_LABELS, PartitionSettings, cortex_partition  # noqa: E402
from cortexgen.surfaces.segment import segment_tissue  # noqa: E402

with job_log(snakemake.log[0], source=snakemake.input.brain) as log:
    brain = nib.load(snakemake.input.brain)
    mask = np.asarray(nib.load(snakemake.input.mask).dataobj) > 0
    tissue = segment_tissue(
        brain.get_fdata(dtype=np.float32),
        mask,
        voxel_sizes(brain),
        iterations=snakemake.params.settings["iterations"],
        mrf_weight=snakemake.params.settings["mrf_weight"],
        source=snakemake.input.brain,
    )
    ml = float(np.prod(voxel_sizes(brain))) / 1000.0
    log.info("CSF %.0f mL, GM %.0f mL, WM %.0f mL", tissue.csf.sum() * ml, tissue.gm.sum() * ml, tissue.wm.sum() * ml)
    partition = cortex_partition(tissue.label, brain.affine, PartitionSettings.from_config(snakemake.params.partition))
    for value, name in PARTITION_LABELS.items():
        if value:
            log.info("partition %d (%s): %.0f mL", value, name, np.count_nonzero(partition == value) * ml)
    for name in ("csf", "gm", "wm"):
        save_nifti(nib.Nifti1Image(getattr(tissue, name), brain.affine), getattr(snakemake.output, name))
    save_nifti(nib.Nifti1Image(partition, brain.affine), snakemake.output.partition)
exit_without_teardown()
