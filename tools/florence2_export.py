#!/usr/bin/env python3
"""Export Florence-2 to a florence-serve model directory.

  florence2_export.py --random base --seed 0 --out models/florence2-base-random
  florence2_export.py --from-pretrained ./Florence-2-base-ft --lora ./my-adapter --dtype float16 --out models/ft
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.weights import CheckpointError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-pretrained", metavar="PATH_OR_HUB_ID",
                     help="a save_pretrained directory (native or original layout) or a hub id")
    src.add_argument("--random", choices=["tiny", "base", "large"], help="seeded random weights of this config")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    ap.add_argument("--lora", type=Path, metavar="ADAPTER_DIR", help="PEFT LoRA adapter merged into the weights")
    ap.add_argument("--dtype", choices=sorted(exp.WEIGHT_FORMATS), default="float32",
                    help="weights: a float dtype, or int8 (opt-in, CPU only: int8 linear layers, float32 elsewhere)")
    ap.add_argument("--vision-dtype", choices=sorted(exp.DTYPES), default=None,
                    help="the vision tower's dtype, when it should differ from --dtype's (opt-in, e.g. bfloat16 "
                         "beside int8 on a CPU with AMX-BF16; default: the weights' dtype, float32 for int8)")
    ap.add_argument("--out", type=Path, required=True, help="output model directory (replaced if it exists)")
    ap.add_argument("--cache-dir", type=Path, default=Path(__file__).resolve().parent.parent / ".cache",
                    help="where registry downloads for the tokenizer are kept")
    args = ap.parse_args(argv)
    try:
        source = (exp.source_pretrained(args.from_pretrained) if args.from_pretrained
                  else exp.source_random(args.random, args.seed))
        out = exp.export(source, args.out, dtype=args.dtype, seed=args.seed, lora=args.lora,
                         cache_dir=args.cache_dir, vision_dtype=args.vision_dtype)
    except CheckpointError as e:
        print(f"florence2_export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
