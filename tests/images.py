"""Test images written by hand (PNG, BMP, baseline JPEG: zlib + struct, no image library — the
engine's stb_image decodes them), and the tiny vision model: tools/make_test_gguf.py --vision."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"
N_IMAGE = 16                      # positions one image takes with the test projector
FIM = (3, 4, 5)                   # FIM prefix/suffix/middle tokens of the tiny model (as in test_infill)


def png(width: int, height: int, rgb: tuple[int, int, int], *, stripe: tuple[int, int, int] | None = None) -> bytes:
    """A truecolour PNG of one colour (with a vertical stripe of another on its left third, if given)."""
    rows = b""
    for _ in range(height):
        row = bytearray()
        for x in range(width):
            row += bytes(stripe if stripe is not None and x < width // 3 else rgb)
        rows += b"\x00" + bytes(row)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_header(width: int, height: int) -> bytes:
    """Only a PNG's signature and IHDR chunk: enough to claim a size (the pixels are missing)."""
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x02\x00\x00\x00"


def bmp(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A 24-bit BMP of one colour."""
    row = bytes(rgb[::-1]) * width
    row += b"\x00" * ((4 - len(row) % 4) % 4)
    pixels = row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


# Baseline JPEG (greyscale, flat 8x8 blocks: DC coefficients only), the standard DC code lengths
_DC_COUNTS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)


def _huffman_codes(counts: tuple[int, ...], symbols: list[int]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes: symbol → (code, length)."""
    codes, code, k = {}, 0, 0
    for length, n in enumerate(counts, start=1):
        for _ in range(n):
            codes[symbols[k]] = (code, length)
            code, k = code + 1, k + 1
        code <<= 1
    return codes


def jpeg(width: int, height: int, grey: int, *, stripe: int | None = None) -> bytes:
    """A greyscale baseline JPEG of one grey level (a left third of another, in whole 8x8 blocks)."""
    dc_codes = _huffman_codes(_DC_COUNTS, list(range(12)))
    bits: list[int] = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    previous = 0
    blocks_x, blocks_y = (width + 7) // 8, (height + 7) // 8
    for _ in range(blocks_y):
        for bx in range(blocks_x):
            level = stripe if stripe is not None and bx * 8 < width // 3 else grey
            dc = 8 * (level - 128)            # a flat block's DC coefficient (quantizer 1)
            diff, previous = dc - previous, dc
            size = abs(diff).bit_length()
            put(*dc_codes[size])
            if size:
                put(diff if diff > 0 else diff + (1 << size) - 1, size)
            put(0, 1)                         # end of block: the AC table's one code
    bits.extend([1] * (-len(bits) % 8))
    scan = bytearray()
    for i in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[i:i + 8])), 2)
        scan += bytes([byte, 0]) if byte == 0xFF else bytes([byte])

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    return (b"\xff\xd8"
            + segment(0xDB, b"\x00" + b"\x01" * 64)                                     # quantizer 1
            + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")   # one component
            + segment(0xC4, b"\x00" + bytes(_DC_COUNTS) + bytes(range(12)))              # DC table 0
            + segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")                   # AC table 0: EOB only
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + bytes(scan) + b"\xff\xd9")


def make_vision_model(directory: Path) -> tuple[str, str]:
    """The tiny language model (with FIM tokens) and its matching random projector: (model, mmproj)."""
    from llamacy.models import default_model_path
    model, proj = directory / "tiny.gguf", directory / "mmproj.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(model), "--source", default_model_path(),
                    "--fim", ",".join(map(str, FIM)), "--vision", str(proj)], check=True)
    return str(model), str(proj)
