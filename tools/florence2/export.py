"""Writes a self-contained model directory: TorchScript artefact, config, tokenizer, manifest."""
from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import tokenizer_build, weights
from .config import Florence2Arch, from_hf_config, preset
from .model import Florence2ForServing, quantize_int8

INTERFACE_VERSION = 2
MODEL_FILE = "model.ts"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# --dtype choices: the float dtypes, plus "int8": int8 linear weights with per-row int8 activations, float32
# everywhere else (model.Int8Linear; CPU only, opt-in).
WEIGHT_FORMATS = (*DTYPES, "int8")


@dataclass
class Source:
    arch: Florence2Arch
    state_dict: dict | None     # native layout; None = random init
    provenance: dict
    tokenizer_dir: Path | None  # directory holding the checkpoint's tokenizer files, if any


def random_init(model: torch.nn.Module, seed: int) -> None:
    """Deterministic variance-preserving init: Linear/Conv weights N(0, 1/fan_in), the tied token embedding
    N(0, 1/d_model) (unit-scale logits), other embeddings N(0, 0.02), zero biases, unit LayerNorms.

    transformers' own N(0, 0.02) everywhere gives a random model whose output ignores the image and the
    prompt; this one answers differently for different inputs, so token parity tests mean more.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.dim() == 1:  # LayerNorm weights
                p.fill_(1.0)
            elif name.endswith("shared.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[1] ** -0.5)
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)


def source_random(name: str, seed: int) -> Source:
    arch = preset(name)
    return Source(arch, None, {"weights": "random", "preset": name, "seed": seed,
                               "note": "seeded random weights of the real architecture; outputs are not meaningful"},
                  None)


def source_pretrained(path_or_id: str) -> Source:
    directory = Path(path_or_id)
    if not directory.is_dir():
        try:
            from huggingface_hub import snapshot_download
            directory = Path(snapshot_download(path_or_id))
        except Exception as e:  # noqa: BLE001 - any hub failure means the same thing to the user
            raise weights.CheckpointError(
                f"{path_or_id!r} is not a local directory and could not be downloaded from the model hub ({e}); "
                "download it where the hub is reachable (save_pretrained / huggingface-cli download) and pass "
                "the directory") from e
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise weights.CheckpointError(f"{directory} has no config.json")

    def optional_json(name: str):
        p = directory / name
        return json.loads(p.read_text()) if p.exists() else None

    arch = from_hf_config(json.loads(cfg_path.read_text()), optional_json("generation_config.json"),
                          optional_json("preprocessor_config.json"))
    sd, layout = weights.to_native(weights.read_state_dict(directory))
    return Source(arch, sd, {"weights": "pretrained", "path": str(path_or_id), "layout": layout}, directory)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_tokenizer(src: Source, out: Path, cache_dir: Path) -> str:
    """Copies the checkpoint's tokenizer (adding Florence-2's tokens if it lacks them) or builds ours."""
    tok_json = src.tokenizer_dir / "tokenizer.json" if src.tokenizer_dir else None
    if tok_json is None or not tok_json.exists():
        tokenizer_build.write_tokenizer(out, cache_dir, with_image_token=True)
        return "built (GPT-2 merges + RoBERTa ids, Florence-2 added tokens)"
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(tok_json))
    missing = [t for t in tokenizer_build.florence_added_tokens() if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    if tok.token_to_id(tokenizer_build.IMAGE_TOKEN) is None:
        tok.add_special_tokens([AddedToken(tokenizer_build.IMAGE_TOKEN, special=True, normalized=False)])
    for token, expected in (("<loc_0>", 50269), ("<and>", 51288), (tokenizer_build.IMAGE_TOKEN, 51289)):
        if tok.token_to_id(token) != expected:
            raise weights.CheckpointError(f"checkpoint tokenizer has {token} at {tok.token_to_id(token)}, "
                                          f"Florence-2 expects {expected}")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_build.tokenizer_config(True), indent=1))
    return "from checkpoint" + (f" (+{len(missing)} Florence-2 tokens added)" if missing else "")


def export(src: Source, out: Path, dtype: str = "float32", seed: int = 0, lora: Path | None = None,
           cache_dir: Path = Path(".cache"), vision_dtype: str | None = None) -> Path:
    """``vision_dtype``: the vision tower's own float dtype when it should differ from the weights' (None: the
    weights' dtype; float32 for int8, whose quantization skips the tower)."""
    if dtype not in WEIGHT_FORMATS:
        raise ValueError(f"--dtype must be one of {sorted(WEIGHT_FORMATS)}")
    tower_dtype = vision_dtype or (dtype if dtype in DTYPES else "float32")
    if tower_dtype not in DTYPES:
        raise ValueError(f"--vision-dtype must be one of {sorted(DTYPES)}")
    provenance = dict(src.provenance)
    model = Florence2ForServing(src.arch).eval()
    if src.state_dict is None:
        random_init(model, seed)
        state = {k: v for k, v in model.state_dict().items()}
    else:
        state = src.state_dict
    if lora is not None:
        state, provenance["lora"] = weights.merge_lora(state, lora)
    if src.state_dict is not None or lora is not None:
        weights.load_into(model, state)

    if dtype == "int8":
        provenance["int8_linear_layers"] = quantize_int8(model)
    else:
        model = model.to(DTYPES[dtype])
    model.model.vision_tower.to(DTYPES[tower_dtype])
    scripted = torch.jit.script(model)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    scripted.save(str(out / MODEL_FILE))
    tokenizer_source = _write_tokenizer(src, out, cache_dir)

    arch = src.arch
    config = {
        "format": "florence-serve/torchscript",
        "interface_version": INTERFACE_VERSION,
        "model_file": MODEL_FILE,
        "dtype": dtype,
        "vision_dtype": tower_dtype,
        "architecture": arch.to_json(),
        "num_image_tokens": arch.num_image_tokens(),
        "preprocess": {"size": arch.image_size, "resample": "bicubic", "rescale_factor": arch.rescale_factor,
                       "mean": arch.image_mean, "std": arch.image_std, "channel_order": "RGB"},
        "generation": arch.generation.__dict__,
        "tokens": {"bos": 0, "pad": 1, "eos": 2, "unk": 3, "image": arch.image_token_id,
                   "loc_first": 50269, "loc_count": 1000, "real_vocab_size": 51289},
        "decoder": {"layers": arch.decoder_layers, "heads": arch.decoder_attention_heads,
                    "head_dim": arch.head_dim, "max_positions": arch.max_position_embeddings},
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(out.iterdir())}
    import tokenizers
    manifest = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "tokenizer": tokenizer_source,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
