"""Prometheus /metrics of a real server: the per-RPC series count the requests sent."""
from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from .server_harness import Assets, ServerProcess

N = 3
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """name, labels -> value for every sample of the text exposition format."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers.get("Content-Type", "").startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_total_and_duration_count_the_calls(server: ServerProcess, stubs, assets: Assets) -> None:
    # The shared server: the counters are compared before and after, and tests run one at a time.
    metrics_server = server
    pb = stubs.pb2
    stub = metrics_server.stub(stubs)
    ok = dict(method="Caption", task="caption", code="OK")
    series = dict(method="Caption", task="caption")
    before = scrape(metrics_server.metrics_port)

    for name in ("astronaut.jpg", "coffee.png", "chelsea.webp")[:N]:
        request = pb.CaptionRequest(image=pb.Image(encoded=assets.image(name).read_bytes()),
                                    options=pb.Options(max_new_tokens=6, num_beams=1))
        stub.Caption(request, timeout=30)
    # One failure of another code: an image that is not an image.
    with pytest.raises(grpc.RpcError) as e:
        stub.Caption(pb.CaptionRequest(image=pb.Image(encoded=b"not an image")), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    after = scrape(metrics_server.metrics_port)
    assert value(after, "florence_requests_total", **ok) - value(before, "florence_requests_total", **ok) == N
    bad = dict(method="Caption", task="caption", code="INVALID_ARGUMENT")
    assert value(after, "florence_requests_total", **bad) - value(before, "florence_requests_total", **bad) == 1
    count = "florence_request_duration_seconds_count"
    assert value(after, count, **series) - value(before, count, **series) == N + 1
    # The histogram is consistent: the +Inf bucket equals the count, the sum is positive.
    assert value(after, "florence_request_duration_seconds_bucket", **series, le="+Inf") == \
        value(after, count, **series)
    assert value(after, "florence_request_duration_seconds_sum", **series) > 0
    # Scheduler-side series saw the generated tokens.
    assert value(after, "florence_generated_tokens_total", task="caption") >= N
