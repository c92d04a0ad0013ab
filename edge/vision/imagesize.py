"""Image dimensions from the file header, before anything is decoded (decompression bombs stop here).

A 69-byte PNG can claim 100000x100000 pixels and a few hundred KB of JPEG can expand to gigabytes:
the decoder allocates what the header says. So every image a door accepts is sized from its header
first and refused above a megapixel cap; formats we cannot size from a header are refused outright
rather than handed to a decoder that understands dozens of them (TIFF, OpenEXR, ...).
"""

from __future__ import annotations

import struct

from edge.errors import EdgeError

DEFAULT_MAX_MEGAPIXELS = 40.0
"""Enough for any camera still (a 48 MP phone binned to 12 MP, a 4K frame is 8.3 MP)."""

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class ImageSizeError(EdgeError):
    """The bytes are not an image we accept, or it is larger than the cap; the message says which."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header of a PNG, JPEG, WebP or BMP; ImageSizeError otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageSizeError("a truncated PNG (no IHDR header)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"\xff\xd8"):
        return ("jpeg", *_jpeg_size(data))
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ("webp", *_webp_size(data))
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return "bmp", abs(width), abs(height)
    raise ImageSizeError("not a JPEG, PNG, WebP or BMP image")


def check_image(data: bytes, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, what: str = "the image") -> None:
    """Refuse (ImageSizeError) an image whose header is unreadable or claims more than `max_megapixels`."""
    try:
        _fmt, width, height = image_size(data)
    except ImageSizeError as exc:
        raise ImageSizeError(f"{what}: {exc}") from None
    if width <= 0 or height <= 0:
        raise ImageSizeError(f"{what} claims an empty size ({width}x{height})")
    if width * height > max_megapixels * 1e6:
        raise ImageSizeError(f"{what} is {width}x{height} ({width * height / 1e6:.1f} MP); at most "
                             f"{max_megapixels:g} MP are accepted")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageSizeError("a corrupt JPEG (bad marker)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            raise ImageSizeError("a corrupt JPEG (bad segment length)")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise ImageSizeError("a JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ImageSizeError("a WebP without a size header")
