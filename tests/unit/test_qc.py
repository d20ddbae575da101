"""cortexgen.qc: the preprocessing montage."""

from __future__ import annotations

import matplotlib.image
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest

from cortexgen.qc import QCRow, _slice_centre, preproc_montage


def _red_pixels(rgba: np.ndarray) -> int:
    """Pixels of the mask outline colour (matplotlib's tab:red), never produced by a grey image."""
    r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    return int(np.sum((r > 0.6) & (g < 0.4) & (b < 0.4)))


@pytest.fixture
def montage_rows(small_head):
    brain_mask = nib.Nifti1Image(small_head.brain.astype(np.uint8), small_head.img.affine)
    return [
        QCRow("raw", small_head.img),
        QCRow("brain", small_head.img, brain_mask),
    ]


def test_montage_layout(montage_rows):
    fig = preproc_montage(montage_rows, "sub-01 preprocessing")
    try:
        assert len(fig.axes) == len(montage_rows) * 3
        assert fig._suptitle.get_text() == "sub-01 preprocessing"
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[:3] == ["sagittal  56x64x52", "coronal  56x64x52", "axial  56x64x52"]
        assert [fig.axes[i].get_ylabel() for i in (0, 3)] == ["raw", "brain"]
        # One image per panel; the mask outline (a contour) only on the second row.
        assert all(len(ax.images) == 1 for ax in fig.axes)
        assert [len(ax.collections) > 0 for ax in fig.axes] == [False] * 3 + [True] * 3
        # Panel shapes follow the RAS slicing: sagittal (z, y), coronal (z, x), axial (y, x).
        shapes = [ax.images[0].get_array().shape for ax in fig.axes[:3]]
        assert shapes == [(52, 64), (52, 56), (64, 56)]
    finally:
        plt.close(fig)


def test_montage_png_has_content(montage_rows, tmp_path):
    fig = preproc_montage(montage_rows, "sub-01")
    path = tmp_path / "qc.png"
    fig.savefig(path, dpi=50)
    plt.close(fig)
    assert path.stat().st_size > 1000
    pixels = matplotlib.image.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    grey = pixels[..., :3].mean(axis=-1)
    assert grey.std() > 0.05  # not a uniform picture
    assert grey.min() < 0.1 and grey.max() > 0.9  # black background, white head and page
    assert _red_pixels(pixels) > 20  # the mask outline is drawn


def test_montage_without_masks_has_no_outline(small_head, tmp_path):
    fig = preproc_montage([QCRow("only", small_head.img)], "t")
    assert len(fig.axes) == 3
    fig.savefig(tmp_path / "x.png", dpi=50)
    plt.close(fig)
    assert _red_pixels(matplotlib.image.imread(str(tmp_path / "x.png"))) == 0


def test_slice_centre_follows_the_mask():
    image = np.zeros((20, 30, 40), np.float32)
    image[2:6, 3:9, 4:12] = 1.0
    mask = np.zeros(image.shape, bool)
    mask[10:13, 20:23, 30:33] = True
    assert _slice_centre(image, mask) == (11, 21, 31)
    # Without a mask: the bright part of the image ...
    assert _slice_centre(image, None) == (4, 6, 8)
    # ... and for an empty mask too; an empty image gives the middle.
    assert _slice_centre(image, np.zeros(image.shape, bool)) == (4, 6, 8)
    assert _slice_centre(np.zeros((20, 30, 40)), None) == (10, 15, 20)
