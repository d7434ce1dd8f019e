"""transformers' Florence-2 on a florence-serve model directory's weights, for the baselines in bench/.

`load(model_dir)` gives transformers' `Florence2ForConditionalGeneration` holding exactly the exported state dict
(in fp32; a reduced-precision export's rounded values, an int8 export's weights dequantized) and the Florence-2
processor; `generate()` runs it with
the reference decoding settings and the given lengths.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from conftest import hf_model_from_state, hf_processor  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.config import Florence2Arch  # noqa: E402


def load(model_dir: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The model on `device` in `dtype` (the weights are loaded in fp32, then cast: fp16 on a GPU is what a
    Florence-2 user runs there) and the processor."""
    cfg = json.loads((model_dir / "config.json").read_text())
    arch = Florence2Arch.from_json(cfg["architecture"])
    state = {k: v.float() for k, v in
             torch.jit.load(str(model_dir / exp.MODEL_FILE), map_location="cpu").state_dict().items()}
    model = hf_model_from_state(arch, dequantized(state))
    if device != "cpu" or dtype != torch.float32:
        model = model.to(device=device, dtype=dtype)
    return model, hf_processor(model_dir)


def to_model(inputs: Any, model: Any) -> dict[str, torch.Tensor]:
    """Processor outputs onto the model's device; pixel values in its dtype (as a user does for fp16)."""
    out = {}
    for k, v in dict(inputs).items():
        if torch.is_floating_point(v):
            v = v.to(device=model.device, dtype=model.dtype)
        out[k] = v.to(model.device)
    return out


def dequantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An int8 export's state dict (model.Int8Linear: ``weight_int8``, ``weight_scale``, an empty ``weight``) with
    each int8 weight back in float32 (int8 value x its channel's scale) under its nn.Linear name; lm_head is left
    to its tie with the float32 token embedding. Other state dicts come back as they are."""
    out = {k: v for k, v in state.items() if not k.endswith((".weight_int8", ".weight_scale"))}
    for key, w in state.items():
        if key.endswith(".weight_int8"):
            base = key[: -len("_int8")]
            out[base] = w * state[base + "_scale"].unsqueeze(1)
    if "lm_head.weight_int8" in state:
        out["lm_head.weight"] = state["model.language_model.shared.weight"]
    return out


def generate(model: Any, inputs: dict[str, torch.Tensor], beams: int, max_new: int, min_new: int) -> torch.Tensor:
    """generate() as Florence-2's reference decoding (no_repeat_ngram 3, forced BOS/EOS, early stopping)."""
    with torch.inference_mode():
        return model.generate(**to_model(inputs, model), do_sample=False, num_beams=beams, no_repeat_ngram_size=3,
                              max_new_tokens=max_new, min_new_tokens=min_new, early_stopping=True,
                              decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=2)
