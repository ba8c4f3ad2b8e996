"""The slide formats a scan can write, and their writers: one registry for the CLI, the node and
the outputs.

- ``tiff`` (default): ``slide.tiff``, the generic pyramidal tiled TIFF that OpenSlide reads
  (:func:`~deepaf_planner.slide_writer.write_pyramidal_tiff`).
- ``ome-tiff``: ``slide.ome.tiff``, as Bio-Formats and QuPath expect it: one OME image whose
  OME-XML (in the first IFD's ImageDescription) gives the axes ``YXS`` and the physical pixel
  size in µm; level 0 is the main IFD and the halved sub-resolutions are its SubIFDs
  (NewSubfileType 1), all tiled RGB. Read by tifffile and tiffslide.
- ``dicom``: ``slide_dicom/``, a DICOM WSI (VL Whole Slide Microscopy Image) as the paper's
  scanner writes: one instance per pyramid level (``level_<k>.dcm``, TILED_FULL frames, one
  study, series, pyramid and frame of reference), written through wsidicom. Read by
  wsidicom (the folder) and OpenSlide >= 4 (any one of its files).

Each format has a tile encoder (:attr:`SlideFormat.encoder`) to build a
:class:`~deepaf_planner.slide_writer.TilePyramid` with while the tiles come in (during a
scan), and a pyramid writer (:attr:`SlideFormat.write_pyramid`) that copies the encoded
tiles into the slide at the end. Its source writer (:attr:`SlideFormat.writer`) does both
from a level-0 :data:`~deepaf_planner.slide_writer.RegionSource`, band by band, so no format
holds the whole slide in memory, and every level is the same 2x2 box-averaged pyramid.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .slide_writer import (
    PyramidWriter,
    RegionSource,
    SlideInfo,
    TileEncoder,
    TilePyramid,
    check_compression,
    tiff_encoder,
    write_from_source,
    write_pyramidal_tiff,
    write_tiff_levels,
    write_tiff_pyramid,
)

__all__ = [
    "DEFAULT_SLIDE_FORMAT",
    "SLIDE_FORMATS",
    "SlideFormat",
    "SlideWriter",
    "dicom_encoder",
    "slide_format",
    "write_dicom_pyramid",
    "write_dicom_wsi",
    "write_ome_tiff",
    "write_ome_tiff_pyramid",
]


class SlideWriter(Protocol):
    """The signature every slide source writer shares (that of ``write_pyramidal_tiff``)."""

    def __call__(
        self,
        path: str | Path,
        source: RegionSource | np.ndarray,
        pixel_size_m: float,
        shape: tuple[int, int] | None = None,
        tile: int = 256,
        compression: str = "zlib",
        jpeg_quality: int = 90,
        thumbnail_px: int = 1024,
        on_strip: Callable[[], None] | None = None,
    ) -> SlideInfo: ...


def write_ome_tiff_pyramid(
    path: str | Path, pyramid: TilePyramid, compression: str, jpeg_quality: int
) -> SlideInfo:
    """Write a complete :class:`TilePyramid` (``tiff_encoder`` tiles) as a pyramidal OME-TIFF.

    Level 0 is the main IFD, with the OME-XML (PhysicalSizeX/Y in µm; Name: the scan
    folder); the sub-resolutions are its SubIFDs. Written via a temporary file.

    Raises:
        RuntimeError: for an incomplete pyramid.
    """
    path = Path(path)
    um = pyramid.pixel_size_m * 1e6
    metadata = {
        "axes": "YXS",
        "Name": path.parent.name or "slide",  # the scan folder, as the DICOM slide's identifier
        "PhysicalSizeX": um,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": um,
        "PhysicalSizeYUnit": "µm",
    }

    def options(level: int) -> dict[str, Any]:
        if level == 0:
            return {"subifds": len(pyramid.shapes) - 1, "metadata": metadata}
        return {"subfiletype": 1}  # a reduced-resolution image, in level 0's SubIFDs

    return write_tiff_levels(path, pyramid, compression, jpeg_quality, options, ome=True)


def write_ome_tiff(
    path: str | Path,
    source: RegionSource | np.ndarray,
    pixel_size_m: float,
    shape: tuple[int, int] | None = None,
    tile: int = 256,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    thumbnail_px: int = 1024,
    on_strip: Callable[[], None] | None = None,
) -> SlideInfo:
    """Write an RGB image as a pyramidal OME-TIFF (sub-resolutions in SubIFDs).

    Arguments as :func:`~deepaf_planner.slide_writer.write_pyramidal_tiff`; the pixel size
    goes into the OME-XML (PhysicalSizeX/Y in µm) and the X/YResolution tags of every level.

    Raises:
        ValueError: for a bad shape, tile size, pixel size, source array or compression.
    """
    return write_from_source(
        path, source, pixel_size_m, shape, tile, compression, jpeg_quality, thumbnail_px,
        on_strip, tiff_encoder, write_ome_tiff_pyramid,
    )  # fmt: skip


def _dicom_encoder(compression: str, jpeg_quality: int):
    """The wsidicom encoder for a compression name (the same choice of lossy or not)."""
    from wsidicom.codec import Encoder, Jpeg2kSettings, JpegSettings, NumpySettings

    check_compression(compression)
    settings = {
        "jpeg": lambda: JpegSettings(quality=jpeg_quality),  # JPEG baseline, YBR_FULL_422
        "zlib": lambda: Jpeg2kSettings(levels=0),  # lossless: JPEG 2000 reversible
        "none": NumpySettings,  # native (uncompressed) RGB
    }
    return Encoder.create_for_settings(settings[compression]())


def dicom_encoder(compression: str, jpeg_quality: int) -> TileEncoder:
    """Encode a tile as a DICOM WSI frame: ``"jpeg"`` JPEG baseline, ``"zlib"`` (lossless)
    JPEG 2000 reversible, ``"none"`` native RGB.

    Raises:
        ValueError: for a compression not in :data:`~deepaf_planner.slide_writer.COMPRESSIONS`.
    """
    return _dicom_encoder(compression, jpeg_quality).encode


def _dicom_level_data(encoder, shape: tuple[int, int], tile: int, pixel_size_mm: float):
    """wsidicom's description of one written level (write-only: it serves no pixels)."""
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData

    class _Level(ImageData):
        transfer_syntax = property(lambda self: encoder.transfer_syntax)
        image_size = property(lambda self: Size(shape[1], shape[0]))
        tile_size = property(lambda self: Size(tile, tile))
        pixel_spacing = property(lambda self: SizeMm(pixel_size_mm, pixel_size_mm))
        imaged_size = property(
            lambda self: SizeMm(pixel_size_mm * shape[1], pixel_size_mm * shape[0])
        )
        samples_per_pixel = property(lambda self: 3)
        bits = property(lambda self: 8)
        photometric_interpretation = property(lambda self: encoder.photometric_interpretation)
        image_coordinate_system = property(lambda self: None)  # the schema's default
        thread_safe = property(lambda self: False)
        lossy_compression = property(lambda self: None)  # added by update_for_transcoding
        transcoder = property(lambda self: None)

        def get_decoded_tile(self, *args, **kwargs) -> np.ndarray:
            raise NotImplementedError("written levels are streamed, not served")

        def get_encoded_tile(self, *args, **kwargs) -> bytes:
            raise NotImplementedError("written levels are streamed, not served")

    return _Level(encoder)


def _dicom_metadata(name: str):
    """Study, series, slide and equipment shared by every level of one DICOM slide."""
    from pydicom.uid import generate_uid
    from wsidicom.metadata import (
        Equipment,
        FocusMethod,
        Image,
        Label,
        Patient,
        Pyramid,
        Series,
        Slide,
        Study,
        WsiMetadata,
    )
    from wsidicom.metadata.sample import SlideSample

    return WsiMetadata(
        study=Study(uid=generate_uid()),
        series=Series(uid=generate_uid(), number=1),
        patient=Patient(),
        equipment=Equipment(
            manufacturer="DeepAf",
            model_name="DeepAf whole-slide scanner",
            software_versions=["deepaf_planner 0.1.0"],
        ),
        slide=Slide(identifier=name, samples=[SlideSample(identifier=name, uid=generate_uid())]),
        pyramid=Pyramid(
            image=Image(acquisition_datetime=datetime.now(), focus_method=FocusMethod.AUTO),
            optical_paths=[],
            uid=generate_uid(),
        ),
        label=Label(),
        frame_of_reference_uid=generate_uid(),
        dimension_organization_uids=[generate_uid()],
    )


def _write_dicom_level(
    file: Path, base, encoder, pyramid: TilePyramid, level: int, tiles: Iterator[bytes]
) -> None:
    """One level's instance, its frames copied from the pyramid."""
    from pydicom.uid import generate_uid
    from upath import UPath
    from wsidicom.file.io import OffsetTableType, WsiDicomWriter
    from wsidicom.instance import WsiDataset
    from wsidicom.metadata import ImageType

    h, w = pyramid.shapes[level]
    tile = pyramid.tile
    data = _dicom_level_data(encoder, (h, w), tile, pyramid.pixel_size_m * 1e3 * 2**level)
    dataset = WsiDataset.create_instance_dataset(
        base.copy(), ImageType.VOLUME, data, level
    ).update_for_transcoding(encoder, 1)
    dataset = dataset.as_instance(
        instance_uid=generate_uid(),
        instance_number=level + 1,
        frame_count=math.ceil(h / tile) * math.ceil(w / tile),
    )
    encapsulated = encoder.transfer_syntax.is_encapsulated
    offsets = OffsetTableType.BASIC if encapsulated else OffsetTableType.NONE
    writer = WsiDicomWriter.open_instance(UPath(file), encoder.transfer_syntax, offsets, dataset)
    try:
        writer.write_tiles(tiles)
        writer.finalize(dataset, encoder)  # also fills in the JPEG compression ratio
    except BaseException:
        writer.close()
        raise


def write_dicom_pyramid(
    path: str | Path, pyramid: TilePyramid, compression: str, jpeg_quality: int
) -> SlideInfo:
    """Write a complete :class:`TilePyramid` (:func:`dicom_encoder` tiles) as a DICOM WSI.

    ``path`` is the folder, one instance per level (``level_<k>.dcm``), written as a
    temporary folder then renamed over any previous one; the pixel size is the
    PixelSpacing of each level.

    Raises:
        RuntimeError: for an incomplete pyramid.
        ValueError: for a compression not in :data:`~deepaf_planner.slide_writer.COMPRESSIONS`.
    """
    from wsidicom.metadata import ImageType
    from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema

    path = Path(path)
    encoder = _dicom_encoder(compression, jpeg_quality)
    levels = pyramid.levels()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    base = WsiMetadataDicomSchema().dump(
        _dicom_metadata(path.parent.name or "slide"), ImageType.VOLUME, require_icc_profile=True
    )
    try:
        for level, tiles in levels:
            _write_dicom_level(tmp / f"level_{level}.dcm", base, encoder, pyramid, level, tiles)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return pyramid.info(path)


def write_dicom_wsi(
    path: str | Path,
    source: RegionSource | np.ndarray,
    pixel_size_m: float,
    shape: tuple[int, int] | None = None,
    tile: int = 256,
    compression: str = "zlib",
    jpeg_quality: int = 90,
    thumbnail_px: int = 1024,
    on_strip: Callable[[], None] | None = None,
) -> SlideInfo:
    """Write an RGB image as a DICOM WSI: a folder with one instance per pyramid level.

    Arguments as :func:`~deepaf_planner.slide_writer.write_pyramidal_tiff`, except that
    ``path`` is the folder (see :func:`write_dicom_pyramid`) and ``compression`` maps to a
    DICOM transfer syntax (see :func:`dicom_encoder`).

    Raises:
        ValueError: for a bad shape, tile size, pixel size, source array or compression.
    """
    return write_from_source(
        path, source, pixel_size_m, shape, tile, compression, jpeg_quality, thumbnail_px,
        on_strip, dicom_encoder, write_dicom_pyramid,
    )  # fmt: skip


@dataclass(frozen=True)
class SlideFormat:
    """One slide format: its name (the option value), what it writes and how.

    Args:
        name: ``tiff``, ``ome-tiff`` or ``dicom``.
        file_name: The slide in the scan folder (a folder for DICOM).
        writer: Writes it from a level-0 region source.
        encoder: ``encoder(compression, jpeg_quality)``: the tile encoder to build a
            :class:`TilePyramid` with (each tile exactly as ``writer`` stores it).
        write_pyramid: ``write_pyramid(path, pyramid, compression, jpeg_quality)``: writes
            a complete pyramid built with that encoder (copying the encoded tiles).
        readers: What opens it (help texts, README).
    """

    name: str
    file_name: str
    writer: SlideWriter
    encoder: Callable[[str, int], TileEncoder]
    write_pyramid: PyramidWriter
    readers: str


#: Every slide format, by name; the first is the default.
SLIDE_FORMATS: dict[str, SlideFormat] = {
    f.name: f
    for f in (
        SlideFormat("tiff", "slide.tiff", write_pyramidal_tiff, tiff_encoder, write_tiff_pyramid,
                    "OpenSlide, QuPath, tiffslide"),
        SlideFormat("ome-tiff", "slide.ome.tiff", write_ome_tiff, tiff_encoder,
                    write_ome_tiff_pyramid, "QuPath, Bio-Formats, tiffslide"),
        SlideFormat("dicom", "slide_dicom", write_dicom_wsi, dicom_encoder, write_dicom_pyramid,
                    "wsidicom, OpenSlide >= 4, PACS"),
    )
}  # fmt: skip
DEFAULT_SLIDE_FORMAT = "tiff"


def slide_format(name: str) -> SlideFormat:
    """The format called ``name``.

    Raises:
        ValueError: for an unknown name, listing the formats.
    """
    try:
        return SLIDE_FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown slide format {name!r}: choose one of {' | '.join(SLIDE_FORMATS)}"
        ) from None
