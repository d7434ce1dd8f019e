"""Florence-2 written for ``torch.jit.script``, with an incremental-decoding interface.

Parameter names equal transformers' native layout (``model.vision_tower.*``,
``model.multi_modal_projector.*``, ``model.language_model.*``, ``lm_head.weight``), so a
``florence-community/Florence-2-*`` state dict loads as is and an original
``microsoft/Florence-2-*`` one after the renames in ``weights.py``.

The exported methods (shapes in docs/ARCHITECTURE.md, "Model interface"):

* ``image_features(pixel_values)``            -> [B, N_img, d]
* ``encode(image_features, input_ids, attention_mask)`` -> [B, N_img + T, d]
* ``cross_kv(encoder_hidden)``                -> (K, V), each [L_dec, B, H, S_enc, hd]
* ``decode_step(ids, positions, self_k, self_v, cross_k, cross_v, cross_mask, cross_rows)`` -> logits [B, V]
  (writes the new self-attention K/V into the caller's ``self_k``/``self_v`` in place; the beams of one
  request share one row of cross K/V, named by ``cross_rows``)

Everything a request owns (its cross K/V, its self-attention cache) lives in
tensors the caller allocates; the module holds only weights.
"""
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Florence2Arch


# ----------------------------------------------------------------------------- oneDNN-prepacked linear layers
# (Florence2ForServing.pack_for_cpu; a module whose ``packed`` list is empty runs its plain nn.Linear layers)

# Fewest decode rows for which decode_step takes the prepacked weights (pack_for_cpu): every step. On an Intel
# Xeon (AVX-512, AMX) the plain GEMM re-packs the weight on every call and the prepacked one wins from 4 rows
# (lm_head) / 8 rows (layers), the two paths level below that (1.02-1.04x); on an AMD EPYC (Zen 3, AVX2) the plain
# (MKL) path is slower at every size, 1.95x at 3 rows, a beam-3 request's step (docs/PERFORMANCE.md). Module
# attributes: a host may raise them.
PACKED_LM_HEAD_MIN_ROWS = 1
PACKED_LAYERS_MIN_ROWS = 1


def _pack(weight: Tensor, rows: int) -> Tensor:
    """An nn.Linear weight [out, in] reordered once into oneDNN's blocked layout for ``rows``-row inputs.
    Florence2ForServing.pack_for_cpu says when and why."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def _packed_linear(x: Tensor, packed: Tensor, bias: Optional[Tensor], gelu: bool = False) -> Tensor:
    """nn.Linear on a ``_pack``ed weight, x [..., in] -> [..., out]; ``gelu``: followed by exact GELU, fused into
    the GEMM's output pass."""
    no_scalars = torch.jit.annotate(List[Optional[Union[int, float, complex]]], [])
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed, bias, "gelu" if gelu else "none",
                                           no_scalars, "none")
    return y.view(x.shape[:-1] + [y.shape[-1]])


def _pack_decode(weight: Tensor, rows: int, florence: bool) -> Tensor:
    """A decode-step linear weight [out, in] packed once: into florence::pack_linear's 16-column panels
    (``florence``, ops.py) or oneDNN's blocked layout for ``rows``-row inputs."""
    return torch.ops.florence.pack_linear(weight) if florence else _pack(weight, rows)


def _decode_linear(x: Tensor, packed: Tensor, bias: Optional[Tensor], out_features: int, florence: bool,
                   gelu: bool = False) -> Tensor:
    """nn.Linear on a ``_pack_decode``d weight (then exact GELU if ``gelu``), x [..., in] -> [..., out]."""
    if florence:
        y = torch.ops.florence.packed_linear(x, packed, bias, out_features)
        return F.gelu(y) if gelu else y
    return _packed_linear(x, packed, bias, gelu)


# Vision-tower linear layers see thousands of rows; the prepacking hint for them.
VISION_PACK_ROWS = 4096
# Rows the prompt encoder's prepacked weights are laid out for: one image's 577 positions plus a prompt.
ENCODER_PACK_ROWS = 590


# ----------------------------------------------------------------------------- opt-in int8 weights
# (``quantize_int8``; export with ``--dtype int8``)


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights (symmetric, one scale per output channel) and int8 activations quantized per
    row at run time (symmetric, one scale per row), multiplied by ``torch._int_mm`` into exact int32 sums.

    Per-row activation scales and exact integer sums make a row's output independent of the other rows in the
    call, so batching cannot change an answer (per-tensor dynamic quantization, torch.ao's, would). CPU only:
    ``_int_mm`` on CUDA needs more than 16 rows. ``weight`` is an empty stand-in that keeps the shared code
    (``pack_for_cpu``, which never runs on an int8 model) compiling; the int8 weight is ``weight_int8``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("weight_int8", torch.round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight", torch.empty(0))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())
        self.out_features = linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1]).float()
        if x2.shape[0] == 0:
            y = x2.new_zeros([0, self.out_features])
        else:
            scale = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            xq = torch.round(x2 / scale).to(torch.int8)  # |x / scale| <= 127 by construction
            y = torch._int_mm(xq, self.weight_int8.t()).float() * scale * self.weight_scale
        bias = self.bias
        if bias is not None:
            y = y + bias
        return y.view(list(x.shape[:-1]) + [self.out_features]).to(x.dtype)


def quantize_int8(model: "Florence2ForServing") -> int:
    """Replaces every nn.Linear of the language model (prompt encoder, decoder), the image projection and lm_head
    by an Int8Linear of its weights, in place (the tied lm_head gets its own int8 copy; the token embedding stays
    float32). Returns how many were replaced.

    The vision tower stays float32: its linear layers are narrow (K = 128..1024) over tens of thousands of rows,
    where quantizing and dequantizing the activations costs more than the int8 GEMM saves; it keeps the
    prepacked float32 path of ``pack_for_cpu``. The decoder, bandwidth-bound at a few rows, is where int8 pays."""
    replaced = 0
    vision = set(model.model.vision_tower.modules())
    for parent in list(model.modules()):
        if parent in vision:
            continue
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear(child))
                replaced += 1
    model.int8_weights = True
    return replaced


# ----------------------------------------------------------------------------- vision tower


class ConvEmbed(nn.Module):
    """Strided conv patch embedding; LayerNorm over channels before (pre_norm) or after it."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, pre_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(in_ch if pre_norm else out_ch)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor) -> Tensor:  # [B, H, W, C] -> [B, H', W', C'], channels last
        if self.pre_norm:
            x = self.norm(x)
        x = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
        if not self.pre_norm:
            x = self.norm(x)
        return x


class VisionMLP(nn.Module):
    packed: List[Tensor]  # fc1, fc2 (pack_for_cpu)

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.packed = []

    def pack_for_cpu(self, rows: int) -> None:
        self.packed = [_pack(self.fc1.weight, rows), _pack(self.fc2.weight, rows)]

    def forward(self, x: Tensor) -> Tensor:
        if len(self.packed) > 0:
            return _packed_linear(_packed_linear(x, self.packed[0], self.fc1.bias, gelu=True), self.packed[1],
                                  self.fc2.bias)
        return self.fc2(F.gelu(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ``window`` x ``window`` windows."""

    packed: List[Tensor]  # qkv, proj (pack_for_cpu)

    def __init__(self, dim: int, heads: int, window: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.packed = []

    def pack_for_cpu(self, rows: int) -> None:
        self.packed = [_pack(self.qkv.weight, rows), _pack(self.proj.weight, rows)]

    def forward(self, x: Tensor) -> Tensor:  # [B, H, W, C] -> [B, H*W, C]
        b, h, w, c = x.shape
        ws = self.window
        pad_b = (ws - h % ws) % ws
        pad_r = (ws - w % ws) % ws
        x = F.pad(x, [0, 0, 0, pad_r, 0, pad_b])
        hp = h + pad_b
        wp = w + pad_r
        nh = hp // ws
        nw = wp // ws
        win = x.view(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, ws * ws, c)
        packed = len(self.packed) > 0
        qkv = _packed_linear(win, self.packed[0], self.qkv.bias) if packed else self.qkv(win)
        qkv = qkv.reshape(b * nh * nw, ws * ws, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        out = out.transpose(1, 2).reshape(b * nh * nw, ws * ws, c)
        out = _packed_linear(out, self.packed[1], self.proj.bias) if packed else self.proj(out)
        out = out.view(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        return out[:, :h, :w, :].reshape(b, h * w, c)


class ChannelAttention(nn.Module):
    """DaViT channel-group attention: a (C/G x C/G) attention between channels, scaled by tokens^-0.5."""

    packed: List[Tensor]  # qkv, proj (pack_for_cpu)

    def __init__(self, dim: int, groups: int, qkv_bias: bool):
        super().__init__()
        self.groups = groups
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.packed = []

    def pack_for_cpu(self, rows: int) -> None:
        self.packed = [_pack(self.qkv.weight, rows), _pack(self.proj.weight, rows)]

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C]
        b, n, c = x.shape
        packed = len(self.packed) > 0
        qkv = _packed_linear(x, self.packed[0], self.qkv.bias) if packed else self.qkv(x)
        qkv = qkv.reshape(b, n, 3, self.groups, c // self.groups).permute(2, 0, 3, 4, 1)
        # [B, G, C/G, N]: channels play the role of the sequence, tokens that of the head dimension. SDPA scales
        # before the N-long dot products (as transformers does), so they cannot overflow in float16.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=float(n) ** -0.5)
        out = out.permute(0, 3, 1, 2).reshape(b, n, c)
        return _packed_linear(out, self.packed[1], self.proj.bias) if packed else self.proj(out)


class SpatialBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.window_attn = WindowAttention(dim, heads, window, qkv_bias)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = VisionMLP(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:  # [B, H, W, C], channels last throughout
        b, h, w, c = x.shape
        x = self.conv1(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous() + x
        t = x.view(b, h * w, c)
        t = t + self.window_attn(self.norm1(t).view(b, h, w, c))
        x = t.view(b, h, w, c)
        x = self.conv2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous() + x
        t = x.view(b, h * w, c)
        t = t + self.ffn(self.norm2(t))
        return t.view(b, h, w, c)


class ChannelBlock(nn.Module):
    def __init__(self, dim: int, groups: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.channel_attn = ChannelAttention(dim, groups, qkv_bias)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = VisionMLP(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:  # [B, H, W, C]
        b, h, w, c = x.shape
        x = self.conv1(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous() + x
        t = x.view(b, h * w, c)
        t = t + self.channel_attn(self.norm1(t))
        x = t.view(b, h, w, c)
        x = self.conv2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous() + x
        t = x.view(b, h * w, c)
        t = t + self.ffn(self.norm2(t))
        return t.view(b, h, w, c)


class DualBlock(nn.Module):
    def __init__(self, arch: Florence2Arch, stage: int):
        super().__init__()
        dim = arch.embed_dim[stage]
        self.spatial_block = SpatialBlock(dim, arch.num_heads[stage], arch.window_size, arch.mlp_ratio, arch.qkv_bias)
        self.channel_block = ChannelBlock(dim, arch.num_groups[stage], arch.mlp_ratio, arch.qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_block(self.spatial_block(x))


class VisionTower(nn.Module):
    """DaViT without its classification head: pixels [B,3,H,W] -> stage-3 map [B, C4, H/32, W/32]."""

    def __init__(self, arch: Florence2Arch):
        super().__init__()
        convs = []
        blocks = []
        for s in range(len(arch.embed_dim)):
            in_ch = arch.in_channels if s == 0 else arch.embed_dim[s - 1]
            convs.append(ConvEmbed(in_ch, arch.embed_dim[s], arch.patch_size[s], arch.patch_stride[s],
                                   arch.patch_padding[s], arch.patch_prenorm[s]))
            blocks.append(nn.ModuleList([DualBlock(arch, s) for _ in range(arch.depths[s])]))
        self.convs = nn.ModuleList(convs)
        self.blocks = nn.ModuleList(blocks)

    def pack_for_cpu(self, rows: int) -> None:
        for stage in self.blocks:
            for block in stage:
                block.spatial_block.window_attn.pack_for_cpu(rows)
                block.spatial_block.ffn.pack_for_cpu(rows)
                block.channel_block.channel_attn.pack_for_cpu(rows)
                block.channel_block.ffn.pack_for_cpu(rows)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.convs[0].conv.weight.dtype)  # the tower's own dtype (export --vision-dtype may differ)
        # Channels last between the stages and blocks: LayerNorm, the linear layers and the residual adds all
        # want [.., C] rows. A convolution takes the NCHW view of that memory (channels_last format, which the
        # CPU convolution keeps), so its result's NHWC view is contiguous again: nothing is transposed.
        x = x.permute(0, 2, 3, 1)
        for conv, stage in zip(self.convs, self.blocks):
            x = conv(x)
            for block in stage:
                x = block(x)
        return x.permute(0, 3, 1, 2)


class PositionEmbedding2D(nn.Module):
    def __init__(self, max_pos: int, dim: int):
        super().__init__()
        self.row_embeddings = nn.Embedding(max_pos, dim // 2)
        self.column_embeddings = nn.Embedding(max_pos, dim - dim // 2)

    def forward(self, h: int, w: int) -> Tensor:  # -> [H, W, C], column half first
        dev = self.row_embeddings.weight.device
        cols = self.column_embeddings(torch.arange(w, device=dev))
        rows = self.row_embeddings(torch.arange(h, device=dev))
        return torch.cat([cols.unsqueeze(0).expand(h, w, cols.shape[-1]),
                          rows.unsqueeze(1).expand(h, w, rows.shape[-1])], dim=-1)


class TemporalEmbedding(nn.Module):
    """Fixed sinusoid table; a single image uses row 0 (sin 0 / cos 0 interleaved)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        half = dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / half))
        angles = torch.arange(max_len, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
        table = torch.empty(max_len, dim)
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles)
        self.register_buffer("pos_idx_to_embed", table)

    def forward(self, frames: int) -> Tensor:
        return self.pos_idx_to_embed[:frames]


class Projector(nn.Module):
    """Stage-3 map -> [global mean token, H*W tokens] -> Linear (no bias) -> LayerNorm."""

    def __init__(self, arch: Florence2Arch):
        super().__init__()
        c4 = arch.embed_dim[-1]
        self.image_projection = nn.Linear(c4, arch.d_model, bias=False)
        self.image_proj_norm = nn.LayerNorm(arch.d_model)
        self.image_position_embed = PositionEmbedding2D(arch.max_pos_2d, c4)
        self.visual_temporal_embed = TemporalEmbedding(arch.max_temporal_embeddings, c4)

    def forward(self, fmap: Tensor) -> Tensor:
        b, c, h, w = fmap.shape
        tokens = (fmap.permute(0, 2, 3, 1) + self.image_position_embed(h, w).to(fmap.dtype)).reshape(b, h * w, c)
        tokens = tokens + self.visual_temporal_embed(1).to(tokens.dtype).unsqueeze(0)
        pooled = tokens.mean(dim=1, keepdim=True)
        return self.image_proj_norm(self.image_projection(torch.cat([pooled, tokens], dim=1)))


# ----------------------------------------------------------------------------- BART


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:  # [B, S, d] -> [B, H, S, hd]
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """q [B,H,Sq,hd], k/v [B,H,Sk,hd], mask bool broadcastable to [B,H,Sq,Sk] (True = attend)."""
        return self.out_proj(self.attend_heads(q, k, v, mask))

    def attend_heads(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """``attend`` before ``out_proj``: the heads merged, [B, Sq, d]."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.heads * self.head_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.attend(self.split(self.q_proj(x)), self.split(self.k_proj(x)), self.split(self.v_proj(x)), mask)


class EncoderLayer(nn.Module):
    # oneDNN-prepacked copies of the layer's weights (pack_for_cpu): q|k|v (one matrix), its bias, out, fc1, fc2;
    # empty = the plain nn.Linear path.
    packed: List[Tensor]

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.d = d
        self.packed = []

    def pack_for_cpu(self, rows: int) -> None:
        a = self.self_attn
        self.packed = [_pack(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), rows),
                       torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]), _pack(a.out_proj.weight, rows),
                       _pack(self.fc1.weight, rows), _pack(self.fc2.weight, rows)]

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        if len(self.packed) > 0:
            a = self.self_attn
            q, k, v = _packed_linear(h, self.packed[0], self.packed[1]).split(self.d, dim=2)
            o = _packed_linear(a.attend_heads(a.split(q), a.split(k), a.split(v), mask), self.packed[2],
                               a.out_proj.bias)
            h = self.self_attn_layer_norm(h + o)
            f = _packed_linear(_packed_linear(h, self.packed[3], self.fc1.bias, gelu=True), self.packed[4],
                               self.fc2.bias)
            return self.final_layer_norm(h + f)  # float32 only: no float16 clamp
        h = self.self_attn_layer_norm(h + self.self_attn(h, mask))
        h = self.final_layer_norm(h + self.fc2(F.gelu(self.fc1(h))))
        if h.dtype == torch.float16:
            # transformers' BART clamps non-finite fp16 activations the same way.
            if not bool(torch.isfinite(h).all()):
                limit = 65504.0 - 1000.0  # finfo(float16).max - 1000
                h = torch.clamp(h, min=-limit, max=limit)
        return h


class DecoderLayer(nn.Module):
    # Prepacked copies of this layer's decode-step weights (florence::pack_linear's panels when
    # ``packed_florence``, else oneDNN's layout), filled by ``pack_for_cpu``; empty = the plain nn.Linear path.
    # Order: self q|k|v (one matrix), its bias, self out, cross q, cross out, fc1, fc2. (A class annotation,
    # which TorchScript reads; this module keeps annotations evaluated for it.)
    packed: List[Tensor]

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.d = d
        self.heads = heads
        self.head_dim = d // heads
        self.ffn = ffn
        self.packed = []
        self.packed_florence = False

    def pack_for_cpu(self, rows: int, florence: bool) -> None:
        a = self.self_attn
        x = self.encoder_attn
        self.packed = [_pack_decode(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), rows, florence),
                       torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
                       _pack_decode(a.out_proj.weight, rows, florence), _pack_decode(x.q_proj.weight, rows, florence),
                       _pack_decode(x.out_proj.weight, rows, florence), _pack_decode(self.fc1.weight, rows, florence),
                       _pack_decode(self.fc2.weight, rows, florence)]
        self.packed_florence = florence

    def step(self, h: Tensor, rows: Tensor, positions: Tensor, self_k: Tensor, self_v: Tensor, layer: int,
             self_mask: Tensor, cross_k: Tensor, cross_v: Tensor, enc_mask: Tensor, cross_rows: Tensor, slots: Tensor,
             q_len: int, use_packed: bool, fused: bool, self_keys: Tensor, enc_keys: Tensor) -> Tensor:
        """One decoder position for B rows: h [B, 1, d] -> [B, 1, d]; writes row b's K/V at positions[b] of
        self_k/self_v[layer] [B, H, S, hd]. Cross-attention groups the rows by cross row (see ``decode_step``).
        ``use_packed``: through the prepacked weights, if there are any. ``fused``: both attentions through
        ``florence::decode_attention`` (ops.py) with the key masks self_keys [B, S] and enc_keys [G, S_enc]
        instead of SDPA with self_mask / enc_mask (same result; CPU float32 only)."""
        b = h.shape[0]
        packed = len(self.packed) > 0 and use_packed  # this order: no guard on the row count when unpacked (export)
        attn = self.self_attn
        pf = self.packed_florence
        d = self.d
        if packed:
            q, k, v = _decode_linear(h, self.packed[0], self.packed[1], 3 * d, pf).split(d, dim=2)
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        if torch.jit.is_scripting():
            k_cache, v_cache = self_k[layer], self_v[layer]
            k_cache[rows, :, positions] = k.reshape(b, self.heads, self.head_dim)
            v_cache[rows, :, positions] = v.reshape(b, self.heads, self.head_dim)
        else:  # eager and torch.export (aoti.py). Inductor writes a graph input in place only when the write
            # indexes that tensor itself; a write into a view (self_k[layer]) costs a copy of the cache and back.
            layers = torch.full_like(rows, layer)
            self_k[layers, rows, :, positions] = k.reshape(b, self.heads, self.head_dim)
            self_v[layers, rows, :, positions] = v.reshape(b, self.heads, self.head_dim)
            # The first b rows and self_mask's positions: all of them for decode_step, the occupied prefix of a
            # KV pool for decode_step_pooled (a view of the graph input, read in place).
            s = self_mask.shape[-1]
            k_cache, v_cache = self_k[layer, :b, :, :s], self_v[layer, :b, :, :s]
        if fused:
            o = torch.ops.florence.decode_attention(attn.split(q), k_cache, v_cache, self_keys, attn.scale)
            o = o.transpose(1, 2).reshape(b, 1, self.d)
        else:
            o = attn.attend_heads(attn.split(q), k_cache, v_cache, self_mask)
        o = _decode_linear(o, self.packed[2], attn.out_proj.bias, d, pf) if packed else attn.out_proj(o)
        h = self.self_attn_layer_norm(h + o)

        xattn = self.encoder_attn
        q = _decode_linear(h, self.packed[3], xattn.q_proj.bias, d, pf) if packed else xattn.q_proj(h)
        grouped = torch.zeros([cross_k.shape[0], q_len, self.heads, self.head_dim], dtype=h.dtype, device=h.device)
        grouped[cross_rows, slots] = q.view(b, self.heads, self.head_dim)
        if fused:
            out = torch.ops.florence.decode_attention(grouped.transpose(1, 2), cross_k, cross_v, enc_keys,
                                                      xattn.scale)  # [G, H, Q, hd]
        else:
            out = F.scaled_dot_product_attention(grouped.transpose(1, 2), cross_k, cross_v, attn_mask=enc_mask,
                                                 scale=xattn.scale)
        o = out.transpose(1, 2)[cross_rows, slots].reshape(b, 1, self.d)
        o = _decode_linear(o, self.packed[4], xattn.out_proj.bias, d, pf) if packed else xattn.out_proj(o)
        h = self.encoder_attn_layer_norm(h + o)

        if packed:
            f = _decode_linear(_decode_linear(h, self.packed[5], self.fc1.bias, self.ffn, pf, gelu=True),
                               self.packed[6], self.fc2.bias, d, pf)
        else:
            f = self.fc2(F.gelu(self.fc1(h)))
        return self.final_layer_norm(h + f)


class Encoder(nn.Module):
    def __init__(self, arch: Florence2Arch):
        super().__init__()
        self.embed_positions = nn.Embedding(arch.max_position_embeddings + 2, arch.d_model)
        self.layernorm_embedding = nn.LayerNorm(arch.d_model)
        self.layers = nn.ModuleList([EncoderLayer(arch.d_model, arch.encoder_attention_heads, arch.encoder_ffn_dim)
                                     for _ in range(arch.encoder_layers)])


class Decoder(nn.Module):
    def __init__(self, arch: Florence2Arch):
        super().__init__()
        self.embed_positions = nn.Embedding(arch.max_position_embeddings + 2, arch.d_model)
        self.layernorm_embedding = nn.LayerNorm(arch.d_model)
        self.layers = nn.ModuleList([DecoderLayer(arch.d_model, arch.decoder_attention_heads, arch.decoder_ffn_dim)
                                     for _ in range(arch.decoder_layers)])


class LanguageModel(nn.Module):
    def __init__(self, arch: Florence2Arch):
        super().__init__()
        self.shared = nn.Embedding(arch.vocab_size, arch.d_model)
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)


class Florence2Core(nn.Module):
    def __init__(self, arch: Florence2Arch):
        super().__init__()
        self.vision_tower = VisionTower(arch)
        self.multi_modal_projector = Projector(arch)
        self.language_model = LanguageModel(arch)


class Florence2ForServing(nn.Module):
    """The scripted artefact. Holds weights only; every per-request tensor is owned by the caller."""

    lm_head_packed: List[Tensor]  # see pack_for_cpu; empty = plain nn.Linear

    def __init__(self, arch: Florence2Arch):
        super().__init__()
        self.model = Florence2Core(arch)
        self.lm_head = nn.Linear(arch.d_model, arch.vocab_size, bias=False)
        self.lm_head.weight = self.model.language_model.shared.weight
        # The original checkpoints carry a (zero) final_logits_bias; kept so one that is not zero is honoured.
        self.register_buffer("final_logits_bias", torch.zeros(1, arch.vocab_size))
        self.d_model = arch.d_model
        self.decoder_layers = arch.decoder_layers
        self.decoder_heads = arch.decoder_attention_heads
        self.head_dim = arch.d_model // arch.decoder_attention_heads
        self.vocab_size = arch.vocab_size
        self.max_positions = arch.max_position_embeddings
        self.lm_head_packed = []
        # Which kernel decode_step's prepacked linear layers run (pack_for_cpu): "auto" (the one
        # florence::packed_linear_kernel() recommends for this CPU), "florence" or "onednn"; a host may set it
        # before pack_for_cpu (bench/decode_step.py compares the two). decode_linear_packing says what was packed.
        self.decode_linear = "auto"
        self.decode_linear_packing = ""
        self.packed_lm_head_min_rows = PACKED_LM_HEAD_MIN_ROWS
        self.packed_layers_min_rows = PACKED_LAYERS_MIN_ROWS
        self.vision_pack_rows = VISION_PACK_ROWS
        self.encoder_pack_rows = ENCODER_PACK_ROWS
        self.int8_weights = False  # set by quantize_int8 via export --dtype int8
        self.vision_packed = False  # set by pack_for_cpu: whether the vision tower runs on prepacked weights
        # decode_step's attention through florence::decode_attention on the CPU in float32 (ops.py); a host may
        # set it False to run SDPA instead (bench/decode_step.py compares the two).
        self.fused_decode_attention = True

    # ------------------------------------------------------------------ exported interface

    @torch.jit.export
    def image_features(self, pixel_values: Tensor) -> Tensor:
        """pixel_values [B,3,H,W] (normalized, any float dtype) -> [B, 1 + (H/32)*(W/32), d] in the model dtype."""
        w = self.final_logits_bias  # in the model's dtype and on its device (lm_head may hold int8 weights)
        fmap = self.model.vision_tower(pixel_values.to(device=w.device))  # in the tower's dtype
        return self.model.multi_modal_projector(fmap.to(w.dtype))

    @torch.jit.export
    def encode(self, image_features: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Prompt + image encoding.

        image_features [B, N, d]; input_ids [B, T] int64 (``<s> prompt </s>``, right-padded with ``<pad>``);
        attention_mask [B, N + T] (nonzero = real token) covering image and text positions.
        Returns the encoder output [B, N + T, d]. Padded positions hold values nobody may attend to.
        """
        lm = self.model.language_model
        text = lm.shared(input_ids)
        h = torch.cat([image_features.to(text.dtype), text], dim=1)
        length = h.shape[1]
        if length > self.max_positions:
            raise ValueError("encoder sequence longer than the position table")
        positions = torch.arange(2, length + 2, device=h.device)
        h = lm.encoder.layernorm_embedding(h + lm.encoder.embed_positions(positions).unsqueeze(0))
        mask = (attention_mask != 0).view(h.shape[0], 1, 1, length)
        for layer in lm.encoder.layers:
            h = layer(h, mask)
        return h

    @torch.jit.export
    def cross_kv(self, encoder_hidden: Tensor) -> Tuple[Tensor, Tensor]:
        """encoder_hidden [B, S, d] -> (K, V), each [L_dec, B, H, S, hd]: computed once per request."""
        keys: List[Tensor] = []
        values: List[Tensor] = []
        for layer in self.model.language_model.decoder.layers:
            attn = layer.encoder_attn
            keys.append(attn.split(attn.k_proj(encoder_hidden)))
            values.append(attn.split(attn.v_proj(encoder_hidden)))
        return torch.stack(keys), torch.stack(values)

    @torch.jit.export
    def decode_step(self, input_ids: Tensor, positions: Tensor, self_k: Tensor, self_v: Tensor,
                    cross_k: Tensor, cross_v: Tensor, cross_mask: Tensor, cross_rows: Tensor) -> Tensor:
        """One decoder step for B sequences (decoder rows), each at its own position.

        input_ids [B] int64: the last token of each row (decoder_start ``</s>`` at position 0).
        positions [B] int64: that token's 0-based decoder position.
        self_k/self_v [L_dec, B, H, S_max, hd]: caller-owned cache; this call writes position ``positions[b]``
          of row b in place and attends to positions 0..positions[b]. Entries past a row's position are ignored,
          so rows of different lengths share one tensor and S_max only bounds the longest.
        cross_k/cross_v [L_dec, G, H, S_enc, hd] from ``cross_kv``: one row per encoded sequence, padded to the
          longest; cross_mask [G, S_enc] nonzero where the encoder position is real.
        cross_rows [B] int64: the cross row each decoder row attends to. The beams of one request name the same
          row: its K/V are stored and read once, the beams becoming query positions of one attention call
          (query rows are independent in attention, so this equals one call per beam).
        Returns logits [B, V] in float32.
        """
        lm = self.model.language_model
        b = input_ids.shape[0]
        g = cross_k.shape[1]
        s_max = self_k.shape[3]
        h = lm.shared(input_ids) + lm.decoder.embed_positions(positions + 2)
        h = lm.decoder.layernorm_embedding(h).unsqueeze(1)  # [B, 1, d]
        self_keys = torch.arange(s_max, device=h.device).unsqueeze(0) <= positions.unsqueeze(1)  # [B, S_max]
        self_mask = self_keys.view(b, 1, 1, s_max)
        enc_keys = cross_mask != 0  # [G, S_enc]
        enc_mask = enc_keys.view(g, 1, 1, cross_mask.shape[1])
        # The fused decode attention (florence::decode_attention, ops.py): scripted CPU float32 steps.
        fused = (torch.jit.is_scripting() and self.fused_decode_attention and self_k.device.type == "cpu"
                 and self_k.dtype == torch.float32)
        # Query slot of each row within its cross row: how many earlier rows share that cross row.
        same = (cross_rows.unsqueeze(0) == cross_rows.unsqueeze(1)).to(torch.int64)
        slots = torch.tril(same, diagonal=-1).sum(dim=1)
        if torch.jit.is_scripting():
            q_len = int(slots.max()) + 1 if b > 0 else 1
        else:  # eager and torch.export (aoti.py), where int(tensor) cannot trace and .item() is an unbacked size
            last_slot = slots.max().item() if b > 0 else 0
            torch._check_is_size(last_slot)  # slots count earlier rows: a size (inductor needs to know it is one)
            q_len = last_slot + 1
            # SDPA's mask check asks "mask rows == query rows, or 1?": for an unbacked q_len only the first is
            # decidable, so the mask spans the query rows (a broadcast view, no copy).
            enc_mask = enc_mask.expand(g, 1, q_len, cross_mask.shape[1])
        rows = torch.arange(b, device=h.device)
        i = 0
        for layer in lm.decoder.layers:
            h = layer.step(h, rows, positions, self_k, self_v, i, self_mask, cross_k[i], cross_v[i], enc_mask,
                           cross_rows, slots, q_len, b >= self.packed_layers_min_rows, fused, self_keys, enc_keys)
            i += 1
        if len(self.lm_head_packed) > 0 and b >= self.packed_lm_head_min_rows:
            logits = _decode_linear(h, self.lm_head_packed[0], self.final_logits_bias.view(-1), self.vocab_size,
                                    self.decode_linear_packing != "onednn").squeeze(1)
        else:
            logits = self.lm_head(h.squeeze(1)) + self.final_logits_bias
        return logits.float()

    def decode_step_pooled(self, input_ids: Tensor, positions: Tensor, self_k: Tensor, self_v: Tensor,
                           cross_k: Tensor, cross_v: Tensor, cross_mask: Tensor, cross_rows: Tensor,
                           self_len: Tensor) -> Tensor:
        """``decode_step`` over the occupied prefix of whole KV-pool tensors (torch.export only; not scripted).

        The AOTInductor packages assume contiguous inputs, and a KV pool's occupied rows and positions are a
        strided view of its tensors. So this graph takes the pool tensors themselves and narrows inside:
        self_k/self_v [L, R, H, S, hd] (R >= B, S >= s; rows [0, B) written in place), cross_k/cross_v
        [L, Rc, H, C, hd] and cross_mask [G, c] (G <= Rc, c <= C: the used cross rows and encoder positions, a
        small contiguous tensor), self_len [s] (only its size is read: the decoder positions in use). Same
        results as ``decode_step`` on the views ``self_k[:, :B, :, :s]``, ``cross_k[:, :G, :, :c]``.
        """
        lm = self.model.language_model
        b = input_ids.shape[0]
        g, c = cross_mask.shape[0], cross_mask.shape[1]
        s = self_len.shape[0]
        torch._check(b <= self_k.shape[1])
        torch._check(s <= self_k.shape[3])
        torch._check(g <= cross_k.shape[1])
        torch._check(c <= cross_k.shape[3])
        h = lm.shared(input_ids) + lm.decoder.embed_positions(positions + 2)
        h = lm.decoder.layernorm_embedding(h).unsqueeze(1)  # [B, 1, d]
        self_mask = (torch.arange(s, device=h.device).unsqueeze(0) <= positions.unsqueeze(1)).view(b, 1, 1, s)
        same = (cross_rows.unsqueeze(0) == cross_rows.unsqueeze(1)).to(torch.int64)
        slots = torch.tril(same, diagonal=-1).sum(dim=1)
        last_slot = slots.max().item()
        torch._check_is_size(last_slot)
        q_len = last_slot + 1
        enc_mask = (cross_mask != 0).view(g, 1, 1, c).expand(g, 1, q_len, c)
        rows = torch.arange(b, device=h.device)
        i = 0
        for layer in lm.decoder.layers:
            h = layer.step(h, rows, positions, self_k, self_v, i, self_mask, cross_k[i, :g, :, :c],
                           cross_v[i, :g, :, :c], enc_mask, cross_rows, slots, q_len, False, False, self_mask,
                           enc_mask)
            i += 1
        logits = self.lm_head(h.squeeze(1)) + self.final_logits_bias
        return logits.float()

    @torch.jit.export
    def pack_for_cpu(self, rows: int) -> bool:
        """Optional CPU fast path: keeps prepacked copies of the linear weights of the vision tower, the prompt
        encoder, the decoder and lm_head (one more copy of those weights in memory) and uses them from then on.
        The prompt encoder's are oneDNN's, q|k|v fused into one matrix and fc1's GELU into its GEMM (1.09-1.12x
        faster ``encode`` on an AMD EPYC, same outputs). The vision tower's are
        oneDNN's (its MLPs' GELU fused into the GEMM). The decoder's and lm_head's are florence::pack_linear's
        panels for florence::packed_linear (ops.py) where ``decode_linear`` says so ("auto": where
        florence::packed_linear_kernel() recommends it for this CPU), else oneDNN's, tuned for ``rows``-row
        inputs (the decode batch). A decode step's few rows against a large weight is where the plain GEMM spends
        its time re-packing the weight on every call; ``decode_linear_packing`` records the choice ("florence" /
        "onednn"). Steps with fewer rows than PACKED_*_MIN_ROWS keep the plain path. The host calls it once after
        loading, when its build has oneDNN.

        What is packed: the float32 decoder and lm_head (an int8 model's run Int8Linear instead); the vision
        tower when it is float32, or bfloat16 / float16 on a CPU whose oneDNN has a GEMM in that dtype (bfloat16:
        AVX-512 BW/VL/DQ or AVX-NE-CONVERT; oneDNN refuses to pack it elsewhere, e.g. on AVX2-only CPUs, where
        that tower stays on the plain path). ``vision_packed`` records the tower's outcome. Returns whether anything was
        packed; False, changing nothing, unless the model is on the CPU in float32 or int8."""
        w = self.final_logits_bias
        if w.device.type != "cpu" or w.dtype != torch.float32:
            return False
        packed = False
        if not self.int8_weights:  # an int8 model's decoder and lm_head run Int8Linear
            choice = self.decode_linear
            if choice == "auto":
                choice = "onednn" if torch.ops.florence.packed_linear_kernel() == "onednn" else "florence"
            if choice != "florence" and choice != "onednn":
                raise ValueError("decode_linear must be auto, florence or onednn")
            florence = choice == "florence"
            for layer in self.model.language_model.decoder.layers:
                layer.pack_for_cpu(rows, florence)
            # The prompt encoder: one image's 577 + prompt positions per call, oneDNN's GEMM at that size.
            for layer in self.model.language_model.encoder.layers:
                layer.pack_for_cpu(self.encoder_pack_rows)
            self.lm_head_packed = [_pack_decode(self.lm_head.weight, rows, florence)]
            self.decode_linear_packing = choice
            packed = True
        tower = self.model.vision_tower.convs[0].conv.weight.dtype
        if (tower == torch.float32 or (tower == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())
                or (tower == torch.float16 and torch.ops.mkldnn._is_mkldnn_fp16_supported())):
            self.model.vision_tower.pack_for_cpu(self.vision_pack_rows)
            self.vision_packed = True
            packed = True
        return packed

    @torch.jit.export
    def empty_self_cache(self, batch: int, max_len: int) -> Tensor:
        """A zeroed [L_dec, batch, H, max_len, hd] cache tensor in the model's dtype/device (one of K or V)."""
        w = self.final_logits_bias
        return torch.zeros([self.decoder_layers, batch, self.decoder_heads, max_len, self.head_dim],
                           dtype=w.dtype, device=w.device)

    def forward(self, pixel_values: Tensor, input_ids: Tensor) -> Tensor:
        """Whole-prompt convenience path: image + unpadded prompt -> encoder output (used for tracing checks)."""
        feats = self.image_features(pixel_values)
        mask = torch.ones(input_ids.shape[0], feats.shape[1] + input_ids.shape[1], dtype=torch.long,
                          device=feats.device)
        return self.encode(feats, input_ids, mask)
