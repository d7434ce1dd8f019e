"""A real nginx as a gRPC (HTTP/2) load balancer in front of florence2-server replicas, for the rehearsal
tests: a generated config (nginx.conf.template) in a directory of its own, run in the foreground
(`nginx -p DIR -c nginx.conf -g 'daemon off;'`) on a free loopback port."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
DEBIAN_PACKAGE = "nginx"
START_TIMEOUT_S = 15.0


def nginx_binary() -> Path:
    """The nginx executable ($NGINX_BIN, else on $PATH or in /usr/sbin); fails the test, naming the Debian
    package, when there is none."""
    explicit = os.environ.get("NGINX_BIN")
    found = explicit or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found or not os.access(found, os.X_OK):
        pytest.fail(f"nginx not found{f' at $NGINX_BIN={explicit}' if explicit else ''}: the rehearsal needs a real "
                    f"nginx (1.22+, with the http_v2 and grpc modules). Install the Debian package "
                    f"`{DEBIAN_PACKAGE}` (`apt-get install --no-install-recommends {DEBIAN_PACKAGE}`, which `make "
                    f"setup` runs when the Makefile's APT_PACKAGES lists it) or point $NGINX_BIN at the binary",
                    pytrace=False)
    return Path(found)


def nginx_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=10)
    m = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
    return m.group(1) if m else "unknown"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (nginx cannot listen on port 0 and report it; a lost race shows as
    EADDRINUSE in its log, and start() tries another port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(directory: Path, port: int, upstreams: Sequence[str]) -> str:
    servers = "\n".join(f"        server {address} max_fails=1 fail_timeout=10s;" for address in upstreams)
    return (TEMPLATE.read_text().replace("@DIR@", str(directory)).replace("@PORT@", str(port))
            .replace("@SERVERS@", servers))


@dataclass
class AccessLogEntry:
    connection: int        # nginx's serial number of the client connection the call came on
    status: str            # HTTP status nginx answered the client with
    upstreams: list[str]   # replicas tried, in order ("127.0.0.1:P"); nginx-side retries make it longer
    upstream_statuses: list[str]
    grpc_status: str       # from the replica's trailers, or from its Trailers-Only headers; "" if none
    previous_attempts: int  # the client's grpc-previous-rpc-attempts header: > 0 on a client retry
    uri: str


def _values(field_text: str) -> list[str]:
    """$upstream_addr / $upstream_status: one value per replica tried, "A, B" (or "A : B" across an internal
    redirect); "-" when none."""
    return [v.strip() for v in re.split(r"[,:]\s", field_text) if v.strip() and v.strip() != "-"]


LOG_LINE = re.compile(r'^\S+ conn=(\d+) status=(\S+) upstream=(.*?) upstream_status=(.*?) grpc_status=(\S*)/(\S*) '
                      r'previous_attempts="([^"]*)" time=\S+ uri=(\S+)$')


@dataclass
class Nginx:
    """One nginx master (+ one worker, in a process group of their own) serving `upstreams` on
    127.0.0.1:port. stop() sends SIGTERM (nginx's fast shutdown), then SIGKILL to the group if it lingers."""
    directory: Path
    upstreams: Sequence[str]
    binary: Path = field(default_factory=nginx_binary)
    proc: subprocess.Popen | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "error.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no error.log)"

    def start(self) -> "Nginx":
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        failure = ""
        for _ in range(5):
            self.port = free_port()
            conf = self.directory / "nginx.conf"
            conf.write_text(render_config(self.directory, self.port, self.upstreams))
            # nginx's own stderr goes to a file as well: before error_log is read, it reports there.
            with (self.directory / "stderr.log").open("ab") as err:
                self.proc = subprocess.Popen([str(self.binary), "-p", str(self.directory), "-c", str(conf),
                                              "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
            failure = self._wait_listening()
            if not failure:
                return self
            self.stop()
            if "Address already in use" not in failure:
                break
        pytest.fail(f"nginx {nginx_version(self.binary)} did not start: {failure}\n--- nginx.conf ---\n"
                    f"{(self.directory / 'nginx.conf').read_text()}", pytrace=False)
        raise AssertionError("unreachable")

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = (self.directory / "stderr.log").read_text(errors="replace")
                return f"exited with {self.proc.returncode}\n{stderr[-3000:]}\n{self.log_tail()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return ""
            except OSError:
                time.sleep(0.02)
        return f"not listening on {self.address} after {START_TIMEOUT_S} s\n{self.log_tail()}"

    def access_log(self) -> list[AccessLogEntry]:
        """The calls nginx finished so far (nginx writes a line when it finishes a request)."""
        entries = []
        path = self.directory / "access.log"
        for line in path.read_text().splitlines() if path.exists() else []:
            m = LOG_LINE.match(line)
            assert m, f"unexpected access.log line: {line!r}"
            connection, status, upstreams, upstream_statuses, trailer, header, attempts, uri = m.groups()
            entries.append(AccessLogEntry(
                connection=int(connection), status=status, upstreams=_values(upstreams),
                upstream_statuses=_values(upstream_statuses),
                grpc_status=(trailer if trailer != "-" else "") or (header if header != "-" else ""),
                previous_attempts=int(attempts) if attempts.isdigit() else 0, uri=uri))
        return entries

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # The master is still there (not reaped), so its pid still names its group (start_new_session):
                # this ends the worker too.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
