"""Checkpoint loading: native and original state-dict layouts, validation, LoRA merging."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from .config import CheckpointError

# Original remote-code names (microsoft/Florence-2-*) -> native names (florence-community/*), FLORENCE2.md 1.8.
_ORIGINAL_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r"^vision_tower\.convs\.(\d+)\.proj\.", r"model.vision_tower.convs.\1.conv."),
    (r"^vision_tower\.convs\.(\d+)\.norm\.", r"model.vision_tower.convs.\1.norm."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.conv([12])\.fn\.dw\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.conv\4."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block)\.window_attn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.\3.norm1."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(channel_block)\.channel_attn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.\3.norm1."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial_block\.window_attn|channel_block\.channel_attn)\.fn\.",
     r"model.vision_tower.blocks.\1.\2.\3."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.ffn\.norm\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.norm2."),
    (r"^vision_tower\.blocks\.(\d+)\.(\d+)\.(spatial|channel)_block\.ffn\.fn\.net\.",
     r"model.vision_tower.blocks.\1.\2.\3_block.ffn."),
    (r"^image_projection$", r"model.multi_modal_projector.image_projection.weight"),
    (r"^image_proj_norm\.", r"model.multi_modal_projector.image_proj_norm."),
    (r"^image_pos_embed\.", r"model.multi_modal_projector.image_position_embed."),
    (r"^visual_temporal_embed\.", r"model.multi_modal_projector.visual_temporal_embed."),
    (r"^language_model\.model\.", r"model.language_model."),
    (r"^language_model\.lm_head\.", r"lm_head."),
    (r"^language_model\.final_logits_bias$", r"final_logits_bias"),
]]

# Tied copies of the shared embedding that the serving model does not store separately.
_TIED = ("model.language_model.encoder.embed_tokens.weight", "model.language_model.decoder.embed_tokens.weight",
         "lm_head.weight")


def detect_layout(keys) -> str:
    keys = list(keys)
    if any(k.startswith("model.vision_tower.") for k in keys):
        return "native"
    if any(k.startswith("vision_tower.convs.") for k in keys):
        return "original"
    raise CheckpointError("state dict has neither 'model.vision_tower.*' (transformers' native Florence-2) nor "
                          "'vision_tower.convs.*' (original remote code) keys: not a Florence-2 checkpoint")


def original_key_to_native(key: str) -> str:
    for pattern, repl in _ORIGINAL_RULES:
        new, n = pattern.subn(repl, key)
        if n:
            return new
    return key


def to_native(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Returns the state dict in native naming and the layout it came in."""
    layout = detect_layout(state_dict.keys())
    if layout == "native":
        return dict(state_dict), layout
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = original_key_to_native(key)
        if new == "model.multi_modal_projector.image_projection.weight":
            value = value.t().contiguous()  # original stores [C4, d] used as x @ W
        out[new] = value
    return out, layout


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """All tensors of a ``save_pretrained`` directory (safetensors, sharded or not; or pytorch_model.bin)."""
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict[str, Tensor] = {}
        for shard in shards:
            sd.update(load_file(str(directory / shard)))
        return sd
    single = directory / "model.safetensors"
    if single.exists():
        return load_file(str(single))
    binary = directory / "pytorch_model.bin"
    if binary.exists():
        return torch.load(str(binary), map_location="cpu", weights_only=True)
    raise CheckpointError(f"{directory} holds no model.safetensors(.index.json) or pytorch_model.bin")


def load_into(model: torch.nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Copies a native-layout state dict into ``model``; names every missing, unexpected or misshapen tensor."""
    sd = dict(state_dict)
    shared = sd.get("model.language_model.shared.weight")
    if shared is None:
        shared = sd.get("model.language_model.encoder.embed_tokens.weight")
        if shared is not None:
            sd["model.language_model.shared.weight"] = shared
    head = sd.get("lm_head.weight")
    if head is not None and shared is not None and not torch.equal(head, shared):
        raise CheckpointError("lm_head.weight differs from the shared embedding; Florence-2 ties them")
    for key in _TIED:
        sd.pop(key, None)
    expected = {k: v for k, v in model.state_dict().items() if k not in _TIED}
    optional = {"final_logits_bias", "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"}
    missing = sorted(k for k in expected if k not in sd and k not in optional)
    unexpected = sorted(k for k in sd if k not in expected)
    wrong = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in sd and sd[k].shape != v.shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected[:20]) +
                        (" ..." if len(unexpected) > 20 else ""))
    if wrong:
        problems.append(f"{len(wrong)} with wrong shape: " + "; ".join(wrong[:10]))
    if problems:
        raise CheckpointError("checkpoint does not match the Florence-2 architecture of its config: " +
                              " | ".join(problems))
    with torch.no_grad():
        for key, value in expected.items():
            if key in sd:
                value.copy_(sd[key].to(value.dtype))


# ----------------------------------------------------------------------------- LoRA


def merge_lora(state_dict: dict[str, Tensor], adapter_dir: Path) -> tuple[dict[str, Tensor], dict]:
    """Folds a PEFT LoRA adapter into a native-layout state dict: W += scale * B @ A (Linear and Conv2d).

    Adapter keys may name modules in either layout (``base_model.model.<module>.lora_A.weight``).
    Returns the merged state dict and a summary for the manifest.
    """
    from safetensors.torch import load_file

    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{adapter_dir} has no adapter_config.json: not a PEFT adapter directory")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"adapter peft_type {cfg.get('peft_type')!r} is not LORA")
    for unsupported in ("use_dora", "fan_in_fan_out"):
        if cfg.get(unsupported):
            raise CheckpointError(f"LoRA adapters with {unsupported}=true are not supported")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise CheckpointError("LoRA adapters with per-module rank_pattern/alpha_pattern are not supported")
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    weights_path = adapter_dir / "adapter_model.safetensors"
    adapter = load_file(str(weights_path)) if weights_path.exists() else torch.load(
        str(adapter_dir / "adapter_model.bin"), map_location="cpu", weights_only=True)

    pairs: dict[str, dict[str, Tensor]] = {}
    for key, value in adapter.items():
        m = re.match(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$", key)
        if not m:
            if key.endswith(".bias") or "modules_to_save" in key:
                raise CheckpointError(f"adapter tensor {key} (bias or modules_to_save) is not supported")
            raise CheckpointError(f"unrecognised adapter tensor {key}")
        pairs.setdefault(m.group(1), {})[m.group(2)] = value

    merged = dict(state_dict)
    layout = None
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"adapter module {module} lacks lora_A or lora_B")
        target = module + ".weight"
        if target not in merged:
            target = original_key_to_native(target)
            layout = "original"
        if target not in merged:
            raise CheckpointError(f"adapter targets {module}, which the checkpoint does not have")
        w = merged[target]
        a = ab["A"].to(torch.float32)
        b = ab["B"].to(torch.float32)
        if w.dim() == 2:
            delta = b @ a
        elif w.dim() == 4:  # Conv2d: A is the conv, B a 1x1 conv
            delta = (b.flatten(1) @ a.flatten(1)).view(w.shape)
        else:
            raise CheckpointError(f"LoRA on {target} with shape {tuple(w.shape)} is not supported")
        if delta.shape != w.shape:
            raise CheckpointError(f"LoRA delta {tuple(delta.shape)} does not fit {target} {tuple(w.shape)}")
        merged[target] = (w.to(torch.float32) + scale * delta).to(w.dtype)
        if target == "model.language_model.shared.weight":
            for tied in _TIED:
                if tied in merged:
                    merged[tied] = merged[target]
    summary = {"adapter": adapter_dir.name, "r": r, "lora_alpha": alpha, "use_rslora": bool(cfg.get("use_rslora")),
               "modules": len(pairs), "adapter_layout": layout or "native",
               "base_model_name_or_path": cfg.get("base_model_name_or_path")}
    return merged, summary
