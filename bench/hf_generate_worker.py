#!/usr/bin/env python3
"""One process timing transformers' generate() on a model directory's weights (the baseline side of
bench/generate_vs_transformers.py). Prints one JSON line: per-run latencies and tokens."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

import hf_florence  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--num-beams", type=int, required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device of the model: cpu, cuda")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf, processor = hf_florence.load(args.model, args.device, getattr(torch, args.dtype))
    image = Image.open(args.image).convert("RGB")
    latencies, tokens = [], None
    for i in range(args.repeats + 1):  # first run warms up
        t0 = time.perf_counter()
        inputs = processor(text=args.prompt, images=image, return_tensors="pt")
        out = hf_florence.generate(hf, inputs, args.num_beams, args.new_tokens, args.new_tokens)
        tokens = out[0].tolist()  # on a GPU, waits for the result
        dt = (time.perf_counter() - t0) * 1000
        if i:
            latencies.append(dt)
    print(json.dumps({"latency_ms": latencies, "tokens": tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
