#!/usr/bin/env python3
"""Test vectors for the C++ image decoder and preprocessor (engine/image/).

  image_vectors.py --out build/image_vectors

Writes encoded test images of awkward kinds and odd sizes, the reference outputs of the Python pipeline the
server must reproduce, and broken inputs:

  DIR/index.json            what everything is (schema below)
  DIR/inputs/<name>.<ext>   encoded images (JPEG, PNG, WebP, BMP, TIFF) and broken files
  DIR/expected/<key>.rgb    PIL's Image.open(f).convert("RGB") pixels: uint8 HWC, row-major
  DIR/expected/<key>.f32    transformers' CLIPImageProcessor pixel_values for those pixels, configured as
                            Florence-2 is: float32 little-endian, [3, size, size]

<key> is a hash of the decoded pixels, so lossless encodings of the same picture share expected files.
pixel_values (7 MB each) are written in full for the first image of every distinct width x height only
(resizing and normalizing do not depend on the file format, and ~50 of them would take 350 MB); for every
image index.json carries the SHA-256 of its pixel_values bytes. The normalization is injective on uint8, so
equal pixel_values also mean PIL's resize was reproduced exactly.

index.json:
  {"size", "rescale_factor", "mean", "std": the preprocessing config the pixel values were made with,
   "versions": {package: version},
   "good": [{"name", "file", "format", "lossless", "pil_mode", "width", "height", "rgb",
             "pixel_values_sha256", "pixel_values" (absent where another image of the same size has them)}],
   "bad": [{"name", "file", "why", "message": a substring the decoder's error must contain (lower case)}],
   "oversized": [{"name", "file", "width", "height"}],   headers claiming 30000x30000 (or near) with no data
   "resize": [{"name", "input", "width", "height", "output", "out_width", "out_height"}]}
             random-noise RGB images (uint8 HWC) and PIL's BICUBIC resize of them, in every combination of
             up/down/same per axis (noise is the hardest case for rounding parity)

Photographs come from scikit-image's bundled data (no download). Everything is deterministic.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.florence2.config import preset  # noqa: E402

# ---- Sources --------------------------------------------------------------------------------------------------


def sources() -> dict[str, np.ndarray]:
    """Odd-sized crops of scikit-image's photos (uint8 HWC RGB, or HW gray)."""
    from skimage import data

    coffee = data.coffee()
    big = np.asarray(Image.fromarray(coffee).resize((2003, 1337), Image.LANCZOS))
    return {
        "astronaut": data.astronaut()[:383, :511],  # 511x383
        "coffee": coffee[:399, :597],  # 597x399
        "chelsea": data.chelsea(),  # 451x300
        "rocket": data.rocket(),  # 640x427
        "tall": np.ascontiguousarray(data.chelsea().transpose(1, 0, 2)[:, :299]),  # 299x451
        "page": data.page(),  # 384x191 gray document
        "big": big,  # 2003x1337: downscaling in both directions
        "panorama": np.asarray(Image.fromarray(data.astronaut()[200:320]).resize((2501, 301), Image.LANCZOS)),
        "sliver": np.ascontiguousarray(np.repeat(data.rocket()[:, 200:203], 2, axis=0)),  # 3x854
        "tiny": data.chelsea()[100:105, 200:207],  # 7x5: upscaling by > 100x
    }


def with_alpha(rgb: np.ndarray) -> np.ndarray:
    """RGBA with a diagonal alpha ramp, fully transparent corner and colour under alpha 0 kept."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip((xx / max(w - 1, 1) + yy / max(h - 1, 1)) * 160 - 40, 0, 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


# ---- Hand-written encoders for what Pillow cannot write --------------------------------------------------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pack_row(values: np.ndarray, bits: int, endian: str = ">") -> bytes:
    """One row of samples as stored by PNG and TIFF: 16-bit words, bytes, or MSB-first packed bits."""
    flat = values.reshape(-1)
    if bits == 16:
        return flat.astype(endian + "u2").tobytes()
    if bits == 8:
        return flat.astype(np.uint8).tobytes()
    per_byte = 8 // bits
    padded = np.zeros(-(-len(flat) // per_byte) * per_byte, np.uint8)
    padded[:len(flat)] = flat
    packed = np.zeros(len(padded) // per_byte, np.uint8)
    for i in range(per_byte):
        packed |= (padded[i::per_byte] << (8 - bits * (i + 1))).astype(np.uint8)
    return packed.tobytes()


def _png_rows(samples: np.ndarray, bit_depth: int) -> list[bytes]:
    """Filter-type-0 scanlines of an HxWxC (or HxW) array of sample values."""
    return [b"\x00" + pack_row(row, bit_depth) for row in samples]


def encode_png(samples: np.ndarray, color_type: int, bit_depth: int, *, interlace: bool = False,
               plte: bytes | None = None, trns: bytes | None = None, width: int | None = None,
               height: int | None = None) -> bytes:
    h, w = samples.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w if width is None else width, h if height is None else height, bit_depth,
                       color_type, 0, 0, 1 if interlace else 0)
    if interlace:
        rows = []
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                rows += _png_rows(sub, bit_depth)
    else:
        rows = _png_rows(samples, bit_depth)
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    if plte is not None:
        out += _png_chunk(b"PLTE", plte)
    if trns is not None:
        out += _png_chunk(b"tRNS", trns)
    return out + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + _png_chunk(b"IEND", b"")


def encode_tiff(samples: np.ndarray, bits: int, photometric: int, *, extra: tuple[int, ...] = (),
                planar: int = 1, tile: tuple[int, int] | None = None, colormap: list[int] | None = None,
                big_endian: bool = False) -> bytes:
    """An uncompressed TIFF of an HxW(xC) sample array: strips (one per plane) or tiles, either byte order."""
    e = ">" if big_endian else "<"
    h, w = samples.shape[:2]
    spp = 1 if samples.ndim == 2 else samples.shape[2]
    s3 = samples.reshape(h, w, spp)

    def pack(rows: np.ndarray) -> bytes:
        return b"".join(pack_row(r, bits, e) for r in rows)

    if tile:
        tw, th = tile
        chunks = []
        for ty in range(0, h, th):
            for tx in range(0, w, tw):
                block = np.zeros((th, tw, spp), s3.dtype)
                part = s3[ty:ty + th, tx:tx + tw]
                block[:part.shape[0], :part.shape[1]] = part
                chunks.append(pack(block.reshape(th, tw * spp)))
    elif planar == 2:
        chunks = [pack(s3[:, :, c]) for c in range(spp)]
    else:
        chunks = [pack(s3.reshape(h, w * spp))]
    body = bytearray(8)
    offsets = []
    for c in chunks:
        offsets.append(len(body))
        body += c + b"\x00" * (len(c) % 2)
    SHORT, LONG = 3, 4
    tags = {256: (LONG, [w]), 257: (LONG, [h]), 258: (SHORT, [bits] * spp), 259: (SHORT, [1]),
            262: (SHORT, [photometric]), 277: (SHORT, [spp]), 284: (SHORT, [planar])}
    if tile:
        tags |= {322: (LONG, [tile[0]]), 323: (LONG, [tile[1]]), 324: (LONG, offsets),
                 325: (LONG, [len(c) for c in chunks])}
    else:
        tags |= {273: (LONG, offsets), 278: (LONG, [h]), 279: (LONG, [len(c) for c in chunks])}
    if colormap is not None:
        tags[320] = (SHORT, colormap)
    if extra:
        tags[338] = (SHORT, list(extra))
    ifd_at = len(body)
    external_at = ifd_at + 2 + 12 * len(tags) + 4
    ifd, external = struct.pack(e + "H", len(tags)), b""
    for tag in sorted(tags):
        typ, values = tags[tag]
        raw = b"".join(struct.pack(e + ("H" if typ == SHORT else "I"), v) for v in values)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack(e + "I", external_at + len(external))
            external += raw + b"\x00" * (len(raw) % 2)
        ifd += struct.pack(e + "HHI", tag, typ, len(values)) + field
    ifd += struct.pack(e + "I", 0)
    body[:8] = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", ifd_at)
    return bytes(body) + ifd + external


def encode_bmp(pixels: bytes, width: int, height: int, bits: int, *, compression: int = 0,
               header_size: int = 40, masks: tuple[int, ...] = (), palette: bytes = b"",
               top_down: bool = False) -> bytes:
    """A BMP from ready-made pixel data (rows already padded/ordered as the caller wants)."""
    colors = len(palette) // (3 if header_size == 12 else 4)
    if header_size == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", header_size, width, -height if top_down else height, 1, bits,
                           compression, len(pixels), 2835, 2835, colors, 0)
        extra = b"".join(struct.pack("<I", m) for m in masks)
        if header_size == 40:
            info += extra  # BI_BITFIELDS masks follow a 40-byte header
        else:
            info += extra.ljust(header_size - 40, b"\x00")
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def bmp_rows(rows: list[bytes], top_down: bool) -> bytes:
    """Pads each row to 4 bytes and orders them as BMP stores them."""
    padded = [r + b"\x00" * (-len(r) % 4) for r in rows]
    return b"".join(padded if top_down else padded[::-1])


def pack_nibbles(idx: np.ndarray) -> list[bytes]:
    out = []
    for row in idx:
        r = np.zeros(-(-len(row) // 2) * 2, np.uint8)
        r[:len(row)] = row
        out.append(((r[0::2] << 4) | r[1::2]).astype(np.uint8).tobytes())
    return out


def rle_encode(idx: np.ndarray, rle4: bool) -> bytes:
    """BMP RLE8/RLE4 (bottom-up): runs of equal pixels, absolute runs for noisy stretches, and deltas.

    Every 16th row starts with a 4-pixel delta and one row is skipped entirely by a vertical delta; a
    decoder leaves index 0 there (PIL does, and the expected pixels are PIL's).
    """
    out = bytearray()
    h, w = idx.shape
    skip_row = h // 2
    for y in range(h - 1, -1, -1):
        if y == skip_row:
            continue  # covered by the vertical delta emitted after the previous row
        row = idx[y]
        x = 0
        if (h - 1 - y) % 16 == 0 and w > 8:
            out += bytes([0, 2, 4, 0])  # delta: 4 right, 0 up
            x = 4
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 3 or w - x < 3:
                v = int(row[x])
                out += bytes([run, (v << 4) | v if rle4 else v])
                x += run
            else:
                n = min(w - x, 255)
                lit = [int(v) for v in row[x:x + n]]
                if n < 3:
                    for v in lit:
                        out += bytes([1, (v << 4) | v if rle4 else v])
                else:
                    out += bytes([0, n])
                    if rle4:
                        lit += [0] * (n % 2)
                        data = bytes((lit[i] << 4) | lit[i + 1] for i in range(0, len(lit), 2))
                    else:
                        data = bytes(lit)
                    out += data + b"\x00" * (len(data) % 2)
                x += n
        out += b"\x00\x00"  # end of line
        if y == skip_row + 1:
            out += bytes([0, 2, 0, 1])  # delta: 0 right, 1 up (skips row skip_row)
    out += b"\x00\x01"  # end of bitmap
    return bytes(out)


# A 33x17 YCCK JPEG (Adobe transform 2), which Pillow cannot write: made once with libjpeg-turbo 2.1.5
# (in_color_space JCS_CMYK, jpeg_set_colorspace(JCS_YCCK), quality 90) from C = 7x, M = 15y, Y = xy & 255,
# K = 5(x + y).
YCCK_JPEG = base64.b64decode(
    "/9j/7gAOQWRvYmUAZAAAAAAC/9sAQwADAgIDAgIDAwMDBAMDBAUIBQUEBAUKBwcGCAwKDAwLCgsLDQ4SEA0OEQ4LCxAWEBETFBUV"
    "FQwPFxgWFBgSFBUU/9sAQwEDBAQFBAUJBQUJFA0LDRQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU"
    "FBQUFBQU/8AAFAgAEQAhBAEiAAIRAQMRAQQiAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYHCAkKC//EALUQAAIBAwMCBAMF"
    "BQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RV"
    "VldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh"
    "4uPk5ebn6Onq8fLz9PX29/j5+v/EAB8BAAMBAQEBAQEBAQEAAAAAAAABAgMEBQYHCAkKC//EALURAAIBAgQEAwQHBQQEAAECdwAB"
    "AgMRBAUhMQYSQVEHYXETIjKBCBRCkaGxwQkjM1LwFWJy0QoWJDThJfEXGBkaJicoKSo1Njc4OTpDREVGR0hJSlNUVVZXWFlaY2Rl"
    "ZmdoaWpzdHV2d3h5eoKDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uLj5OXm5+jp"
    "6vLz9PX29/j5+v/aAA4EAQACEQMRBAAAPwD7p1f4qbc/vv1ritX+Lm3d++/WvnDX/ipt3fvv1rzbxB8XNu799+tfYZxhP7Kvpax+"
    "iZ1wBz39w+B/CPhH7nyfpXtfhHwj9z5P0o8I+EfufJ+le1eEfCP3Pk/SvqPV/jJt3fv/ANa4rV/jbt3f6R+tfLtz8RJ9SVpPtIhg"
    "yRvbkn6DvXO6p8S7CyDciVsEFpTuz+HT9K8nBYLPcfSWKi1RovVSm2uZf3Yq7fk3ZNbNn868QcAUotx5LvyQeEfCP3Pk/Sva/CPh"
    "H7nyfpR4R8I/c+T9K9r8I+EfufJ+lfU3/C8v+nj9aK+Q/wDheX/Tx/49RXs/UP8Aqb/+Uv8A7qfmH+oP/Tj+vuOQ/wCER/2P0or2"
    "v/hEf9j9KK9G8R9XryzxL/HRRXs8ffbP9dc06n5f+Ef4K9q8I/wUUVD4l/jryzxH0eiivsuPvtn805p1Pa/CP8Fe1+Ef4KKK3qKK"
    "K/ro/FTvKKKK/9k="
)


# ---- Writing ---------------------------------------------------------------------------------------------------


@dataclass
class Good:
    name: str
    ext: str
    data: bytes
    fmt: str
    lossless: bool


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def good_vectors(src: dict[str, np.ndarray]) -> list[Good]:
    rng = np.random.default_rng(0)
    out: list[Good] = []

    def add(name: str, ext: str, data: bytes, fmt: str, lossless: bool) -> None:
        out.append(Good(name, ext, data, fmt, lossless))

    ast, cof, che, roc = (Image.fromarray(src[k]) for k in ("astronaut", "coffee", "chelsea", "rocket"))
    page = Image.fromarray(src["page"])

    # JPEG
    add("jpeg_baseline_420", "jpg", pil_bytes(ast, "JPEG", quality=90), "jpeg", False)
    add("jpeg_444", "jpg", pil_bytes(che, "JPEG", quality=95, subsampling=0), "jpeg", False)
    add("jpeg_422_odd", "jpg", pil_bytes(Image.fromarray(src["coffee"][:211, :333]), "JPEG", subsampling=1),
        "jpeg", False)
    add("jpeg_progressive", "jpg", pil_bytes(cof, "JPEG", quality=85, progressive=True), "jpeg", False)
    add("jpeg_optimized_restart", "jpg", pil_bytes(roc, "JPEG", quality=75, optimize=True,
                                                   restart_marker_blocks=3), "jpeg", False)
    add("jpeg_cmyk", "jpg", pil_bytes(roc.convert("CMYK"), "JPEG", quality=90), "jpeg", False)
    add("jpeg_ycck", "jpg", YCCK_JPEG, "jpeg", False)
    add("jpeg_gray", "jpg", pil_bytes(page, "JPEG", quality=85), "jpeg", False)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display. PIL (and so we) leave the pixels as stored.
    add("jpeg_exif_orientation", "jpg", pil_bytes(che, "JPEG", quality=90, exif=exif.tobytes()), "jpeg", False)
    add("jpeg_big", "jpg", pil_bytes(Image.fromarray(src["big"]), "JPEG", quality=95), "jpeg", False)
    add("jpeg_panorama", "jpg", pil_bytes(Image.fromarray(src["panorama"]), "JPEG", quality=90), "jpeg", False)
    add("jpeg_tall", "jpg", pil_bytes(Image.fromarray(src["tall"]), "JPEG", quality=80), "jpeg", False)
    add("jpeg_tiny", "jpg", pil_bytes(Image.fromarray(src["tiny"]), "JPEG", quality=90), "jpeg", False)

    # PNG via Pillow
    add("png_rgb", "png", pil_bytes(roc, "PNG"), "png", True)
    add("png_gray", "png", pil_bytes(page, "PNG"), "png", True)
    add("png_gray_alpha", "png", pil_bytes(Image.fromarray(with_alpha(gray(src["astronaut"])),
                                                           "LA"), "PNG"), "png", True)
    add("png_rgba", "png", pil_bytes(Image.fromarray(with_alpha(src["astronaut"]), "RGBA"), "PNG"), "png", True)
    pal = che.quantize(256)
    add("png_palette", "png", pil_bytes(pal, "PNG"), "png", True)
    pal_t = che.quantize(200)
    add("png_palette_trns", "png", pil_bytes(pal_t, "PNG", transparency=bytes([0, 128, 255] * 10)), "png", True)
    add("png_palette_4bit", "png", pil_bytes(cof.quantize(16), "PNG", bits=4), "png", True)
    add("png_1bit", "png", pil_bytes(page.convert("1"), "PNG"), "png", True)
    add("png_big", "png", pil_bytes(Image.fromarray(src["big"]), "PNG", compress_level=1), "png", True)
    add("png_sliver", "png", pil_bytes(Image.fromarray(src["sliver"]), "PNG"), "png", True)
    add("png_tiny", "png", pil_bytes(Image.fromarray(src["tiny"]), "PNG"), "png", True)
    add("png_1x1", "png", pil_bytes(Image.fromarray(src["tiny"][:1, :1]), "PNG"), "png", True)

    # PNG written by hand: 16-bit, sub-byte gray, tRNS on gray/RGB, Adam7, short palette.
    a16 = (src["astronaut"].astype(np.uint16) * 257 + rng.integers(0, 257, src["astronaut"].shape)).astype(
        np.uint16)
    add("png_rgb16", "png", encode_png(a16, 2, 16), "png", True)
    add("png_rgba16", "png", encode_png(np.dstack([a16, a16[..., :1][..., ::-1]]), 6, 16), "png", True)
    g16 = (gray(src["astronaut"]).astype(np.uint16) * 257)
    g16[:100] //= 300  # some values below 256, where PIL's I;16 -> RGB conversion does not saturate
    add("png_gray16", "png", encode_png(g16, 0, 16), "png", True)
    add("png_gray_alpha16", "png", encode_png(np.dstack([g16, g16[:, ::-1]]), 4, 16), "png", True)
    g2 = (gray(src["chelsea"]) >> 6).astype(np.uint8)
    add("png_gray2", "png", encode_png(g2, 0, 2), "png", True)
    add("png_gray4_trns", "png", encode_png((gray(src["chelsea"]) >> 4).astype(np.uint8), 0, 4,
                                            trns=struct.pack(">H", 5)), "png", True)
    add("png_rgb_trns", "png", encode_png(src["coffee"], 2, 8, trns=struct.pack(">HHH", 255, 255, 255)), "png",
        True)
    add("png_interlaced_rgb", "png", encode_png(src["chelsea"], 2, 8, interlace=True), "png", True)
    add("png_interlaced_palette2", "png",
        encode_png((gray(src["tiny"]) >> 6).astype(np.uint8), 3, 2, interlace=True,
                   plte=bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 200, 200, 200])), "png", True)
    short_pal = np.asarray(Image.fromarray(src["chelsea"]).quantize(8))  # indices 0..7, palette of only 6 entries
    add("png_palette_short", "png", encode_png(short_pal, 3, 8, plte=bytes(range(18))), "png", True)

    # WebP
    add("webp_lossy", "webp", pil_bytes(cof, "WEBP", quality=80), "webp", False)
    add("webp_lossless", "webp", pil_bytes(che, "WEBP", lossless=True), "webp", True)
    add("webp_lossy_alpha", "webp", pil_bytes(Image.fromarray(with_alpha(src["astronaut"]), "RGBA"), "WEBP",
                                              quality=70), "webp", False)
    add("webp_lossless_alpha", "webp", pil_bytes(Image.fromarray(with_alpha(src["rocket"]), "RGBA"), "WEBP",
                                                 lossless=True, exact=True), "webp", True)
    add("webp_tiny", "webp", pil_bytes(Image.fromarray(src["tiny"]), "WEBP", quality=90), "webp", False)

    # BMP via Pillow
    add("bmp_rgb24", "bmp", pil_bytes(Image.fromarray(src["coffee"][:211, :333]), "BMP"), "bmp", True)
    add("bmp_palette8", "bmp", pil_bytes(pal, "BMP"), "bmp", True)
    add("bmp_gray8", "bmp", pil_bytes(page, "BMP"), "bmp", True)
    add("bmp_1bit", "bmp", pil_bytes(page.convert("1"), "BMP"), "bmp", True)
    add("bmp_rgba32", "bmp", pil_bytes(Image.fromarray(with_alpha(src["astronaut"]), "RGBA"), "BMP"), "bmp", True)

    # BMP written by hand
    c = src["coffee"][:97, :123]
    h, w = c.shape[:2]
    bgr_rows = [row[:, ::-1].tobytes() for row in c]
    add("bmp_rgb24_topdown", "bmp", encode_bmp(bmp_rows(bgr_rows, True), w, h, 24, top_down=True), "bmp", True)
    add("bmp_os2_rgb24", "bmp", encode_bmp(bmp_rows(bgr_rows, False), w, h, 24, header_size=12), "bmp", True)
    c16 = c.astype(np.uint16)
    p555 = ((c16[..., 0] >> 3) << 10) | ((c16[..., 1] >> 3) << 5) | (c16[..., 2] >> 3)
    add("bmp_rgb555", "bmp", encode_bmp(bmp_rows([r.astype("<u2").tobytes() for r in p555], False), w, h, 16),
        "bmp", True)
    p565 = ((c16[..., 0] >> 3) << 11) | ((c16[..., 1] >> 2) << 5) | (c16[..., 2] >> 3)
    add("bmp_rgb565_bitfields", "bmp",
        encode_bmp(bmp_rows([r.astype("<u2").tobytes() for r in p565], False), w, h, 16, compression=3,
                   masks=(0xF800, 0x7E0, 0x1F)), "bmp", True)
    bgra = np.dstack([c[..., ::-1], np.arange(w * h, dtype=np.uint8).reshape(h, w)])
    add("bmp_bgra32_v5", "bmp",
        encode_bmp(bmp_rows([r.tobytes() for r in bgra], False), w, h, 32, compression=3, header_size=124,
                   masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)), "bmp", True)
    add("bmp_xbgr32_v4", "bmp",
        encode_bmp(bmp_rows([np.hstack([r[:, 3:], r[:, :3]]).tobytes() for r in bgra], True), w, h, 32,
                   compression=3, header_size=108, masks=(0xFF000000, 0xFF0000, 0xFF00, 0), top_down=True),
        "bmp", True)
    q = Image.fromarray(c).quantize(16)
    idx4 = np.asarray(q)
    pal16 = q.getpalette()[:48]
    bmp_pal16 = b"".join(bytes([pal16[i * 3 + 2], pal16[i * 3 + 1], pal16[i * 3], 0]) for i in range(16))
    add("bmp_palette4", "bmp", encode_bmp(bmp_rows(pack_nibbles(idx4), False), w, h, 4, palette=bmp_pal16),
        "bmp", True)
    add("bmp_rle4", "bmp", encode_bmp(rle_encode(idx4, True), w, h, 4, compression=2, palette=bmp_pal16), "bmp",
        True)
    q8 = Image.fromarray(src["page"]).quantize(64)
    idx8 = np.asarray(q8)
    pal8 = q8.getpalette()[:192]
    bmp_pal64 = b"".join(bytes([pal8[i * 3 + 2], pal8[i * 3 + 1], pal8[i * 3], 0]) for i in range(64))
    add("bmp_rle8", "bmp", encode_bmp(rle_encode(idx8, False), idx8.shape[1], idx8.shape[0], 8, compression=1,
                                      palette=bmp_pal64), "bmp", True)

    # TIFF
    add("tiff_rgb_raw", "tif", pil_bytes(che, "TIFF"), "tiff", True)
    add("tiff_rgb_lzw", "tif", pil_bytes(roc, "TIFF", compression="tiff_lzw"), "tiff", True)
    add("tiff_rgba_deflate", "tif", pil_bytes(Image.fromarray(with_alpha(src["astronaut"]), "RGBA"), "TIFF",
                                              compression="tiff_adobe_deflate"), "tiff", True)
    add("tiff_gray_packbits", "tif", pil_bytes(page, "TIFF", compression="packbits"), "tiff", True)
    add("tiff_palette", "tif", pil_bytes(pal, "TIFF", compression="tiff_lzw"), "tiff", True)
    add("tiff_1bit_g4", "tif", pil_bytes(page.convert("1"), "TIFF", compression="group4"), "tiff", True)
    add("tiff_gray16", "tif", pil_bytes(Image.fromarray(g16), "TIFF"), "tiff", True)
    add("tiff_cmyk", "tif", pil_bytes(roc.convert("CMYK"), "TIFF", compression="tiff_lzw"), "tiff", True)
    add("tiff_rgb_deflate", "tif", pil_bytes(cof, "TIFF", compression="tiff_adobe_deflate"), "tiff", True)
    # TIFF written by hand: layouts Pillow does not write.
    add("tiff_rgb_tiled", "tif", encode_tiff(src["chelsea"], 8, 2, tile=(48, 32)), "tiff", True)
    add("tiff_rgb_planar", "tif", encode_tiff(src["coffee"], 8, 2, planar=2), "tiff", True)
    add("tiff_rgb16_bigendian", "tif", encode_tiff(a16, 16, 2, big_endian=True), "tiff", True)
    add("tiff_gray_miniswhite", "tif", encode_tiff(gray(src["chelsea"]), 8, 0), "tiff", True)
    add("tiff_gray4", "tif", encode_tiff((gray(src["chelsea"]) >> 4).astype(np.uint8), 4, 1), "tiff", True)
    rgba = with_alpha(src["astronaut"]).astype(np.uint32)
    premultiplied = np.dstack([(rgba[..., :3] * rgba[..., 3:] + 127) // 255, rgba[..., 3:]]).astype(np.uint8)
    add("tiff_rgba_associated", "tif", encode_tiff(premultiplied, 8, 2, extra=(1,)), "tiff", True)
    cmap = [int(v) * 257 for v in q.getpalette()[0:48:3]] + [int(v) * 257 for v in q.getpalette()[1:48:3]] + \
        [int(v) * 257 for v in q.getpalette()[2:48:3]]
    add("tiff_palette4", "tif", encode_tiff(idx4, 4, 3, colormap=cmap), "tiff", True)
    add("tiff_jpeg", "tif", pil_bytes(che, "TIFF", compression="jpeg", quality=90), "tiff", False)
    return out


def bad_vectors(goods: dict[str, bytes]) -> tuple[list[tuple[str, str, bytes, str, str]],
                                                  list[tuple[str, str, bytes]]]:
    """Broken files as (name, ext, bytes, why, expected message substring), and oversized headers as
    (name "<kind>_<w>x<h>", ext, bytes)."""
    rng = np.random.default_rng(1)
    jpg, png, webp = goods["jpeg_baseline_420"], goods["png_rgb"], goods["webp_lossy"]
    prog, tif, bmp = goods["jpeg_progressive"], goods["tiff_rgb_lzw"], goods["bmp_rgb24"]

    def patch_png_ihdr(data: bytes, w: int, h: int) -> bytes:
        ihdr = bytearray(data[12:29])  # tag + 13 bytes
        ihdr[4:12] = struct.pack(">II", w, h)
        return data[:8] + struct.pack(">I", 13) + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF) + \
            data[33:]

    def patch_jpeg_sof(data: bytes, w: int, h: int) -> bytes:
        i = 2
        while True:
            marker, seg_len = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
            i += 2 + seg_len

    def patch_bmp(data: bytes, w: int, h: int) -> bytes:
        return data[:18] + struct.pack("<ii", w, h) + data[26:]

    return [
        ("empty", "bin", b"", "zero bytes", "empty"),
        ("random_bytes", "bin", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "no known signature",
         "unrecognized"),
        ("text", "txt", b"GIF is not here; this is just text that happens to be long enough\n" * 4, "not an image",
         "unrecognized"),
        ("gif", "gif", pil_bytes(Image.new("RGB", (8, 8)), "GIF"), "GIF is not a supported format", "gif"),
        ("jpeg_truncated", "jpg", jpg[:len(jpg) // 2], "half of a baseline JPEG", "truncated"),
        ("jpeg_progressive_truncated", "jpg", prog[:len(prog) * 2 // 3], "progressive JPEG cut inside its scans",
         "truncated"),
        ("jpeg_header_only", "jpg", jpg[:20], "SOI and part of APP0", "jpeg"),
        ("jpeg_garbage_after_soi", "jpg", b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(),
         "SOI, APP0 marker, then random bytes", "jpeg"),
        ("jpeg_zero_height", "jpg", patch_jpeg_sof(jpg, 64, 0), "SOF claims 64x0", "jpeg"),
        ("png_truncated", "png", png[:len(png) // 2], "half of a PNG", "png"),
        ("png_signature_only", "png", png[:8], "just the PNG signature", "png"),
        ("png_bad_crc", "png", png[:29] + bytes([png[29] ^ 0xFF]) + png[30:], "IHDR checksum byte flipped", "crc"),
        ("png_corrupt_idat", "png", png[:60] + bytes([png[60] ^ 0xFF]) + png[61:], "a compressed IDAT byte flipped",
         "png"),
        ("png_zero_width", "png", patch_png_ihdr(png, 0, 16), "IHDR claims 0x16", "png"),
        ("webp_truncated", "webp", webp[:len(webp) // 2], "half of a lossy WebP", "webp"),
        ("tiff_truncated", "tif", tif[:len(tif) // 2], "half of an LZW TIFF", "tiff"),
        ("bmp_truncated", "bmp", bmp[:len(bmp) // 2], "half of a 24-bit BMP", "bmp"),
        ("bmp_zero_width", "bmp", patch_bmp(bmp, 0, 211), "header claims 0x211", "bmp"),
        ("bmp_bad_bits", "bmp", bmp[:28] + struct.pack("<H", 7) + bmp[30:], "7 bits per pixel", "bmp"),
    ], [
        ("jpeg_30000x30000", "jpg", patch_jpeg_sof(jpg[:2000], 30000, 30000)),
        ("png_30000x30000", "png", patch_png_ihdr(png[:2000], 30000, 30000)),
        ("bmp_30000x30000", "bmp", patch_bmp(bmp[:2000], 30000, 30000)),
        ("webp_16383x16383", "webp", vp8l_header(16383, 16383)),
        ("tiff_30000x30000", "tif", tiff_header(30000, 30000)),
    ]


RESIZE_CASES = [  # (in w, in h, out w, out h)
    (5, 40, 768, 768), (40, 5, 768, 768), (3, 854, 768, 768), (854, 3, 768, 768), (1, 1, 17, 9),
    (300, 200, 97, 61), (200, 300, 61, 97), (300, 200, 400, 100), (200, 300, 100, 400), (123, 77, 123, 31),
    (123, 77, 31, 77), (123, 77, 200, 77), (123, 77, 123, 200), (64, 64, 128, 128), (256, 256, 64, 64),
    (255, 257, 256, 256), (257, 255, 256, 256), (1000, 30, 200, 40), (30, 1000, 40, 200), (2, 2, 3, 1),
    (641, 479, 768, 768), (479, 641, 768, 768), (600, 1001, 768, 768),
]


def resize_vectors(tmp: Path) -> list[dict]:
    rng = np.random.default_rng(2)
    out = []
    for w, h, ow, oh in RESIZE_CASES:
        name = f"noise_{w}x{h}_to_{ow}x{oh}"
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (tmp / "expected" / f"{name}.in.rgb").write_bytes(img.tobytes())
        resized = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BICUBIC))
        (tmp / "expected" / f"{name}.out.rgb").write_bytes(resized.tobytes())
        out.append({"name": name, "input": f"expected/{name}.in.rgb", "width": w, "height": h,
                    "output": f"expected/{name}.out.rgb", "out_width": ow, "out_height": oh})
    return out


def vp8l_header(w: int, h: int) -> bytes:
    """A lossless WebP whose header claims w x h, followed by no image data."""
    bits = (w - 1) | ((h - 1) << 14)  # 14-bit width-1, 14-bit height-1, alpha 0, version 0
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def tiff_header(w: int, h: int) -> bytes:
    """A little-endian baseline RGB TIFF claiming w x h, with one tiny strip."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 200), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, n) + (struct.pack("<HH", v, 0) if typ == 3 else struct.pack("<I", v))
        for tag, typ, n, v in entries) + struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd
    return data.ljust(216, b"\x00")


# ---- Main ------------------------------------------------------------------------------------------------------


def build_processor():
    """CLIPImageProcessor as Florence-2 configures it (tests/tools/conftest.py hf_processor), PIL backend."""
    try:  # transformers >= 5 picks a torchvision backend for CLIPImageProcessor when torchvision is installed;
        from transformers import CLIPImageProcessorPil as Processor  # the PIL one is the reference
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    arch = preset("tiny")  # preprocessing is identical for every size
    proc = Processor(do_resize=True, size={"height": arch.image_size, "width": arch.image_size}, resample=3,
                     do_center_crop=False, do_rescale=True, rescale_factor=arch.rescale_factor, do_normalize=True,
                     image_mean=arch.image_mean, image_std=arch.image_std, do_convert_rgb=None)
    assert getattr(proc, "backend", "pil") == "pil", f"expected the PIL backend, got {proc.backend}"
    return proc, arch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    args = ap.parse_args(argv)

    import PIL
    import transformers

    proc, arch = build_processor()
    # Pillow warns that a palette image with tRNS should become RGBA; convert("RGB") dropping it is the point.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "inputs").mkdir(parents=True)
    (tmp / "expected").mkdir()

    src = sources()
    goods = good_vectors(src)
    index: dict = {"size": arch.image_size, "rescale_factor": arch.rescale_factor, "mean": arch.image_mean,
                   "std": arch.image_std,
                   "versions": {"pillow": PIL.__version__, "transformers": transformers.__version__,
                                "numpy": np.__version__, "processor": type(proc).__name__},
                   "good": [], "bad": [], "oversized": [], "resize": resize_vectors(tmp)}
    done: set[str] = set()
    pv_bytes: dict[str, bytes] = {}
    sizes_done: set[tuple[int, int]] = set()
    for g in goods:
        path = tmp / "inputs" / f"{g.name}.{g.ext}"
        path.write_bytes(g.data)
        with Image.open(path) as im:
            mode = im.mode
            rgb_img = im.convert("RGB")
        rgb = np.asarray(rgb_img)
        key = hashlib.sha1(struct.pack("<II", *rgb_img.size) + rgb.tobytes()).hexdigest()[:16]
        entry = {"name": g.name, "file": f"inputs/{path.name}", "format": g.fmt, "lossless": g.lossless,
                 "pil_mode": mode, "width": rgb_img.width, "height": rgb_img.height, "rgb": f"expected/{key}.rgb"}
        if key not in done:
            done.add(key)
            (tmp / "expected" / f"{key}.rgb").write_bytes(rgb.tobytes())
            pv = proc(images=rgb_img, return_tensors="np")["pixel_values"][0]
            assert pv.shape == (3, arch.image_size, arch.image_size) and pv.dtype == np.float32, pv.shape
            pv_bytes[key] = pv.astype("<f4").tobytes()
        entry["pixel_values_sha256"] = hashlib.sha256(pv_bytes[key]).hexdigest()
        if rgb_img.size not in sizes_done:
            sizes_done.add(rgb_img.size)
            (tmp / "expected" / f"{key}.f32").write_bytes(pv_bytes[key])
            entry["pixel_values"] = f"expected/{key}.f32"
        index["good"].append(entry)

    bad, oversized = bad_vectors({g.name: g.data for g in goods})
    for name, ext, data, why, message in bad:
        (tmp / "inputs" / f"{name}.{ext}").write_bytes(data)
        index["bad"].append({"name": name, "file": f"inputs/{name}.{ext}", "why": why, "message": message})
    for name, ext, data in oversized:
        (tmp / "inputs" / f"{name}.{ext}").write_bytes(data)
        w, h = (int(v) for v in name.split("_")[1].split("x"))
        index["oversized"].append({"name": name, "file": f"inputs/{name}.{ext}", "width": w, "height": h})

    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {len(index['good'])} images ({len(done)} distinct, {len(sizes_done)} sizes), "
          f"{len(index['bad'])} broken and "
          f"{len(index['oversized'])} oversized inputs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
