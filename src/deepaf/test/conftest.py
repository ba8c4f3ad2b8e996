"""Markers of this package's tests (registered here so `--strict-markers` accepts them)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives the dashboard in headless chromium (deselect: -m 'not browser')"
    )


@pytest.fixture(scope="session")
def write_pyramid():
    """Writes a small pyramidal tiled TIFF (like slide.tiff) and returns its level-0 pixels."""
    return _write_pyramid


def _write_pyramid(path, width=1000, height=600, mpp=0.5):
    """A small pyramidal tiled TIFF like slide.tiff (levels halving, resolution in cm)."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tif:
        level, sub = base, 0
        while True:
            tif.write(
                level,
                tile=(128, 128),
                photometric="rgb",
                subfiletype=sub,
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
            )
            if max(level.shape[:2]) <= 128:
                break
            level, sub = level[::2, ::2].copy(), 1
    return base
