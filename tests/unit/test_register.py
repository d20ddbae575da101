"""cortexgen.preprocess.register: affine registration to a template.

The moving image is the template phantom rendered after a known motion M (8 degrees
about z through the phantom's centre, then a (6, -4, 3) mm shift), so ``ras_matrix``
(template RAS mm -> moving RAS mm) must come out as M.

Measured (1 mm grid of 96 x 112 x 88, 'Affine', 2 ITK threads, eight runs with seeds 42,
1 and 2): largest point error inside the head 0.02-0.15 mm (mean 0.01-0.08 mm), rotation
error 0.02-0.16 degrees, scales within 0.1 % of 1, correlation with the template in the
head 0.37 before and 0.998 after. Thresholds: 1 mm, 1 degree, 0.95.
On a 2 mm grid of the same phantom the registration mostly misses the rotation (6-7
degrees off for 2 of 3 seeds; presumably ANTs' 6x-shrunk first level has too few voxels),
and at 1.5 mm one seed in six was 1.5 mm off: hence the 1 mm grid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import cortexgen
from cortexgen.preprocess.register import AffineResult, AffineSettings, affine_to_template, itk_affine_to_ras

ROTATION_DEG = 8.0
SHIFT_MM = np.array([6.0, -4.0, 3.0])
FLIP = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS


def _rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def known_motion(centre) -> np.ndarray:
    """4x4 RAS: rotate about z through ``centre``, then shift by SHIFT_MM."""
    motion = np.eye(4)
    motion[:3, :3] = _rotation_z(ROTATION_DEG)
    motion[:3, 3] = centre - motion[:3, :3] @ centre + SHIFT_MM
    return motion


def _apply(matrix, points):
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _rotation_error_deg(linear: np.ndarray, rotation: np.ndarray) -> float:
    """Angle between ``rotation`` and the rotation part (polar factor) of ``linear``."""
    u, _, vt = np.linalg.svd(linear)
    delta = (u @ vt) @ rotation.T
    return float(np.degrees(np.arccos(np.clip((np.trace(delta) - 1.0) / 2.0, -1.0, 1.0))))


@pytest.fixture(scope="module")
def registration_case(phantom_lib):
    grid = {"shape": (96, 112, 88), "voxel_mm": 1.0, "smooth_vox": 1.0}
    template = phantom_lib.make_phantom(**grid)
    motion = known_motion(template.centre)
    moving = phantom_lib.make_phantom(ras_transform=motion, **grid)
    brain_mask = nib.Nifti1Image(template.brain.astype(np.uint8), template.img.affine)
    # Both stages: head to head, then scored inside the (dilated) template brain.
    result = affine_to_template(moving.img, template.img, brain_mask, AffineSettings(seed=42))
    head_points = phantom_lib.world_coords(template.labels.shape, template.img.affine)[template.head]
    return {"template": template, "moving": moving, "motion": motion, "result": result, "points": head_points}


@pytest.mark.slow
def test_recovers_the_known_transform(registration_case):
    estimate = registration_case["result"].ras_matrix
    motion, points = registration_case["motion"], registration_case["points"]
    assert estimate.shape == (4, 4)
    np.testing.assert_array_equal(estimate[3], [0, 0, 0, 1])
    errors = np.linalg.norm(_apply(estimate, points) - _apply(motion, points), axis=1)
    assert errors.max() < 1.0, f"max {errors.max():.3f} mm, mean {errors.mean():.3f} mm"
    assert errors.mean() < 0.5
    centre = registration_case["template"].centre
    np.testing.assert_allclose(_apply(estimate, centre), _apply(motion, centre), atol=1.0)
    assert _rotation_error_deg(estimate[:3, :3], motion[:3, :3]) < 1.0
    # Affine, but the motion was rigid: no scaling to speak of.
    np.testing.assert_allclose(np.linalg.svd(estimate[:3, :3], compute_uv=False), 1.0, atol=0.01)


@pytest.mark.slow
def test_ras_matrix_direction_is_template_to_moving(registration_case, phantom_lib):
    """The nucleus of the template, mapped by ras_matrix, lands on the moving image's nucleus."""
    template, moving = registration_case["template"], registration_case["moving"]
    estimate = registration_case["result"].ras_matrix

    def centroid(phantom):
        voxels = np.argwhere(phantom.labels == phantom_lib.NUCLEUS).mean(axis=0)
        return nib.affines.apply_affine(phantom.img.affine, voxels)

    mapped = _apply(estimate, centroid(template))
    assert np.linalg.norm(mapped - centroid(moving)) < 1.0
    # The inverse mapping would miss by about twice the motion.
    assert np.linalg.norm(_apply(np.linalg.inv(estimate), centroid(template)) - centroid(moving)) > 10.0


@pytest.mark.slow
def test_warped_image_matches_template(registration_case):
    result: AffineResult = registration_case["result"]
    template = registration_case["template"]
    warped = np.asarray(result.warped.dataobj)
    assert warped.shape == template.labels.shape
    assert warped.dtype == np.float32
    assert result.warped.get_data_dtype() == np.float32
    np.testing.assert_array_equal(result.warped.affine, template.img.affine)
    head = template.head
    after = np.corrcoef(warped[head], template.data[head])[0, 1]
    before = np.corrcoef(registration_case["moving"].data[head], template.data[head])[0, 1]
    assert after > 0.95, f"correlation {before:.3f} -> {after:.3f}"
    assert after > before + 0.1


@pytest.mark.slow
def test_transform_object_agrees_with_ras_matrix(registration_case):
    result = registration_case["result"]
    for point in ([0.0, 0.0, 0.0], [30.0, -20.0, 15.0], [-25.0, 40.0, -10.0]):
        lps = FLIP @ np.asarray(point)
        moved = FLIP @ np.asarray(result.transform.apply_to_point(tuple(lps)))
        np.testing.assert_allclose(moved, _apply(result.ras_matrix, np.asarray(point)), atol=1e-4)


def test_itk_affine_to_ras_of_a_known_transform():
    import ants

    linear = _rotation_z(20.0) @ np.diag([1.1, 0.9, 1.0])
    translation = np.array([3.0, -7.0, 2.0])
    centre = np.array([10.0, 20.0, -5.0])
    transform = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, matrix=linear, translation=translation, center=centre
    )
    ras = itk_affine_to_ras(transform)
    # ITK in LPS: y = A (x - c) + t + c; in RAS the matrix is conjugated by the flip.
    expected = np.eye(4)
    expected[:3, :3] = FLIP @ linear @ FLIP
    expected[:3, 3] = FLIP @ (translation + centre - linear @ centre)
    np.testing.assert_allclose(ras, expected, atol=1e-10)
    for point in ([0.0, 0.0, 0.0], [12.0, -3.0, 40.0]):
        moved = FLIP @ np.asarray(transform.apply_to_point(tuple(FLIP @ np.asarray(point))))
        np.testing.assert_allclose(_apply(ras, np.asarray(point)), moved, atol=1e-6)


_DETERMINISM_SCRIPT = """
import json, sys
import nibabel as nib
from cortexgen.preprocess.register import AffineSettings, affine_to_template
template, moving = nib.load(sys.argv[1]), nib.load(sys.argv[2])
runs = [affine_to_template(moving, template, settings=AffineSettings(seed=seed)).ras_matrix.tolist()
        for seed in (42, 42, 7)]
print(json.dumps(runs))
"""


def test_same_seed_gives_the_same_transform(phantom_lib, tmp_path):
    """Run in a fresh process with one ITK thread: ITK reads its thread count once per
    process, and with several threads the metric's sums (hence the result) vary from run
    to run whatever the seed."""
    grid = {"shape": (64, 76, 60), "voxel_mm": 1.5}
    template = phantom_lib.make_phantom(**grid)
    moving = phantom_lib.make_phantom(ras_transform=known_motion(template.centre), **grid)
    nib.save(template.img, str(tmp_path / "template.nii.gz"))
    nib.save(moving.img, str(tmp_path / "moving.nii.gz"))
    root = Path(cortexgen.__file__).resolve().parents[1]
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", _DETERMINISM_SCRIPT, "template.nii.gz", "moving.nii.gz"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    first, second, other_seed = (np.array(m) for m in json.loads(completed.stdout.strip().splitlines()[-1]))
    np.testing.assert_array_equal(first, second)
    # The seed does reach ANTs: another seed samples other points.
    assert not np.array_equal(first, other_seed)
    # And the result is a sensible registration, not a constant.
    assert np.abs(first[:3, 3] - known_motion(template.centre)[:3, 3]).max() < 5.0


@pytest.mark.parametrize("stripped", [False, True])
def test_register_head_uses_the_brain_template_for_skull_stripped_scans(monkeypatch, full_size_brain, full_size_head, stripped):
    from cortexgen.preprocess import register

    seen = {}

    def fake_affine(moving, template, template_brain_mask, settings, resample=True):
        seen["template"] = np.asarray(template.dataobj)
        seen["args"] = (template_brain_mask, settings)
        return "result"

    monkeypatch.setattr(register, "affine_to_template", fake_affine)
    template = full_size_head.img
    brain_mask = nib.Nifti1Image(full_size_head.brain.astype(np.uint8), template.affine)
    scan = full_size_brain.img if stripped else full_size_head.img
    settings = register.AffineSettings(seed=7)
    result, used_brain = register.register_head(scan, template, brain_mask, 2000.0, settings)
    assert result == "result" and used_brain is stripped
    # Stage 2 is brain-driven in both cases.
    assert seen["args"] == (brain_mask, settings)
    outside_brain = ~full_size_head.brain
    if stripped:
        assert np.all(seen["template"][outside_brain] == 0)
        np.testing.assert_array_equal(seen["template"][full_size_head.brain], full_size_head.data[full_size_head.brain])
    else:
        np.testing.assert_array_equal(seen["template"], full_size_head.data)


def test_settings_from_config_match_the_schema_defaults():
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    section = schema["properties"]["preprocess"]["properties"]["registration"]["properties"]
    schema_defaults = {key: value["default"] for key, value in section.items()}
    assert AffineSettings.from_config(schema_defaults) == AffineSettings()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert AffineSettings.from_config(config["preprocess"]["registration"]) == AffineSettings()


def test_no_temporary_transform_files_are_left(registration_case, monkeypatch, tmp_path, phantom_lib):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    template = registration_case["template"]
    brain_mask = nib.Nifti1Image(template.brain.astype(np.uint8), template.img.affine)
    affine_to_template(registration_case["moving"].img, template.img, brain_mask)
    assert list(tmp_path.iterdir()) == []


def test_ants_seed_refuses_zero_and_restores_the_previous_seed():
    """ANTs reads --random-seed 0 as 'seed from the clock', so a 0 would silently unseed."""
    import ants

    from cortexgen.preprocess.register import ants_seed

    previous = ants.config._random_seed
    with pytest.raises(ValueError, match="positive integer"), ants_seed(0):
        pass
    with ants_seed(7):
        assert ants.config._random_seed == 7
    assert ants.config._random_seed == previous
