"""Volumes on disk <-> tensors in the networks' scaling, on a generator's own training grid.

Model-ready images are [0, 1] on ``preprocess.shape``; a generator may train on a coarser
grid (the CPU demo: 44×64×44), so volumes are resized here, keeping the field of view
(voxel edges stay put, as :func:`cortexgen.preprocess.normalize.resized_affine`).
Networks see values of about [-1, 1]: images 2x - 1, signed distances / clip, masks 2m - 1.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from cortexgen.io import atomic_output


def resize_volume(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resize (C, X, Y, Z) or (B, C, X, Y, Z) to ``shape`` over the same field of view.

    Shrinking averages the voxels each new voxel covers (no aliasing); growing is trilinear.
    """
    shape = tuple(int(side) for side in shape)
    batched = volume.dim() == 5
    x = volume if batched else volume[None]
    if tuple(x.shape[2:]) != shape:
        if all(new <= old for new, old in zip(shape, x.shape[2:])):
            x = F.adaptive_avg_pool3d(x, shape)
        else:
            x = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    return x if batched else x[0]


def image_to_network(image: np.ndarray) -> torch.Tensor:
    """A [0, 1] image (X, Y, Z) as a (1, X, Y, Z) float tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32))[None] * 2.0 - 1.0


def network_to_image(volume: torch.Tensor) -> np.ndarray:
    """(1, X, Y, Z) or (X, Y, Z) network output back to a [0, 1] float32 image (clipped)."""
    volume = volume.detach().float().cpu()
    if volume.dim() == 4:
        volume = volume[0]
    return ((volume + 1.0) / 2.0).clamp(0.0, 1.0).numpy().astype(np.float32)


def condition_to_network(volume: np.ndarray, role: str, sdf_clip_mm: float) -> torch.Tensor:
    """A condition volume (X, Y, Z) scaled to [-1, 1]: SDFs by their clip distance, masks 2m - 1."""
    volume = torch.from_numpy(np.asarray(volume, dtype=np.float32))
    if role.endswith("sdf"):
        return (volume / float(sdf_clip_mm)).clamp(-1.0, 1.0)[None]
    return (volume > 0).float()[None] * 2.0 - 1.0


def load_image(path, grid: Sequence[int]) -> torch.Tensor:
    """A model-ready image file as (1, *grid) in [-1, 1]."""
    return resize_volume(image_to_network(nib.load(str(path)).get_fdata(dtype=np.float32)), grid)


def load_conditions(paths: dict[str, str], roles: Sequence[str], grid: Sequence[int],
                    sdf_clip_mm: float) -> torch.Tensor:
    """The condition volumes named by ``roles`` (keys of ``paths``) stacked as (C, *grid)."""
    volumes = [condition_to_network(nib.load(str(paths[role])).get_fdata(dtype=np.float32), role, sdf_clip_mm)
               for role in roles]
    return resize_volume(torch.cat(volumes), grid)


# --- training volumes on disk --------------------------------------------------------------------

#: Bumped when the cache layout changes, so an old cache is rebuilt rather than misread.
STORE_FORMAT = "cortexgen-volumes-1"
#: Stored precision: float16 keeps [-1, 1] values to within 2**-12 (half a float16 step below 1)
#: and field values in mm to a relative 2**-11, far below the data's own noise, at half of float32's size.
STORE_DTYPE = np.float16


class VolumeStore:
    """A sequence of (C, X, Y, Z) float32 tensors read one at a time from a float16 ``.npy`` file.

    The file holds one (N, C, X, Y, Z) array (``np.load(path, mmap_mode="r")`` opens it too).
    Items are read with ``os.pread`` at their offset, not through a memory map: mapped pages
    would count in the process's resident memory once touched, so a long training over a
    large cohort would look (and, under a cgroup limit, be charged) as if it held every
    volume. Reading only the batch's items keeps memory bounded in the number of subjects;
    the operating system's page cache still keeps recently read volumes at hand.

    ``scale`` multiplies every value read (the deform fields' 1 / field scale).
    """

    def __init__(self, path: str | Path, scale: float = 1.0):
        self._fd = self._pid = None
        self.path = Path(path)
        self.scale = float(scale)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran or dtype != np.dtype(STORE_DTYPE) or len(shape) != 5:
            raise ValueError(f"{path}: not a volume store (shape {shape}, dtype {dtype})")
        self.count, self.item_shape = int(shape[0]), tuple(int(side) for side in shape[1:])
        self.item_bytes = int(np.prod(self.item_shape)) * np.dtype(STORE_DTYPE).itemsize

    def scaled(self, scale: float) -> VolumeStore:
        """The same file, every value read multiplied by ``scale`` (on top of this store's)."""
        return VolumeStore(self.path, self.scale * float(scale))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if not -self.count <= index < self.count:
            raise IndexError(f"volume {index} of {self.count}")
        index %= self.count
        if self._fd is None or self._pid != os.getpid():
            # One descriptor per process: a forked DDP/data worker must not share the parent's.
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        raw = os.pread(self._fd, self.item_bytes, self.offset + index * self.item_bytes)
        if len(raw) != self.item_bytes:
            raise OSError(f"{self.path}: truncated at volume {index}")
        volume = torch.from_numpy(np.frombuffer(raw, dtype=STORE_DTYPE).reshape(self.item_shape).astype(np.float32))
        return volume * self.scale if self.scale != 1.0 else volume

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(self.count))

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def write_store(path: str | Path, volumes: Iterable[torch.Tensor], count: int) -> VolumeStore:
    """Write ``count`` (C, X, Y, Z) volumes, one at a time, as a float16 (N, C, X, Y, Z) ``.npy``.

    Only one volume is in memory at a time (written with plain file writes, not a map, for
    the reason given in :class:`VolumeStore`). The file appears under ``path`` only when
    complete (temporary name, then rename), so a killed job never leaves a partial cache.
    """
    volumes = iter(volumes)
    first = next(volumes, None)
    if first is None or count < 1:
        raise ValueError(f"{path}: no volumes to store")
    item_shape = tuple(int(side) for side in first.shape)
    written = 0
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(STORE_DTYPE)), "fortran_order": False,
                  "shape": (count, *item_shape)}
        np.lib.format.write_array_header_1_0(out, header)
        for volume in itertools.chain([first], volumes):
            if tuple(volume.shape) != item_shape:
                raise ValueError(f"{path}: volume {written} has shape {tuple(volume.shape)}, not {item_shape}")
            out.write(np.ascontiguousarray(volume.detach().cpu().numpy(), dtype=STORE_DTYPE).tobytes())
            written += 1
        if written != count:
            raise ValueError(f"{path}: {written} volumes given, {count} announced")
        out.flush()
        os.fsync(out.fileno())
    return VolumeStore(path)


def inputs_key(paths: Sequence[str], settings: dict) -> str:
    """A short hash of the input files (path, size, modification time) and the settings that shape the cache."""
    digest = hashlib.sha256(json.dumps({"format": STORE_FORMAT, "settings": settings}, sort_keys=True,
                                       default=str).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\0{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_store(folder: str | Path, name: str, paths: Sequence[str], settings: dict,
                 load: Callable[[int], torch.Tensor], count: int, build: bool = True,
                 poll_seconds: float = 5.0) -> VolumeStore:
    """The store ``<folder>/<name>-<key>.npy`` of ``load(0) .. load(count - 1)``, written if missing.

    ``key`` hashes ``paths`` (every file the volumes are read from) and ``settings``, so a cache
    is reused exactly while its inputs are unchanged; caches of ``name`` with another key are
    removed when a new one is written. ``build=False`` (DDP ranks other than 0) waits for
    another process to write it instead, polling the file system: writing a large cohort's
    cache can take longer than a collective's timeout.
    """
    folder = Path(folder)
    path = folder / f"{name}-{inputs_key(paths, settings)}.npy"
    if not build:
        while not path.is_file():
            time.sleep(poll_seconds)
    if path.is_file():
        return VolumeStore(path)
    store = write_store(path, (load(i) for i in range(count)), count)
    for stale in folder.glob(f"{name}-*.npy"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return store
