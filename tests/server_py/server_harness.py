"""Harness for the process-level tests of florence2-server: the real binary, a real exported model, real
images, real gRPC over loopback.

The binary is build/server/florence2-server (override with $FLORENCE_SERVER_BIN); build it first with
`cmake --build build --target florence2-server`. Models: build/models/tiny when it exists (ctest's export),
else a fresh `florence2_export.py --random tiny --seed 0`; plus its location-prone copy
(tools/loc_prone_model.py), whose answers contain boxes. Every server listens on 127.0.0.1 port 0 and reports
its ports through --port_file / --metrics_port_file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python"))
import florence_client  # noqa: E402

SERVER_BIN_ENV = "FLORENCE_SERVER_BIN"
DEFAULT_SERVER_BIN = REPO / "build" / "server" / "florence2-server"
CLIENT = REPO / "clients" / "python" / "florence_client.py"
START_TIMEOUT_S = 120.0  # model load + warm-up of the tiny model takes ~2 s; generous for loaded machines


@dataclass(frozen=True)
class Assets:
    tiny: Path         # random tiny model, seed 0
    tiny_locs: Path    # its location-prone copy: generations contain <loc_N> groups, so results have boxes
    images: Path       # astronaut.jpg, coffee.png, chelsea.webp, rocket.bmp, page.tiff
    stubs_cache: Path  # where the client example generates the florence.v1 stubs
    tmp: Path

    def image(self, name: str) -> Path:
        return self.images / name


def server_binary() -> Path:
    path = Path(os.environ.get(SERVER_BIN_ENV) or DEFAULT_SERVER_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"florence2-server not found at {path}: build it first with "
                    f"`cmake --build build --target florence2-server` (or `make build`), or point "
                    f"${SERVER_BIN_ENV} at the binary", pytrace=False)
    return path


def run_tool(args: Sequence[str]) -> None:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}", pytrace=False)


def run_client(assets: Assets, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the client example (clients/python/florence_client.py) as a user would."""
    env = {**os.environ, "FLORENCE_STUBS_CACHE": str(assets.stubs_cache)}
    env.pop("FLORENCE_TOKEN", None)
    return subprocess.run([sys.executable, str(CLIENT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def health_status_name(status: int) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


@dataclass
class ServerProcess:
    """One florence2-server process on 127.0.0.1:0. start() returns once health says SERVING; the health
    statuses seen until then (a Watch opened as soon as the port is known) are kept in startup_health."""
    name: str
    model: Path
    workdir: Path
    metrics: bool = False
    grace_period: str = "30s"
    extra_args: Sequence[str] = ()
    # Channel credentials for the server's own port (TLS servers); None = plaintext.
    credentials: grpc.ChannelCredentials | None = None
    proc: subprocess.Popen | None = None
    port: int = 0
    metrics_port: int = 0
    startup_health: list[str] = field(default_factory=list)
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def command(self) -> list[str]:
        port_file, metrics_port_file = self.workdir / f"{self.name}.port", self.workdir / f"{self.name}.mport"
        return [str(server_binary()), "--model", str(self.model), "--address", "127.0.0.1:0",
                "--port_file", str(port_file),
                "--metrics_address", "127.0.0.1:0" if self.metrics else "",
                "--metrics_port_file", str(metrics_port_file),
                "--grace_period", self.grace_period,
                # Small KV pools: several servers may run at once on a 2-core CI machine.
                "--max_rows", "32", "--workers", "1", "--log_level", "info", *self.extra_args]

    def start(self) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for suffix in (".port", ".mport"):
            (self.workdir / f"{self.name}{suffix}").unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        self.port = self._wait_port_file(self.workdir / f"{self.name}.port", deadline)
        if self.metrics:
            self.metrics_port = self._wait_port_file(self.workdir / f"{self.name}.mport", deadline)
        self._wait_serving(deadline)
        return self

    def _fail(self, what: str) -> None:
        code = self.proc.poll() if self.proc else None
        if code is None and self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        pytest.fail(f"server {self.name} ({' '.join(self.command())}): {what}; exit code {code}\n"
                    f"--- log tail ---\n{self.log_tail()}", pytrace=False)

    def _wait_port_file(self, path: Path, deadline: float) -> int:
        # The server writes "PORT\n" once it listens; no signal reaches us, so poll the file and the process.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited before writing {path.name}")
            try:
                text = path.read_text()
            except FileNotFoundError:
                text = ""
            if text.endswith("\n") and text.strip().isdigit() and int(text) > 0:
                return int(text)
            time.sleep(0.02)
        self._fail(f"no port in {path} after {START_TIMEOUT_S} s")
        raise AssertionError("unreachable")

    def _wait_serving(self, deadline: float) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel())
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail("exited before health said SERVING")
            try:
                # The first answer is the current status; later ones come on every change.
                for response in stub.Watch(health_pb2.HealthCheckRequest(service=""),
                                           timeout=max(0.1, deadline - time.monotonic())):
                    self.startup_health.append(health_status_name(response.status))
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as e:
                self.startup_health.append(e.code().name)
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._fail(f"health Watch failed: {e.code().name}: {e.details()}")
                time.sleep(0.05)
        self._fail(f"health not SERVING after {START_TIMEOUT_S} s (seen: {self.startup_health})")

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A new channel to the server with its credentials (or the ones given); closed at stop()."""
        creds = credentials or self.credentials
        options = [("grpc.enable_retries", 0)]
        ch = (grpc.secure_channel(self.address, creds, options=options) if creds
              else grpc.insecure_channel(self.address, options=options))
        self._channels.append(ch)
        return ch

    def stub(self, stubs: florence_client.Stubs, credentials: grpc.ChannelCredentials | None = None):
        return stubs.pb2_grpc.FlorenceStub(self.channel(credentials))

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait; kills it if it outlives `timeout`. Returns the exit code."""
        for ch in self._channels:
            ch.close()
        self._channels.clear()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
