#!/usr/bin/env python3
"""Parity figure of an opt-in reduced-precision export against fp32 on the same weights.

  .venv/bin/python bench/precision_parity.py --model models/florence2-base-random-bf16 [--new-tokens 64]
  .venv/bin/python bench/precision_parity.py --model models/florence2-base-random-int8 \
      --reference models/florence2-base-random

float16/bfloat16 exports:
transformers' Florence-2 holds the export's (rounded) weights twice: in fp32 and cast to the export's dtype.
For caption, OD and OCR-with-region on three images, the fp32 model's greedy generation (lengths forced) is fed
back to both as decoder input (teacher forcing, so one early flip cannot change every later position), and the
two logit tensors are compared position by position: top-1 agreement, the fp32 top-1/top-2 margin (how close the
decisions were), and the logit error relative to the logits' spread. Prints one line per case and a total.
Random weights give near-flat next-token distributions (small margins): a pessimistic case for any precision.

int8 exports (``--dtype int8``, our own Int8Linear scheme, which transformers has no twin of; with or without a
``--vision-dtype bfloat16`` tower) are compared with the float32 export they were made from (``--reference``,
same source and seed), both run through the artefacts' own prefill and decode_step, with the same teacher forcing
and figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from conftest import hf_model_from_state, hf_processor, processor_inputs  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2 import generate as G  # noqa: E402
from tools.florence2.config import Florence2Arch  # noqa: E402

CASES = (("astronaut.jpg", "<CAPTION>"), ("coffee.png", "<OD>"), ("page.tiff", "<OCR_WITH_REGION>"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a float16, bfloat16 or int8 export")
    ap.add_argument("--reference", type=Path, help="int8 only: the float32 export of the same weights")
    ap.add_argument("--images", type=Path, default=REPO / "bench" / "results" / "images")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.loads((args.model / "config.json").read_text())
    if cfg["dtype"] == "int8":
        if args.reference is None:
            ap.error("an int8 export is compared with its float32 export: pass --reference DIR")
        return int8_parity(args)
    dtype = exp.DTYPES[cfg["dtype"]]
    arch = Florence2Arch.from_json(cfg["architecture"])
    state = {k: v.float() for k, v in torch.jit.load(str(args.model / exp.MODEL_FILE)).state_dict().items()}
    ref = hf_model_from_state(arch, state)
    low = hf_model_from_state(arch, state).to(dtype)
    processor = hf_processor(args.model)
    agree = total = 0
    for name, prompt in CASES:
        image = Image.open(args.images / name).convert("RGB")
        inputs = processor(text=prompt, images=image, return_tensors="pt")
        with torch.inference_mode():
            out = ref.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, decoder_start_token_id=2, forced_bos_token_id=0,
                               forced_eos_token_id=2, no_repeat_ngram_size=3)
            decoder_ids = out[:, :-1]
            l_ref = ref(**inputs, decoder_input_ids=decoder_ids).logits[0]
            cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
            l_low = low(**cast, decoder_input_ids=decoder_ids).logits[0].float()
        a, n = report_case(name, prompt, l_ref, l_low)
        agree, total = agree + a, total + n
    print(json.dumps({"dtype": cfg["dtype"], "teacher_forced_top1_agreement": round(agree / total, 4),
                      "positions": total}))
    return 0


def report_case(name: str, prompt: str, l_ref: torch.Tensor, l_low: torch.Tensor) -> tuple[int, int]:
    """Prints one case's figures (logits [positions, V]); returns (top-1 agreements, positions)."""
    same = l_ref.argmax(-1) == l_low.argmax(-1)
    top2 = l_ref.topk(2, dim=-1).values
    rel = ((l_low - l_ref).abs().max(-1).values / l_ref.std(-1)).mean().item()
    print(json.dumps({"image": name, "task": prompt, "top1_agree": int(same.sum()), "positions": same.numel(),
                      "median_top1_top2_margin": round((top2[:, 0] - top2[:, 1]).median().item(), 4),
                      "max_logit_error_over_logit_std": round(rel, 4)}), flush=True)
    return int(same.sum()), same.numel()


def int8_parity(args) -> int:
    ref = torch.jit.load(str(args.reference / exp.MODEL_FILE)).eval()
    low = torch.jit.load(str(args.model / exp.MODEL_FILE)).eval()
    processor = hf_processor(args.model)
    agree = total = 0
    for name, prompt in CASES:
        px, _, text = processor_inputs(processor, prompt, Image.open(args.images / name).convert("RGB"))
        with torch.inference_mode():
            req_ref, req_low = G.prefill(ref, px, text), G.prefill(low, px, text)
            p = G.GenerationParams(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=1)
            tokens = G.generate(ref, req_ref, p).tokens
            a, n = report_case(name, prompt, G.teacher_forced_logits(ref, req_ref, tokens),
                               G.teacher_forced_logits(low, req_low, tokens))
        agree, total = agree + a, total + n
    vision = json.loads((args.model / "config.json").read_text()).get("vision_dtype", "float32")
    print(json.dumps({"dtype": "int8", "vision_dtype": vision, "reference": str(args.reference),
                      "teacher_forced_top1_agreement": round(agree / total, 4), "positions": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
