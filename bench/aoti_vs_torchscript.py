#!/usr/bin/env python3
"""The AOTInductor packages (tools/florence2_export_aoti.py) against the TorchScript artefact they were compiled
from, method by method, on the CPU.

  .venv/bin/python bench/aoti_vs_torchscript.py --model models/florence2-base-random \\
      --aoti models/florence2-base-random-aoti [--rows 1,8,32] [--threads 2] [--repeats 7]

Paths: `ts_plain` (the artefact as exported), `ts_prepack` (after `pack_for_cpu(32)`, what the engine runs on the
CPU) and `aoti` (the four .pt2 packages); more AOTI builds with `--aoti-extra NAME=DIR`. Cases: image_features at
batch 1, encode of one image and a `--prompt-len` prompt, cross_kv of that, and decode_step at each `--rows` count
laid out as the server lays them out (beams of `--beams` share a cross row; self cache `--position` + 1 long, cross
`--encoder-len` long, contiguous). Each round times every path once per case, the path order rotating between
rounds, so drift of a shared machine hits every path alike; the table shows per-case medians over `--repeats`
rounds (a decode measurement is the mean of `--inner` calls) and the ratio to ts_prepack. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.florence2 import aoti  # noqa: E402


def load_paths(args) -> dict[str, object]:
    paths: dict[str, object] = {}
    paths["ts_plain"] = torch.jit.load(str(args.model / "model.ts")).eval()
    packed = torch.jit.load(str(args.model / "model.ts")).eval()
    if not packed.pack_for_cpu(32):
        raise SystemExit("pack_for_cpu declined: the artefact is not float32 on the CPU")
    paths["ts_prepack"] = packed
    paths["aoti"] = aoti.AotiModel(args.aoti or args.model / "aoti")
    for spec in args.aoti_extra:
        name, _, directory = spec.partition("=")
        directory = Path(directory)
        paths[name] = aoti.AotiModel(directory, [m for m in aoti.METHODS if (directory / f"{m}.pt2").is_file()])
    return paths


def make_cases(args, config: dict, ts) -> dict[str, tuple]:
    """case name -> (method, args factory, calls per measurement). The factory returns fresh inputs (decode_step
    writes its cache in place; the same position each call, so every call does the same work)."""
    gen = torch.Generator().manual_seed(0)
    size = config["preprocess"]["size"]
    n_img = int(config["num_image_tokens"])
    px = torch.randn(1, 3, size, size, generator=gen)
    feats = ts.image_features(px)
    ids = torch.randint(4, 50000, (1, args.prompt_len), generator=gen)
    ids[0, 0], ids[0, -1] = 0, 2
    mask = torch.ones(1, n_img + args.prompt_len, dtype=torch.long)
    enc = ts.encode(feats, ids, mask)
    cases: dict[str, tuple] = {
        "image_features b=1": ("image_features", lambda: (px,), 1),
        f"encode b=1 T={args.prompt_len}": ("encode", lambda: (feats, ids, mask), 1),
        f"cross_kv b=1 S={enc.shape[1]}": ("cross_kv", lambda: (enc,), 1),
    }
    layers, heads, hd = (config["decoder"][k] for k in ("layers", "heads", "head_dim"))
    for rows in args.rows:
        groups = -(-rows // args.beams)
        cross_k = torch.randn(layers, groups, heads, args.encoder_len, hd, generator=gen)
        cross_v = torch.randn_like(cross_k)
        cross_mask = torch.ones(groups, args.encoder_len, dtype=torch.long)
        cross_rows = torch.arange(groups).repeat_interleave(args.beams)[:rows].contiguous()
        self_k = torch.randn(layers, rows, heads, args.position + 1, hd, generator=gen)
        self_v = torch.randn_like(self_k)
        tokens = torch.randint(4, 50000, (rows,), generator=gen)
        positions = torch.full((rows,), args.position, dtype=torch.long)
        cases[f"decode_step rows={rows}"] = (
            "decode_step",
            lambda t=tokens, p=positions, k=self_k, v=self_v, ck=cross_k, cv=cross_v, m=cross_mask, r=cross_rows:
            (t, p, k, v, ck, cv, m, r),
            args.inner)
    return cases


def fmt(x: float, digits: int) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def runs(path, method: str) -> bool:
    return not isinstance(path, aoti.AotiModel) or path.has(method)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "florence2-base-random")
    ap.add_argument("--aoti", type=Path, default=None,
                    help="the packages (default: MODEL/aoti, where tools/florence2_export_aoti.py --model-dir puts them)")
    ap.add_argument("--aoti-extra", action="append", default=[], metavar="NAME=DIR",
                    help="another AOTI package directory to time (e.g. a different inductor config); may hold a "
                         "subset of the methods")
    ap.add_argument("--rows", default="1,8,32")
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--position", type=int, default=150)
    ap.add_argument("--encoder-len", type=int, default=590, help="encoder positions per cross row")
    ap.add_argument("--prompt-len", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=5, help="decode_step calls per measurement")
    ap.add_argument("--json", type=Path, help="also write the raw per-round times here")
    args = ap.parse_args()
    args.rows = [int(r) for r in args.rows.split(",")]

    torch.set_num_threads(args.threads)
    config = json.loads((args.model / "config.json").read_text())
    with torch.inference_mode():
        paths = load_paths(args)
        cases = make_cases(args, config, paths["ts_plain"])
        names = list(paths)
        times: dict[str, dict[str, list[float]]] = {c: {p: [] for p in names} for c in cases}
        for case, (method, make_args, calls) in cases.items():
            for p in [p for p in names if runs(paths[p], method)]:  # warm-up: allocations, kernels, weights paged in
                for _ in range(2):
                    getattr(paths[p], method)(*make_args())
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for case, (method, make_args, calls) in cases.items():
                for p in [p for p in order if runs(paths[p], method)]:
                    fn = getattr(paths[p], method)
                    call_args = make_args()
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn(*call_args)
                    times[case][p].append((time.perf_counter() - t0) / calls * 1e3)
            print(f"round {r + 1}/{args.repeats} done", file=sys.stderr)

    medians = {c: {p: statistics.median(v) if v else float("nan") for p, v in per.items()} for c, per in times.items()}
    print(f"\n{args.threads} threads, medians of {args.repeats} alternating rounds, ms per call "
          f"(decode: mean of {args.inner} calls; position {args.position}, {args.beams} beams per cross row, "
          f"encoder length {args.encoder_len}); x = time / ts_prepack time\n")
    header = "| case | " + " | ".join(names) + " | " + " | ".join(f"{p} x" for p in names if p != "ts_prepack")
    print(header + " |")
    print("|" + "---|" * (1 + 2 * len(names) - 1))
    for case, per in medians.items():
        ratios = [fmt(per[p] / per["ts_prepack"], 2) for p in names if p != "ts_prepack"]
        print(f"| {case} | " + " | ".join(fmt(per[p], 1) for p in names) + " | " + " | ".join(ratios) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "times_ms": times},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
