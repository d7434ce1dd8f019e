"""The Python client example (clients/python/florence_client.py), run as a user would: a subprocess against
the real server."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from .server_harness import Assets, ServerProcess, run_client

# The location-prone model needs ~50 tokens for its first boxes; 160 keeps each call around a second.
OD_ARGS = ["--task", "od", "--max-new-tokens", "160"]
DETECTION_LINE = re.compile(r"^  \[(\d+)\] .*conf=[0-9.]+ box=\[([-0-9., ]+)\]$")
EVENT_LINE = re.compile(r"^event detection\[(\d+)\]: (.*)$")


def detection_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = lines.index(next(l for l in lines if l.startswith("detections: ")))
    return [l for l in lines[start + 1:] if DETECTION_LINE.match(l)]


def test_od_prints_detections_and_draws_them(server: ServerProcess, assets: Assets, tmp_path: Path) -> None:
    image = assets.image("astronaut.jpg")
    out = tmp_path / "od.png"
    done = run_client(assets, "--server", server.address, *OD_ARGS, str(image), "--draw", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "task: od  image: 512x512"
    count = int(next(l for l in lines if l.startswith("detections: ")).split()[1])
    assert count > 0, done.stdout  # the location-prone model answers with boxes
    assert [int(DETECTION_LINE.match(l).group(1)) for l in detection_lines(done.stdout)] == list(range(count))
    assert any(l.startswith("usage: ") for l in lines)
    assert f"drew {count} shapes to {out}" in lines

    with Image.open(out) as drawn, Image.open(image) as original:
        assert drawn.format == "PNG"
        assert drawn.size == original.size
        diff = ImageChops.difference(drawn.convert("RGB"), original.convert("RGB"))
        assert diff.getbbox() is not None, "the drawing is identical to the input"


def test_stream_prints_events_as_they_arrive_then_the_result(server: ServerProcess, assets: Assets) -> None:
    done = run_client(assets, "--server", server.address, *OD_ARGS, "--stream",
                      str(assets.image("coffee.png")))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    result_at = lines.index("event result")
    events = [EVENT_LINE.match(l) for l in lines[:result_at]]
    assert events and all(events), lines[:result_at]
    # Items stream in order, one event each, and are exactly the final result's detections.
    assert [int(m.group(1)) for m in events] == list(range(len(events)))
    assert lines[result_at + 1] == "task: od  image: 600x400"
    assert f"detections: {len(events)}" in lines
    final = detection_lines("\n".join(lines[result_at:]))
    assert [l.split("] ", 1)[1] for l in final] == [m.group(2) for m in events]


def test_stream_caption_text_deltas_concatenate_to_the_text(server: ServerProcess, assets: Assets) -> None:
    done = run_client(assets, "--server", server.address, "--task", "caption", "--num-beams", "1",
                      "--max-new-tokens", "24", "--stream", str(assets.image("chelsea.webp")))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    result_at = lines.index("event result")
    deltas = [eval(l.split(": ", 1)[1]) for l in lines[:result_at]]  # the client prints repr()s
    assert deltas and all(l.startswith("event text_delta: ") for l in lines[:result_at])
    text_line = next(l for l in lines[result_at:] if l.startswith("text: "))
    assert "".join(deltas) == eval(text_line.split(": ", 1)[1])


def test_json_result_matches_the_typed_rpc(server: ServerProcess, assets: Assets, stubs) -> None:
    import florence_client as fc
    from google.protobuf import json_format

    image = assets.image("rocket.bmp")
    done = run_client(assets, "--server", server.address, "--task", "ocr_with_region", "--num-beams", "1",
                      "--max-new-tokens", "96", "--json", str(image))
    assert done.returncode == 0, done.stderr
    printed = json_format.Parse(done.stdout.splitlines()[0], stubs.pb2.TaskResult())

    inputs = fc.Inputs(image=image.read_bytes(), num_beams=1, max_new_tokens=96)
    method, request = fc.build_typed_call(stubs, "ocr_with_region", inputs)
    assert method == "Ocr"
    direct = server.stub(stubs).Ocr(request, timeout=60).result
    with Image.open(image) as im:
        assert (printed.image_width, printed.image_height) == im.size
    assert list(printed.token_ids) == list(direct.token_ids)
    assert printed.ocr_regions == direct.ocr_regions and printed.text == direct.text


def test_server_errors_are_reported_with_their_status(server: ServerProcess, assets: Assets) -> None:
    # A region outside the 512x512 image is the server's INVALID_ARGUMENT, not the client's.
    done = run_client(assets, "--server", server.address, "--task", "region_to_category",
                      "--region", "10,10,900,900", str(assets.image("astronaut.jpg")))
    assert done.returncode == 1
    assert done.stderr.startswith("error: INVALID_ARGUMENT: "), done.stderr


@pytest.mark.parametrize("args, message", [
    (["--task", "od", "--text", "a cat"], "--task od takes no --text"),
    (["--task", "phrase_grounding"], "--task phrase_grounding needs --text"),
    (["--task", "caption", "--mask", "m.png"], "--mask needs a segmentation task"),
])
def test_bad_arguments_fail_before_any_call(assets: Assets, args: list[str], message: str) -> None:
    done = run_client(assets, "--server", "127.0.0.1:1", *args, str(assets.image("astronaut.jpg")))
    assert done.returncode == 2
    assert message in done.stderr
