"""cortexgen.preprocess.chain: one head through every step, the filter forked beside N4 and
the affine; and the N4 field it divides the denoised head by."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

import cortexgen
from cortexgen.preprocess.bias import bias_corrected, head_mask, n4_bias_field
from tests.unit.test_register import known_motion


def test_field_divides_like_n4s_own_corrected_image(noisy_head):
    """N4BiasFieldCorrection divides inside its mask and leaves the voxels outside as they
    were; dividing by the field it returns must give the same image."""
    import ants

    from cortexgen.preprocess.convert import nib_to_ants

    img = noisy_head.img
    ramp = np.linspace(0.7, 1.3, img.shape[1], dtype=np.float32)[None, :, None]
    biased = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32) * ramp, img.affine)
    mask = head_mask(biased)
    settings = {"shrink_factor": 2, "convergence": {"iters": [20, 20], "tol": 1e-7}}
    ants_mask = nib_to_ants(nib.Nifti1Image(mask.astype(np.float32), img.affine))
    own = ants.n4_bias_field_correction(nib_to_ants(biased), mask=ants_mask, **settings)
    field = n4_bias_field(biased, mask, shrink_factor=2, iterations=(20, 20))
    assert field.shape == img.shape and field.dtype == np.float32 and field.min() > 0
    data = np.asarray(biased.dataobj)
    ours = bias_corrected(data, field, mask)
    np.testing.assert_allclose(ours, own.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(ours[~mask], data[~mask])
    assert not np.allclose(ours[mask], data[mask])


_CHAIN_SCRIPT = """
import json, sys
import nibabel as nib, numpy as np, yaml
from cortexgen.preprocess.chain import preprocess_head
raw, template, mask = (nib.load(path) for path in sys.argv[1:4])
settings = yaml.safe_load(open(sys.argv[4]))["preprocess"]
settings["skullstrip"].update(method="template", volume_range_ml=[100, 3000])
settings["shape"] = [32, 36, 30]
runs = [preprocess_head(raw, template, mask, settings, source=sys.argv[1], parallel=parallel)
        for parallel in (True, False)]
names = ["denoised", "corrected", "head", "brain", "brain_mask", "image", "image_mask"]
arrays = {name: [np.asarray(getattr(run, name).dataobj) for run in runs] for name in names}
raw_data = np.asarray(raw.dataobj)
print(json.dumps({
    "identical": {name: bool(np.array_equal(*pair)) for name, pair in arrays.items()},
    "same_mask": bool(np.array_equal(runs[0].head_mask, runs[1].head_mask)),
    "same_transform": runs[0].ras_matrix.tolist() == runs[1].ras_matrix.tolist(),
    "ras_matrix": runs[0].ras_matrix.tolist(),
    "denoised_changed": float((arrays["denoised"][0] != raw_data)[runs[0].head_mask].mean()),
    "image_range": [float(arrays["image"][0].min()), float(arrays["image"][0].max())],
    "image_shape": list(arrays["image"][0].shape),
    "steps": sorted(runs[0].seconds),
}))
"""


def test_forked_chain_gives_the_sequential_result(phantom_lib, tmp_path):
    """The filter in a forked process beside N4 and the affine gives bit for bit what the
    steps give one after the other, and the head lands on the template (a known motion).
    A fresh process with one ITK thread, as the rule runs it: ITK reads its thread count
    once per process, and with several threads the affine varies from run to run."""
    from tests.conftest import REPO

    grid = {"shape": (96, 112, 88), "voxel_mm": 1.0, "smooth_vox": 1.0}
    template = phantom_lib.make_phantom(**grid)
    motion = known_motion(template.centre)
    moving = phantom_lib.make_phantom(ras_transform=motion, **grid)
    noisy = phantom_lib.add_rician_noise(moving.data, sigma=3.0, seed=3)
    nib.save(nib.Nifti1Image(noisy.astype(np.float32), moving.img.affine), str(tmp_path / "raw.nii.gz"))
    nib.save(template.img, str(tmp_path / "template.nii.gz"))
    nib.save(nib.Nifti1Image(template.brain.astype(np.uint8), template.img.affine), str(tmp_path / "mask.nii.gz"))
    root = Path(cortexgen.__file__).resolve().parents[1]
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", _CHAIN_SCRIPT, "raw.nii.gz", "template.nii.gz", "mask.nii.gz",
         str(REPO / "config" / "config.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert all(result["identical"].values()), result["identical"]
    assert result["same_mask"] and result["same_transform"]
    # The registration recovered the motion (the centre within 1 mm).
    estimate = np.asarray(result["ras_matrix"])
    centre = template.centre
    moved = estimate[:3, :3] @ centre + estimate[:3, 3]
    assert np.linalg.norm(moved - (motion[:3, :3] @ centre + motion[:3, 3])) < 1.0
    assert result["denoised_changed"] > 0.99
    assert result["image_shape"] == [32, 36, 30]
    # [0, 1] in the brain before the (anti-aliased) resize to the model grid.
    assert result["image_range"][0] == 0.0 and 0.95 < result["image_range"][1] <= 1.0
    assert result["steps"] == [
        "denoise", "head_mask", "imports_beside_affine", "mni_affine", "n4", "normalize", "resample", "skullstrip",
    ]
