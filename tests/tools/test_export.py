"""Export paths (save_pretrained directories in both layouts, LoRA), the batching contract, and errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tools.florence2 import export as exp
from tools.florence2 import generate as G
from tools.florence2.config import preset
from tools.florence2.model import Florence2ForServing
from tools.florence2.weights import CheckpointError

from conftest import (CACHE, REPO, decoder_under_test, hf_model_from_state, hf_processor, int8_twin,
                      processor_inputs, stack_cross)

PARAMS = G.GenerationParams(max_new_tokens=64, num_beams=3, no_repeat_ngram_size=3)

# transformers' conversion table read backwards: native name -> original remote-code name.
NATIVE_TO_ORIGINAL = [
    (r"^model\.vision_tower\.convs\.(\d+)\.conv\.", r"vision_tower.convs.\1.proj."),
    (r"^model\.vision_tower\.convs\.(\d+)\.norm\.", r"vision_tower.convs.\1.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.conv([12])\.", r"vision_tower.blocks.\1.\2.\3.conv\4.fn.dw."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.spatial_block\.norm1\.", r"vision_tower.blocks.\1.\2.spatial_block.window_attn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.channel_block\.norm1\.", r"vision_tower.blocks.\1.\2.channel_block.channel_attn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.(window_attn|channel_attn)\.", r"vision_tower.blocks.\1.\2.\3.\4.fn."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.norm2\.", r"vision_tower.blocks.\1.\2.\3.ffn.norm."),
    (r"^model\.vision_tower\.blocks\.(\d+)\.(\d+)\.(\w+_block)\.ffn\.", r"vision_tower.blocks.\1.\2.\3.ffn.fn.net."),
    (r"^model\.multi_modal_projector\.image_projection\.weight$", "image_projection"),
    (r"^model\.multi_modal_projector\.image_position_embed\.", "image_pos_embed."),
    (r"^model\.multi_modal_projector\.", ""),
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^final_logits_bias$", "language_model.final_logits_bias"),
]


def to_original(state):
    out = {}
    for key, value in state.items():
        for pattern, repl in NATIVE_TO_ORIGINAL:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            raise AssertionError(f"no rule for {key}")
        out[new] = value.t().contiguous() if new == "image_projection" else value.contiguous()
    return out


def original_config(arch):
    return {
        "model_type": "florence2",
        "vision_config": {"model_type": "davit", "dim_embed": arch.embed_dim, "depths": arch.depths,
                          "num_heads": arch.num_heads, "num_groups": arch.num_groups,
                          "patch_size": arch.patch_size, "patch_stride": arch.patch_stride,
                          "patch_padding": arch.patch_padding, "patch_prenorm": arch.patch_prenorm,
                          "window_size": arch.window_size, "projection_dim": arch.d_model,
                          "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
                          "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100}},
        "text_config": {"model_type": "florence2_language", "d_model": arch.d_model, "vocab_size": arch.vocab_size,
                        "encoder_layers": arch.encoder_layers, "decoder_layers": arch.decoder_layers,
                        "encoder_attention_heads": arch.encoder_attention_heads,
                        "decoder_attention_heads": arch.decoder_attention_heads,
                        "encoder_ffn_dim": arch.encoder_ffn_dim, "decoder_ffn_dim": arch.decoder_ffn_dim,
                        "max_position_embeddings": arch.max_position_embeddings, "num_beams": 3,
                        "no_repeat_ngram_size": 3, "early_stopping": True, "forced_bos_token_id": 0,
                        "forced_eos_token_id": 2, "decoder_start_token_id": 2},
    }


def generate_ours(model_dir, processor, image, prompt="<OD>", params=PARAMS):
    scripted = torch.jit.load(str(model_dir / exp.MODEL_FILE))
    px, _, text = processor_inputs(processor, prompt, image)
    return G.generate(scripted, G.prefill(scripted, px, text), params).tokens


def hf_tokens(hf, processor, image, prompt="<OD>", params=PARAMS):
    px, full, _ = processor_inputs(processor, prompt, image)
    return hf.generate(input_ids=full, pixel_values=px, attention_mask=torch.ones_like(full), do_sample=False,
                       max_new_tokens=params.max_new_tokens, num_beams=params.num_beams,
                       no_repeat_ngram_size=params.no_repeat_ngram_size, early_stopping=True,
                       forced_bos_token_id=0, forced_eos_token_id=2, decoder_start_token_id=2)[0].tolist()


@torch.no_grad()
def test_save_pretrained_directory_exports_and_matches(tiny_artefacts, images, tmp_path):
    art = tiny_artefacts[0]
    art.hf.save_pretrained(tmp_path / "ckpt")
    out = exp.export(exp.source_pretrained(str(tmp_path / "ckpt")), tmp_path / "out", cache_dir=CACHE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"] == {"weights": "pretrained", "path": str(tmp_path / "ckpt"), "layout": "native"}
    assert json.loads((out / "config.json").read_text())["generation"]["num_beams"] == 3
    image = images["chelsea"]
    assert generate_ours(out, art.processor, image) == hf_tokens(art.hf, art.processor, image)


@torch.no_grad()
def test_original_layout_state_dict_maps_and_matches(tiny_artefacts, images, tmp_path):
    art = tiny_artefacts[1]
    ckpt = tmp_path / "original"
    ckpt.mkdir()
    native = {k: v for k, v in art.scripted.state_dict().items() if k != "lm_head.weight"}
    original = to_original(native)
    assert "vision_tower.blocks.0.0.spatial_block.window_attn.fn.qkv.weight" in original
    assert original["image_projection"].shape == (art.arch.embed_dim[-1], art.arch.d_model)
    save_file(original, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(original_config(art.arch)))
    src = exp.source_pretrained(str(ckpt))
    assert src.provenance["layout"] == "original"
    out = exp.export(src, tmp_path / "out", cache_dir=CACHE)
    loaded = torch.jit.load(str(out / exp.MODEL_FILE)).state_dict()
    for key, value in art.scripted.state_dict().items():
        assert torch.equal(loaded[key], value), key
    image = images["rocket"]
    assert generate_ours(out, art.processor, image, "<CAPTION>") == hf_tokens(art.hf, art.processor, image,
                                                                               "<CAPTION>")


@torch.no_grad()
def test_lora_adapter_merged_at_export_gives_peft_tokens(tiny_artefacts, images, tmp_path):
    from peft import LoraConfig, get_peft_model

    art = tiny_artefacts[0]
    art.hf.save_pretrained(tmp_path / "base")
    torch.manual_seed(7)
    cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                     target_modules=["q_proj", "v_proj", "fc1", "qkv", "image_projection"])
    from transformers import Florence2ForConditionalGeneration
    peft_model = get_peft_model(Florence2ForConditionalGeneration.from_pretrained(tmp_path / "base"), cfg).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    image = images["coffee"]
    expected = hf_tokens(peft_model, art.processor, image)
    assert expected != hf_tokens(art.hf, art.processor, image), "adapter too weak to change the output"
    out = exp.export(exp.source_pretrained(str(tmp_path / "base")), tmp_path / "out",
                     lora=tmp_path / "adapter", cache_dir=CACHE)
    assert json.loads((out / "manifest.json").read_text())["provenance"]["lora"]["r"] == 4
    assert generate_ours(out, art.processor, image) == expected


@torch.no_grad()
@pytest.mark.parametrize("variant", ["plain", "cpu_prepack", "int8"])
def test_decode_step_batch_invariance_across_lengths(tiny_artefacts, images, variant):
    """One step over rows at different positions and encoder lengths equals each row run alone (<= 1e-5): on
    the plain and prepacked float32 paths, and on the int8 export (per-row activation scales, exact int32 sums)."""
    art = tiny_artefacts[0]
    m = int8_twin(art) if variant == "int8" else decoder_under_test(art, variant == "cpu_prepack")
    prompts = ["<CAPTION>", "<OCR_WITH_REGION>", "<OPEN_VOCABULARY_DETECTION>wheels"]
    steps = [20, 37, 9]  # tokens each sequence has already decoded
    s_max = G.round_up_to_quantum(max(steps) + 1)  # self positions, in whole attention quanta as the server has them
    reqs, seqs, caches, alone = [], [], [], []
    for prompt, image, n in zip(prompts, images.values(), steps):
        px, _, text = processor_inputs(art.processor, prompt, image)
        req = G.prefill(m, px, text)
        k, v = m.empty_self_cache(1, s_max), m.empty_self_cache(1, s_max)
        tokens = [2]
        for pos in range(n + 1):
            logits = m.decode_step(torch.tensor([tokens[-1]]), torch.tensor([pos]), k, v,
                                   req.cross_k, req.cross_v, req.cross_mask, torch.zeros(1, dtype=torch.long))
            if pos < n:
                tokens.append(int(logits.argmax()))
        reqs.append(req)
        seqs.append(tokens)
        alone.append(logits[0])
        # Cache as it was before the last step: the batched step rewrites position n itself.
        k[:, :, :, n:] = 0
        v[:, :, :, n:] = 0
        caches.append((k, v))
    cross_k, cross_v, cross_mask = stack_cross(reqs)
    self_k = torch.cat([c[0] for c in caches], dim=1)
    self_v = torch.cat([c[1] for c in caches], dim=1)
    before_k, before_v = self_k.clone(), self_v.clone()
    logits = m.decode_step(torch.tensor([s[-1] for s in seqs]), torch.tensor(steps), self_k, self_v,
                           cross_k, cross_v, cross_mask, torch.arange(3))
    for row in range(3):
        assert (logits[row] - alone[row]).abs().max() <= 1e-5, row
        if variant == "int8":  # exact integer products and lengths in whole attention quanta: bit for bit
            assert torch.equal(logits[row], alone[row]), row
    # What a much longer batch-mate adds in the server: self and cross padding, in whole attention quanta (128 self
    # positions, 64 more encoder positions): the same logits bit for bit. Lengths that are not whole quanta move
    # them by ~1e-6 (the attention kernels' sums follow the padded length), which an int8 export's per-row
    # quantization magnified into flipped tokens.
    grow = [0, 0, 0, 128 - s_max]
    wide = m.decode_step(torch.tensor([s[-1] for s in seqs]), torch.tensor(steps),
                         torch.nn.functional.pad(before_k, grow), torch.nn.functional.pad(before_v, grow),
                         torch.nn.functional.pad(cross_k, [0, 0, 0, 64]), torch.nn.functional.pad(cross_v, [0, 0, 0, 64]),
                         torch.nn.functional.pad(cross_mask, [0, 64]), torch.arange(3))
    assert torch.equal(wide, logits)
    # The step wrote each row's own position in place, nothing beyond it.
    for row, n in enumerate(steps):
        assert self_k[:, row, :, n].abs().sum() > 0
        assert self_k[:, row, :, n + 1:].abs().sum() == 0

    # Rows sharing cross rows (beams of one request), in no particular order, with the cross rows listed in
    # reverse: each row equals the same row reading its own copy of the cross K/V.
    shared_rows = [2, 0, 2, 1, 0, 2]
    order = [2, 1, 0]  # cross row j of the shared tensors holds request order[j]
    row_req = [order[r] for r in shared_rows]
    ids = torch.tensor([seqs[q][-1] for q in row_req])
    pos = torch.tensor([steps[q] for q in row_req])
    k6 = torch.cat([before_k[:, q:q + 1] for q in row_req], dim=1)
    v6 = torch.cat([before_v[:, q:q + 1] for q in row_req], dim=1)
    shared = m.decode_step(ids, pos, k6.clone(), v6.clone(), cross_k[:, order], cross_v[:, order],
                           cross_mask[order], torch.tensor(shared_rows))
    own = m.decode_step(ids, pos, k6.clone(), v6.clone(), cross_k[:, row_req], cross_v[:, row_req],
                        cross_mask[row_req], torch.arange(6))
    assert (shared - own).abs().max() <= 1e-5
    for row, q in enumerate(row_req):
        assert (shared[row] - alone[q]).abs().max() <= 1e-5, row


@torch.no_grad()
def test_prepacked_paths_equal_plain(tiny_artefacts, images):
    """pack_for_cpu switches the vision tower, and decode_step from PACKED_*_MIN_ROWS rows on (now every step),
    to oneDNN-prepacked weights: image features equal the plain path's (<= 1e-4), and at one row, a beam-3
    request's three and larger batches so do the logits (<= 1e-4, same argmax) and the cache the step writes."""
    from tools.florence2.model import Florence2ForServing

    art = tiny_artefacts[0]
    # The exported random weights have zero biases; give every bias (and the logits bias) values, so a packed
    # path that lost one would show.
    eager = Florence2ForServing(art.arch).eval()
    eager.load_state_dict(art.scripted.state_dict())
    gen = torch.Generator().manual_seed(0)
    for name, p in eager.named_parameters():
        if name.endswith(".bias"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    eager.final_logits_bias.copy_(torch.randn(eager.final_logits_bias.shape, generator=gen))
    plain, packed = torch.jit.script(eager), torch.jit.script(eager)
    assert packed.pack_for_cpu(32)
    px, _, text = processor_inputs(art.processor, "<OCR_WITH_REGION>", images["page"])
    # The vision tower's linear layers are prepacked too (GELU fused into fc1).
    feats = plain.image_features(px)
    assert (packed.image_features(px) - feats).abs().max() <= 1e-4
    req = G.prefill(plain, px, text)
    assert packed.packed_lm_head_min_rows == 1 and packed.packed_layers_min_rows == 1
    sizes = [1, 3, 4, 8, 3 * 5]
    for rows in sizes:
        groups = -(-rows // 3)
        cross_rows = torch.arange(groups).repeat_interleave(3)[:rows]
        cross_k = req.cross_k.expand(-1, groups, -1, -1, -1).contiguous()
        cross_v = req.cross_v.expand(-1, groups, -1, -1, -1).contiguous()
        mask = req.cross_mask.expand(groups, -1).contiguous()
        k = torch.randn(plain.empty_self_cache(rows, 24).shape, generator=gen)
        v = torch.randn(k.shape, generator=gen)
        ids = torch.randint(4, 50000, (rows,), generator=gen)
        pos = torch.randint(0, 20, (rows,), generator=gen)
        outs = []
        for model in (plain, packed):
            kc, vc = k.clone(), v.clone()
            outs.append((model.decode_step(ids, pos, kc, vc, cross_k, cross_v, mask, cross_rows), kc, vc))
        (a, ka, va), (b, kb, vb) = outs
        assert (a - b).abs().max() <= 1e-4, rows
        assert torch.equal(a.argmax(-1), b.argmax(-1)), rows
        assert (ka - kb).abs().max() <= 1e-4 and (va - vb).abs().max() <= 1e-4, rows


@torch.no_grad()
def test_padded_prompt_batch_encodes_like_each_alone(tiny_artefacts, images):
    art = tiny_artefacts[0]
    m = art.scripted
    texts, feats = [], []
    for prompt, image in zip(["<CAPTION>", "<MORE_DETAILED_CAPTION>"], [images["astronaut"], images["page"]]):
        px, _, text = processor_inputs(art.processor, prompt, image)
        texts.append(text[0])
        feats.append(m.image_features(px))
    t_max = max(len(t) for t in texts)
    ids = torch.stack([torch.nn.functional.pad(t, (0, t_max - len(t)), value=1) for t in texts])
    n_img = feats[0].shape[1]
    mask = torch.stack([torch.cat([torch.ones(n_img + len(t)), torch.zeros(t_max - len(t))]) for t in texts]).long()
    batched = m.encode(torch.cat(feats), ids, mask)
    for row, (f, t) in enumerate(zip(feats, texts)):
        alone = m.encode(f, t.unsqueeze(0), torch.ones(1, n_img + len(t), dtype=torch.long))
        assert (batched[row, : n_img + len(t)] - alone[0]).abs().max() <= 1e-5


def test_incomplete_checkpoint_names_missing_keys(tiny_artefacts, tmp_path):
    art = tiny_artefacts[0]
    ckpt = tmp_path / "broken"
    art.hf.save_pretrained(ckpt)
    from safetensors.torch import load_file
    sd = load_file(str(ckpt / "model.safetensors"))
    del sd["model.language_model.decoder.layers.1.fc2.weight"]
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing: model\.language_model\.decoder\.layers\.1\.fc2\.weight"):
        exp.export(exp.source_pretrained(str(ckpt)), tmp_path / "out", cache_dir=CACHE)


def test_wrong_checkpoint_and_cli_errors(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not a Florence-2 checkpoint"):
        exp.source_pretrained(str(tmp_path / "bert"))
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "bert" / "model.safetensors"))
    cfg = original_config(preset("tiny"))
    (tmp_path / "bert" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="neither 'model.vision_tower"):
        exp.source_pretrained(str(tmp_path / "bert"))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "florence2_export.py"), "--from-pretrained",
                           str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "is not a local directory" in proc.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@torch.no_grad()
def test_reduced_precision_export_matches_transformers_in_the_same_dtype(tiny_artefacts, images, tmp_path, dtype):
    """--dtype stores the weights in that dtype; image features and decoder logits equal transformers' model cast
    to the same dtype to the dtype's rounding (its error against fp32 is the dtype's, not ours)."""
    art = tiny_artefacts[0]
    torch_dtype = getattr(torch, dtype)
    out = exp.export(exp.source_random("tiny", 0), tmp_path / dtype, dtype=dtype, cache_dir=CACHE)
    m = torch.jit.load(str(out / exp.MODEL_FILE))
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype
    assert all(p.dtype == torch_dtype for p in m.parameters())
    assert not m.pack_for_cpu(32), "the oneDNN prepacked decode path is for float32 weights only"
    hf = hf_model_from_state(art.arch, art.scripted.state_dict()).to(torch_dtype)
    agree = total = 0
    for prompt, image in [("<CAPTION>", "astronaut"), ("<OD>", "coffee"), ("<OCR>", "page")]:
        px, full, text = processor_inputs(art.processor, prompt, images[image])
        feats = m.image_features(px)
        ref = hf.model.get_image_features(px.to(torch_dtype)).pooler_output
        assert feats.dtype == torch_dtype
        # Both sides round every op to the dtype, in different kernels (oneDNN/MKL, per CPU class), so they differ
        # by a few units of the dtype; the dtype itself moves the features ~10x more from float32. Bound: at most
        # half that move (measured ratio 0.06-0.29; AMX Xeon: < 1e-2 absolute, AVX2 EPYC: bf16 0.094, fp16 0.019).
        dtype_error = (ref.float() - art.scripted.image_features(px)).abs().max()
        assert (feats.float() - ref.float()).abs().max() <= 0.5 * dtype_error, prompt
        # Greedy tokens may part at a near-tie of the random weights' logits (AVX2: bfloat16 caption, token 2,
        # margin 0.016); so teacher-forced on transformers' greedy tokens, every step's logits stay within 4 units
        # of the dtype at the logits' scale (measured: bfloat16 0.047 of 5.5, float16 0.0059 of 6.1) and the top-1
        # agrees at >= 90% of the steps (measured 71/72 bfloat16, 72/72 float16).
        theirs = hf.generate(input_ids=full, pixel_values=px.to(torch_dtype), attention_mask=torch.ones_like(full),
                             do_sample=False, max_new_tokens=24, num_beams=1, no_repeat_ngram_size=3,
                             forced_bos_token_id=0, forced_eos_token_id=2, decoder_start_token_id=2)[0].tolist()
        ours = G.teacher_forced_logits(m, G.prefill(m, px, text), theirs).float()
        ref_logits = hf(input_ids=full, pixel_values=px.to(torch_dtype), attention_mask=torch.ones_like(full),
                        decoder_input_ids=torch.tensor([theirs[:-1]])).logits[0].float()
        assert ours.shape == ref_logits.shape == (24, art.arch.vocab_size)
        bound = 4 * torch.finfo(torch_dtype).eps * ref_logits.abs().max()
        assert (ours - ref_logits).abs().max() <= bound, prompt
        agree += int((ours.argmax(-1) == ref_logits.argmax(-1)).sum())
        total += len(ours)
    assert agree >= 0.9 * total, f"{agree}/{total}"


@torch.no_grad()
def test_int8_linear_is_the_per_row_quantized_product():
    """Int8Linear: weights rounded per output channel, activations per row, product exact; so y equals the
    float64 product of the dequantized operands (<= 1e-4 relative) and a row's output does not depend on the
    other rows of the call (bit-identical), zero rows and all-zero rows included."""
    from tools.florence2.model import Int8Linear
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    linear.weight.copy_(torch.randn(40, 96, generator=gen))
    linear.bias.copy_(torch.randn(40, generator=gen))
    q = Int8Linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() == 127
    x = torch.randn(2, 5, 96, generator=gen) * torch.logspace(-2, 2, 5).view(1, 5, 1)
    x[1, 3] = 0
    y = q(x)
    assert y.shape == (2, 5, 40)
    x2 = x.reshape(-1, 96).double()
    sx = x2.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    w = q.weight_int8.double() * q.weight_scale.double().unsqueeze(1)
    ref = (torch.round(x2 / sx) * sx) @ w.t() + linear.bias.double()
    assert ((y.reshape(-1, 40).double() - ref).abs().max() / ref.abs().max()) <= 1e-4
    assert torch.equal(y[1, 3], linear.bias)  # an all-zero row: exactly the bias
    for i in range(5):
        assert torch.equal(q(x[0, i:i + 1]), y[0, i:i + 1])
    assert q(x[:, :0]).shape == (2, 0, 40)
    # Quantization error is the scheme's, not a bug's: close to the float layer.
    assert ((y - linear(x)).abs().max() / linear(x).abs().max()) <= 0.05


@torch.no_grad()
def test_int8_export_stays_close_to_float32(tiny_artefacts, images, tmp_path):
    """--dtype int8: the language model's and lm_head's linear layers hold int8 weights, the vision tower stays
    float32 (and takes pack_for_cpu); under teacher forcing on the float32 model's greedy tokens, the int8
    model's top-1 agrees at >= 90% of positions (measured 97.9% on tiny, 96 positions), and it refuses to be a
    float16/bfloat16-style artefact (config dtype "int8")."""
    art = tiny_artefacts[0]
    out = exp.export(exp.source_random("tiny", 0), tmp_path / "int8", dtype="int8", cache_dir=CACHE)
    assert json.loads((out / "config.json").read_text())["dtype"] == "int8"
    replaced = json.loads((out / "manifest.json").read_text())["provenance"]["int8_linear_layers"]
    m = torch.jit.load(str(out / exp.MODEL_FILE)).eval()
    state = m.state_dict()
    int8_keys = [k for k, v in state.items() if v.dtype == torch.int8]
    assert len(int8_keys) == replaced > 0
    assert "lm_head.weight_int8" in int8_keys
    assert not any(k.startswith("model.vision_tower.") for k in int8_keys)
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.startswith("model.vision_tower."))
    px, _, text = processor_inputs(art.processor, "<CAPTION>", images["astronaut"])
    # The float32 tower, prepacked or not, to float rounding (the image projection after it is int8: its per-row
    # activation rounding can turn a 1e-6 change of its input into one quantization step, so compare before it).
    before = m.model.vision_tower(px)
    assert m.pack_for_cpu(32) and m.vision_packed
    assert (m.model.vision_tower(px) - before).abs().max() <= 1e-5 * before.abs().max()
    agree, total = top1_agreement(art, m, images)
    assert agree / total >= 0.9, f"{agree}/{total}"


def top1_agreement(art, m, images) -> tuple[int, int]:
    """Teacher forcing on the float32 artefact's greedy tokens (32 each of caption / OD / OCR-with-region): at how
    many positions ``m``'s top-1 equals the float32 model's, out of how many."""
    ref = art.scripted
    agree = total = 0
    for prompt, image in [("<CAPTION>", "astronaut"), ("<OD>", "coffee"), ("<OCR_WITH_REGION>", "page")]:
        px, _, text = processor_inputs(art.processor, prompt, images[image])
        req_ref, req_q = G.prefill(ref, px, text), G.prefill(m, px, text)
        p = G.GenerationParams(max_new_tokens=32, min_new_tokens=32, num_beams=1)
        tokens = G.generate(ref, req_ref, p).tokens
        l_ref = G.teacher_forced_logits(ref, req_ref, tokens)
        l_q = G.teacher_forced_logits(m, req_q, tokens)
        agree += int((l_ref.argmax(-1) == l_q.argmax(-1)).sum())
        total += len(tokens) - 1
    return agree, total


@torch.no_grad()
@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_bfloat16_vision_tower_export(tiny_artefacts, images, tmp_path, dtype):
    """--dtype int8 (or float32) --vision-dtype bfloat16: the tower's weights in bfloat16, the rest as that export
    has it; image features still come out in float32, prepacked (oneDNN bf16, where the CPU has it) or not; one
    image gives bit-identical features call after call (the CPU server runs the tower one image per call, which
    keeps the batching contract); and the teacher-forced top-1 agreement with the float32 model stays >= 90% (measured
    95/96 beside int8)."""
    art = tiny_artefacts[0]
    assert json.loads((art.dir / "config.json").read_text())["vision_dtype"] == "float32"
    out = exp.export(exp.source_random("tiny", 0), tmp_path / f"{dtype}-bf16v", dtype=dtype, vision_dtype="bfloat16",
                     cache_dir=CACHE)
    config = json.loads((out / "config.json").read_text())
    assert (config["dtype"], config["vision_dtype"]) == (dtype, "bfloat16")
    m = torch.jit.load(str(out / exp.MODEL_FILE)).eval()
    state = m.state_dict()
    tower = [v.dtype for k, v in state.items() if k.startswith("model.vision_tower.")]
    assert tower and set(tower) == {torch.bfloat16}
    rest = {v.dtype for k, v in state.items() if not k.startswith("model.vision_tower.")}
    assert rest == ({torch.float32, torch.int8} if dtype == "int8" else {torch.float32})

    # The reference: float32 arithmetic on the same (bf16-rounded) tower weights. Rounding the weights alone moves
    # a random tiny tower's output on a real photo by 10-19% (its random blocks amplify it; base: ~4%); bfloat16
    # arithmetic on top of that adds 2-3% (measured), checked here.
    px, _, _ = processor_inputs(art.processor, "<CAPTION>", images["astronaut"])
    eager = Florence2ForServing(preset("tiny")).eval()
    exp.random_init(eager, 0)
    reference = eager.model.vision_tower.to(torch.bfloat16).float()(px)
    plain_map = m.model.vision_tower(px)
    plain = m.image_features(px)
    # oneDNN packs bfloat16 only where it has a bfloat16 GEMM (AVX-512 BW/VL/DQ or AVX-NE-CONVERT); elsewhere the
    # tower stays plain and the model still loads and answers (an AVX2-only CPU used to fail to load it).
    bf16_gemm = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert m.pack_for_cpu(32) == (bf16_gemm or dtype == "float32")  # float32: its decoder is packed either way
    assert m.vision_packed == bf16_gemm
    packed = m.image_features(px)
    assert plain.dtype == packed.dtype == torch.float32
    assert torch.equal(packed, m.image_features(px))
    for tower_map in (plain_map, m.model.vision_tower(px)):  # plain, then prepacked
        assert tower_map.dtype == torch.bfloat16
        assert (tower_map.float() - reference).norm() / reference.norm() < 0.06
    agree, total = top1_agreement(art, m, images)
    assert agree / total >= 0.9, f"{agree}/{total}"

    with pytest.raises(ValueError, match="vision-dtype"):
        exp.export(exp.source_random("tiny", 0), tmp_path / "bad", dtype="int8", vision_dtype="int8",
                   cache_dir=CACHE)

