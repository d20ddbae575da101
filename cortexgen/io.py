"""Reading scans defensively and writing outputs atomically.

Every reader here either returns a usable image or raises :class:`InputImageError`
naming the file and the problem. Every writer goes through a temporary file in the
destination folder and an atomic rename, so a crash never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib
from nibabel.openers import ImageOpener, Opener

from cortexgen.errors import InputImageError


def isal_gzip_open(filename: str, mode: str = "rb", compresslevel: int = 1, mtime: int = 0,
                   keep_open: bool = False) -> igzip.IGzipFile:
    """nibabel's ``.gz`` opener with Intel's ISA-L (``isal``) in place of zlib.

    The same gzip files (any reader opens them) and the same data, with nibabel's
    determinism (no file name, ``mtime`` 0 in the header); at nibabel's default level (1)
    the files are as small as zlib's, written 6-12x and read 1.5-2x faster (a 28 MB float32
    head: 0.06 instead of 0.70 s). ``compresslevel`` above ISA-L's best (3) means its best;
    ``keep_open`` (an indexed_gzip option) is ignored.
    """
    mode = mode if "b" in mode else f"{mode}b"
    handle = open(filename, mode)
    try:
        level = min(int(compresslevel), isal_zlib.ISAL_BEST_COMPRESSION)
        gz = igzip.IGzipFile(filename="", mode=mode, compresslevel=level, fileobj=handle, mtime=mtime)
    except BaseException:
        handle.close()
        raise
    gz.myfileobj = handle  # closed with the gzip file, as GzipFile does with files it opened
    return gz


# Every NIfTI this package (and whatever runs beside it in the process) reads or writes
# through nibabel goes through ISA-L: a head's preprocessing writes 130 MB of float32.
for _opener in (Opener, ImageOpener):
    _opener.compress_ext_map[".gz"] = (isal_gzip_open, ("mode", "compresslevel", "mtime", "keep_open"))

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: A T1w volume thinner than this along any axis is a slab or a 2D image, not a head.
MIN_VOXELS_PER_AXIS = 16
#: Most voxels a T1w may have: 512^3 (0.5 mm isotropic over a 256 mm box, 0.5 GB as float32).
#: Checked from the header, before the data are read, so that a corrupt header claiming
#: 1000^3 voxels fails at once instead of allocating gigabytes (or being killed for memory).
MAX_VOXELS = 512**3
#: Largest |cos| between two voxel axes of an affine still called orthogonal (about 0.06 deg).
#: ANTs/ITK store an orthonormal direction matrix, so a sheared sform cannot be represented
#: and fails later with ITK's message; it is refused here, naming the file and the shear.
MAX_SHEAR_COSINE = 1e-3
#: Temporary files of :func:`atomic_output` carry this marker, so a later write finds and
#: removes the ones a killed job left behind.
TMP_MARKER = ".cgtmp"


def nifti_suffix(path: str | Path) -> str:
    """Return ``.nii.gz`` or ``.nii`` for ``path``; anything else is refused."""
    name = str(path)
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    raise InputImageError(path, f"not a NIfTI file (expected one of {', '.join(NIFTI_SUFFIXES)})")


def load_t1w(path: str | Path, max_voxel_size_mm: float = 3.0) -> nib.Nifti1Image:
    """Load a T1-weighted scan, check it is usable, and return it in RAS+ orientation.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxel_size_mm: the coarsest voxel edge (mm) accepted; coarser scans cannot
            carry cortical detail and are refused.

    Returns:
        A 3D float32 ``Nifti1Image`` reoriented to the closest canonical (RAS+) axes.
        Oblique affines are kept as they are (registration works in world space).
        A 4D file with a single volume is accepted and squeezed.

    Raises:
        InputImageError: missing or dangling file, corrupt or truncated data, not 3D,
            non-finite voxels, an empty image, a degenerate affine or too coarse voxels.
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise InputImageError(path, "is a dangling symlink (a DataLad/git-annex file that was not fetched?)")
        raise InputImageError(path, "file does not exist")
    nifti_suffix(path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel, gzip, zlib and OS errors all mean "cannot read"
        raise InputImageError(path, f"cannot be read as NIfTI (corrupt or truncated?): {type(err).__name__}: {err}") from err
    check_header(img, path)
    try:
        # nibabel reads lazily: only touching the data reveals corrupt or truncated files.
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel, gzip, zlib and OS errors all mean "cannot read"
        raise InputImageError(path, f"cannot be read as NIfTI (corrupt or truncated?): {type(err).__name__}: {err}") from err

    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        kind = "a 4D series" if data.ndim == 4 else f"{data.ndim}D"
        raise InputImageError(path, f"is {kind} with shape {data.shape}; a T1w scan must be one 3D volume")
    if min(data.shape) < MIN_VOXELS_PER_AXIS:
        raise InputImageError(
            path, f"has shape {data.shape}: fewer than {MIN_VOXELS_PER_AXIS} voxels along an axis (a 2D slice or a slab?)"
        )

    data = data.astype(np.float32, copy=False)
    n_nan = int(np.isnan(data).sum())
    n_inf = int(np.isinf(data).sum())
    if n_nan or n_inf:
        raise InputImageError(path, f"contains {n_nan} NaN and {n_inf} infinite voxels")
    if not np.any(data):
        raise InputImageError(path, "every voxel is 0 (an empty image)")
    if float(data.max()) == float(data.min()):
        raise InputImageError(path, f"every voxel has the same value {float(data.max())}")

    affine = img.affine
    voxel_size = voxel_sizes(img)
    if voxel_size.max() > max_voxel_size_mm:
        raise InputImageError(
            path,
            f"voxel size {np.round(voxel_size, 2).tolist()} mm is coarser than preprocess.max_voxel_size_mm "
            f"= {max_voxel_size_mm} mm",
        )

    clean = nib.Nifti1Image(data, affine)
    clean.header.set_xyzt_units("mm", "sec")
    return nib.as_closest_canonical(clean)


def check_header(img: nib.spatialimages.SpatialImage, path: str | Path) -> None:
    """Refuse, from the header alone, an image that cannot be a usable T1w.

    Runs before any voxel is read: the size the header claims (at most :data:`MAX_VOXELS`,
    and for an uncompressed file no more bytes than the file holds), a degenerate affine
    and a sheared one. Each error names ``path`` and the value that is wrong.
    """
    shape = tuple(int(n) for n in img.shape)
    n_voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if n_voxels > MAX_VOXELS:
        raise InputImageError(
            path,
            f"header claims shape {shape} ({n_voxels:,} voxels), more than the {MAX_VOXELS:,} a T1w may have "
            "(a corrupt header?)",
        )
    if str(path).endswith(".nii") and hasattr(img, "header") and hasattr(img.header, "get_data_dtype"):
        needed = int(img.header.get("vox_offset", 0)) + n_voxels * img.header.get_data_dtype().itemsize
        size = os.path.getsize(path)
        if size < needed:
            raise InputImageError(
                path,
                f"cannot be read as NIfTI (corrupt or truncated?): the file is {size:,} bytes but its header "
                f"(shape {shape}) needs {needed:,}",
            )
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputImageError(path, "has a degenerate affine (no valid orientation in its header)")
    angles = shear_angles(affine)
    worst = max(angles, key=lambda pair: abs(90.0 - angles[pair]))
    if abs(np.cos(np.deg2rad(angles[worst]))) > MAX_SHEAR_COSINE:
        raise InputImageError(
            path,
            f"has a sheared affine: voxel axes {worst[0]} and {worst[1]} are {angles[worst]:.2f} deg apart, not 90 "
            "(ANTs cannot represent a shear; resample the scan onto an orthogonal grid first, e.g. with "
            "nibabel.processing.resample_from_to or mri_convert)",
        )


def shear_angles(affine: np.ndarray) -> dict[tuple[str, str], float]:
    """Angles (degrees) between the voxel axes i, j, k of ``affine`` in world space: 90 without shear."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3].T
    unit = columns / np.linalg.norm(columns, axis=1, keepdims=True)
    names = "ijk"
    return {(names[a], names[b]): float(np.degrees(np.arccos(np.clip(unit[a] @ unit[b], -1.0, 1.0))))
            for a, b in ((0, 1), (0, 2), (1, 2))}


def voxel_sizes(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Voxel edge lengths (mm) read from the affine, shape (3,)."""
    return np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the final suffix (``.x.cgtmpab12.nii.gz``) so that writers which
    choose a format by extension (nibabel, matplotlib) behave as for the real name.

    A job killed outright (SIGKILL, out of memory, a node lost) runs no clean-up, so the
    temporary files such a job left for ``path`` are removed here, before the next write of
    ``path``: Snakemake gives each output one writer, so none of them can still be in use.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    for stale in path.parent.glob(f".{glob.escape(stem)}{TMP_MARKER}*{glob.escape(suffix)}"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}{TMP_MARKER}", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; outputs should get the permissions any new file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_nifti(img: nib.spatialimages.SpatialImage, path: str | Path) -> None:
    """Write ``img`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))


def write_table(rows: Sequence[dict], path: str | Path) -> None:
    """Rows as TSV (columns: the union of the rows' keys, in first-seen order), written atomically."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, columns, delimiter="\t", restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_table(path: str | Path) -> list[dict]:
    """A TSV as a list of row dicts (values as strings)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
