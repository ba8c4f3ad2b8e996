"""Every slide format, written from a streamed region source or a tile pyramid and read back
by independent readers: tifffile and tiffslide (TIFF, OME-TIFF), wsidicom, pydicom and
OpenSlide 4 (DICOM WSI)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from deepaf_planner.slide_formats import (
    SLIDE_FORMATS,
    dicom_encoder,
    slide_format,
    write_dicom_wsi,
    write_ome_tiff,
)
from deepaf_planner.slide_writer import TilePyramid, downsample2, tiff_options

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")
tiffslide = pytest.importorskip("tiffslide")
wsidicom = pytest.importorskip("wsidicom")
pydicom = pytest.importorskip("pydicom")

PX = 0.5e-6  # m
TILE = 128
SHAPE = (530, 700)  # not a multiple of the tile: padded edge tiles on every level
LEVELS = [(530, 700), (265, 350), (133, 175), (67, 88)]
REGION = (250, 310, 200, 300)  # y0, x0, h, w: crosses tile borders


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A gradient with a checkerboard and one off-centre block, so misplacement shows."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    img = np.empty((*SHAPE, 3), np.uint8)
    checker = ((xx // 24 + yy // 24) % 2) * 90  # in brightness: JPEG keeps it at full res
    img[..., 0] = xx * 160 // SHAPE[1] + checker
    img[..., 1] = yy * 160 // SHAPE[0] + checker
    img[..., 2] = 80 + checker
    img[300:340, 420:500] = (20, 200, 60)
    return img


class Source:
    """A region source that records what it was asked for."""

    def __init__(self, img: np.ndarray) -> None:
        self.img, self.calls = img, []

    def __call__(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        self.calls.append((y0, x0, h, w))
        return self.img[y0 : y0 + h, x0 : x0 + w]


def _streamed(src: Source) -> None:
    """Level 0 was pulled strip by strip, never as a whole."""
    assert src.calls == [
        (y, 0, min(TILE, SHAPE[0] - y), SHAPE[1]) for y in range(0, SHAPE[0], TILE)
    ]


def _region(a: np.ndarray) -> np.ndarray:
    y0, x0, h, w = REGION
    return a[y0 : y0 + h, x0 : x0 + w]


def _close(got: np.ndarray, want: np.ndarray, lossy: bool) -> None:
    if lossy:  # JPEG at quality 90, chroma subsampled: a misplaced tile errs by ~100
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).mean() < 6
    else:
        np.testing.assert_array_equal(got, want)


def test_one_registry_with_tiff_as_default() -> None:
    assert list(SLIDE_FORMATS) == ["tiff", "ome-tiff", "dicom"]
    assert slide_format("dicom").file_name == "slide_dicom"
    with pytest.raises(ValueError, match=r"'tif'.*tiff \| ome-tiff \| dicom"):
        slide_format("tif")
    config = yaml.safe_load((Path(__file__).parents[3] / "config/deepaf.yaml").read_text())
    assert config["/**/planner"]["ros__parameters"]["slide_format"] == "tiff"


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_ome_tiff_reads_back_in_tifffile_and_tiffslide(tmp_path: Path, image, compression):
    src, path = Source(image), tmp_path / "scan" / "slide.ome.tiff"
    info = write_ome_tiff(path, src, PX, SHAPE, tile=TILE, compression=compression)
    _streamed(src)
    assert info.path == path and info.level_shapes == LEVELS
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no scratch left
    lossy = compression == "jpeg"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.pages) == 1  # one image; the pyramid is in its SubIFDs
        assert len(tif.pages[0].subifds) == len(LEVELS) - 1
        series = tif.series[0]
        assert series.axes == "YXS" and len(series.levels) == len(LEVELS)
        for k, level in enumerate(series.levels):
            page = level.keyframe
            assert level.shape == (*LEVELS[k], 3)
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (TILE, TILE)
            rgb = tifffile.PHOTOMETRIC.YCBCR if lossy else tifffile.PHOTOMETRIC.RGB
            assert page.photometric == rgb  # tifffile writes JPEG tiles as YCbCr (as SVS does)
            assert page.subfiletype == (0 if k == 0 else 1)  # 1: reduced-resolution image
            assert page.get_resolution(tifffile.RESUNIT.MICROMETER)[0] == pytest.approx(
                1 / (0.5 * 2**k)
            )
        # Bio-Formats/QuPath read the OME-XML of the first IFD's ImageDescription
        assert tif.pages[0].description == tif.ome_metadata
        ns = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
        pixels = ET.fromstring(tif.ome_metadata).findall(".//ome:Image/ome:Pixels", ns)
        assert len(pixels) == 1
        a = pixels[0].attrib
        assert (a["SizeX"], a["SizeY"], a["SizeC"], a["Type"]) == ("700", "530", "3", "uint8")
        assert float(a["PhysicalSizeX"]) == float(a["PhysicalSizeY"]) == pytest.approx(0.5)
        assert a["PhysicalSizeXUnit"] == a["PhysicalSizeYUnit"] == "µm"
        assert a["Interleaved"] == "true"
        _close(_region(series.levels[0].asarray()), _region(image), lossy)
        _close(series.levels[1].asarray(), downsample2(image), lossy)
    with tiffslide.TiffSlide(path) as s:
        assert s.level_dimensions == tuple((w, h) for h, w in LEVELS)
        np.testing.assert_allclose(s.level_downsamples, [1, 2, 4, 8], rtol=0.02)
        assert float(s.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["tiffslide.mpp-y"]) == pytest.approx(0.5)
        y0, x0, h, w = REGION
        got = np.asarray(s.read_region((x0, y0), 0, (w, h)).convert("RGB"))
        _close(got, _region(image), lossy)


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_dicom_wsi_reads_back_in_wsidicom_pydicom_and_openslide(tmp_path: Path, image, compression):
    src, folder = Source(image), tmp_path / "scan" / "slide_dicom"
    info = write_dicom_wsi(folder, src, PX, SHAPE, tile=TILE, compression=compression)
    _streamed(src)
    assert info.path == folder and info.level_shapes == LEVELS
    files = [folder / f"level_{k}.dcm" for k in range(len(LEVELS))]
    assert sorted(folder.iterdir()) == files
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
    lossy = compression == "jpeg"
    y0, x0, h, w = REGION

    with wsidicom.WsiDicom.open(folder) as wsi:
        assert [(lv.size.height, lv.size.width) for lv in wsi.levels] == LEVELS
        assert wsi.mpp.width == pytest.approx(0.5) and wsi.mpp.height == pytest.approx(0.5)
        got = np.asarray(wsi.read_region((x0, y0), 0, (w, h)).convert("RGB"))
        _close(got, _region(image), lossy)
        got1 = np.asarray(wsi.read_region((0, 0), 1, (350, 265)).convert("RGB"))
        _close(got1, downsample2(image), lossy)

    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for k, ds in enumerate(datasets):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy
        assert ds.Modality == "SM" and ds.DimensionOrganizationType == "TILED_FULL"
        assert list(ds.ImageType)[2:] == ["VOLUME", "NONE" if k == 0 else "RESAMPLED"]
        assert (ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns) == LEVELS[k]
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (TILE, TILE, 3)
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert [float(v) for v in spacing] == pytest.approx([0.5e-3 * 2**k] * 2)  # mm
        assert ds.LossyImageCompression == ("01" if lossy else "00")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PyramidUID"):
        assert len({ds.get(key) for ds in datasets}) == 1, key
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)

    assert openslide.OpenSlide.detect_format(files[0]) == "dicom"
    with openslide.OpenSlide(files[1]) as s:  # any instance opens the whole slide
        assert s.level_dimensions == tuple((w_, h_) for h_, w_ in LEVELS)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        got = np.asarray(s.read_region((x0, y0), 0, (w, h)).convert("RGB"))
        _close(got, _region(image), lossy)


def test_dicom_rewrite_replaces_the_folder(tmp_path: Path, image) -> None:
    folder = tmp_path / "slide_dicom"
    write_dicom_wsi(folder, image, PX, tile=TILE)
    write_dicom_wsi(folder, image[:200, :300].copy(), PX, tile=TILE)  # e.g. a resumed scan
    with wsidicom.WsiDicom.open(folder) as wsi:
        assert (wsi.size.height, wsi.size.width) == (200, 300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide_dicom"]


@pytest.mark.parametrize("name", list(SLIDE_FORMATS))
def test_bad_input_fails_before_writing(tmp_path: Path, image, name: str) -> None:
    writer, out = SLIDE_FORMATS[name].writer, tmp_path / "out" / "slide"
    with pytest.raises(ValueError, match="shape"):
        writer(out, lambda *a: image, PX)  # a region source needs its shape
    with pytest.raises(ValueError, match="pixel size"):
        writer(out, image, 0.0)
    with pytest.raises(ValueError, match="multiple of 16"):
        writer(out, image, PX, tile=100)
    assert not (tmp_path / "out").exists()
    if name == "dicom":
        with pytest.raises(ValueError, match="compression 'lzw'"):
            writer(out, image, PX, compression="lzw")


def _reference(img: np.ndarray) -> list[np.ndarray]:
    """Every level as the writers made them before tile pyramids: whole-level halvings."""
    levels = [img]
    for _ in LEVELS[1:]:
        levels.append(downsample2(levels[-1]))
    return levels


def _padded_tiles(level: np.ndarray):
    """A level's tiles in row-major order, edge tiles padded white (as the writers store them)."""
    h, w = level.shape[:2]
    for y0 in range(0, h, TILE):
        for x0 in range(0, w, TILE):
            t = np.full((TILE, TILE, 3), 255, np.uint8)
            part = level[y0 : y0 + TILE, x0 : x0 + TILE]
            t[: part.shape[0], : part.shape[1]] = part
            yield t


def _tile_pyramid(image: np.ndarray, encode, scratch: Path) -> TilePyramid:
    """A pyramid of ``image`` whose level-0 tiles came in shuffled (as a scan finishes them)."""
    p = TilePyramid(SHAPE, PX, TILE, encode, scratch)
    rows, cols = p.grid(0)
    order = [(r, c) for r in range(rows) for c in range(cols)]
    np.random.default_rng(7).shuffle(order)
    for ty, tx in order:
        p.put(ty, tx, image[ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE])
    return p


def _tiff_raw_tiles(path: Path) -> list[list[bytes]]:
    """The stored bytes of every tile of every level (main IFDs, or OME SubIFDs)."""
    with tifffile.TiffFile(path) as tif:
        pages = [lv.keyframe for lv in tif.series[0].levels] if tif.is_ome else list(tif.pages)
        out = []
        for page in pages:
            tiles = []
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                tif.filehandle.seek(offset)
                tiles.append(tif.filehandle.read(count))
            out.append(tiles)
        return out


def _tifffile_encoded(levels: list[np.ndarray], compression: str, path: Path) -> list[list[bytes]]:
    """Each level's tiles as tifffile encodes them itself from pixels (the writers before)."""
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in levels:
            tif.write(
                _padded_tiles(level), shape=level.shape, **tiff_options(TILE, compression, 90)
            )
    return _tiff_raw_tiles(path)


def _check_tiff(path: Path, ref: list[np.ndarray], compression: str, tmp: Path) -> None:
    assert _tiff_raw_tiles(path) == _tifffile_encoded(ref, compression, tmp / "own.tiff")
    with tiffslide.TiffSlide(path) as s:
        assert s.level_dimensions == tuple((w, h) for h, w in LEVELS)
        assert float(s.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["tiffslide.mpp-y"]) == pytest.approx(0.5)
        for k, (h, w) in enumerate(LEVELS):
            got = np.asarray(s.read_region((0, 0), k, (w, h), as_array=True))
            _close(got, ref[k], lossy=compression == "jpeg")


def _check_dicom(folder: Path, ref: list[np.ndarray], compression: str, tmp: Path) -> None:
    encode = dicom_encoder(compression, 90)
    for k, level in enumerate(ref):
        ds = pydicom.dcmread(folder / f"level_{k}.dcm")
        frames = list(
            pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
        )
        want = [encode(t) for t in _padded_tiles(level)]  # what write_dicom_wsi stored before
        assert len(frames) == len(want)
        for got, w in zip(frames, want, strict=True):
            assert got[: len(w)] == w and len(got) - len(w) <= 1  # items pad to even length
    with wsidicom.WsiDicom.open(folder) as wsi:
        assert [(lv.size.height, lv.size.width) for lv in wsi.levels] == LEVELS
        assert wsi.mpp.width == pytest.approx(0.5) and wsi.mpp.height == pytest.approx(0.5)
        for k, (h, w) in enumerate(LEVELS):
            got = np.asarray(wsi.read_region((0, 0), k, (w, h)).convert("RGB"))
            _close(got, ref[k], lossy=compression == "jpeg")


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
@pytest.mark.parametrize("name", list(SLIDE_FORMATS))
def test_write_pyramid_copies_a_tile_pyramid(tmp_path: Path, image, name, compression) -> None:
    fmt, scan = SLIDE_FORMATS[name], tmp_path / "scan"
    scan.mkdir()
    with _tile_pyramid(image, fmt.encoder(compression, 90), scan) as pyramid:
        info = fmt.write_pyramid(scan / fmt.file_name, pyramid, compression, 90)
    assert info.path == scan / fmt.file_name and info.level_shapes == LEVELS
    assert info.pixel_size_m == PX and info.thumbnail.shape == (265, 350, 3)
    assert [p.name for p in scan.iterdir()] == [fmt.file_name]  # no spill or temporary file
    check = _check_dicom if name == "dicom" else _check_tiff
    check(info.path, _reference(image), compression, tmp_path)


@pytest.mark.parametrize("name", list(SLIDE_FORMATS))
def test_write_pyramid_needs_a_complete_pyramid(tmp_path: Path, image, name) -> None:
    fmt = SLIDE_FORMATS[name]
    with TilePyramid(SHAPE, PX, TILE, fmt.encoder("zlib", 90), tmp_path) as pyramid:
        pyramid.put(0, 0, image[:TILE, :TILE])
        with pytest.raises(RuntimeError, match="missing"):
            fmt.write_pyramid(tmp_path / "out" / fmt.file_name, pyramid, "zlib", 90)
    assert not list(tmp_path.iterdir())
