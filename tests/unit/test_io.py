"""cortexgen.io: defensive loading of T1w scans and atomic writing."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from cortexgen.errors import InputImageError
from cortexgen.io import atomic_output, load_t1w, nifti_suffix, save_nifti, voxel_sizes

MARKER = 1000.0


def _volume(shape=(24, 28, 20), seed=0) -> np.ndarray:
    """A positive random volume with one unique marker voxel at (3, 5, 7)."""
    data = np.random.default_rng(seed).uniform(1.0, 100.0, shape).astype(np.float32)
    data[3, 5, 7] = MARKER
    return data


def _save(data, path, affine=None):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


def _marker_world(img) -> np.ndarray:
    """World (mm) position of the unique voxel holding ``MARKER``."""
    voxels = np.argwhere(np.asarray(img.dataobj) == MARKER)
    assert len(voxels) == 1
    return nib.affines.apply_affine(img.affine, voxels[0])


def _load_error(path, **kwargs) -> InputImageError:
    with pytest.raises(InputImageError) as excinfo:
        load_t1w(path, **kwargs)
    err = excinfo.value
    # Every refusal names the file, both in the message and as an attribute.
    assert str(path) in str(err)
    assert err.path == str(path)
    return err


# ---------------------------------------------------------------- unreadable files


def test_corrupt_gzip_is_refused(tmp_path):
    path = tmp_path / "sub-01_T1w.nii.gz"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    err = _load_error(path)
    assert "cannot be read as NIfTI" in str(err)
    assert "corrupt or truncated" in str(err)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file_is_refused(tmp_path, suffix):
    path = _save(_volume((32, 32, 32)), tmp_path / f"sub-01_T1w{suffix}")
    raw = path.read_bytes()
    assert len(raw) > 4000  # the header survives the cut, the data does not
    path.write_bytes(raw[: len(raw) // 2])
    err = _load_error(path)
    assert "cannot be read as NIfTI (corrupt or truncated?)" in str(err)


def test_truncated_gzip_really_is_truncated_data(tmp_path):
    """Guard for the test above: the cut .nii.gz keeps a readable header."""
    path = _save(_volume((32, 32, 32)), tmp_path / "x.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with gzip.open(path) as f:
        assert len(f.read(348)) == 348


def test_missing_file_is_refused(tmp_path):
    err = _load_error(tmp_path / "sub-01_T1w.nii.gz")
    assert "does not exist" in str(err)


def test_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "sub-01_T1w.nii.gz"
    os.symlink(tmp_path / "annex" / "objects" / "missing.nii.gz", link)
    assert link.is_symlink() and not link.exists()
    err = _load_error(link)
    assert "dangling" in str(err)
    assert "does not exist" not in str(err)


def test_non_nifti_suffix_is_refused(tmp_path):
    path = _save(_volume(), tmp_path / "scan.nii.gz")
    renamed = path.rename(tmp_path / "scan.mgz")
    err = _load_error(renamed)
    assert "not a NIfTI file" in str(err)
    assert ".nii.gz" in str(err)


def test_nifti_suffix():
    assert nifti_suffix("a/b/sub-01_T1w.nii.gz") == ".nii.gz"
    assert nifti_suffix("sub-01_T1w.nii") == ".nii"
    with pytest.raises(InputImageError, match="not a NIfTI file"):
        nifti_suffix("sub-01_T1w.nii.bz2")


# ---------------------------------------------------------------- wrong dimensionality


def test_4d_series_is_refused(tmp_path):
    path = _save(np.stack([_volume(seed=s) for s in range(3)], axis=-1), tmp_path / "sub-01_T1w.nii.gz")
    err = _load_error(path)
    assert "4D series" in str(err)
    assert "(24, 28, 20, 3)" in str(err)
    assert "one 3D volume" in str(err)


def test_4d_with_one_volume_is_squeezed(tmp_path):
    data = _volume()
    path = _save(data[..., None], tmp_path / "sub-01_T1w.nii.gz")
    img = load_t1w(path)
    assert img.shape == (24, 28, 20)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)


def test_2d_image_is_refused(tmp_path):
    path = _save(np.random.default_rng(0).uniform(1, 2, (32, 32)).astype(np.float32), tmp_path / "slice.nii.gz")
    err = _load_error(path)
    assert "is 2D with shape (32, 32)" in str(err)


def test_single_slice_volume_is_refused(tmp_path):
    path = _save(np.random.default_rng(0).uniform(1, 2, (32, 32, 1)).astype(np.float32), tmp_path / "slab.nii.gz")
    err = _load_error(path)
    assert "(32, 32, 1)" in str(err)
    assert "fewer than 16 voxels along an axis" in str(err)


# ---------------------------------------------------------------- bad values


def test_nan_voxels_are_counted(tmp_path):
    data = _volume()
    data[0, 0, :3] = np.nan
    err = _load_error(_save(data, tmp_path / "nan.nii.gz"))
    assert "contains 3 NaN and 0 infinite voxels" in str(err)


def test_inf_voxels_are_counted(tmp_path):
    data = _volume()
    data[1, 2, 3] = np.inf
    data[4, 5, 6] = -np.inf
    err = _load_error(_save(data, tmp_path / "inf.nii.gz"))
    assert "contains 0 NaN and 2 infinite voxels" in str(err)


def test_all_zero_image_is_refused(tmp_path):
    err = _load_error(_save(np.zeros((24, 24, 24), np.float32), tmp_path / "empty.nii.gz"))
    assert "every voxel is 0" in str(err)


def test_constant_image_is_refused(tmp_path):
    err = _load_error(_save(np.full((24, 24, 24), 7.0, np.float32), tmp_path / "flat.nii.gz"))
    assert "same value 7.0" in str(err)


def test_too_coarse_voxels_are_refused(tmp_path):
    path = _save(_volume(), tmp_path / "coarse.nii.gz", affine=np.diag([4.0, 4.0, 4.0, 1.0]))
    err = _load_error(path, max_voxel_size_mm=3.0)
    assert "voxel size [4.0, 4.0, 4.0] mm is coarser than" in str(err)
    assert "max_voxel_size_mm = 3.0 mm" in str(err)
    # The same file passes with a looser limit.
    assert load_t1w(path, max_voxel_size_mm=5.0).shape == (24, 28, 20)


def test_anisotropic_voxel_limit_uses_the_coarsest_edge(tmp_path):
    path = _save(_volume(), tmp_path / "aniso.nii.gz", affine=np.diag([1.0, 1.0, 3.5, 1.0]))
    err = _load_error(path)
    assert "[1.0, 1.0, 3.5]" in str(err)


# ---------------------------------------------------------------- valid but unusual


def test_output_is_float32_ras(tmp_path):
    data = (_volume() * 10).astype(np.int16)
    img = load_t1w(_save(data, tmp_path / "int.nii.gz"))
    assert np.asarray(img.dataobj).dtype == np.float32
    assert img.get_data_dtype() == np.float32
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asarray(img.dataobj), data.astype(np.float32))


def test_scaled_integers_are_unscaled(tmp_path):
    data = np.random.default_rng(0).integers(1, 1000, (24, 24, 24)).astype(np.int16)
    raw = nib.Nifti1Image(data, np.eye(4))
    raw.header.set_slope_inter(0.5, 10.0)
    nib.save(raw, str(tmp_path / "scaled.nii"))
    img = load_t1w(tmp_path / "scaled.nii")
    np.testing.assert_allclose(np.asarray(img.dataobj), data * 0.5 + 10.0)


def test_lps_image_comes_back_ras_with_same_world_geometry(tmp_path):
    data = _volume()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:3, 3] = [30.0, 40.0, -20.0]
    assert nib.aff2axcodes(lps) == ("L", "P", "S")
    original = nib.Nifti1Image(data, lps)
    img = load_t1w(_save(data, tmp_path / "lps.nii.gz", affine=lps))

    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.shape == data.shape
    # The data really was flipped (not just relabelled) ...
    assert not np.array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data[::-1, ::-1, :])
    # ... and the marker voxel sits at the same point in the world.
    np.testing.assert_allclose(_marker_world(img), _marker_world(original), atol=1e-5)
    np.testing.assert_allclose(_marker_world(original), [30.0 - 3, 40.0 - 5, -20.0 + 7])


def test_oblique_image_keeps_its_world_geometry(tmp_path):
    data = _volume()
    angle = np.deg2rad(15.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    oblique = np.eye(4)
    oblique[:3, :3] = rotation @ np.diag([-1.2, 1.2, 1.2])  # oblique and left-right flipped
    oblique[:3, 3] = [15.0, -30.0, 12.0]
    original = nib.Nifti1Image(data, oblique)
    img = load_t1w(_save(data, tmp_path / "oblique.nii.gz", affine=oblique))

    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(voxel_sizes(img), [1.2, 1.2, 1.2], atol=1e-5)
    # Still oblique: the affine was reoriented, not snapped to the axes.
    np.testing.assert_allclose(img.affine[:3, :3], rotation @ np.diag([1.2, 1.2, 1.2]), atol=1e-5)
    np.testing.assert_allclose(_marker_world(img), _marker_world(original), atol=1e-4)
    # Every voxel keeps its world position, not only the marker.
    ijk = np.array([[0, 0, 0], [23, 27, 19], [10, 3, 15]])
    for i, j, k in ijk:
        value = data[i, j, k]
        new_voxel = np.argwhere(np.asarray(img.dataobj) == value)[0]
        np.testing.assert_allclose(
            nib.affines.apply_affine(img.affine, new_voxel), nib.affines.apply_affine(oblique, [i, j, k]), atol=1e-4
        )


def test_2mm_image_is_accepted(tmp_path):
    data = _volume()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    img = load_t1w(_save(data, tmp_path / "two.nii.gz", affine=affine))
    np.testing.assert_allclose(voxel_sizes(img), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, affine)


def test_degenerate_affine_is_refused(tmp_path):
    affine = np.diag([1.0, 1.0, 0.0, 1.0])  # the third axis has no extent
    img = nib.Nifti1Image(_volume(), None)
    img.header.set_sform(affine, code=1)  # a header's sform is written as is (no qform)
    nib.save(img, str(tmp_path / "flat_affine.nii.gz"))
    np.testing.assert_array_equal(nib.load(str(tmp_path / "flat_affine.nii.gz")).affine, affine)
    err = _load_error(tmp_path / "flat_affine.nii.gz")
    assert "degenerate affine" in str(err)


# ---------------------------------------------------------------- atomic writing


def test_atomic_output_appears_only_on_success(tmp_path):
    final = tmp_path / "out" / "sub-01_T1w.nii.gz"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent  # same folder: the rename is atomic
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".sub-01_T1w.")
        assert not final.exists()
        tmp.write_bytes(b"payload")
        assert not final.exists()
    assert final.read_bytes() == b"payload"
    assert sorted(p.name for p in final.parent.iterdir()) == ["sub-01_T1w.nii.gz"]


def test_atomic_output_leaves_nothing_when_the_body_raises(tmp_path):
    final = tmp_path / "qc.png"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(final) as tmp:
            assert tmp.suffix == ".png"
            tmp.write_bytes(b"half a figure")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_old_file_when_the_body_raises(tmp_path):
    final = tmp_path / "x.nii"
    final.write_bytes(b"old")
    with pytest.raises(KeyError):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"new but broken")
            raise KeyError("x")
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii"]


def test_save_nifti_round_trip(tmp_path):
    data = _volume()
    affine = np.diag([2.0, 1.5, 1.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    path = tmp_path / "deriv" / "sub-01_desc-x.nii.gz"
    save_nifti(nib.Nifti1Image(data, affine), path)
    back = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, affine)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sub-01_desc-x.nii.gz"]
    # It really is gzip-compressed (the temporary name kept the .nii.gz suffix).
    assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_save_nifti_failure_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / "sub-01_T1w.nii.gz")
    assert list(tmp_path.iterdir()) == []
