"""A minimal PNG decoder for the screenshot checks (zlib only, no Pillow).

Enough for what Chromium writes: 8-bit greyscale, RGB, greyscale+alpha or RGBA, not
interlaced, any of the five row filters.
"""
from __future__ import annotations

import struct
import zlib
from typing import List, Tuple

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}

Pixel = Tuple[int, int, int]


class Image:
    """Decoded pixels as RGB rows (alpha dropped)."""

    def __init__(self, width: int, height: int, rows: List[List[Pixel]]) -> None:
        self.width = width
        self.height = height
        self.rows = rows

    def pixel(self, x: int, y: int) -> Pixel:
        return self.rows[y][x]

    def region(self, x: int, y: int, width: int, height: int) -> List[Pixel]:
        """Every pixel of a rectangle (clipped to the image)."""
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + width), min(self.height, y + height)
        return [self.rows[row][column] for row in range(y0, y1) for column in range(x0, x1)]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    """Decode ``data``.

    Raises:
        ValueError: not a PNG, or a kind this decoder does not handle.
    """
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    offset = len(SIGNATURE)
    width = height = depth = color = interlace = 0
    compressed = b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    if depth != 8 or color not in _CHANNELS or interlace:
        raise ValueError("unsupported PNG: depth %d, colour type %d, interlace %d" % (depth, color, interlace))
    channels = _CHANNELS[color]
    stride = width * channels
    raw = zlib.decompress(compressed)
    rows: List[List[Pixel]] = []
    previous = bytearray(stride)
    position = 0
    for _ in range(height):
        kind = raw[position]
        line = bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        previous = line
        if channels >= 3:
            rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)])
        else:
            rows.append([(line[i], line[i], line[i]) for i in range(0, stride, channels)])
    return Image(width, height, rows)
