"""Exports the location-prone copy of a random model (see tools/e2e_vectors.py export_loc_prone): random tiny
weights mostly generate words, so structured results come out empty; this copy mixes words, <loc_N> groups
and early EOS, so boxes, quads and polygons (and their streaming) get exercised.

    python tools/loc_prone_model.py --model build/models/tiny --out-dir build/models
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_vectors import export_loc_prone  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    export_loc_prone(args.model, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
