#!/usr/bin/env python3
"""Reference generations for the C++ search tests (tests/engine/generation/).

  generation_vectors.py --model build/models/tiny --out-dir build/models/generation

Writes ``eos_model/`` (the same tiny model with its EOS embedding row scaled so that sequences stop at
varied lengths, exercising early stopping and finished-beam rules) and ``vectors.pt``: a TorchScript
container whose buffers are the processed images, prompt ids, and transformers' ``generate()`` output
(tokens, beam sequence score) for each case, greedy and beam=3, no_repeat_ngram_size=3.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from conftest import hf_model_from_state, hf_processor, processor_inputs, real_images  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.config import preset  # noqa: E402

CASES = [  # (model index, image, prompt, num_beams, max_new_tokens)
    (0, "astronaut", "<CAPTION>", 1, 64), (0, "astronaut", "<CAPTION>", 3, 64),
    (0, "coffee", "<OD>", 3, 64), (0, "page", "<OCR_WITH_REGION>", 1, 64),
    (0, "page", "<OCR_WITH_REGION>", 3, 64),
    (0, "coffee", "<REGION_TO_SEGMENTATION><loc_702><loc_575><loc_866><loc_772>", 3, 64),
    (1, "astronaut", "<CAPTION>", 1, 48), (1, "astronaut", "<CAPTION>", 3, 48),
    (1, "coffee", "<OD>", 1, 48), (1, "coffee", "<OD>", 3, 48),
    (1, "page", "<OCR_WITH_REGION>", 3, 48), (1, "page", "<OPEN_VOCABULARY_DETECTION>wheels", 3, 48),
]
EOS_SCALE = float(__import__("os").environ.get("EOS_SCALE", "150"))


class TensorBundle(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.detach().cpu().contiguous())

    def forward(self) -> int:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    arch = preset("tiny")
    state = torch.jit.load(str(args.model / exp.MODEL_FILE)).state_dict()
    eos_state = {k: v.clone() for k, v in state.items()}
    eos_state["model.language_model.shared.weight"][2] *= EOS_SCALE
    eos_state["lm_head.weight"] = eos_state["model.language_model.shared.weight"]
    exp.export(exp.Source(arch, eos_state, {"weights": "random", "note": "tiny, EOS row scaled for tests"}, None),
               args.out_dir / "eos_model", cache_dir=REPO / ".cache")
    models = [hf_model_from_state(arch, state), hf_model_from_state(arch, eos_state)]
    processor = hf_processor(args.model)
    images = real_images()

    tensors: dict[str, torch.Tensor] = {}
    image_index: dict[str, int] = {}
    for i, (m, image, prompt, beams, max_new) in enumerate(CASES):
        px, full, text = processor_inputs(processor, prompt, images[image])
        if image not in image_index:
            image_index[image] = len(image_index)
            tensors[f"image{image_index[image]}"] = px
        with torch.no_grad():
            out = models[m].generate(
                input_ids=full, pixel_values=px, attention_mask=torch.ones_like(full), do_sample=False,
                max_new_tokens=max_new, num_beams=beams, no_repeat_ngram_size=3, early_stopping=True,
                length_penalty=1.0, decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2,
                return_dict_in_generate=True, output_scores=True)
        tensors[f"case{i}_meta"] = torch.tensor([m, image_index[image], beams, max_new, 3])
        tensors[f"case{i}_input_ids"] = text
        tensors[f"case{i}_expected"] = out.sequences[0]
        score = out.sequences_scores[0] if beams > 1 else torch.tensor(float("nan"))
        tensors[f"case{i}_score"] = score.reshape(1).float()
    tensors["num_cases"] = torch.tensor([len(CASES)])
    torch.jit.save(torch.jit.script(TensorBundle(tensors)), str(args.out_dir / "vectors.pt"))
    lengths = sorted({len(t) for k, t in tensors.items() if k.endswith("_expected")})
    print(f"wrote {len(CASES)} cases to {args.out_dir}; sequence lengths {lengths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
