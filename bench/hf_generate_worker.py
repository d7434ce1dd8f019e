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

from conftest import hf_model_from_state, hf_processor  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.config import Florence2Arch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--num-beams", type=int, required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads((args.model / "config.json").read_text())
    arch = Florence2Arch.from_json(cfg["architecture"])
    state = torch.jit.load(str(args.model / exp.MODEL_FILE)).state_dict()
    hf = hf_model_from_state(arch, state)
    del state
    processor = hf_processor(args.model)
    image = Image.open(args.image).convert("RGB")
    latencies, tokens = [], None
    for i in range(args.repeats + 1):  # first run warms up
        t0 = time.perf_counter()
        inputs = processor(text=args.prompt, images=image, return_tensors="pt")
        with torch.inference_mode():
            out = hf.generate(**inputs, do_sample=False, num_beams=args.num_beams, no_repeat_ngram_size=3,
                              max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, early_stopping=True,
                              decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2)
        dt = (time.perf_counter() - t0) * 1000
        if i:
            latencies.append(dt)
        tokens = out[0].tolist()
    print(json.dumps({"latency_ms": latencies, "tokens": tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
