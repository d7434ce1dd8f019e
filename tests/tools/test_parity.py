"""The scripted artefact vs transformers' native Florence-2 on the same random weights."""
from __future__ import annotations

import pytest
import torch

from tools.florence2 import generate as G
from tools.florence2.config import preset
from tools.florence2.model import Florence2ForServing

from conftest import (TASK_PROMPTS, decoder_under_test, hf_model_from_state, hf_processor, make_artefact,
                      processor_inputs)

TOL = 1e-4


def hf_generate(hf, pixel_values, full_ids, params: G.GenerationParams) -> list[int]:
    out = hf.generate(input_ids=full_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(full_ids),
                      do_sample=False, max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
                      num_beams=params.num_beams, no_repeat_ngram_size=params.no_repeat_ngram_size,
                      early_stopping=params.early_stopping, length_penalty=params.length_penalty,
                      decoder_start_token_id=params.decoder_start_token_id,
                      forced_bos_token_id=params.forced_bos_token_id,
                      forced_eos_token_id=params.forced_eos_token_id)
    return out[0].tolist()


def params(num_beams: int, max_new_tokens: int = 64) -> G.GenerationParams:
    return G.GenerationParams(max_new_tokens=max_new_tokens, num_beams=num_beams, no_repeat_ngram_size=3)


@torch.no_grad()
def test_features_encoder_and_stepwise_logits(tiny_artefacts, images):
    for art in tiny_artefacts:
        for name, image in images.items():
            px, full, text = processor_inputs(art.processor, "<OD>", image)
            ref = art.hf.model.get_image_features(px).pooler_output
            feats = art.scripted.image_features(px)
            assert (feats - ref).abs().max() <= TOL, name

            mask = torch.ones_like(full)
            embeds = art.hf.model.language_model.shared(full).masked_scatter(
                (full == art.hf.config.image_token_id).unsqueeze(-1).expand(-1, -1, art.arch.d_model), ref)
            ref_enc = art.hf.model.language_model.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            enc = art.scripted.encode(feats, text, mask)
            assert (enc - ref_enc).abs().max() <= TOL, name

            # Teacher-force a greedy continuation through both and compare logits at every step.
            p = params(1, 16)
            req = G.prefill(art.scripted, px, text)
            ours = G.greedy(art.scripted, req, p)
            dec_in = torch.tensor([ours.tokens[:-1]])
            ref_logits = art.hf(input_ids=full, pixel_values=px, attention_mask=mask,
                                decoder_input_ids=dec_in).logits[0]
            self_k = art.scripted.empty_self_cache(1, 32)
            self_v = art.scripted.empty_self_cache(1, 32)
            for pos, tok in enumerate(ours.tokens[:-1]):
                logits = art.scripted.decode_step(torch.tensor([tok]), torch.tensor([pos]), self_k, self_v,
                                                  req.cross_k, req.cross_v, req.cross_mask,
                                                  torch.zeros(1, dtype=torch.long))
                assert (logits[0] - ref_logits[pos]).abs().max() <= TOL, (name, pos)


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "cpu_prepack"])
@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_tiny_all_tasks_generate_identical_tokens(tiny_artefacts, images, num_beams, packed):
    pics = list(images.values())
    for art in tiny_artefacts:
        model = decoder_under_test(art, packed)
        outputs = set()
        for i, prompt in enumerate(TASK_PROMPTS):
            image = pics[i % len(pics)]
            px, full, text = processor_inputs(art.processor, prompt, image)
            p = params(num_beams)
            ref = hf_generate(art.hf, px, full, p)
            ours = G.generate(model, G.prefill(model, px, text), p).tokens
            assert ours == ref, (art.dir.name, prompt)
            assert len(ours) - 1 >= 64, "random weights stopped early; the test must cover >= 64 new tokens"
            outputs.add(tuple(ours))
        # The random model must answer differently for different images and prompts, or equal tokens
        # would prove little about the image and prompt paths.
        assert len(outputs) >= 5, f"only {len(outputs)} distinct generations over 15 tasks"


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_eos_prone_weights_exercise_stopping_rules(images, num_beams):
    """With the EOS embedding row scaled, sequences end at different lengths: early stopping, finished-beam
    bookkeeping, length normalisation and padding rules must all agree with transformers."""
    arch = preset("tiny")
    lengths = set()
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = Florence2ForServing(arch).eval()
        with torch.no_grad():
            model.model.language_model.shared.weight.normal_(0, 0.02)
            model.model.language_model.shared.weight[2] *= 150.0
        scripted = torch.jit.script(model)
        hf = hf_model_from_state(arch, model.state_dict())
        from conftest import CACHE
        from tools.florence2.tokenizer_build import write_tokenizer
        tok_dir = CACHE / "tokenizer-test"
        if not (tok_dir / "tokenizer.json").exists():
            write_tokenizer(tok_dir, CACHE)
        processor = hf_processor(tok_dir)
        for prompt in ["<CAPTION>", "<OD>", "<OCR_WITH_REGION>", "<REGION_TO_CATEGORY><loc_1><loc_2><loc_3><loc_4>"]:
            for image in list(images.values())[:3]:
                px, full, text = processor_inputs(processor, prompt, image)
                p = params(num_beams, 48)
                ref = hf_generate(hf, px, full, p)
                ours = G.generate(scripted, G.prefill(scripted, px, text), p).tokens
                assert ours == ref, (seed, prompt)
                lengths.add(len(ours))
    assert min(lengths) < 49, f"no sequence stopped before max_new_tokens: {sorted(lengths)}"
    assert len(lengths) >= 3, f"stopping lengths not varied enough to exercise the rules: {sorted(lengths)}"


@pytest.fixture(scope="module")
def base_artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    return [make_artefact(root, "base", seed) for seed in (0, 1)]


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "cpu_prepack"])
@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_base_caption_od_ocr_identical_tokens(base_artefacts, images, num_beams, packed):
    cases = [("<CAPTION>", "astronaut"), ("<OD>", "coffee"), ("<OCR_WITH_REGION>", "page")]
    for art in base_artefacts:
        model = decoder_under_test(art, packed)
        for prompt, image_name in cases:
            px, full, text = processor_inputs(art.processor, prompt, images[image_name])
            p = params(num_beams)
            ref = hf_generate(art.hf, px, full, p)
            ours = G.generate(model, G.prefill(model, px, text), p).tokens
            assert ours == ref, (art.dir.name, prompt)
            assert len(ours) - 1 >= 64
