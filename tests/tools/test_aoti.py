"""torch.export + AOTInductor packages (tools/florence2/aoti.py) against the TorchScript artefact they come from.

Compiling the tiny model's four packages takes about two minutes of g++ on the 2-core machine (session fixture).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from tools.florence2 import aoti
from tools.florence2 import export as exp
from tools.florence2 import generate as G
from tools.florence2.config import preset
from tools.florence2.model import Florence2ForServing

from conftest import REPO, TASK_PROMPTS, processor_inputs, stack_cross

# The packages then check every call's dtypes, static sizes and dynamic-size bounds, and throw on a mismatch.
# (Read once per process by the compiled code; strides of dynamic inputs are not checked: see AotiModel.)
os.environ["AOTI_RUNTIME_CHECK_INPUTS"] = "1"

TOL = 1e-4  # inductor fuses and orders reductions differently from eager/TorchScript


@pytest.fixture(scope="module")
def exact(tiny_artefacts):
    """The tiny artefact's model in float64 (eager, same seeded weights): exact arithmetic, to tell float32
    rounding from a real difference."""
    model = Florence2ForServing(preset("tiny")).eval()
    exp.random_init(model, 0)
    return model.double()


def features_close(ours, ts, exact_model, px) -> bool:
    """AOTI's image features equal TorchScript's to TOL, or, where float32 itself is farther than that from exact
    arithmetic (the document page: its near-constant white windows feed LayerNorms of tiny variance; TorchScript
    2.5e-4 from float64 on an AVX2 EPYC), to twice TorchScript's own float32 error."""
    float32_error = (ts.double() - exact_model.image_features(px.double())).abs().max().item()
    return (ours - ts).abs().max().item() <= max(TOL, 2 * float32_error)


@pytest.fixture(scope="session")
def tiny_aoti(tiny_artefacts, tmp_path_factory):
    """(TorchScript artefact, its AOTI packages loaded as an AotiModel), compiled from the artefact's directory."""
    art = tiny_artefacts[0]
    arch, model = aoti.from_model_dir(art.dir)
    out = tmp_path_factory.mktemp("aoti")
    torch._inductor.config.compile_threads = 1
    t0 = time.perf_counter()
    reports = aoti.compile_all(model, arch, out)
    print(f"\ntiny AOTI compile: {time.perf_counter() - t0:.0f} s "
          + ", ".join(f"{r.method} {r.export_s + r.compile_s:.0f} s" for r in reports))
    return art, aoti.AotiModel(out)


def test_packages_carry_the_interface(tiny_aoti):
    art, model = tiny_aoti
    for method in aoti.METHODS:
        meta = model.metadata(method)
        assert meta["florence.method"] == method
        assert meta["florence.format"] == aoti.FORMAT
        assert meta["florence.interface_version"] == str(aoti.INTERFACE_VERSION)
    assert (model.decoder_layers, model.decoder_heads, model.head_dim) == (
        art.arch.decoder_layers, art.arch.decoder_attention_heads, art.arch.head_dim)
    assert model.empty_self_cache(3, 5).shape == art.scripted.empty_self_cache(3, 5).shape


@torch.no_grad()
def test_prefill_matches_torchscript_on_real_images(tiny_aoti, exact, images):
    art, model = tiny_aoti
    ts = art.scripted
    for name, image in images.items():
        px, _, text = processor_inputs(art.processor, "<OCR_WITH_REGION>", image)
        feats = ts.image_features(px)
        assert features_close(model.image_features(px), feats, exact, px), name
        mask = torch.ones(1, feats.shape[1] + text.shape[1], dtype=torch.long)
        enc = ts.encode(feats, text, mask)
        assert (model.encode(feats, text, mask) - enc).abs().max() <= TOL, name
        for ours, ref in zip(model.cross_kv(enc), ts.cross_kv(enc)):
            assert ours.shape == ref.shape and (ours - ref).abs().max() <= TOL, name


@torch.no_grad()
def test_image_features_dynamic_batch(tiny_aoti, exact, images):
    """Batch sizes 1 and 4 through one package: each row equals TorchScript's and the row computed alone."""
    art, model = tiny_aoti
    pixels = [processor_inputs(art.processor, "<OD>", image)[0] for image in list(images.values())[:4]]
    batch = torch.cat(pixels)
    feats = model.image_features(batch)
    assert feats.shape == (4, art.arch.num_image_tokens(), art.arch.d_model)
    ts = art.scripted.image_features(batch)
    for row, px in enumerate(pixels):
        assert features_close(feats[row], ts[row], exact, px), row
        assert features_close(model.image_features(px)[0], feats[row], exact, px), row
    assert (feats[0] - feats[1]).abs().max() > 0.1, "different images must give different features"


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_generate_identical_tokens_to_torchscript(tiny_aoti, images, num_beams):
    """generate.py's greedy and beam loops, driven through the packages, give the TorchScript artefact's tokens."""
    art, model = tiny_aoti
    pics = list(images.values())
    prompts = [TASK_PROMPTS[i] for i in (0, 3, 7, 8, 13)]
    outputs = set()
    for i, prompt in enumerate(prompts):
        px, _, text = processor_inputs(art.processor, prompt, pics[i % len(pics)])
        p = G.GenerationParams(max_new_tokens=64, num_beams=num_beams, no_repeat_ngram_size=3)
        ref = G.generate(art.scripted, G.prefill(art.scripted, px, text), p).tokens
        ours = G.generate(model, G.prefill(model, px, text), p).tokens
        assert ours == ref, prompt
        assert len(ours) - 1 >= 64, "random weights stopped early; the test must cover >= 64 new tokens"
        outputs.add(tuple(ours))
    assert len(outputs) >= 4, "prompts and images must lead to different generations"


def _decode_inputs(art, images, gen):
    """Three requests' real cross K/V (different encoder lengths, padded), random self caches, positions."""
    reqs = []
    for prompt, image in zip(["<CAPTION>", "<OCR_WITH_REGION>", "<OPEN_VOCABULARY_DETECTION>wheels"],
                             images.values()):
        px, _, text = processor_inputs(art.processor, prompt, image)
        reqs.append(G.prefill(art.scripted, px, text))
    cross_k, cross_v, cross_mask = stack_cross(reqs)
    self_k = torch.randn(art.scripted.empty_self_cache(3, 16).shape, generator=gen)
    self_v = torch.randn(self_k.shape, generator=gen)
    return cross_k, cross_v, cross_mask, self_k, self_v


@torch.no_grad()
def test_decode_step_writes_the_caller_cache_in_place(tiny_aoti, images):
    """The package writes position positions[b] of the caller's self_k/self_v (no copy returned), exactly where
    and what TorchScript writes, and leaves every other position alone."""
    art, model = tiny_aoti
    gen = torch.Generator().manual_seed(0)
    cross_k, cross_v, cross_mask, self_k, self_v = _decode_inputs(art, images, gen)
    ids, pos, cross_rows = torch.tensor([17, 2, 901]), torch.tensor([0, 9, 4]), torch.tensor([2, 0, 1])
    k_ts, v_ts = self_k.clone(), self_v.clone()
    k_ao, v_ao = self_k.clone(), self_v.clone()
    ref = art.scripted.decode_step(ids, pos, k_ts, v_ts, cross_k, cross_v, cross_mask, cross_rows)
    ours = model.decode_step(ids, pos, k_ao, v_ao, cross_k, cross_v, cross_mask, cross_rows)
    assert ours.dtype == torch.float32 and (ours - ref).abs().max() <= TOL
    assert (k_ao - k_ts).abs().max() <= TOL and (v_ao - v_ts).abs().max() <= TOL
    written = torch.zeros(self_k.shape[3], dtype=torch.bool)
    for row, p in enumerate(pos.tolist()):
        assert (k_ao[:, row, :, p] - self_k[:, row, :, p]).abs().max() > 0.1, row
        written[:] = False
        written[p] = True
        assert torch.equal(k_ao[:, row][:, :, ~written], self_k[:, row][:, :, ~written]), row
        assert torch.equal(v_ao[:, row][:, :, ~written], self_v[:, row][:, :, ~written]), row


@torch.no_grad()
def test_decode_step_batch_invariance(tiny_aoti, images):
    """One call over rows at different positions and encoder lengths equals each row alone; beams sharing a cross
    row (query slots > 0: the data-dependent query length) equal the same rows reading private copies."""
    art, model = tiny_aoti
    gen = torch.Generator().manual_seed(1)
    cross_k, cross_v, cross_mask, self_k, self_v = _decode_inputs(art, images, gen)
    ids, pos = torch.tensor([40, 7, 3000]), torch.tensor([3, 11, 7])
    batched = model.decode_step(ids, pos, self_k.clone(), self_v.clone(), cross_k, cross_v, cross_mask,
                                torch.arange(3))
    for row in range(3):
        alone = model.decode_step(ids[row:row + 1], pos[row:row + 1], self_k[:, row:row + 1].clone(),
                                  self_v[:, row:row + 1].clone(), cross_k[:, row:row + 1], cross_v[:, row:row + 1],
                                  cross_mask[row:row + 1], torch.zeros(1, dtype=torch.long))
        assert (batched[row] - alone[0]).abs().max() <= TOL, row
    assert (batched[0] - batched[1]).abs().max() > 0.1, "rows must differ for the comparison to mean anything"

    shared_rows = torch.tensor([2, 0, 2, 1, 0, 2])  # three beams on cross row 2, two on 0: query slots 0..2
    k6, v6 = self_k[:, [0, 1, 2, 0, 1, 2]].contiguous(), self_v[:, [0, 1, 2, 0, 1, 2]].contiguous()
    ids6, pos6 = torch.tensor([5, 6, 7, 8, 9, 10]), torch.tensor([1, 2, 3, 4, 5, 6])
    shared = model.decode_step(ids6, pos6, k6.clone(), v6.clone(), cross_k, cross_v, cross_mask, shared_rows)
    own = model.decode_step(ids6, pos6, k6.clone(), v6.clone(), cross_k[:, shared_rows].contiguous(),
                            cross_v[:, shared_rows].contiguous(), cross_mask[shared_rows], torch.arange(6))
    assert (shared - own).abs().max() <= TOL
    ref = art.scripted.decode_step(ids6, pos6, k6.clone(), v6.clone(), cross_k, cross_v, cross_mask, shared_rows)
    assert (shared - ref).abs().max() <= TOL


@torch.no_grad()
def test_decode_step_on_kv_pool_views(tiny_aoti, images):
    """The server's KV-pool views (the first rows and positions of whole pool tensors: strided) go through the
    pooled decode_step graph: the same logits and cache writes as TorchScript on the same views, and nothing
    outside the view touched. Other layouts are refused, never computed (the compiled code reads contiguous
    strides only)."""
    art, model = tiny_aoti
    gen = torch.Generator().manual_seed(3)
    cross_k, cross_v, cross_mask, _, _ = _decode_inputs(art, images, gen)
    arch = art.arch
    pool_k = torch.randn(arch.decoder_layers, 8, arch.decoder_attention_heads, 32, arch.head_dim, generator=gen)
    pool_v = torch.randn(pool_k.shape, generator=gen)
    cpool_k = torch.zeros(arch.decoder_layers, 5, arch.decoder_attention_heads, cross_k.shape[3] + 7, arch.head_dim)
    cpool_v = torch.zeros(cpool_k.shape)
    cmask = torch.zeros(5, cpool_k.shape[3], dtype=torch.long)
    cpool_k[:, :3, :, :cross_k.shape[3]] = cross_k
    cpool_v[:, :3, :, :cross_k.shape[3]] = cross_v
    cmask[:3, :cross_k.shape[3]] = cross_mask
    g, c, n, s = 3, cross_k.shape[3], 4, 13
    ids, pos, rows = torch.tensor([17, 2, 901, 40]), torch.tensor([0, 12, 4, 7]), torch.tensor([2, 0, 2, 1])
    k_ts, v_ts, k_ao, v_ao = pool_k.clone(), pool_v.clone(), pool_k.clone(), pool_v.clone()
    ref = art.scripted.decode_step(ids, pos, k_ts[:, :n, :, :s], v_ts[:, :n, :, :s], cpool_k[:, :g, :, :c],
                                   cpool_v[:, :g, :, :c], cmask[:g, :c], rows)
    view_k = k_ao[:, :n, :, :s]
    assert not view_k.is_contiguous()
    ours = model.decode_step(ids, pos, view_k, v_ao[:, :n, :, :s], cpool_k[:, :g, :, :c], cpool_v[:, :g, :, :c],
                             cmask[:g, :c], rows)
    assert (ours - ref).abs().max() <= TOL
    assert (k_ao - k_ts).abs().max() <= TOL and (v_ao - v_ts).abs().max() <= TOL  # the whole pools
    assert torch.equal(k_ao[:, n:], pool_k[:, n:]) and torch.equal(k_ao[:, :, :, s:], pool_k[:, :, :, s:])
    assert (k_ao[:, :n] - pool_k[:, :n]).abs().max() > 0.1, "the step must have written the view's rows"

    for bad in (k_ao[:, 1:n + 1, :, :s],                  # storage offset: not the pool's first rows
                k_ao[:, :n, :, :s].transpose(2, 3).transpose(2, 3).contiguous().transpose(3, 4),  # other strides
                k_ao[:, :n, :, :s:2]):                    # every other position
        before = k_ao.clone()
        with pytest.raises(ValueError, match="contiguous"):
            model.decode_step(ids[:bad.shape[1]], pos[:bad.shape[1]], bad, bad, cpool_k[:, :g, :, :c],
                              cpool_v[:, :g, :, :c], cmask[:g, :c], rows[:bad.shape[1]])
        assert torch.equal(k_ao, before)


@torch.no_grad()
def test_cli_random_source_equals_the_exported_artefact(tiny_artefacts, tmp_path):
    """--random tiny --seed 0 compiles the weights florence2_export.py --random tiny --seed 0 writes."""
    art = tiny_artefacts[0]
    assert art.dir.name == "tiny-0"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "florence2_export_aoti.py"), "--random", "tiny",
                          "--seed", "0", "--out", str(tmp_path), "--methods", "cross_kv"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cross_kv.pt2"]
    runner = torch._inductor.aoti_load_package(str(tmp_path / "cross_kv.pt2"))
    enc = torch.randn(2, 600, art.arch.d_model, generator=torch.Generator().manual_seed(2))
    for ours, ref in zip(runner(enc), art.scripted.cross_kv(enc)):
        assert (ours - ref).abs().max() <= TOL

    bad = subprocess.run([sys.executable, str(REPO / "tools" / "florence2_export_aoti.py"), "--random", "tiny"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "--out" in bad.stderr
