"""--max_connection_age: the server sends GOAWAY to connections older than that, so clients reconnect (and, on
Kubernetes, re-resolve a headless Service and find replicas added since), while calls already running on the
old connection finish within --max_connection_age_grace."""
from __future__ import annotations

import threading
import time

import grpc

from .server_harness import Assets


def test_old_connections_get_goaway_and_running_calls_finish(start_server, assets: Assets, stubs) -> None:
    server = start_server("conn_age", extra_args=["--max_connection_age", "1s", "--max_connection_age_grace", "60s"])
    pb = stubs.pb2
    channel = server.channel()
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append, try_to_connect=True)
    stub = stubs.pb2_grpc.FlorenceStub(channel)
    image = pb.Image(encoded=assets.image("astronaut.jpg").read_bytes())

    # A call that outlives the connection's age: forced to 600 tokens, it runs for several seconds.
    long_result: dict = {}

    def long_call() -> None:
        try:
            response = stub.Caption(pb.CaptionRequest(image=image, options=pb.Options(
                max_new_tokens=600, min_new_tokens=600, num_beams=1)), timeout=120)
            long_result["tokens"] = response.result.usage.generated_tokens
        except grpc.RpcError as e:
            long_result["error"] = f"{e.code().name}: {e.details()}"

    start = time.monotonic()
    thread = threading.Thread(target=long_call)
    thread.start()
    # Short calls (each OK) until the channel has seen its connection go away and come back (READY again after
    # IDLE/CONNECTING), or 20 s.
    short = pb.CaptionRequest(image=image, options=pb.Options(max_new_tokens=4, num_beams=1))
    ready = lambda: [i for i, s in enumerate(states) if s == grpc.ChannelConnectivity.READY]  # noqa: E731
    calls = 0
    while len(ready()) < 2 and time.monotonic() - start < 20.0:
        stub.Caption(short, timeout=30)
        calls += 1
        time.sleep(0.1)
    long_call_running = thread.is_alive()
    thread.join(timeout=120)

    seen = [s.name for s in states]
    assert len(ready()) >= 2, f"no reconnection in 20 s ({calls} calls): {seen}"
    first, second = ready()[:2]
    assert any(s in (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
               for s in states[first + 1:second]), seen
    # The call that was running on the old connection when it went away was not cut: the grace period covers it.
    assert long_call_running, "the long call ended before the reconnection: make it longer"
    assert long_result == {"tokens": 600}, long_result
