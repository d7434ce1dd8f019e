"""Florence-2 architecture configuration, independent of transformers.

One flat dataclass describes everything the scriptable model needs. It can be
built from a preset (tiny/base/large), from a transformers ``Florence2Config``
dict (native ``florence-community`` layout) or from the original remote-code
config (``microsoft/Florence-2-*``: ``vision_config.dim_embed`` etc.).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationDefaults:
    """Decoding defaults carried by the checkpoint (FLORENCE2.md section 4)."""

    num_beams: int = 3
    no_repeat_ngram_size: int = 3
    early_stopping: bool = True
    length_penalty: float = 1.0
    max_new_tokens: int = 1024
    decoder_start_token_id: int = 2
    forced_bos_token_id: int = 0
    forced_eos_token_id: int = 2
    bos_token_id: int = 0
    eos_token_id: int = 2
    pad_token_id: int = 1


@dataclass
class Florence2Arch:
    # Vision tower (DaViT).
    embed_dim: list[int]
    depths: list[int]
    num_heads: list[int]
    num_groups: list[int]
    patch_size: list[int] = field(default_factory=lambda: [7, 3, 3, 3])
    patch_stride: list[int] = field(default_factory=lambda: [4, 2, 2, 2])
    patch_padding: list[int] = field(default_factory=lambda: [3, 1, 1, 1])
    patch_prenorm: list[bool] = field(default_factory=lambda: [False, True, True, True])
    window_size: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    in_channels: int = 3
    max_pos_2d: int = 50
    max_temporal_embeddings: int = 100
    # Language model (BART).
    d_model: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    vocab_size: int = 51328
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    # Image processor.
    image_size: int = 768
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    rescale_factor: float = 1.0 / 255.0
    # Token ids.
    image_token_id: int = 51289
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_attention_heads

    def num_image_tokens(self, height: int | None = None, width: int | None = None) -> int:
        """1 pooled token + one per stage-3 cell (FLORENCE2.md section 1.3)."""
        h = self.image_size if height is None else height
        w = self.image_size if width is None else width
        for k, s, p in zip(self.patch_size, self.patch_stride, self.patch_padding):
            h = (h + 2 * p - k) // s + 1
            w = (w + 2 * p - k) // s + 1
        return 1 + h * w

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Florence2Arch":
        d = dict(d)
        gen = GenerationDefaults(**d.pop("generation", {}))
        return Florence2Arch(generation=gen, **d)


def preset(name: str) -> Florence2Arch:
    """The real base / large architectures (FLORENCE2.md 1.2, 1.5) and a tiny one for fast tests."""
    if name == "base":
        return Florence2Arch(
            embed_dim=[128, 256, 512, 1024], depths=[1, 1, 9, 1],
            num_heads=[4, 8, 16, 32], num_groups=[4, 8, 16, 32],
            d_model=768, encoder_layers=6, decoder_layers=6,
            encoder_attention_heads=12, decoder_attention_heads=12,
            encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
    if name == "large":
        return Florence2Arch(
            embed_dim=[256, 512, 1024, 2048], depths=[1, 1, 9, 1],
            num_heads=[8, 16, 32, 64], num_groups=[8, 16, 32, 64],
            d_model=1024, encoder_layers=12, decoder_layers=12,
            encoder_attention_heads=16, decoder_attention_heads=16,
            encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=4096)
    if name == "tiny":
        # Same topology (4 stages, window 12, 32-wide heads and groups, 577
        # image tokens at 768x768), a fraction of the width and depth.
        return Florence2Arch(
            embed_dim=[32, 64, 96, 128], depths=[1, 1, 2, 1],
            num_heads=[1, 2, 3, 4], num_groups=[1, 2, 3, 4],
            d_model=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024)
    raise ValueError(f"unknown preset {name!r}; expected tiny, base or large")


class CheckpointError(ValueError):
    """A checkpoint that is not a complete Florence-2 of the expected architecture."""


_GEN_KEYS = [f.name for f in dataclasses.fields(GenerationDefaults)]


def _generation_from(text: dict[str, Any], generation_config: dict[str, Any] | None) -> GenerationDefaults:
    gen = GenerationDefaults()
    for source in (text, generation_config or {}):
        for key in _GEN_KEYS:
            if source.get(key) is not None:
                setattr(gen, key, type(getattr(gen, key))(source[key]))
    return gen


def from_hf_config(cfg: dict[str, Any], generation_config: dict[str, Any] | None = None,
                   preprocessor: dict[str, Any] | None = None) -> Florence2Arch:
    """Builds the architecture from a checkpoint's config.json (native or original layout)."""
    vision = cfg.get("vision_config") or {}
    text = cfg.get("text_config") or {}
    if not vision or not text:
        raise CheckpointError("config.json has no vision_config/text_config: not a Florence-2 checkpoint")
    embed_dim = vision.get("embed_dim", vision.get("dim_embed"))
    if embed_dim is None:
        raise CheckpointError("vision_config has neither embed_dim (native) nor dim_embed (original)")
    arch = Florence2Arch(
        embed_dim=list(embed_dim),
        depths=list(vision["depths"]),
        num_heads=list(vision["num_heads"]),
        num_groups=list(vision["num_groups"]),
        patch_size=list(vision.get("patch_size", [7, 3, 3, 3])),
        patch_stride=list(vision.get("patch_stride", [4, 2, 2, 2])),
        patch_padding=list(vision.get("patch_padding", [3, 1, 1, 1])),
        patch_prenorm=list(vision.get("patch_prenorm", [False, True, True, True])),
        window_size=int(vision.get("window_size", 12)),
        mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
        qkv_bias=bool(vision.get("qkv_bias", True)),
        in_channels=int(vision.get("in_channels", vision.get("in_chans", 3))),
        max_pos_2d=int(vision.get("max_position_embeddings",
                                  (vision.get("image_pos_embed") or {}).get("max_pos_embeddings", 50))),
        max_temporal_embeddings=int(vision.get("max_temporal_embeddings",
                                               (vision.get("visual_temporal_embedding") or {}).get(
                                                   "max_temporal_embeddings", 100))),
        d_model=int(text["d_model"]),
        encoder_layers=int(text["encoder_layers"]),
        decoder_layers=int(text["decoder_layers"]),
        encoder_attention_heads=int(text["encoder_attention_heads"]),
        decoder_attention_heads=int(text["decoder_attention_heads"]),
        encoder_ffn_dim=int(text["encoder_ffn_dim"]),
        decoder_ffn_dim=int(text["decoder_ffn_dim"]),
        vocab_size=int(text["vocab_size"]),
        max_position_embeddings=int(text["max_position_embeddings"]),
        image_token_id=int(cfg.get("image_token_id", 51289)),
        generation=_generation_from(text, generation_config),
    )
    if text.get("scale_embedding"):
        raise CheckpointError("scale_embedding=true is not Florence-2's BART configuration")
    if text.get("normalize_before") or text.get("add_final_layer_norm"):
        raise CheckpointError("pre-LN BART variants are not Florence-2's configuration")
    projection_dim = vision.get("projection_dim")
    if projection_dim is not None and int(projection_dim) != arch.d_model:
        raise CheckpointError(f"vision projection_dim {projection_dim} != text d_model {arch.d_model}")
    if preprocessor:
        size = preprocessor.get("size") or {}
        if size.get("height") != size.get("width"):
            raise CheckpointError(f"non-square processor size {size} is not supported")
        arch.image_size = int(size.get("height", arch.image_size))
        arch.image_mean = list(preprocessor.get("image_mean", arch.image_mean))
        arch.image_std = list(preprocessor.get("image_std", arch.image_std))
        arch.rescale_factor = float(preprocessor.get("rescale_factor", arch.rescale_factor))
    return arch


def to_hf_config_dict(arch: Florence2Arch) -> dict[str, Any]:
    """The native transformers config for ``arch`` (used to build reference models in tests)."""
    g = arch.generation
    return {
        "model_type": "florence2",
        "image_token_id": arch.image_token_id,
        "vision_config": {
            "model_type": "florence_vision",
            "in_channels": arch.in_channels, "depths": arch.depths, "patch_size": arch.patch_size,
            "patch_stride": arch.patch_stride, "patch_padding": arch.patch_padding,
            "patch_prenorm": arch.patch_prenorm, "embed_dim": arch.embed_dim, "num_heads": arch.num_heads,
            "num_groups": arch.num_groups, "window_size": arch.window_size, "drop_path_rate": 0.1,
            "mlp_ratio": arch.mlp_ratio, "qkv_bias": arch.qkv_bias, "projection_dim": arch.d_model,
            "max_temporal_embeddings": arch.max_temporal_embeddings,
            "max_position_embeddings": arch.max_pos_2d,
        },
        "text_config": {
            "model_type": "bart", "d_model": arch.d_model, "vocab_size": arch.vocab_size,
            "encoder_layers": arch.encoder_layers, "decoder_layers": arch.decoder_layers,
            "encoder_attention_heads": arch.encoder_attention_heads,
            "decoder_attention_heads": arch.decoder_attention_heads,
            "encoder_ffn_dim": arch.encoder_ffn_dim, "decoder_ffn_dim": arch.decoder_ffn_dim,
            "max_position_embeddings": arch.max_position_embeddings, "activation_function": "gelu",
            "scale_embedding": False, "tie_word_embeddings": True,
            "bos_token_id": g.bos_token_id, "eos_token_id": g.eos_token_id, "pad_token_id": g.pad_token_id,
            "decoder_start_token_id": g.decoder_start_token_id,
            "forced_bos_token_id": g.forced_bos_token_id, "forced_eos_token_id": g.forced_eos_token_id,
        },
    }
