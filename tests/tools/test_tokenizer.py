"""The rebuilt Florence-2 tokenizer vs the ids published in transformers' Florence-2 integration tests."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from conftest import TASK_PROMPTS, hf_processor

# FLORENCE2.md 2.4: ids after the 577 image tokens in transformers' tests/models/florence2.
GOLDEN = {
    "<CAPTION>": [0, 2264, 473, 5, 2274, 6190, 116, 2],
    "<DETAILED_CAPTION>": [0, 47066, 21700, 11, 4617, 99, 16, 2343, 11, 5, 2274, 4, 2],
    "<OD>": [0, 574, 22486, 5, 8720, 19, 4120, 766, 11, 5, 2274, 4, 2],
    "<OCR>": [0, 2264, 16, 5, 2788, 11, 5, 2274, 116, 2],
    "<OCR_WITH_REGION>": [0, 2264, 16, 5, 2788, 11, 5, 2274, 6, 19, 3806, 116, 2],
    "<REGION_PROPOSAL>": [0, 574, 22486, 5, 976, 5327, 11, 5, 2274, 4, 2],
    "<OPEN_VOCABULARY_DETECTION>wheels": [0, 574, 22486, 10562, 11, 5, 2274, 4, 2],
    "<OPEN_VOCABULARY_DETECTION>car": [0, 574, 22486, 512, 11, 5, 2274, 4, 2],
    "<REFERRING_EXPRESSION_SEGMENTATION>a car": [0, 574, 22486, 10, 512, 11, 5, 2274, 19, 11445, 2],
}


@pytest.fixture(scope="module")
def artefact(tiny_artefacts):
    return tiny_artefacts[0]


def test_vocabulary_layout(artefact):
    tok = Tokenizer.from_file(str(artefact.dir / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == 51290  # 51289 + native <image>
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, ".": 4, "Ġthe": 5, "<mask>": 50264,
                "<od>": 50265, "</ocr>": 50268, "<loc_0>": 50269, "<loc_999>": 51268, "<cap>": 51269,
                "<sep>": 51279, "<region_to_desciption>": 51282, "<poly>": 51286, "<and>": 51288, "<image>": 51289}
    assert {t: tok.token_to_id(t) for t in expected} == expected


@pytest.mark.parametrize("prompt", sorted(GOLDEN))
def test_processor_prompt_ids_match_transformers_golden(artefact, images, prompt):
    enc = artefact.processor(text=prompt, images=images["astronaut"], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids[:577] == [51289] * 577
    assert ids[577:] == GOLDEN[prompt]


def test_every_task_prompt_tokenizes_with_region_tokens_as_single_ids(artefact, images):
    for prompt in TASK_PROMPTS:
        ids = artefact.processor(text=prompt, images=images["astronaut"], return_tensors="pt")["input_ids"][0]
        ids = ids[577:].tolist()
        assert ids[0] == 0 and ids[-1] == 2
        if "<loc_" in prompt:
            locs = [i for i in ids if 50269 <= i <= 51268]
            assert len(locs) == 4, prompt


def test_decode_keeps_location_tokens_and_round_trips(artefact):
    tok = Tokenizer.from_file(str(artefact.dir / "tokenizer.json"))
    text = "car<loc_53><loc_333><loc_933><loc_774>door handle<loc_425><loc_1><loc_2><loc_3> naïve 東京 🚗  x"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    generated = [2, 0, 5901, 50322, 50602, 51202, 51043, 2, 1, 1]
    assert tok.decode(generated, skip_special_tokens=False).startswith("</s><s>")
    assert "<loc_" not in tok.decode(generated, skip_special_tokens=True)
