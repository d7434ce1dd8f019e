#!/usr/bin/env python3
"""Reference values for the C++ engine smoke test (tests/engine/torchscript_smoke_test.cc).

  make_smoke_fixture.py --model build/models/tiny --out build/models/tiny_smoke.pt

Loads DIR/model.ts with torch.jit.load (the artefact the C++ engine loads, not the eager model), runs
image_features -> encode -> cross_kv -> two decode_step calls on deterministic inputs, and writes inputs and
outputs as buffers of a scripted container module (torch.jit.save), which LibTorch reads with torch::jit::load
and named_buffers(). The module also carries ``model_sha256`` (the manifest's checksum of model.ts) so the test
can refuse a fixture made from another model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.florence2.export import INTERFACE_VERSION  # noqa: E402

PROMPT_IDS = [0, 2264, 473, 5, 2274, 6190, 116, 2]  # "<s>What does the image describe?</s>"
CACHE_LEN = 4  # self-attention cache length: two steps written, two left untouched
IMAGE_SEED = 0


class TensorBundle(nn.Module):
    """Named tensors as buffers plus one string attribute; scriptable, so C++ can load it."""

    def __init__(self, tensors: dict[str, Tensor], model_sha256: str):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.detach().cpu().contiguous())
        self.model_sha256 = model_sha256

    def forward(self) -> str:
        return self.model_sha256


def compute(model: torch.jit.ScriptModule) -> dict[str, Tensor]:
    """Runs the exported interface the way the C++ test does; returns inputs and outputs by name."""
    gen = torch.Generator().manual_seed(IMAGE_SEED)
    pixel_values = torch.randn(1, 3, 768, 768, generator=gen)
    input_ids = torch.tensor([PROMPT_IDS], dtype=torch.long)
    with torch.inference_mode():
        features = model.image_features(pixel_values)
        mask = torch.ones(1, features.shape[1] + input_ids.shape[1], dtype=torch.long)
        encoder_hidden = model.encode(features, input_ids, mask)
        cross_k, cross_v = model.cross_kv(encoder_hidden)
        self_k = model.empty_self_cache(1, CACHE_LEN)
        self_v = model.empty_self_cache(1, CACHE_LEN)
        step_ids = torch.tensor([2, 0], dtype=torch.long)  # decoder start </s>, then forced <s>
        logits = []
        for pos in range(2):
            logits.append(model.decode_step(step_ids[pos:pos + 1], torch.tensor([pos], dtype=torch.long),
                                            self_k, self_v, cross_k, cross_v, mask,
                                            torch.zeros(1, dtype=torch.long)))
    return {
        "pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": mask, "step_ids": step_ids,
        "image_features": features, "encoder_hidden": encoder_hidden, "cross_k": cross_k, "cross_v": cross_v,
        "logits_step0": logits[0], "logits_step1": logits[1], "self_k": self_k, "self_v": self_v,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model directory written by florence2_export.py")
    ap.add_argument("--out", type=Path, required=True, help="fixture file to write (TorchScript container)")
    args = ap.parse_args(argv)

    config = json.loads((args.model / "config.json").read_text())
    if config.get("interface_version") != INTERFACE_VERSION:
        print(f"make_smoke_fixture: {args.model} has interface_version {config.get('interface_version')}, "
              f"this tool knows {INTERFACE_VERSION}", file=sys.stderr)
        return 2
    model_file = config["model_file"]
    manifest = json.loads((args.model / "manifest.json").read_text())
    model = torch.jit.load(str(args.model / model_file), map_location="cpu").eval()

    bundle = torch.jit.script(TensorBundle(compute(model), manifest["files"][model_file]["sha256"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bundle.save(str(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
