"""Multi-replica rehearsal on loopback: three florence2-server replicas behind (A) a real nginx (HTTP/2,
grpc_pass) and (B) a client-side round_robin channel. Calls are balanced one by one across the replicas (A: over
one HTTP/2 connection to nginx), then one replica is drained with SIGTERM and another is SIGKILLed under load:
no unary call is lost, every answer equals the reference answer, the drained replica exits 0 within its grace
period. What it takes (see the client configs below): A, a client retry policy that retries UNAVAILABLE and
CANCELLED with a backoff longer than a drain, and nginx answering its own 502s in gRPC's Trailers-Only form
(rehearsal/nginx.conf.template); B, client-side health checking besides the retry policy.

What cannot be saved: a call that the killed replica had already started answering. A server-streaming Run
that delivered events is committed (its events are with the caller), so neither nginx nor the gRPC retry
policy may re-send it; it ends with an error status (INTERNAL through nginx, which resets the stream) and the
caller must restart it. A unary call is only committed when its answer arrives, so it is always retryable.

Figures (calls per replica, retries, drain time) are printed: run with `pytest -s` to see them.
"""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest

from tests.server_py.server_harness import REPO, ServerProcess, florence_client, run_tool, server_binary

from .rehearsal.metrics import active_sequences, calls_by_code, try_calls_by_code
from .rehearsal.nginx import AccessLogEntry, Nginx, nginx_binary, nginx_version
from .rehearsal.workload import (CALL_TIMEOUT_S, CallRecord, Load, StreamCall, fixed_length, raw_image, references,
                                 same_answer, unary_calls, wait_until)

REPLICAS = 3
GRACE_S = 10
THREADS = 6             # concurrent calls from the one client channel
SPREAD_CALLS = 60       # calm phase: calls whose spread over the replicas is checked
MIN_SHARE = 0.15        # each replica answers at least this share of the calm phase's calls
TOKENS = (16, 32, 48, 64, 24)  # fixed answer lengths of the five unary calls: ~0.1-0.5 s each under load
STREAM_TOKENS = 1024    # the Run call caught by SIGKILL: the model's longest answer, seconds of decoding
AFTER_CALLS = 30        # calls still sent once the drained replica is gone and the killed one is dead
MAX_CHAOS_CALLS = 600   # bounds of the chaos phase's load
MAX_CHAOS_S = 90

FEATURE_CACHE_BYTES = 16 << 20

SERVICE = [{"service": "florence.v1.Florence"}]
# Through nginx. nginx 1.22 has no active health checks and cannot act on a gRPC status, so the client does
# the retrying: nginx answers a call the killed replica dropped with HTTP 502, and passes a draining replica's
# UNAVAILABLE on (both reach the client as UNAVAILABLE); and a call that reaches the draining replica just as
# it shuts gRPC down (after its drain) gets CANCELLED from gRPC core itself, before any handler runs
# (grpc/grpc#41785, gRPC 1.51 here), so CANCELLED is retried too: Florence calls are idempotent, and gRPC
# never retries a call the client cancelled. The backoff is long enough to outlast a drain (about a second):
# nginx's round robin keeps sending about half the new calls to the draining replica until it closes.
PROXY_CLIENT_CONFIG = json.dumps({"methodConfig": [{"name": SERVICE, "retryPolicy": {
    "maxAttempts": 5, "initialBackoff": "1s", "maxBackoff": "5s", "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]}}]})
# Client-side balancing over the three replicas, with client-side health checking: each subchannel watches
# grpc.health.v1 for the service, and round_robin stops picking a replica as soon as it says NOT_SERVING
# (its first step on SIGTERM), so the draining replica gets next to no new calls, and none when gRPC shuts
# down after the drain (without it, a call arriving then gets CANCELLED, as above, and is lost).
DIRECT_CLIENT_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "florence.v1.Florence"},
    "methodConfig": [{"name": SERVICE, "retryPolicy": {
        "maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "1s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]})


# ---- Fixtures (module-local: tests/deploy has no conftest of its own) ---------------------------------------

@pytest.fixture(scope="module")
def rehearsal_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rehearsal")


@pytest.fixture(scope="module")
def tiny_model(rehearsal_tmp: Path) -> Path:
    server_binary()  # fail before spending time on an export
    tiny = REPO / "build" / "models" / "tiny"
    if not (tiny / "manifest.json").is_file():
        tiny = rehearsal_tmp / "models" / "tiny"
        run_tool(["tools/florence2_export.py", "--random", "tiny", "--seed", "0", "--out", str(tiny)])
    return tiny


@pytest.fixture(scope="module")
def stubs(rehearsal_tmp: Path) -> florence_client.Stubs:
    return florence_client.load_stubs(cache_dir=rehearsal_tmp / "stubs")


class Replicas:
    """Starts florence2-server replicas (tiny model, /metrics on, small pools, one Torch thread, a vision
    feature cache so that the few test images cost their vision tower once) and stops every one it started
    at teardown, whatever the test did to them."""

    def __init__(self, model: Path, workdir: Path) -> None:
        self.model, self.workdir = model, workdir
        self.started: list[ServerProcess] = []

    def _new(self, name: str, port: int = 0) -> ServerProcess:
        # --address given again after the harness's 127.0.0.1:0: the last occurrence of a flag wins.
        extra = ["--threads", "1", "--feature_cache_bytes", str(FEATURE_CACHE_BYTES)]
        if port:
            extra += ["--address", f"127.0.0.1:{port}"]
        server = ServerProcess(name=name, model=self.model, workdir=self.workdir, metrics=True,
                               grace_period=f"{GRACE_S}s", extra_args=extra)
        self.started.append(server)
        return server

    def start(self, prefix: str, n: int = REPLICAS) -> list[ServerProcess]:
        servers = [self._new(f"{prefix}{i}") for i in range(n)]
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(ServerProcess.start, servers))
        return servers

    def start_on(self, name: str, port: int) -> ServerProcess:
        return self._new(name, port).start()

    def stop_all(self) -> None:
        for server in self.started:
            server.stop(timeout=GRACE_S + 20)


@pytest.fixture
def replicas(tiny_model: Path, tmp_path: Path) -> Iterator[Replicas]:
    started = Replicas(tiny_model, tmp_path / "replicas")
    yield started
    started.stop_all()


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[[list[str]], Nginx]]:
    """start_nginx(upstream addresses) -> a running Nginx in front of them, stopped at teardown."""
    started: list[Nginx] = []

    def start(upstreams: list[str]) -> Nginx:
        proxy = Nginx(tmp_path / f"nginx{len(started)}", upstreams)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


# ---- Shared steps ---------------------------------------------------------------------------------------------

def report(title: str, figures: dict) -> None:
    print(f"\n=== rehearsal figures: {title} ===\n{json.dumps(figures, indent=2, sort_keys=True)}")


def failures(records: list[CallRecord]) -> Counter:
    return Counter(r.code for r in records if r.code != "OK")


def describe(records: list[CallRecord], limit: int = 10) -> str:
    return "\n".join(f"  call {r.index} [{r.started:.3f}..{r.ended:.3f}] {r.code} {r.details!r} via "
                     f"{r.upstream or '?'} matches={r.matches}" for r in records[:limit])


def calm_spread(stub: Any, servers: list[ServerProcess], calls: list, refs: list) -> dict[str, int]:
    """SPREAD_CALLS calls from THREADS threads over the one channel; returns the OK calls each replica
    counted meanwhile (its /metrics) and checks that every replica answered its share."""
    before = {s.name: calls_by_code(s.metrics_port) for s in servers}
    load = Load(stub, calls, refs, THREADS, SPREAD_CALLS, max_seconds=60).start()
    load.join(CALL_TIMEOUT_S + 10)
    assert not failures(load.records), f"calls failed with every replica up:\n{describe(load.records)}"
    assert all(r.matches for r in load.records), \
        f"answers differ from the reference:\n{describe([r for r in load.records if not r.matches])}"
    per_replica = {s.name: calls_by_code(s.metrics_port)["OK"] - before[s.name]["OK"] for s in servers}
    assert sum(per_replica.values()) == SPREAD_CALLS, per_replica
    for name, count in per_replica.items():
        assert count >= MIN_SHARE * SPREAD_CALLS, \
            f"replica {name} answered {count} of {SPREAD_CALLS} calls (< {MIN_SHARE:.0%}): {per_replica}"
    return per_replica


@dataclass
class Chaos:
    """What happened to the drained and the killed replica."""
    term_at: float = 0.0
    kill_at: float = 0.0
    drain_exit_code: int | None = None
    drain_s: float = 0.0
    active_on_drained_at_term: int = 0
    active_on_killed_at_kill: int = 0


def logged_drain_s(drained: ServerProcess) -> float | None:
    """Seconds from the replica's "SIGTERM received" log line to its "stopped" line (the process exits
    later: the rest is teardown)."""
    stamps = {}
    for line in drained.log_tail(1 << 20).splitlines():
        for key in ("SIGTERM received", "stopped"):
            if key in line:
                stamps[key] = datetime.fromisoformat(line.split(" ", 1)[0])
    if len(stamps) < 2:
        return None
    return round((stamps["stopped"] - stamps["SIGTERM received"]).total_seconds(), 3)


# Two calls being decoded: at least one is still running when the signal lands a few milliseconds later.
DRAINED_MIN_ACTIVE = 2


def drain_and_kill(load: Load, drained: ServerProcess, killed: ServerProcess, killed_min_active: int,
                   before_kill: Callable[[], None] = lambda: None) -> Chaos:
    """Under `load`: SIGTERM `drained` once it decodes DRAINED_MIN_ACTIVE calls, SIGKILL `killed` once it
    decodes at least `killed_min_active` sequences (`before_kill` runs right before); waits for the drained
    replica to exit, then for AFTER_CALLS more calls."""
    chaos = Chaos()

    def decoding(server: ServerProcess, n: int) -> bool:
        active = active_sequences(server.metrics_port)
        if server is drained:
            chaos.active_on_drained_at_term = active
        else:
            chaos.active_on_killed_at_kill = active
        return active >= n

    wait_until(lambda: decoding(drained, DRAINED_MIN_ACTIVE), 30,
               f"{drained.name} decodes {DRAINED_MIN_ACTIVE} calls")
    chaos.term_at = time.monotonic()
    drained.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: decoding(killed, killed_min_active), 30,
               f"{killed.name} decodes {killed_min_active} sequence(s)")
    before_kill()
    chaos.kill_at = time.monotonic()
    killed.proc.kill()
    try:
        chaos.drain_exit_code = drained.proc.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:
        chaos.drain_exit_code = None  # reported by check_drain; the fixture's teardown kills it
    chaos.drain_s = time.monotonic() - chaos.term_at
    killed.proc.wait(timeout=10)
    seen = load.completed()
    wait_until(lambda: load.completed() >= seen + AFTER_CALLS, 60,
               f"{AFTER_CALLS} more calls complete after the chaos")
    return chaos


def check_drain(chaos: Chaos, drained: ServerProcess) -> None:
    assert chaos.drain_exit_code == 0, \
        f"{drained.name} exit code {chaos.drain_exit_code} after SIGTERM\n{drained.log_tail()}"
    assert chaos.drain_s < GRACE_S, f"{drained.name} took {chaos.drain_s:.2f} s to drain (grace {GRACE_S} s)"
    assert "drained: every request completed" in drained.log_tail(20000), drained.log_tail()


def check_no_call_lost(records: list[CallRecord]) -> None:
    lost = [r for r in records if r.code != "OK"]
    assert not lost, f"{len(lost)} of {len(records)} unary calls lost ({dict(failures(records))}):\n" \
                     f"{describe(lost)}"
    wrong = [r for r in records if not r.matches]
    assert not wrong, f"{len(wrong)} answers differ from the reference:\n{describe(wrong)}"


def attempt_outcome(entry: AccessLogEntry) -> str:
    if entry.status == "204":  # nginx.conf.template's @unavailable
        return f"replica gave no answer (HTTP {'/'.join(entry.upstream_statuses)}): UNAVAILABLE from nginx"
    if entry.status != "200":
        return f"HTTP {entry.status} from nginx"
    return f"grpc-status {entry.grpc_status} from the replica"


# ---- Scenario A: nginx ----------------------------------------------------------------------------------------

def test_nginx_balances_each_call_and_rides_out_drain_and_kill(replicas: Replicas, start_nginx, stubs) -> None:
    binary = nginx_binary()  # fails first, naming the Debian package, when nginx is missing
    pb = stubs.pb2
    servers = replicas.start("a")
    by_address = {s.address: s for s in servers}
    calls = unary_calls(pb, TOKENS)
    refs = references(servers[0].stub(stubs), calls)
    stream_request = pb.TaskRequest(task=pb.TASK_CAPTION, image=raw_image(pb, 7),
                                    options=fixed_length(pb, STREAM_TOKENS))

    proxy = start_nginx([s.address for s in servers])
    with grpc.insecure_channel(proxy.address, options=[("grpc.enable_retries", 1),
                                                       ("grpc.service_config", PROXY_CLIENT_CONFIG)]) as channel:
        stub = stubs.pb2_grpc.FlorenceStub(channel)

        # 1. Calm: one HTTP/2 connection to nginx, each call balanced on its own.
        phase = time.monotonic()
        spread = calm_spread(stub, servers, calls, refs)
        calm_s = time.monotonic() - phase
        calm_log = proxy.access_log()
        assert len({e.connection for e in calm_log}) == 1, \
            f"the client used several connections to nginx: {sorted({e.connection for e in calm_log})}"

        # 2. Chaos: a long Run stream is placed first; its replica is the one killed, the next one drained.
        stream = StreamCall(stub, stream_request).start()
        assert stream.first_event.wait(30) and not stream.code, f"the Run call did not start: {stream.code} " \
                                                                f"{stream.details}"
        killed = by_address[stream.upstream]
        drained, survivor = [s for s in servers if s is not killed]
        phase = time.monotonic()
        load = Load(stub, calls, refs, THREADS, MAX_CHAOS_CALLS, MAX_CHAOS_S).start()
        try:
            at_kill: dict[str, Any] = {}

            def note_stream() -> None:
                at_kill.update(done=stream.done.is_set(), events=stream.events)

            # The killed replica decodes the stream and at least one unary call.
            chaos = drain_and_kill(load, drained, killed, killed_min_active=2, before_kill=note_stream)
        finally:
            load.stop()
            load.join(CALL_TIMEOUT_S + 10)
        chaos_s = time.monotonic() - phase
        assert stream.done.wait(CALL_TIMEOUT_S)

    records = load.snapshot()
    log = proxy.access_log()[len(calm_log):]
    unary_log = [e for e in log if not e.uri.endswith("/Run")]
    failed_attempts = [e for e in unary_log if e.status != "200" or e.grpc_status not in ("0", "")]
    client_retries = [e for e in unary_log if e.previous_attempts > 0]
    answered = Counter(by_address[e.upstreams[-1]].name for e in unary_log
                       if e.status == "200" and e.grpc_status == "0")
    figures = {
        "nginx": nginx_version(binary),
        "calm: calls per replica (metrics)": spread,
        "calm: seconds": round(calm_s, 1),
        "chaos: seconds": round(chaos_s, 1),
        "chaos: unary calls": len(records),
        "chaos: unary calls lost, by code": dict(failures(records)),
        "chaos: answered per replica (access log)": dict(answered),
        "chaos: failed attempts seen by nginx": dict(Counter(attempt_outcome(e) for e in failed_attempts)),
        "chaos: client retries (grpc-previous-rpc-attempts > 0)": len(client_retries),
        "chaos: calls nginx moved to the next replica itself": sum(len(e.upstreams) > 1 for e in log),
        "chaos: client connections to nginx": len({e.connection for e in proxy.access_log()}),
        "drained": drained.name, "killed": killed.name, "survivor": survivor.name,
        "drain: seconds from SIGTERM to exit 0": round(chaos.drain_s, 3),
        "drain: seconds from SIGTERM to its 'stopped' log line": logged_drain_s(drained),
        "drain: sequences decoding at SIGTERM": chaos.active_on_drained_at_term,
        "kill: sequences decoding at SIGKILL": chaos.active_on_killed_at_kill,
        "kill: Run stream": f"{stream.code} after {stream.events} events ({at_kill['events']} at SIGKILL)",
    }
    report("A, nginx", figures)

    check_drain(chaos, drained)
    check_no_call_lost(records)
    in_flight_at_term = [r for r in records if r.upstream == drained.address and r.started < chaos.term_at < r.ended]
    assert in_flight_at_term, f"no recorded call was in flight on {drained.name} at its SIGTERM"
    # Every attempt that failed (502 from the killed replica, UNAVAILABLE from the draining one) was retried by
    # the client: one retry per failed attempt, since every call ended OK.
    assert len(client_retries) == len(failed_attempts), figures
    assert failed_attempts, f"no attempt failed at all: the chaos missed the calls in flight\n{figures}"
    # Once both are gone, the survivor answers everything.
    late = [r for r in records if r.started > chaos.term_at + chaos.drain_s]
    assert late and {r.upstream for r in late} == {survivor.address}, Counter(r.upstream for r in late)
    assert len({e.connection for e in proxy.access_log()}) == 1, "the client's one connection to nginx broke"
    # The one call that cannot be saved: the stream the killed replica was answering.
    assert not at_kill['done'], f"the Run stream ended before SIGKILL ({stream.events} events): make it longer"
    assert stream.code in ("INTERNAL", "UNAVAILABLE") and stream.events > 0, \
        f"the Run stream on the killed replica ended {stream.code} {stream.details!r} after {stream.events} events"


# ---- Scenario B: client-side round_robin ----------------------------------------------------------------------

def test_round_robin_channel_balances_and_retries_through_drain_and_kill(replicas: Replicas, stubs) -> None:
    pb = stubs.pb2
    servers = replicas.start("b")
    calls = unary_calls(pb, TOKENS)
    refs = references(servers[0].stub(stubs), calls)
    target = "ipv4:" + ",".join(s.address for s in servers)
    options = [("grpc.enable_retries", 1), ("grpc.service_config", DIRECT_CLIENT_CONFIG),
               # A replica that comes back is reconnected within a second (default backoff: up to 120 s).
               ("grpc.max_reconnect_backoff_ms", 1000)]
    survivor, drained, killed = servers
    with grpc.insecure_channel(target, options=options) as channel:
        stub = stubs.pb2_grpc.FlorenceStub(channel)

        # 1. Calm.
        phase = time.monotonic()
        spread = calm_spread(stub, servers, calls, refs)
        calm_s = time.monotonic() - phase

        # 2. Chaos. The drained replica's own count of UNAVAILABLE answers is read until it exits.
        unavailable_on_drained = [0]
        stop_watch = threading.Event()

        def watch_drained() -> None:
            while not stop_watch.is_set():
                counts = try_calls_by_code(drained.metrics_port)
                if counts is None:
                    return
                unavailable_on_drained[0] = counts["UNAVAILABLE"]
                stop_watch.wait(0.02)

        watcher = threading.Thread(target=watch_drained, daemon=True)
        watcher.start()
        survivor_before = calls_by_code(survivor.metrics_port)
        phase = time.monotonic()
        load = Load(stub, calls, refs, THREADS, MAX_CHAOS_CALLS, MAX_CHAOS_S).start()
        try:
            chaos = drain_and_kill(load, drained, killed, killed_min_active=1)
        finally:
            load.stop()
            load.join(CALL_TIMEOUT_S + 10)
            stop_watch.set()
            watcher.join(10)
        chaos_s = time.monotonic() - phase
        records = load.snapshot()
        survivor_ok = calls_by_code(survivor.metrics_port)["OK"] - survivor_before["OK"]

        # 3. No replica left: a call fails fast (UNAVAILABLE after its retries), a wait_for_ready call waits
        # until a replica is back (here on the killed replica's port) and gets its answer.
        assert survivor.stop(timeout=GRACE_S + 10) == 0, survivor.log_tail()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as fail_fast:
            stub.Caption(calls[0].request, timeout=CALL_TIMEOUT_S)
        fail_fast_s = time.monotonic() - started
        waiting = stub.Caption.future(calls[0].request, timeout=CALL_TIMEOUT_S, wait_for_ready=True)
        with pytest.raises(grpc.FutureTimeoutError):
            waiting.result(timeout=1.0)
        back = replicas.start_on("b-back", killed.port)
        back_at = time.monotonic()
        waited = waiting.result(timeout=CALL_TIMEOUT_S)
        wait_after_back_s = time.monotonic() - back_at

    figures = {
        "calm: calls per replica (metrics)": spread,
        "calm: seconds": round(calm_s, 1),
        "chaos: seconds": round(chaos_s, 1),
        "chaos: unary calls": len(records),
        "chaos: unary calls lost, by code": dict(failures(records)),
        "chaos: answered by the survivor (metrics)": survivor_ok,
        "chaos: UNAVAILABLE answered by the draining replica (metrics, last read before exit)":
            unavailable_on_drained[0],
        "drain: seconds from SIGTERM to exit 0": round(chaos.drain_s, 3),
        "drain: seconds from SIGTERM to its 'stopped' log line": logged_drain_s(drained),
        "drain: sequences decoding at SIGTERM": chaos.active_on_drained_at_term,
        "kill: sequences decoding at SIGKILL": chaos.active_on_killed_at_kill,
        "no replica: fail-fast call": f"{fail_fast.value.code().name} after {fail_fast_s:.2f} s",
        "no replica: wait_for_ready call, seconds from a replica SERVING again to its answer":
            round(wait_after_back_s, 2),
    }
    report("B, client-side round_robin", figures)

    check_drain(chaos, drained)
    check_no_call_lost(records)
    assert fail_fast.value.code() == grpc.StatusCode.UNAVAILABLE, fail_fast.value
    assert fail_fast_s < 10, f"the call without wait_for_ready took {fail_fast_s:.1f} s to fail"
    assert same_answer(waited, refs[0]), "the wait_for_ready call's answer differs from the reference"
    assert back.proc.poll() is None
