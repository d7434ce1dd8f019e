"""Writes the real test images the server suites send: photographs and a scanned page bundled with
scikit-image (no download), encoded as the files a client would send.

    python tools/test_images.py --out build/test_images
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image
from skimage import data

# name -> (file, PIL save options)
FILES = {
    "astronaut": ("astronaut.jpg", {"format": "JPEG", "quality": 90}),  # 512x512 photo
    "coffee": ("coffee.png", {"format": "PNG"}),                       # 600x400 photo
    "chelsea": ("chelsea.webp", {"format": "WEBP", "quality": 80}),    # 451x300 photo
    "rocket": ("rocket.bmp", {"format": "BMP"}),                       # 640x427 photo
    "page": ("page.tiff", {"format": "TIFF", "compression": "tiff_lzw"}),  # 191x384 scanned text
}


def images() -> dict[str, Image.Image]:
    return {
        "astronaut": Image.fromarray(data.astronaut()),
        "coffee": Image.fromarray(data.coffee()),
        "chelsea": Image.fromarray(data.chelsea()),
        "rocket": Image.fromarray(data.rocket()),
        "page": Image.fromarray(data.page()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in images().items():
        file_name, options = FILES[name]
        buf = io.BytesIO()
        image.save(buf, **options)
        (args.out / file_name).write_bytes(buf.getvalue())
    print(f"wrote {len(FILES)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
