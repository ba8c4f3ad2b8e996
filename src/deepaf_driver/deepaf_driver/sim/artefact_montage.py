"""A montage of a realistic slide's artefacts (``./deepaf sim montage --artefacts``).

Three rows, three focal planes each: a fold (20x; the single section's focus, the true
best focus of the doubled strip, the flap's focus), an air bubble's rim (20x; 2 um below,
at and above best focus: the refractive rim's bright and dark edges swap) and coverslip
dust (4x; the tissue's focus, half-way, the dust's own height, where Brenner sharpness
peaks although the tissue is ~3 depths of field out of focus).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .microscope import VirtualMicroscope, brenner_green

_TILE = 256
_LABEL_H = 18
_LEFT = 118


def _fold_row(seed: int, protocol: str) -> tuple[str, list, list[str]]:
    s = VirtualMicroscope("20x", protocol, slide_seed=seed, slide="realistic")
    art = s.slide.artefacts
    c, d, _, half_w, _ = art.folds[0]
    x, y = c + np.array([-d[1], d[0]]) * 0.6 * half_w  # near the fold's edge
    t = s.protocol.thickness_m
    base = float(s.slide.base_mid_m(x, y, t)) - float(s.slide.section_m(x, y, t)[0])
    zb = float(s.best_focus_z(x, y))
    zs = [zb + base, zb, zb - base]  # the flap's mid-plane is as far above as the section's below
    labels = ["section beside it", "fold: best focus", "flap"]
    return (
        "fold (20x)",
        [s.render(x, y, z, _TILE, noise=False, pixel_size_m=s.preview_pixel_size_m) for z in zs],
        [f"{lab} {(z - zb) * 1e6:+.1f} um" for lab, z in zip(labels, zs, strict=True)],
    )


def _bubble_row(seed: int, protocol: str) -> tuple[str, list, list[str]]:
    s = VirtualMicroscope("20x", protocol, slide_seed=seed, slide="realistic")
    c, r = s.slide.artefacts.bubbles[0]
    x, y = c[0] + r, c[1]
    zb = float(s.best_focus_z(x, y))
    dzs = (-2e-6, 0.0, 2e-6)
    pix = s.preview_pixel_size_m
    imgs = [s.render(x, y, zb + dz, _TILE, noise=False, pixel_size_m=pix) for dz in dzs]
    return "air bubble (20x)", imgs, [f"dz {dz * 1e6:+.0f} um" for dz in dzs]


def dust_trap(scope: VirtualMicroscope, size: int = 128, sampling: str = "preview"):
    """A coverslip dust particle on glass beside the tissue whose size-pixel field is
    sharper (Brenner) at the dust's height than at the tissue's best focus.

    Returns:
        (x, y, tissue best focus z, dust z) in metres, or None when the slide has none.
    """
    w, h = scope.slide_size_m
    parts = scope.slide.artefacts.particles(0.0, 0.0, w, h)
    for k in np.argsort(-parts.a * parts.b * parts.od):
        x, y = float(parts.x[k]), float(parts.y[k])
        sdf = float(scope.slide.section_sdf_m(np.array(x), np.array(y)))
        if parts.height_m[k] < 100e-6 or not -400e-6 < sdf < 100e-6:
            continue
        pix = scope.preview_pixel_size_m if sampling == "preview" else scope.pixel_size_m
        g = (np.arange(16) - 7.5) * size * pix / 16
        cover = scope.slide.tissue_fraction(x + g, y + g, scope.protocol.cellularity)[0].mean()
        if not 0.03 < cover < 0.7:
            continue  # the trap: a field with a little tissue (none: no wrong z to show)
        zb = float(scope.best_focus_z(x, y))
        zd = float(scope.slide.focus_surface_m(x, y)) + float(parts.height_m[k])
        tissue, dust = scope.render_stack(x, y, [zb, zd], size, noise=False, sampling=sampling)
        if brenner_green(dust) > brenner_green(tissue):
            return x, y, zb, zd
    return None


def _dust_row(seed: int, protocol: str) -> tuple[str, list, list[str]]:
    s = VirtualMicroscope("4x", protocol, slide_seed=seed, slide="realistic")
    found = dust_trap(s, _TILE, "capture")
    if found is None:
        raise ValueError(f"realistic slide {seed} has no dust beside its tissue; try another seed")
    x, y, zb, zd = found
    zs = [zb, 0.5 * (zb + zd), zd]
    imgs = s.render_stack(x, y, zs, _TILE, noise=False, sampling="capture")
    labels = [
        f"{name} {(z - zb) * 1e6:+.0f} um, Brenner {brenner_green(i):.0f}"
        for name, z, i in zip(("tissue", "", "dust"), zs, imgs, strict=True)
    ]
    return "coverslip dust (4x)", imgs, labels


def artefact_montage(out: str | Path, seed: int = 0) -> Path:
    """Write the montage of realistic slide ``seed`` (palette-quantised PNG, ~0.2 MB).

    Each row uses the profile that shows its artefact best (folds and bubbles at 20x,
    dust at 4x).

    Raises:
        ValueError: the slide has no coverslip dust beside its tissue to show.
    """
    import cv2
    from PIL import Image

    rows = [f(seed, "lab_a_standard") for f in (_fold_row, _bubble_row, _dust_row)]
    step = _TILE + _LABEL_H + 4
    canvas = np.full((len(rows) * step, _LEFT + 3 * (_TILE + 4), 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, (name, imgs, labels) in enumerate(rows):
        y0 = i * step
        cv2.putText(canvas, name, (4, y0 + step // 2), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for j, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
            x0 = _LEFT + j * (_TILE + 4)
            cv2.putText(canvas, lab, (x0 + 2, y0 + 13), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
            canvas[y0 + _LABEL_H : y0 + _LABEL_H + _TILE, x0 : x0 + _TILE] = img
    out = Path(out)
    Image.fromarray(canvas).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        out, optimize=True
    )
    return out
