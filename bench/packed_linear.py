#!/usr/bin/env python3
"""florence::packed_linear (engine/ops/) against oneDNN's prepacked GEMM (what pack_for_cpu used before, and
still uses on CPUs it does not recommend the kernel for) and torch's plain linear, on the linear layers of one
decode step of the base model: per decoder layer self q|k|v (768 -> 2304), self out, cross q, cross out
(768 -> 768), fc1 (768 -> 3072), fc2 (3072 -> 768), then lm_head (768 -> 51289); each layer's weights distinct
(355 MB in all), so they come from memory as in a real step. For each row count the paths alternate round by
round; prints the median milliseconds of a step's linears per path, the florence kernel's GFLOP/s and weight
bytes per second, and its speed-up over each other path.

  .venv/bin/python bench/packed_linear.py [--rows 1,3,8,16,32,54] [--layers 6] [--threads 2] [--repeats 15]
      [--paths florence,onednn,plain]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.florence2 import ops  # noqa: E402

D, FFN, VOCAB = 768, 3072, 51289
# (out, in) of one decoder layer's decode-step linears, as pack_for_cpu packs them.
LAYER_SHAPES = [(3 * D, D), (D, D), (D, D), (D, D), (FFN, D), (D, FFN)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,3,8,16,32,54")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--paths", default="florence,onednn,plain", help="any of florence, onednn, plain")
    args = ap.parse_args()
    print(json.dumps({"packed_linear_kernel": ops.load(require_native=True),
                      "recommended": ops.linear_kernel(), "threads": args.threads}), flush=True)
    torch.set_num_threads(args.threads)
    paths = args.paths.split(",")
    gen = torch.Generator().manual_seed(0)
    shapes = LAYER_SHAPES * args.layers + [(VOCAB, D)]
    weights = [(torch.randn(o, i, generator=gen) / i ** 0.5, torch.randn(o, generator=gen)) for o, i in shapes]
    packed = {
        "florence": [torch.ops.florence.pack_linear(w) for w, _ in weights],
        "onednn": [torch.ops.mkldnn._reorder_linear_weight(w, 32) for w, _ in weights],  # pack_for_cpu's hint
        "plain": [w for w, _ in weights],
    }
    flop_per_row = sum(2 * o * i for o, i in shapes)
    weight_bytes = sum(4 * o * i for o, i in shapes)

    def step(path: str, inputs: dict[int, torch.Tensor]) -> None:
        for (w, b), p in zip(weights, packed[path]):
            x = inputs[w.shape[1]]
            if path == "florence":
                torch.ops.florence.packed_linear(x, p, b, w.shape[0])
            elif path == "onednn":
                torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], "none")
            else:
                F.linear(x, p, b)

    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            inputs = {D: torch.randn(rows, D, generator=gen), FFN: torch.randn(rows, FFN, generator=gen)}
            times: dict[str, list[float]] = {p: [] for p in paths}
            for path in paths:  # warm-up
                step(path, inputs)
            for round_index in range(args.repeats):
                for path in (paths if round_index % 2 == 0 else paths[::-1]):
                    t0 = time.perf_counter()
                    step(path, inputs)
                    times[path].append((time.perf_counter() - t0) * 1000)
            ms = {p: statistics.median(t) for p, t in times.items()}
            line = {"rows": rows, **{f"{p}_ms": round(ms[p], 2) for p in paths}}
            if "florence" in paths:
                line["florence_gflops"] = round(flop_per_row * rows / ms["florence"] / 1e6, 1)
                line["florence_weight_gb_s"] = round(weight_bytes / ms["florence"] / 1e6, 1)
                for p in paths:
                    if p != "florence":
                        line[f"speedup_vs_{p}"] = round(ms[p] / ms["florence"], 2)
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
