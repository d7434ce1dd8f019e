#!/usr/bin/env python3
"""Compile a Florence-2 model to torch.export + AOTInductor packages for the CPU (tools/florence2/aoti.py).

  florence2_export_aoti.py --model-dir models/florence2-base-random            # -> models/.../aoti/*.pt2
  florence2_export_aoti.py --model-dir models/florence2-base-random --out /tmp/base-aoti
  florence2_export_aoti.py --random tiny --seed 0 --out /tmp/tiny-aoti           # same weights as
                                                                                 # florence2_export.py --random

Writes <out>/{image_features,encode,cross_kv,decode_step}.pt2 and nothing else: the model directory's
config.json, tokenizer and manifest stay as florence2_export.py wrote them. Float32 weights only. Compiling runs
g++ over the generated code (minutes for base); --methods compiles a subset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tools.florence2 import aoti  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.model import Florence2ForServing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="a float32 model directory written by florence2_export.py")
    src.add_argument("--random", choices=["tiny", "base", "large"], help="seeded random weights of this config")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    ap.add_argument("--out", type=Path, help="package directory (default: <model-dir>/aoti; required with --random)")
    ap.add_argument("--methods", default=",".join(aoti.METHODS), help="comma-separated subset of the methods")
    ap.add_argument("--threads", type=int, default=0,
                    help="OpenMP threads compiled into the generated kernels: the serving host's intra-op thread "
                         "count (default: this machine's torch.get_num_threads())")
    ap.add_argument("--compile-threads", type=int, default=1,
                    help="inductor's parallel compile workers (default 1: the build machine is shared)")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(aoti.METHODS))
    if unknown:
        ap.error(f"unknown methods {unknown}; expected some of {list(aoti.METHODS)}")
    if args.model_dir is not None:
        out = args.out or args.model_dir / aoti.AOTI_SUBDIR
        try:
            arch, model = aoti.from_model_dir(args.model_dir)
        except (OSError, ValueError) as e:
            print(f"florence2_export_aoti: {e}", file=sys.stderr)
            return 2
    else:
        if args.out is None:
            ap.error("--random needs --out")
        out = args.out
        source = exp.source_random(args.random, args.seed)
        arch = source.arch
        model = Florence2ForServing(arch).eval()
        exp.random_init(model, args.seed)

    torch._inductor.config.compile_threads = args.compile_threads
    reports = aoti.compile_all(model, arch, out, methods=methods, threads=args.threads, log=print)
    total = sum(r.export_s + r.compile_s for r in reports)
    print(f"wrote {len(reports)} packages to {out} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
