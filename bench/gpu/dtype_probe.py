#!/usr/bin/env python3
"""On a GPU: the exported graph methods of two or more model directories (e.g. the float32 and bfloat16 exports
of the same weights) timed side by side, and the CUDA kernels that dominate a decode step in each.

  python3 bench/gpu/dtype_probe.py DIR [DIR ...] [--device cuda] [--rows 1,12,48]

Per model: image_features at batch 1 and 8; decode_step at each row count, laid out as the server's KV pool
(views of pool-sized caches, beams of 3 sharing a cross row, position 150, 590 real encoder positions); then
torch.profiler over 5 decode steps at the middle row count: the top CUDA kernels by total time. Prints JSON lines.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from baselines import median_ms  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    return median_ms(fn, 7, warmup=2, sync=sync)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", default="1,12,48")
    args = ap.parse_args()
    dev = torch.device(args.device)
    rows_list = [int(r) for r in args.rows.split(",")]
    for model_dir in args.models:
        config = json.loads((model_dir / "config.json").read_text())
        model = torch.jit.load(str(model_dir / "model.ts"), map_location=dev).eval()
        size = int(config["preprocess"]["size"])
        line: dict = {"model": model_dir.name, "dtype": config["dtype"]}
        with torch.inference_mode():
            for b in (1, 8):
                px = torch.randn(b, 3, size, size, device=dev)
                line[f"image_features_b{b}_ms"] = round(timed(lambda: model.image_features(px)), 2)
            probe = model.empty_self_cache(1, 1)
            layers, _, heads, _, head_dim = probe.shape
            cap, self_len, cross_len, enc, pos = max(rows_list), int(config["decoder"]["max_positions"]), 833, 590, 150
            self_k, self_v = model.empty_self_cache(cap, self_len), model.empty_self_cache(cap, self_len)
            cross_k = torch.randn(layers, cap, heads, cross_len, head_dim, dtype=probe.dtype, device=dev)
            cross_v = torch.randn_like(cross_k)
            mask = torch.zeros(cap, cross_len, dtype=torch.long, device=dev)
            mask[:, :enc] = 1

            def step(rows: int):
                groups = -(-rows // 3)
                cross_rows = torch.arange(groups, device=dev).repeat_interleave(3)[:rows]
                ids = torch.randint(4, 50000, (rows,), device=dev)
                positions = torch.full((rows,), pos, device=dev)
                view = (slice(None), slice(0, rows), slice(None), slice(0, pos + 1))
                cview = (slice(None), slice(0, groups), slice(None), slice(0, enc))
                return lambda: model.decode_step(ids, positions, self_k[view], self_v[view], cross_k[cview],
                                                 cross_v[cview], mask[:groups, :enc], cross_rows)

            for rows in rows_list:
                line[f"decode_step_{rows}_rows_ms"] = round(timed(step(rows)), 2)
            print(json.dumps(line), flush=True)
            mid = rows_list[len(rows_list) // 2]
            fn = step(mid)
            activities = [torch.profiler.ProfilerActivity.CPU]
            if dev.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(5):
                    fn()
                sync()
            events = [e for e in prof.key_averages() if e.device_time_total > 0]
            events.sort(key=lambda e: e.device_time_total, reverse=True)
            print(json.dumps({"model": model_dir.name, "rows": mid, "steps": 5,
                              "cuda_total_ms": round(sum(e.self_device_time_total for e in events) / 1000, 2),
                              "top_kernels": [(e.key[:90], round(e.self_device_time_total / 1000, 2), e.count)
                                              for e in sorted(events, key=lambda e: e.self_device_time_total,
                                                              reverse=True)[:6]]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
