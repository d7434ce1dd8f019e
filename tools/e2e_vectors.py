#!/usr/bin/env python3
"""End-to-end reference vectors for the C++ pipeline (tests/engine/pipeline/).

  e2e_vectors.py --model build/models/tiny --loc-prone --random tiny:1 --random base:0 --out-dir build/e2e

Writes real image files into ``OUT/images/`` (scikit-image's bundled photographs and document page, saved as
JPEG and PNG once; the files are the reference input, not the arrays) and ``OUT/vectors.json`` with, for each
case, what transformers makes of the same file:

  image   = Image.open(BytesIO(file_bytes)).convert("RGB")       # what engine/image/decode.h reproduces
  inputs  = processor(text=prompt, images=image)                  # PIL-backend processor (tests/tools/conftest.py)
  tokens  = model.generate(**inputs, max_new_tokens=64, num_beams=1|3, no_repeat_ngram_size=3,
                           early_stopping=True, length_penalty=1.0, decoder_start_token_id=2,
                           forced_bos_token_id=0, forced_eos_token_id=2)
  text    = processor.batch_decode(tokens, skip_special_tokens=False)[0]
  parsed  = processor.post_process_generation(text, task=task_token, image_size=(W, H))[task_token]

``parsed`` has transformers' shape and int coordinates. The processor carries the checkpoints'
post-processor config (tools/parser_vectors.py); without it structured tasks raise.

Models: each ``--model DIR`` is an exported model directory; each ``--random PRESET:SEED`` is exported into
``OUT/models/PRESET-SEED`` (reused while tools/florence2/ and torch are unchanged; a base export is ~1 GB and
takes about a minute). ``--loc-prone`` adds ``OUT/models/<first model>-locs``: the first model with its <loc_N>
embedding rows scaled, so that random weights generate parseable boxes, quads and polygons (plain random tiny
weights generate words only, and every structured parse comes out empty).

Cases: tiny models get every task prompt of tests/tools/conftest.py TASK_PROMPTS, greedy and beam=3; larger ones
get <CAPTION> and <OD> on photographs and <OCR_WITH_REGION> on the page (``--cases`` overrides). Region tasks
are given a pixel box on the original image: the prompt's <loc_N> bins are floor(x / (W / 1000)) clamped to
0..999 in double precision, exactly as engine/tokenizer/prompt.h quantizes the RegionBox the C++ side receives,
and the JSON records both.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tools"))

from conftest import TASK_PROMPTS, hf_model_from_state, hf_processor, real_images  # noqa: E402
from tools.florence2 import export as exp  # noqa: E402
from tools.florence2.config import Florence2Arch  # noqa: E402
from tools.parser_vectors import POST_PROCESSOR_CONFIG, cut_at_eos  # noqa: E402

# name -> (file name, PIL save options). JPEG and PNG, colour and greyscale.
IMAGE_FILES = {
    "astronaut": ("astronaut.jpg", {"format": "JPEG", "quality": 90}),
    "coffee": ("coffee.png", {"format": "PNG"}),
    "chelsea": ("chelsea.jpg", {"format": "JPEG", "quality": 75}),
    "rocket": ("rocket.png", {"format": "PNG"}),
    "page": ("page.png", {"format": "PNG"}),  # saved as 8-bit grey ("L")
}
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
# Region inputs in pixels of each original image (x1, y1, x2, y2), fractional on purpose.
REGIONS = {
    "astronaut": (140.5, 20.25, 380.0, 300.75),
    "coffee": (421.2, 230.0, 519.6, 308.8),
    "chelsea": (100.0, 50.5, 330.3, 290.0),
    "rocket": (150.0, 40.0, 600.5, 290.25),
    "page": (10.0, 20.0, 180.5, 120.0),
}
OCR_TASKS = {"<OCR>", "<OCR_WITH_REGION>", "<REGION_TO_OCR>"}
REGION_TASKS = {"<REGION_TO_SEGMENTATION>", "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>"}
CORE_CASES = [("<CAPTION>", "astronaut"), ("<OD>", "coffee"), ("<OCR_WITH_REGION>", "page")]
BEAMS = (1, 3)
REAL_VOCAB_SIZE = 51289
LOC_FIRST, LOC_COUNT = 50269, 1000
# The location-prone variant (--loc-prone): random tiny weights mostly generate words, so every structured
# parse comes out empty. Scaling the (tied) embedding rows of the <loc_N> tokens by 1.3 mixes words and loc
# groups (boxes, quads, polygons with labels); scaling EOS by 5 ends some sequences early.
LOC_SCALE, EOS_SCALE = 1.3, 5.0


def write_images(out: Path) -> dict[str, dict[str, Any]]:
    """Saves each image once and returns name -> {file, width, height, sha256} of the bytes written."""
    out.mkdir(parents=True, exist_ok=True)
    arrays = real_images()
    arrays["page"] = arrays["page"].convert("L")  # keep the document greyscale in the file
    info = {}
    for name, (file_name, options) in IMAGE_FILES.items():
        buf = io.BytesIO()
        arrays[name].save(buf, **options)
        data = buf.getvalue()
        (out / file_name).write_bytes(data)
        w, h = arrays[name].size
        info[name] = {"file": f"images/{file_name}", "width": w, "height": h,
                      "sha256": hashlib.sha256(data).hexdigest()}
    return info


def quantize(box: tuple[float, float, float, float], width: int, height: int) -> list[int]:
    """engine/tokenizer/prompt.h QuantizeBox: floor(x / (W / 1000)) clamped to [0, 999], in double."""
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise SystemExit(f"region {box} is not inside the {width}x{height} image (the C++ side refuses it)")

    def q(v: float, size: int) -> int:
        return min(max(math.floor(v / (size / 1000)), 0), 999)
    return [q(x1, width), q(y1, height), q(x2, width), q(y2, height)]


@dataclass
class Model:
    name: str
    dir: Path
    arch: Florence2Arch
    cases: str  # "full" | "core"


def _exporter_stamp(preset: str, seed: int) -> str:
    h = hashlib.sha256(f"{preset}:{seed}:{torch.__version__}".encode())
    for path in sorted((REPO / "tools" / "florence2").glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def export_random(spec: str, models_dir: Path) -> Path:
    preset, _, seed_text = spec.partition(":")
    seed = int(seed_text or "0")
    out = models_dir / f"{preset}-{seed}"
    stamp_file = models_dir / f"{preset}-{seed}.stamp"
    stamp = _exporter_stamp(preset, seed)
    if (out / "manifest.json").exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        print(f"reusing {out}", file=sys.stderr)
        return out
    models_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.unlink(missing_ok=True)
    exp.export(exp.source_random(preset, seed), out, seed=seed, cache_dir=REPO / ".cache")
    stamp_file.write_text(stamp)
    print(f"exported {out}", file=sys.stderr)
    return out


def export_loc_prone(model_dir: Path, models_dir: Path) -> Path:
    """A copy of ``model_dir`` whose generations mix words and <loc_N> groups (LOC_SCALE, EOS_SCALE)."""
    config = json.loads((model_dir / "config.json").read_text())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    state = torch.jit.load(str(model_dir / exp.MODEL_FILE)).state_dict()
    shared = state["model.language_model.shared.weight"]
    shared[LOC_FIRST:LOC_FIRST + LOC_COUNT] *= LOC_SCALE
    shared[2] *= EOS_SCALE
    state["lm_head.weight"] = shared
    prov = manifest["provenance"]
    name = f"{prov.get('preset', model_dir.name)}-{prov.get('seed', 0)}-locs"
    provenance = {**prov, "variant": name,
                  "note": f"{model_dir.name} with <loc_N> rows x{LOC_SCALE} and EOS row x{EOS_SCALE} (tests)"}
    out = models_dir / name
    exp.export(exp.Source(Florence2Arch.from_json(config["architecture"]), state, provenance, None), out,
               cache_dir=REPO / ".cache")
    print(f"exported {out}", file=sys.stderr)
    return out


def describe(model_dir: Path, cases: str) -> Model:
    config = json.loads((model_dir / "config.json").read_text())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if config["dtype"] != "float32":
        raise SystemExit(f"{model_dir}: only float32 exports are compared with transformers")
    prov = manifest["provenance"]
    preset = prov.get("preset")
    name = prov.get("variant") or (f"{preset}-{prov['seed']}" if prov.get("weights") == "random"
                                   else model_dir.name)
    if cases == "auto":
        cases = "full" if preset == "tiny" else "core"
    return Model(name, model_dir, Florence2Arch.from_json(config["architecture"]), cases)


def make_processor(model_dir: Path):
    from transformers import Florence2Processor

    base = hf_processor(model_dir)
    return Florence2Processor(image_processor=base.image_processor, tokenizer=base.tokenizer,
                              post_processor_config=POST_PROCESSOR_CONFIG)


def case_list(model: Model, model_index: int) -> list[tuple[str, str, str, str]]:
    """(task token, input text, image name, prompt without region) per case, before beams."""
    out = []
    if model.cases == "core":
        return [(task, "", image, task) for task, image in CORE_CASES]
    for i, prompt in enumerate(TASK_PROMPTS):
        task = prompt[:prompt.index(">") + 1]
        rest = prompt[len(task):]
        text = "" if task in REGION_TASKS else rest  # region tasks get a pixel box instead of TASK_PROMPTS' locs
        image = "page" if task in OCR_TASKS else PHOTOS[(i + model_index) % len(PHOTOS)]
        out.append((task, text, image, task + text))
    return out


def run_model(model: Model, model_index: int, images: dict[str, dict[str, Any]], out_dir: Path,
              max_new_tokens: int) -> list[dict[str, Any]]:
    state = torch.jit.load(str(model.dir / exp.MODEL_FILE)).state_dict()
    hf = hf_model_from_state(model.arch, state)
    del state
    processor = make_processor(model.dir)
    records = []
    for task, text, image_name, prompt in case_list(model, model_index):
        meta = images[image_name]
        data = (out_dir / meta["file"]).read_bytes()
        pil = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = pil.size
        region = None
        if task in REGION_TASKS:
            region = list(REGIONS[image_name])
            prompt = task + "".join(f"<loc_{b}>" for b in quantize(REGIONS[image_name], w, h))
        enc = processor(text=prompt, images=pil, return_tensors="pt")
        full = enc["input_ids"]
        prompt_ids = full[0, (full[0] != processor.image_token_id).nonzero()[0, 0]:].tolist()
        for beams in BEAMS:
            with torch.no_grad():
                out = hf.generate(
                    input_ids=full, pixel_values=enc["pixel_values"], attention_mask=torch.ones_like(full),
                    do_sample=False, max_new_tokens=max_new_tokens, num_beams=beams, no_repeat_ngram_size=3,
                    early_stopping=True, length_penalty=1.0, decoder_start_token_id=2, forced_bos_token_id=0,
                    forced_eos_token_id=2, return_dict_in_generate=True, output_scores=True)
            tokens = out.sequences[0].tolist()
            decoded = processor.batch_decode(out.sequences, skip_special_tokens=False)[0]
            parsed = processor.post_process_generation(decoded, task=task, image_size=(w, h))[task]
            cut = processor.post_process_generation(cut_at_eos(decoded), task=task, image_size=(w, h))[task]
            if cut != parsed:  # the C++ parser stops at EOS; one generated sequence has nothing after it
                raise SystemExit(f"{model.name} {task} {image_name}: text after EOS changes the parse: {decoded!r}")
            mode = "greedy" if beams == 1 else f"beam{beams}"
            records.append({
                "name": f"{model.name}/{task.strip('<>').lower()}/{image_name}/{mode}",
                "model": model.name, "task": task, "text": text, "region": region, "prompt": prompt,
                "image": meta["file"], "width": w, "height": h, "num_beams": beams,
                "max_new_tokens": max_new_tokens, "prompt_ids": prompt_ids, "expected_tokens": tokens,
                "expected_text": decoded, "expected_parsed": parsed,
                "expected_score": float(out.sequences_scores[0]) if beams > 1 else None,
                "ids_past_real_vocab": sum(t >= REAL_VOCAB_SIZE for t in tokens),
            })
            print(f"{records[-1]['name']}: {len(tokens)} tokens", file=sys.stderr)
    return records


def relative_or_absolute(path: Path, root: Path) -> str:
    path, root = path.resolve(), root.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=[], help="exported model directory")
    ap.add_argument("--random", action="append", default=[], metavar="PRESET:SEED",
                    help="export seeded random weights into OUT/models/PRESET-SEED")
    ap.add_argument("--loc-prone", action="store_true",
                    help="also run a copy of the first --model whose generations mix words and <loc_N> groups")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--cases", choices=["auto", "full", "core"], default="auto",
                    help="full: every task prompt; core: caption, OD, OCR with regions (auto: full for tiny)")
    args = ap.parse_args(argv)
    if not args.model and not args.random:
        ap.error("give at least one --model or --random")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    dirs = list(args.model) + [export_random(spec, args.out_dir / "models") for spec in args.random]
    if args.loc_prone:
        if not args.model:
            ap.error("--loc-prone needs a --model")
        dirs.insert(1, export_loc_prone(args.model[0], args.out_dir / "models"))
    models = [describe(d, args.cases) for d in dirs]
    if len({m.name for m in models}) != len(models):
        raise SystemExit(f"duplicate model names {[m.name for m in models]}")
    images = write_images(args.out_dir / "images")
    cases = []
    for i, model in enumerate(models):
        cases += run_model(model, i, images, args.out_dir, args.max_new_tokens)

    doc = {
        "models": {m.name: {"dir": relative_or_absolute(m.dir, args.out_dir), "cases": m.cases} for m in models},
        "images": images,
        "cases": cases,
    }
    tmp = args.out_dir / "vectors.json.tmp"
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
    tmp.replace(args.out_dir / "vectors.json")
    past = sum(c["ids_past_real_vocab"] for c in cases)
    lengths = sorted({len(c["expected_tokens"]) for c in cases})
    print(f"wrote {len(cases)} cases for {[m.name for m in models]} to {args.out_dir}; sequence lengths "
          f"{lengths}; {past} generated ids >= {REAL_VOCAB_SIZE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
