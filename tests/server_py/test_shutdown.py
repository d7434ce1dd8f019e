"""SIGTERM under load: the server drains (health NOT_SERVING, no new calls), lets the calls in flight finish
and exits 0 within its grace period."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .server_harness import Assets, ServerProcess

GRACE_S = 30
# min = max: the tiny model cannot stop early, so each call decodes exactly this many tokens (~4 s for six
# concurrent greedy calls on 2 cores), long enough for SIGTERM to land in the middle.
TOKENS = 600
UNARY_CALLS = 3
STREAM_CALLS = 3


class HealthWatcher(threading.Thread):
    """Records every status of a health Watch stream; `not_serving_after_serving` is set when NOT_SERVING
    follows SERVING. `ended` is the stream's final status code name, `ended_at` its monotonic time."""

    def __init__(self, channel: grpc.Channel, service: str = "florence.v1.Florence") -> None:
        super().__init__(daemon=True)
        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=120)
        self.statuses: list[str] = []
        self.ended: str | None = None
        self.ended_at: float | None = None
        self.serving = threading.Event()
        self.not_serving_after_serving = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for response in self.call:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                self.statuses.append(name)
                if name == "SERVING":
                    self.serving.set()
                elif self.serving.is_set():
                    self.not_serving_after_serving.set()
            self.ended = "OK"
        except grpc.RpcError as e:
            self.ended = e.code().name
        finally:
            self.ended_at = time.monotonic()
            self.done.set()


def test_sigterm_drains_in_flight_calls_and_exits_zero(start_server, assets: Assets, stubs) -> None:
    server = start_server("sigterm", grace_period=f"{GRACE_S}s")
    pb = stubs.pb2
    image = pb.Image(encoded=assets.image("astronaut.jpg").read_bytes())
    options = pb.Options(max_new_tokens=TOKENS, min_new_tokens=TOKENS, num_beams=1)

    watcher = HealthWatcher(server.channel())
    watcher.start()
    assert watcher.serving.wait(10), watcher.statuses

    # Unary Caption calls, and streamed Run calls whose first event proves they are being decoded.
    channel = server.channel()
    stub = stubs.pb2_grpc.FlorenceStub(channel)
    unary = [stub.Caption.future(pb.CaptionRequest(image=image, options=options), timeout=120)
             for _ in range(UNARY_CALLS)]
    streams: list[dict] = [{"started": threading.Event(), "events": [], "error": None, "ended_at": None}
                           for _ in range(STREAM_CALLS)]

    def consume(state: dict) -> None:
        request = pb.TaskRequest(task=pb.TASK_CAPTION, image=image, options=options)
        try:
            for event in stub.Run(request, timeout=120):
                state["events"].append(event)
                state["started"].set()
        except grpc.RpcError as e:
            state["error"] = e
        finally:
            state["ended_at"] = time.monotonic()
            state["started"].set()

    threads = [threading.Thread(target=consume, args=(s,), daemon=True) for s in streams]
    for t in threads:
        t.start()
    for s in streams:
        assert s["started"].wait(60), "a streamed call produced nothing"
        assert s["error"] is None and s["ended_at"] is None, "a streamed call ended before SIGTERM"
    assert not any(f.done() for f in unary), "a unary call ended before SIGTERM: make TOKENS larger"

    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)

    # Health goes NOT_SERVING, seen on the Watch stream opened before the signal. The watch is then closed
    # by the client: an open Watch holding up the exit is test_an_open_health_watch_does_not_delay_exit.
    assert watcher.not_serving_after_serving.wait(10), (watcher.statuses, watcher.ended)
    watcher.call.cancel()

    # A new call after SIGTERM is refused with UNAVAILABLE, on a new connection and on the connection that
    # still carries the calls in flight. Checked last, after the drain.
    def refusal(stub_) -> str:
        try:
            stub_.Caption(pb.CaptionRequest(image=image, options=pb.Options(max_new_tokens=4)), timeout=10)
            return "OK"
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"

    # The port stays open while draining (clients are told UNAVAILABLE rather than cut off), so both a new
    # connection and the one carrying the calls in flight get the service's refusal.
    refusals = {"new connection": refusal(server.stub(stubs)), "open connection": refusal(stub)}

    # Every call in flight completes OK, in full, after the signal.
    for f in unary:
        response = f.result(timeout=GRACE_S)
        assert response.result.usage.generated_tokens == TOKENS
        assert response.text == response.result.text
    for t, s in zip(threads, streams):
        t.join(GRACE_S)
        assert s["error"] is None, (s["error"].code(), s["error"].details())
        assert s["ended_at"] > sigterm_at
        final = s["events"][-1]
        assert final.WhichOneof("event") == "result"
        assert final.result.usage.generated_tokens == TOKENS
        assert "".join(e.text_delta for e in s["events"][:-1]) == final.result.text
    calls_done_at = time.monotonic()

    # The process exits 0 within the grace period, promptly once nothing is left to finish.
    code = server.proc.wait(timeout=max(1.0, GRACE_S - (time.monotonic() - sigterm_at)))
    assert code == 0, server.log_tail()
    assert time.monotonic() - sigterm_at < GRACE_S
    assert time.monotonic() - calls_done_at < 5, "the server idled after its last call ended"
    log = server.log_tail(20000)
    assert "SIGTERM received: draining" in log and "drained: every request completed" in log, log

    assert all(r.split(":")[0] == "UNAVAILABLE" for r in refusals.values()), (
        f"calls after SIGTERM (health NOT_SERVING) must fail with UNAVAILABLE; got {refusals}")


def test_an_open_health_watch_does_not_delay_exit(start_server, stubs) -> None:
    # Load balancers and gRPC's client-side health checking keep a Watch open on every backend. Once the
    # server is idle and SIGTERM'd, that stream must end (after NOT_SERVING) rather than hold the process
    # until the grace period runs out.
    grace_s = 10
    server = start_server("sigterm-watch", grace_period=f"{grace_s}s")
    watcher = HealthWatcher(server.channel(), service="")
    watcher.start()
    assert watcher.serving.wait(10), watcher.statuses

    sigterm_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert watcher.not_serving_after_serving.wait(5), (watcher.statuses, watcher.ended)
    code = server.proc.wait(timeout=grace_s + 10)
    exited_after = time.monotonic() - sigterm_at
    assert code == 0, server.log_tail()
    watcher.done.wait(5)
    assert exited_after < 3, (
        f"with no call in flight the server exited {exited_after:.1f} s after SIGTERM (grace period "
        f"{grace_s} s): the open health Watch held it; the Watch ended with {watcher.ended} "
        f"{(watcher.ended_at or 0) - sigterm_at:.1f} s after SIGTERM")


def test_sigterm_while_the_model_loads_exits_at_once(assets: Assets, tmp_path) -> None:
    # Kubernetes may stop a pod that is still loading its model (a rollout moving on, a node draining). The
    # model directory's config.json is a FIFO here, so loading blocks on it until the test ends: the port is
    # open and health says NOT_SERVING, and SIGTERM must end the process then, exit code 0, not at the
    # kubelet's SIGKILL.
    model = tmp_path / "loading-model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    server = ServerProcess(name="sigterm-loading", model=model, workdir=tmp_path)
    with server.log_path.open("wb") as log:
        server.proc = subprocess.Popen(server.command(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
    try:
        server.port = server._wait_port_file(tmp_path / "sigterm-loading.port", time.monotonic() + 60)
        health = health_pb2_grpc.HealthStub(server.channel())
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.proc.poll() is None, server.log_tail()

        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=10)
        assert code == 0, server.log_tail()
        assert time.monotonic() - sigterm_at < 5
        assert "SIGTERM received before SERVING: exiting" in server.log_tail(), server.log_tail()
    finally:
        server.stop(timeout=5)
