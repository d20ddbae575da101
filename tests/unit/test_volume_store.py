"""Training volumes on disk: the float16 store, its cache, and memory bounded in the cohort size."""

import os
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import torch

from cortexgen.diffusion import data as volumes
from cortexgen.diffusion.run import load_data

GRID = (8, 8, 8)
ROLES = ["pialsdf", "whitesdf"]
CLIP_MM = 5.0


def _write_subjects(folder, count, shape=(12, 10, 12), seed=0):
    """``count`` subjects' [0, 1] images and SDFs (mm, beyond ± the clip) as NIfTI files; the bridge's inputs."""
    rng = np.random.default_rng(seed)
    inputs = {"images": [], "pialsdf": [], "whitesdf": []}
    for i in range(count):
        for key, values in (("images", rng.random(shape)), ("pialsdf", rng.uniform(-8, 8, shape)),
                            ("whitesdf", rng.uniform(-8, 8, shape))):
            path = folder / f"sub-{i:02d}_{key}.nii"
            nib.save(nib.Nifti1Image(values.astype(np.float32), np.eye(4)), path)
            inputs[key].append(str(path))
    return inputs


def test_float16_round_trip_of_network_scaled_values_is_below_1e_3():
    values = torch.linspace(-1.0, 1.0, 200_001)
    error = (values.to(torch.float16).float() - values).abs().max()
    # Half a float16 step just below 1 is 2**-12; a thousandth of the [-1, 1] range is far below any image noise.
    assert float(error) <= 2.0**-12 <= 1e-3


def test_stored_bridge_volumes_equal_the_in_memory_loading(tmp_path):
    inputs = _write_subjects(tmp_path, 3)
    data = load_data("bridge", inputs, {"conditions": ROLES}, GRID, CLIP_MM, tmp_path / "cache")
    assert isinstance(data["image"], volumes.VolumeStore) and len(data["image"]) == 3
    for i in range(3):
        image = volumes.load_image(inputs["images"][i], GRID)
        condition = volumes.load_conditions({role: inputs[role][i] for role in ROLES}, ROLES, GRID, CLIP_MM)
        assert data["image"][i].dtype == torch.float32 and data["image"][i].shape == (1, *GRID)
        assert data["condition"][i].shape == (2, *GRID)
        assert float((data["image"][i] - image).abs().max()) <= 1e-3
        assert float((data["condition"][i] - condition).abs().max()) <= 1e-3
    stacked = np.load(data["image"].path, mmap_mode="r")  # a plain .npy a memory map can open
    assert stacked.dtype == np.float16 and stacked.shape == (3, 1, *GRID)
    assert data["image"].scaled(2.0)[1].equal(data["image"][1] * 2.0)
    with pytest.raises(IndexError):
        data["image"][3]


def test_cache_is_reused_while_inputs_are_unchanged_and_rewritten_when_one_changes(tmp_path):
    inputs = _write_subjects(tmp_path, 2)
    cache = tmp_path / "cache"
    first = load_data("ddpm", inputs, {}, GRID, CLIP_MM, cache)["image"]
    written = first.path.stat().st_mtime_ns
    again = load_data("ddpm", inputs, {}, GRID, CLIP_MM, cache)["image"]
    assert again.path == first.path and again.path.stat().st_mtime_ns == written
    # Other ranks (build=False) find the written cache without building.
    assert load_data("ddpm", inputs, {}, GRID, CLIP_MM, cache, build=False)["image"].path == first.path
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 12), np.float32), np.eye(4)), inputs["images"][1])
    os.utime(inputs["images"][1], ns=(written + 10**9, written + 10**9))
    changed = load_data("ddpm", inputs, {}, GRID, CLIP_MM, cache)["image"]
    assert changed.path != first.path and not first.path.exists()
    assert float(changed[1].max()) == -1.0
    assert [p.name for p in cache.iterdir()] == [changed.path.name]  # no temporary file left behind


def test_writing_and_reading_holds_one_volume_not_the_cohort(tmp_path):
    """Python-side allocations (numpy, traced) while 400 volumes go to disk and come back batch by batch."""
    count, shape = 400, (1, 16, 16, 16)
    item_mb = np.prod(shape) * 4 / 2**20
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        store = volumes.write_store(tmp_path / "v.npy", (torch.from_numpy(rng.random(shape, dtype=np.float32))
                                                         for _ in range(count)), count)
        total = 0.0
        for i in range(0, count, 4):
            batch = torch.stack([store[j] for j in range(i, i + 4)])
            total += float(batch.sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(total)
    # The cohort is 400 volumes (6.25 MB as float32); a bounded loader holds a handful at a time.
    assert peak / 2**20 < 20 * item_mb < count * item_mb / 10, peak / 2**20
