"""florence2-server --backend aoti (engine/aoti_model.h) against --backend torchscript on the same model
directory: a concurrent mix of greedy and beam requests of different lengths, so that the scheduler batches
them and hands the AOTI decode_step its KV-pool views (strided: the case the packages cannot read directly),
rows joining, leaving and being reordered mid-batch. Every request's token ids must be identical. Plus the
start-up errors of the flag."""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tools.florence2 import ops

from .server_harness import Assets, ServerProcess, run_tool, server_binary
from .test_metrics import scrape, value

PACKAGES = ("image_features", "encode", "cross_kv", "decode_step")
# (image, RPC, beams, forced length): lengths differ so sequences leave the running batch at different steps.
MIX = [("astronaut.jpg", "caption", 1, 24), ("coffee.png", "detect", 3, 32), ("chelsea.webp", "caption", 1, 40),
       ("rocket.bmp", "detect", 3, 20), ("page.tiff", "caption", 1, 16), ("coffee.png", "caption", 1, 28),
       ("astronaut.jpg", "detect", 3, 36), ("rocket.bmp", "caption", 1, 12)]


@pytest.fixture(scope="module")
def aoti_model(assets: Assets) -> Path:
    """The tiny model with its AOTI packages: ctest's (setup.export_tiny_aoti) when present, else compiled into
    a copy (~80 s of g++)."""
    if all((assets.tiny / "aoti" / f"{m}.pt2").is_file() for m in PACKAGES):
        return assets.tiny
    out = assets.tmp / "models" / "tiny-aoti"
    if not all((out / "aoti" / f"{m}.pt2").is_file() for m in PACKAGES):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(assets.tiny, out, ignore=shutil.ignore_patterns("aoti"))
        run_tool(["tools/florence2_export_aoti.py", "--model-dir", str(out)])
    return out


def run_mix(server: ServerProcess, stubs, assets: Assets) -> list[list[int]]:
    pb = stubs.pb2
    stub = server.stub(stubs)

    def one(case):
        name, rpc, beams, length = case
        image = pb.Image(encoded=assets.image(name).read_bytes())
        options = pb.Options(max_new_tokens=length, min_new_tokens=length, num_beams=beams)
        if rpc == "caption":
            result = stub.Caption(pb.CaptionRequest(image=image, options=options), timeout=300).result
        else:
            result = stub.Detect(pb.DetectRequest(image=image, options=options), timeout=300).result
        assert result.usage.generated_tokens == length, case
        return list(result.token_ids)

    with ThreadPoolExecutor(len(MIX)) as pool:
        return list(pool.map(one, MIX))


def test_aoti_server_gives_torchscript_tokens_under_batching(start_server, assets: Assets, stubs,
                                                             aoti_model: Path) -> None:
    # A long encoder wait groups the mix into encoder batches that join one running decode batch.
    batching = ["--max_batch", "8", "--max_delay_us", "200000"]
    ts = start_server("backend-ts", model=aoti_model, extra_args=["--backend", "torchscript", *batching])
    ao = start_server("backend-aoti", model=aoti_model, metrics=True, extra_args=["--backend", "aoti", *batching])
    assert "model backend: aoti" in ao.log_tail(20000)
    assert "model backend: torchscript" in ts.log_tail(20000)
    # The TorchScript side runs the prepacked decode linears this CPU is recommended (tools/florence2/ops.py).
    assert (("decoder and lm_head prepacked for florence::packed_linear (" if ops.linear_kernel() != "onednn"
             else "linear weights prepacked for oneDNN (decoder, lm_head") in ts.log_tail(20000))
    ours = run_mix(ao, stubs, assets)
    ref = run_mix(ts, stubs, assets)
    for case, a, b in zip(MIX, ours, ref):
        assert a == b, case
    assert len({tuple(t) for t in ref}) >= 6, "the mix must produce different generations"
    # The AOTI server batched: some decode steps ran several sequences (KV-pool views of several rows).
    samples = scrape(ao.metrics_port)
    steps = value(samples, "florence_decode_step_sequences_count")
    single = sum(v for (name, labels), v in samples.items() if name == "florence_decode_step_sequences_bucket"
                 and float(dict(labels)["le"]) == 1.0)
    assert steps > 0 and steps - single >= 10, (steps, single)
    ts.stop()
    ao.stop()


def _start_fails(model: Path, backend: str, cwd: Path) -> str:
    done = subprocess.run([str(server_binary()), "--model", str(model), "--backend", backend,
                           "--address", "127.0.0.1:0", "--metrics_address", ""],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_aoti_without_packages_names_the_export_command(assets: Assets, tmp_path: Path) -> None:
    bare = tmp_path / "tiny-no-aoti"
    shutil.copytree(assets.tiny, bare, ignore=shutil.ignore_patterns("aoti"))
    out = _start_fails(bare, "aoti", tmp_path)
    assert f"tools/florence2_export_aoti.py --model-dir {bare}" in out
    assert "use auto, torchscript or aoti" in _start_fails(bare, "onnx", tmp_path)
