"""Shared fixtures: exported artefacts and transformers' reference model on the same random weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools.florence2 import export as exp
from tools.florence2.config import Florence2Arch, preset, to_hf_config_dict

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"

# Every task prompt transformers' Florence2Processor knows, with a valid input where one is required.
TASK_PROMPTS = [
    "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>", "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>",
    "<CAPTION_TO_PHRASE_GROUNDING>A green car parked in front of a yellow building.",
    "<REFERRING_EXPRESSION_SEGMENTATION>a car",
    "<REGION_TO_SEGMENTATION><loc_702><loc_575><loc_866><loc_772>",
    "<OPEN_VOCABULARY_DETECTION>wheels",
    "<REGION_TO_CATEGORY><loc_52><loc_332><loc_932><loc_774>",
    "<REGION_TO_DESCRIPTION><loc_52><loc_332><loc_932><loc_774>",
    "<REGION_TO_OCR><loc_100><loc_100><loc_900><loc_300>",
]


def real_images() -> dict[str, Image.Image]:
    """Photographs and a document page bundled with scikit-image (no download)."""
    from skimage import data

    return {
        "astronaut": Image.fromarray(data.astronaut()),          # 512x512 RGB photo
        "coffee": Image.fromarray(data.coffee()),                # 600x400 RGB photo
        "chelsea": Image.fromarray(data.chelsea()),              # 451x300 RGB photo
        "page": Image.fromarray(data.page()).convert("RGB"),     # 191x384 grayscale scanned text
        "rocket": Image.fromarray(data.rocket()),                # 427x640 RGB photo
    }


def hf_processor(model_dir: Path):
    from transformers import AutoTokenizer, Florence2Processor
    from transformers.models.clip import CLIPImageProcessorPil

    arch = preset("tiny")  # preprocessing is identical for every size
    # The PIL backend: Florence-2's slow processor (PIL bicubic), which the C++ preprocessing reproduces.
    image_processor = CLIPImageProcessorPil(
        do_resize=True, size={"height": arch.image_size, "width": arch.image_size}, resample=3,
        do_center_crop=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=arch.image_mean, image_std=arch.image_std, do_convert_rgb=None)
    image_processor.image_seq_length = arch.num_image_tokens()
    return Florence2Processor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(model_dir))


def hf_model_from_state(arch: Florence2Arch, state: dict[str, torch.Tensor]):
    """transformers' native Florence-2 holding exactly ``state`` (our names are its names)."""
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    hf = Florence2ForConditionalGeneration(Florence2Config(**to_hf_config_dict(arch))).eval()
    sd = {k: v for k, v in state.items() if k != "final_logits_bias"}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"model.language_model.encoder.embed_tokens.weight",
                            "model.language_model.decoder.embed_tokens.weight"}, missing
    assert torch.equal(hf.lm_head.weight, state["model.language_model.shared.weight"])
    return hf


@dataclass
class Artefact:
    name: str
    arch: Florence2Arch
    dir: Path
    scripted: torch.jit.ScriptModule
    hf: object
    processor: object


def make_artefact(tmp_root: Path, name: str, seed: int) -> Artefact:
    out = exp.export(exp.source_random(name, seed), tmp_root / f"{name}-{seed}", seed=seed, cache_dir=CACHE)
    scripted = torch.jit.load(str(out / exp.MODEL_FILE)).eval()
    arch = preset(name)
    return Artefact(name, arch, out, scripted, hf_model_from_state(arch, scripted.state_dict()), hf_processor(out))


def decoder_under_test(art: Artefact, packed: bool) -> torch.jit.ScriptModule:
    """The artefact as the engine runs it: with ``packed``, a fresh load on which the engine's CPU start-up
    call ``pack_for_cpu`` has run (oneDNN-prepacked decode weights), else the plain artefact."""
    if not packed:
        return art.scripted
    module = torch.jit.load(str(art.dir / exp.MODEL_FILE)).eval()
    assert module.pack_for_cpu(32), "a float32 CPU artefact must accept pack_for_cpu"
    return module


def int8_twin(art: Artefact) -> torch.jit.ScriptModule:
    """The ``--dtype int8`` export of the artefact's source (same preset and seed), loaded as the engine runs it
    (pack_for_cpu done: its float32 vision tower prepacked). Exported once, next to the artefact."""
    out = art.dir.parent / f"{art.dir.name}-int8"
    if not (out / "manifest.json").is_file():
        seed = int(art.dir.name.rsplit("-", 1)[1])
        exp.export(exp.source_random(art.name, seed), out, dtype="int8", seed=seed, cache_dir=CACHE)
    module = torch.jit.load(str(out / exp.MODEL_FILE)).eval()
    assert module.pack_for_cpu(32), "an int8 CPU artefact prepacks its float32 vision tower"
    return module


@pytest.fixture(scope="session")
def tiny_artefacts(tmp_path_factory) -> list[Artefact]:
    root = tmp_path_factory.mktemp("tiny")
    return [make_artefact(root, "tiny", seed) for seed in (0, 1)]


@pytest.fixture(scope="session")
def images() -> dict[str, Image.Image]:
    return real_images()


def processor_inputs(processor, prompt: str, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixel_values, full native input_ids with <image> slots, text ids ``<s> prompt </s>``)."""
    enc = processor(text=prompt, images=image, return_tensors="pt")
    full = enc["input_ids"]
    text = full[:, (full[0] != processor.image_token_id).nonzero()[0, 0]:]
    return enc["pixel_values"], full, text


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def stack_cross(reqs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Several prefilled requests' (generate.EncodedRequest) cross K/V and masks as one decode_step batch, one
    cross row each, padded to the longest encoder length; asserts the real lengths differ (masking is exercised)."""
    s_enc = max(r.cross_k.shape[3] for r in reqs)
    assert len({int(r.cross_mask.sum()) for r in reqs}) > 1, "prompts should give different encoder lengths"

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0, 0, s_enc - t.shape[3]))

    cross_mask = torch.cat([torch.nn.functional.pad(r.cross_mask, (0, s_enc - r.cross_mask.shape[1])) for r in reqs])
    cross_k = torch.cat([pad(r.cross_k) for r in reqs], dim=1)
    return cross_k, torch.cat([pad(r.cross_v) for r in reqs], dim=1), cross_mask


def decode_logits(module, steps: int = 24) -> torch.Tensor:
    """Logits of ``steps`` decode steps of 5 rows (3 beams of one request and 2 of another, the second's encoder
    row padded), fed fixed random tokens, so that the variants of one artefact compared (packings, attention
    kernels) see the same inputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        feats = module.image_features(torch.randn(2, 3, 768, 768, generator=gen))
        ids = torch.randint(3, 500, (2, 9), generator=gen)
        mask = torch.ones(2, feats.shape[1] + 9, dtype=torch.long)
        mask[1, -4:] = 0
        cross_k, cross_v = module.cross_kv(module.encode(feats, ids, mask))
        rows = torch.tensor([0, 0, 0, 1, 1])
        tokens = torch.randint(3, 500, (steps, 5), generator=gen)
        self_k, self_v = module.empty_self_cache(5, 32), module.empty_self_cache(5, 32)
        out = [module.decode_step(tokens[pos], torch.full((5,), pos), self_k, self_v, cross_k, cross_v, mask, rows)
               for pos in range(steps)]
    return torch.stack(out)
