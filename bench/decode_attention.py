#!/usr/bin/env python3
"""florence::decode_attention (engine/ops/) against torch's SDPA on the attention of one decode step: every
decoder layer's self-attention (--rows rows, one query each, at --position in a 1024-position pool) and
cross-attention (the rows' requests, --beams query rows each, --encoder-len positions in an 833-position pool),
each layer's tensors distinct, so the K/V come from memory as in a real step. Calls alternate between the two
paths round by round; prints the median milliseconds of each and the K/V bytes read per second.

  .venv/bin/python bench/decode_attention.py [--rows 32] [--beams 3] [--position 150] [--encoder-len 590]
      [--layers 6] [--threads 2] [--repeats 30]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--position", type=int, default=150)
    ap.add_argument("--encoder-len", type=int, default=590)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    kernel = ops.load(require_native=True)
    torch.set_num_threads(args.threads)
    layers, heads, dim, rows = args.layers, args.heads, 64, args.rows
    groups = -(-rows // args.beams)
    scale = dim ** -0.5
    with torch.inference_mode():
        cross_k = torch.randn(layers, groups, heads, 833, dim)[:, :, :, :args.encoder_len]
        cross_v = torch.randn(layers, groups, heads, 833, dim)[:, :, :, :args.encoder_len]
        cross_q = torch.randn(groups, args.beams, heads, dim).transpose(1, 2)
        cross_mask = torch.ones(groups, args.encoder_len, dtype=torch.bool)
        self_k = torch.randn(layers, rows, heads, 1024, dim)
        self_v = torch.randn(layers, rows, heads, 1024, dim)
        self_q = torch.randn(rows, heads, 1, dim)
        self_mask = torch.arange(1024).unsqueeze(0) <= torch.full((rows, 1), args.position)
        n = args.position + 1

        def fused() -> None:
            for i in range(layers):
                torch.ops.florence.decode_attention(cross_q, cross_k[i], cross_v[i], cross_mask, scale)
                torch.ops.florence.decode_attention(self_q, self_k[i], self_v[i], self_mask, scale)

        def sdpa() -> None:  # as decode_step ran it before: the self cache narrowed to the occupied positions
            for i in range(layers):
                F.scaled_dot_product_attention(cross_q, cross_k[i], cross_v[i],
                                               attn_mask=cross_mask[:, None, None, :], scale=scale)
                F.scaled_dot_product_attention(self_q, self_k[i, :, :, :n], self_v[i, :, :, :n],
                                               attn_mask=self_mask[:, None, None, :n], scale=scale)

        paths = {"fused": fused, "sdpa": sdpa}
        times: dict[str, list[float]] = {p: [] for p in paths}
        for r in range(args.repeats + 2):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                t0 = time.perf_counter()
                paths[name]()
                if r >= 2:
                    times[name].append((time.perf_counter() - t0) * 1000)
    kv_bytes = layers * 2 * 4 * dim * heads * (groups * args.encoder_len + rows * n)
    ms = {p: statistics.median(t) for p, t in times.items()}
    print(json.dumps({"kernel": kernel, "rows": rows, "requests": groups, "layers": layers,
                      "kv_mb": round(kv_bytes / 1e6), "fused_ms": round(ms["fused"], 1),
                      "sdpa_ms": round(ms["sdpa"], 1), "speedup": round(ms["sdpa"] / ms["fused"], 2),
                      "fused_gb_per_s": round(kv_bytes / ms["fused"] / 1e6, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
