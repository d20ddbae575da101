"""Make the template's brain mask shipped beside it (run once; kept for provenance).

    python resources/templates/make_brain_mask.py

deepbet (weights in its wheel) on the Colin27 head; the result is checked against
nilearn's MNI152 2009 brain mask (Dice printed) and written as uint8 NIfTI.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from nilearn.datasets import load_mni152_brain_mask

from cortexgen.io import save_nifti
from cortexgen.preprocess.skullstrip import deepbet_brain_mask, mask_dice

HERE = Path(__file__).parent
template = nib.load(HERE / "tpl-MNIColin27_res-1_T1w.nii.gz")
mask = deepbet_brain_mask(template)
mni_mask = resample_from_to(load_mni152_brain_mask(resolution=1), (template.shape, template.affine), order=0)
print(f"Colin27 brain mask: {mask.sum() / 1000:.0f} mL; Dice vs nilearn MNI152 2009 mask: "
      f"{mask_dice(mask, np.asarray(mni_mask.dataobj) > 0):.3f}")
out = nib.Nifti1Image(mask.astype(np.uint8), template.affine)
out.header.set_xyzt_units("mm", "sec")
save_nifti(out, HERE / "tpl-MNIColin27_res-1_desc-brain_mask.nii.gz")
