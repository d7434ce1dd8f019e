"""An opt-in int8 export (tools/florence2_export.py --dtype int8, with its vision tower in float32 or, opted in,
bfloat16) served by the real server: the C++ engine drives it to exactly the tokens the Python reference decoder
gets from the same artefact, and refuses to put it on a GPU."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tools.florence2 import generate as G

from .server_harness import REPO, Assets, ServerProcess, run_tool, server_binary

sys.path.insert(0, str(REPO / "tests" / "tools"))
from conftest import hf_processor, processor_inputs  # noqa: E402  (tests/tools/conftest.py)

# (image, the task prompt its RPC runs, beams, forced length: random weights never stop on their own)
CASES = [("astronaut.jpg", "<CAPTION>", 1, 24), ("coffee.png", "<OD>", 3, 32)]


def export_int8(assets: Assets, vision_dtype: str) -> Path:
    out = assets.tmp / "models" / ("tiny-int8" if vision_dtype == "float32" else f"tiny-int8-{vision_dtype}v")
    if not (out / "manifest.json").is_file():
        run_tool(["tools/florence2_export.py", "--random", "tiny", "--seed", "0", "--dtype", "int8",
                  "--vision-dtype", vision_dtype, "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def int8_model(assets: Assets) -> Path:
    return export_int8(assets, "float32")


def expect_vision_packed(model_dir: Path) -> bool:
    tower = json.loads((model_dir / "config.json").read_text())["vision_dtype"]
    return tower == "float32" or (tower == "bfloat16" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@torch.inference_mode()
def reference_tokens(model_dir: Path, image_bytes: bytes, prompt: str, beams: int, length: int) -> list[int]:
    module = torch.jit.load(str(model_dir / "model.ts")).eval()
    # As the engine does on the CPU: packs the vision tower when oneDNN has a GEMM in its dtype (a bfloat16 one
    # needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT; on AVX2 there is nothing to pack in an int8 model).
    assert module.pack_for_cpu(32) == expect_vision_packed(model_dir)
    assert module.vision_packed == expect_vision_packed(model_dir)
    px, _, text = processor_inputs(hf_processor(model_dir), prompt, Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    params = G.GenerationParams(max_new_tokens=length, min_new_tokens=length, num_beams=beams)
    return G.generate(module, G.prefill(module, px, text), params).tokens


@pytest.mark.parametrize("vision_dtype", ["float32", "bfloat16"])
def test_int8_export_serves_the_reference_tokens(start_server, assets: Assets, stubs, vision_dtype: str) -> None:
    """Also with the opt-in bfloat16 vision tower (--vision-dtype): the server's one-image-per-call tower gives
    the reference's features bit for bit, so its tokens too."""
    int8_model = export_int8(assets, vision_dtype)
    server: ServerProcess = start_server(f"int8-{vision_dtype}", model=int8_model)
    log = server.log_tail(20000)
    if expect_vision_packed(int8_model):
        assert f"{vision_dtype} vision tower prepacked for oneDNN (decoder and lm_head are int8" in log
    else:  # served all the same, on the plain bfloat16 tower, with a warning that says what to do instead
        assert "(nothing prepacked;" in log
        assert (f"the {vision_dtype} vision tower runs unpacked: this CPU's oneDNN has no {vision_dtype} GEMM" in log
                and "export with --vision-dtype float32 here" in log)
    # int8 weights, float32 activations and caches: the fused decode attention either way
    assert "decode attention: florence::decode_attention (" in log
    pb = stubs.pb2
    stub = server.stub(stubs)
    for name, prompt, beams, length in CASES:
        data = assets.image(name).read_bytes()
        options = pb.Options(max_new_tokens=length, min_new_tokens=length, num_beams=beams)
        if prompt == "<CAPTION>":
            result = stub.Caption(pb.CaptionRequest(image=pb.Image(encoded=data), options=options), timeout=120).result
        else:
            result = stub.Detect(pb.DetectRequest(image=pb.Image(encoded=data), options=options), timeout=120).result
        assert list(result.token_ids) == reference_tokens(int8_model, data, prompt, beams, length), (name, prompt)
        assert result.usage.generated_tokens == length


def test_int8_export_refuses_a_gpu(int8_model: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(server_binary()), "--model", str(int8_model), "--device", "cuda",
                           "--address", "127.0.0.1:0", "--metrics_address", ""],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert "int8 weights, which run on the CPU only" in done.stdout + done.stderr
