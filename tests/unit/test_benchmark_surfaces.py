"""benchmarks/surfaces.py's reference: where cat-surf PBT puts the central surface of a shell
whose true central surface is known."""

import pytest

from benchmarks.surfaces import pbt_phantom


def test_pbt_phantom_finds_the_level_of_the_true_central_surface():
    phantom = pbt_phantom()
    # PBT's PPM = 0.5 lies ~0.5 mm inside the true central surface (radius 21.25 mm) ...
    assert phantom["ppm_0.5"]["assd_mm"] == pytest.approx(0.48, abs=0.08)
    # ... which the PPM isosurface at the level sampled on that surface finds to within 0.1 mm.
    assert 0.25 < phantom["true_central_level"] < 0.4
    assert phantom["calibrated"]["assd_mm"] < 0.1 and phantom["calibrated"]["hd95_mm"] < 0.25
