#!/usr/bin/env python3
"""Cost of one exported `decode_step` against the number of decoder rows, laid out as the server's KV pool lays
them out: rows are views of pool tensors sized for the model's full decoder length and `577 + 256` encoder
positions, the beams of one request (3 by default) share one cross-attention row, every row at `--position`.

  .venv/bin/python bench/decode_step.py --model models/florence2-base-random [--rows 1,3,12,27,48]
      [--position 150] [--beams 3] [--threads 2] [--paths plain,cpu_prepack,onednn,sdpa]
      [--int8 models/florence2-base-random-int8]

Each path is its own load of the artefact: `plain` as exported, `cpu_prepack` after `pack_for_cpu` (what the
engine does on CPU by default: prepacked linears, on an AVX2-only CPU through florence::packed_linear, attention
through florence::decode_attention), `onednn` the same with the attribute `decode_linear` set to "onednn" before
packing (the decoder's and lm_head's linears on oneDNN's prepacked GEMM, as before florence::packed_linear),
`sdpa` cpu_prepack with the attribute `fused_decode_attention` off (attention through torch's SDPA); with
`--int8 DIR`, also `int8`: that directory's `--dtype int8` export of the same
weights, as the engine runs it. The paths are timed in turn, row count by row count, round after round (which
path goes first alternating), so a drift of the machine hits both alike. Prints one JSON line per path and row
count: milliseconds per step (median over --repeats rounds, after 2 warm-up steps), the ratio to the path's
first row count (of the medians, and `paired_ratio_to_first`: the median of the round-by-round ratios) and, for cpu_prepack, the speed-up over plain, onednn and sdpa. Random cache contents: the cost does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.florence2 import ops  # noqa: E402  (registers florence::decode_attention, which artefacts call)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "florence2-base-random")
    ap.add_argument("--rows", default="1,3,12,27,48")
    ap.add_argument("--position", type=int, default=150)
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--encoder-len", type=int, default=590, help="real encoder positions per request")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--paths", default="plain,cpu_prepack,sdpa", help="any of plain, cpu_prepack, onednn, sdpa")
    ap.add_argument("--int8", type=Path, help="an int8 export of the same weights: adds the path int8")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    print(json.dumps({"decode_attention_kernel": ops.load(require_native=True),
                      "packed_linear_kernel": ops.linear_kernel()}), flush=True)
    config = json.loads((args.model / "config.json").read_text())
    paths = args.paths.split(",") + (["int8"] if args.int8 else [])
    models = {}
    for path in paths:
        models[path] = torch.jit.load(str((args.int8 if path == "int8" else args.model) / "model.ts")).eval()
        if path == "onednn":
            models[path].decode_linear = "onednn"
        if path != "plain" and not models[path].pack_for_cpu(32):
            raise SystemExit("pack_for_cpu declined: the artefact is not float32 on the CPU")
        if path == "sdpa":
            models[path].fused_decode_attention = False
    rows_list = [int(r) for r in args.rows.split(",")]
    cap = max(rows_list)
    with torch.inference_mode():
        probe = models[paths[0]].empty_self_cache(1, 1)
        layers, _, heads, _, head_dim = probe.shape
        self_len = int(config["decoder"]["max_positions"])  # the server pool's row length
        cross_len = int(config["num_image_tokens"]) + 256     # 577 image tokens + --max_prompt_tokens
        self_k = models[paths[0]].empty_self_cache(cap, self_len)
        self_v = models[paths[0]].empty_self_cache(cap, self_len)
        cross_k = torch.randn(layers, cap, heads, cross_len, head_dim, dtype=probe.dtype)
        cross_v = torch.randn_like(cross_k)
        mask = torch.zeros(cap, cross_len, dtype=torch.long)
        mask[:, :args.encoder_len] = 1

        def step_fn(model, rows):
            groups = -(-rows // args.beams)
            cross_rows = torch.arange(groups).repeat_interleave(args.beams)[:rows]
            ids = torch.randint(4, 50000, (rows,))
            pos = torch.full((rows,), args.position)
            view = (slice(None), slice(0, rows), slice(None), slice(0, args.position + 1))
            cview = (slice(None), slice(0, groups), slice(None), slice(0, args.encoder_len))
            return lambda: model.decode_step(ids, pos, self_k[view], self_v[view], cross_k[cview], cross_v[cview],
                                             mask[:groups, :args.encoder_len], cross_rows)

        steps = {(path, rows): step_fn(models[path], rows) for path in paths for rows in rows_list}
        for step in steps.values():
            for _ in range(2):
                step()
        times = {key: [] for key in steps}
        for round_index in range(args.repeats):
            for rows in rows_list:
                # The paths share the cache tensors, so whichever runs second finds some of them in cache:
                # alternate which goes first.
                for path in (paths if round_index % 2 == 0 else paths[::-1]):
                    t0 = time.perf_counter()
                    steps[(path, rows)]()
                    times[(path, rows)].append((time.perf_counter() - t0) * 1000)
        ms = {key: statistics.median(t) for key, t in times.items()}
        # The same ratio round by round (each row count's step timed seconds after the first row count's, in the
        # same round), then the median: a drift of the VM between rounds cancels out of it.
        paired = {(path, rows): statistics.median(a / b for a, b in zip(times[(path, rows)],
                                                                        times[(path, rows_list[0])]))
                  for path in paths for rows in rows_list}
        for path in paths:
            for rows in rows_list:
                line = {"path": path, "rows": rows, "requests": -(-rows // args.beams), "position": args.position,
                        "ms": round(ms[(path, rows)], 1),
                        "ratio_to_first": round(ms[(path, rows)] / ms[(path, rows_list[0])], 2),
                        "paired_ratio_to_first": round(paired[(path, rows)], 2),
                        "threads": args.threads}
                if path == "cpu_prepack" and "sdpa" in paths:
                    line["speedup_vs_sdpa"] = round(ms[("sdpa", rows)] / ms[(path, rows)], 2)
                if path == "cpu_prepack" and "onednn" in paths:
                    line["speedup_vs_onednn"] = round(ms[("onednn", rows)] / ms[(path, rows)], 2)
                if path != "plain" and "plain" in paths:
                    line["speedup_vs_plain"] = round(ms[("plain", rows)] / ms[(path, rows)], 2)
                if path == "int8" and "cpu_prepack" in paths:
                    line["speedup_vs_cpu_prepack"] = round(ms[("cpu_prepack", rows)] / ms[(path, rows)], 2)
                print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
