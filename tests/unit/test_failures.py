"""Failures that explain themselves: a small corpus of bad inputs built here, each outcome asserted.

Header-size and shear checks (before any voxel is read), file-naming job failures with the
traceback in the rule's log, and no temporary file left by a job killed mid-write.
"""

from __future__ import annotations

import gzip
import logging
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from cortexgen.errors import InputImageError, JobError
from cortexgen.io import TMP_MARKER, load_t1w, save_nifti, shear_angles
from cortexgen.runtime import job_log


def _header_only(path, shape, pad=4096):
    """A NIfTI file of about ``pad`` bytes whose header claims ``shape`` (float32)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + b"\0" * (pad - 352)
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def _refusal(path) -> InputImageError:
    with pytest.raises(InputImageError) as excinfo:
        load_t1w(path)
    assert str(path) in str(excinfo.value)
    return excinfo.value


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("side", [1000, 10000])
def test_huge_header_fails_fast_in_little_memory(tmp_path, suffix, side):
    path = _header_only(tmp_path / f"sub-01_T1w{suffix}", (side, side, side))
    assert path.stat().st_size <= 4096
    tracemalloc.start()
    start = time.perf_counter()
    err = _refusal(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0
    assert peak < 200 * 2**20
    assert f"({side}, {side}, {side})" in str(err)
    assert "voxels" in str(err)


def test_truncated_uncompressed_file_is_refused_from_its_size(tmp_path):
    path = _header_only(tmp_path / "sub-01_T1w.nii", (64, 64, 64))
    err = _refusal(path)
    assert "bytes" in str(err) and "truncated" in str(err)


def _sheared_affine(degrees):
    affine = np.eye(4)
    affine[0, 1] = np.tan(np.deg2rad(degrees))  # axis j leans towards x
    return affine


def test_sheared_affine_is_refused_naming_the_shear(tmp_path):
    data = np.random.default_rng(0).uniform(1, 100, (20, 20, 20)).astype(np.float32)
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data, _sheared_affine(10.0)), str(path))
    err = _refusal(path)
    assert "sheared" in str(err)
    assert "axes i and j" in str(err) and "80.00 deg" in str(err)


def test_rotation_is_not_shear():
    angle = np.deg2rad(20)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    rotation[:3, :3] *= [1.0, 1.2, 0.9]  # anisotropic voxels are not shear either
    assert all(abs(value - 90.0) < 1e-9 for value in shear_angles(rotation).values())
    assert abs(shear_angles(_sheared_affine(10.0))[("i", "j")] - 80.0) < 1e-9


# ---------------------------------------------------------------- job logs


def test_library_error_is_named_after_the_file_with_traceback_in_the_log(tmp_path):
    log_path = tmp_path / "n4.log"
    source = "/data/sub-07/anat/sub-07_T1w.nii.gz"
    with pytest.raises(JobError) as excinfo:
        with job_log(log_path, source=source):
            raise RuntimeError("itk::ERROR: N4BiasFieldCorrectionImageFilter: Inputs do not occupy the same space")
    assert str(excinfo.value).startswith(f"{source}: RuntimeError: itk::ERROR")
    assert isinstance(excinfo.value.__cause__, RuntimeError)
    text = log_path.read_text()
    assert f"FAILED: {source}: RuntimeError" in text
    assert "Traceback (most recent call last)" in text
    assert "test_failures.py" in text  # the frame that raised


def test_blank_memory_error_still_says_what_and_where(tmp_path):
    log_path = tmp_path / "denoise.log"
    with pytest.raises(JobError, match=r"sub-01_T1w.nii.gz: MemoryError: MemoryError"):
        with job_log(log_path, source="sub-01_T1w.nii.gz"):
            raise MemoryError()
    assert "MemoryError" in log_path.read_text()


def test_error_that_names_the_file_keeps_its_type(tmp_path):
    path = tmp_path / "sub-01_T1w.nii.gz"
    with pytest.raises(InputImageError):
        with job_log(tmp_path / "x.log", source=path):
            raise InputImageError(path, "every voxel is 0")
    assert not [h for h in logging.getLogger("cortexgen").handlers if isinstance(h, logging.FileHandler)]


# ---------------------------------------------------------------- killed mid-write

_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from cortexgen.io import atomic_output
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_job_killed_mid_write_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "sub-01_desc-denoised_T1w.nii.gz"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]
    assert len(leftovers) == 1 and not out.exists()  # SIGKILL runs no clean-up ...
    # ... so the rerun's write of the same output removes it.
    save_nifti(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
