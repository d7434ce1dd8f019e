#!/usr/bin/env python3
"""C++ runtime (florence2-run) vs transformers generate(), same machine, weights, image and settings.

  .venv/bin/python bench/generate_vs_transformers.py --model models/florence2-base-random \
      --runner build/engine/florence2-run [--repeats 3] [--out bench/results/generate.json]

Scenarios (random weights never stop on their own, so lengths are forced with min = max new tokens):
caption greedy 32 tokens; OD beam=3 128 tokens. Each side runs in its own process (first run = warm-up);
reported: median end-to-end latency per request (image bytes/PIL image -> parsed result), the ratio
C++ / transformers (< 1 = C++ faster), peak RSS of each process, and whether both produced the same tokens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = [("caption_greedy_32", "<CAPTION>", "caption", 1, 32),
             ("od_beam3_128", "<OD>", "od", 3, 128)]


def run_measured(cmd: list[str]) -> tuple[str, float]:
    """Runs cmd; returns its stdout and its own peak RSS in MiB (os.wait4 gives that child's rusage)."""
    import os
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {err.read().decode()[-2000:]}")
        return out.read().decode(), usage.ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--runner", type=Path, default=REPO / "build" / "engine" / "florence2-run")
    ap.add_argument("--image", type=Path, default=None, help="default: scikit-image's astronaut as JPEG")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="both sides' torch device: cpu, cuda")
    ap.add_argument("--hf-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="transformers' dtype (ours runs in the export's dtype)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "generate.json")
    args = ap.parse_args()
    image = args.image
    if image is None:
        from PIL import Image
        from skimage import data
        image = args.out.parent / "astronaut.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()).save(image, quality=90)
    rows = []
    for name, prompt, task, beams, n in SCENARIOS:
        # Separate processes, run one after the other, so each peak RSS is its own.
        hf_out, hf_rss = run_measured([sys.executable, str(REPO / "bench" / "hf_generate_worker.py"),
                                  "--model", str(args.model), "--image", str(image), "--prompt", prompt,
                                  "--num-beams", str(beams), "--new-tokens", str(n), "--repeats", str(args.repeats),
                                  "--threads", str(args.threads),
                                  "--device", args.device, "--dtype", args.hf_dtype])
        hf = json.loads(hf_out.strip().splitlines()[-1])
        cpp_out, cpp_rss = run_measured([str(args.runner), "--model", str(args.model), "--task", task,
                                   "--num-beams", str(beams), "--max-new-tokens", str(n), "--min-new-tokens", str(n),
                                   "--threads", str(args.threads), "--device", args.device] + [str(image)] * (args.repeats + 1))
        runs = [json.loads(line) for line in cpp_out.strip().splitlines()]
        cpp_lat = [r["timings_ms"]["total"] for r in runs[1:]]
        row = {
            "scenario": name, "num_beams": beams, "new_tokens": n,
            "transformers_ms": statistics.median(hf["latency_ms"]),
            "cpp_ms": statistics.median(cpp_lat),
            "same_tokens": runs[-1]["token_ids"] == hf["tokens"],
            "transformers_peak_rss_mib": round(hf_rss),
            "cpp_peak_rss_mib": round(cpp_rss),
        }
        row["ratio_cpp_over_transformers"] = round(row["cpp_ms"] / row["transformers_ms"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"scenarios": rows, "device": args.device, "hf_dtype": args.hf_dtype}
    if args.device == "cpu":
        gf = subprocess.run([sys.executable, str(REPO / "bench" / "matmul_gflops.py")], capture_output=True,
                            text=True)
        result["matmul"] = json.loads(gf.stdout)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
