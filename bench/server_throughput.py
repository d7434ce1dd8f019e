#!/usr/bin/env python3
"""florence2-server throughput: one request set sent one at a time vs the same set from concurrent clients,
and the front end's rate on a null-work RPC. Same run, same machine, same server process.

  .venv/bin/python bench/server_throughput.py --model models/florence2-base-random \
      [--requests 18] [--clients 16] [--max-batch 8] [--server-flag=--FLAG=VALUE ...] [--out bench/results/server_throughput.json]

Request set: --requests typed RPCs (a multiple of 3), one third each of Caption (<CAPTION>, 24 new tokens),
Detect (<OD>, 128) and Ocr with regions (<OCR_WITH_REGION>, 256), over the real images of
tools/test_images.py (four photos and a scanned page) in turn; every request beam=3 with
max_new_tokens = min_new_tokens, so random weights cannot stop early and every request's work is fixed.

Phases, in this order, against one florence2-server started here (127.0.0.1, port 0, port files):
  warm-up     one request per task with 8 new tokens, not measured;
  sequential  the set, one request at a time over one channel: wall time, requests/s;
  concurrent  the same set from --clients threads, each with its own channel (own connection), taking the
              next request from a shared list: wall time, requests/s, ratio concurrent / sequential;
  null work   Caption with an empty CaptionRequest (no image) from --null-procs processes x
              --null-inflight outstanding calls each for --null-seconds: RPC/s, and the server's CPU
              seconds per RPC (its own utime + stime over the window).
Every response must be OK with the requested number of generated tokens, and each concurrent response's
token_ids must equal the sequential response's for the same request (the batcher's contract: batching
never changes an answer); a mismatch is printed loudly and makes the exit status 1.

/metrics is scraped before and after each phase; the deltas give each phase's mean encoder batch size
(florence_encoder_batch_size), mean KV rows per decode step (florence_decode_step_rows, beams included)
and mean sequences per decode step. Writes a JSON file (default bench/results/server_throughput.json) and
prints a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))
import florence_client  # noqa: E402  (generates the florence.v1 stubs on first use)

# (task name as florence2-run / florence_client spell it, forced new tokens)
TASKS = (("caption", 24), ("od", 128), ("ocr_with_region", 256))
IMAGE_FILES = ("astronaut.jpg", "coffee.png", "chelsea.webp", "rocket.bmp", "page.tiff")
NULL_METHOD = "/florence.v1.Florence/Caption"
WARMUP_TOKENS = 8
RPC_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 300.0
# Metrics histograms whose means are reported, with a short name.
HISTOGRAMS = {"florence_encoder_batch_size": "encoder_batch",
              "florence_decode_step_rows": "decode_rows",
              "florence_decode_step_sequences": "decode_sequences",
              "florence_encoder_batch_duration_seconds": "encoder_batch_s",
              "florence_decode_step_duration_seconds": "decode_step_s"}


# ---- Requests -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchRequest:
    index: int
    task: str
    new_tokens: int
    image_name: str
    image: bytes


@dataclass
class Outcome:
    index: int
    task: str
    code: str
    details: str = ""
    latency_s: float = 0.0
    token_ids: list[int] = field(default_factory=list)
    generated_tokens: int = 0
    queue_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    encoder_batch_size: int = 0


def build_requests(images_dir: Path, count: int,
                   tasks: Sequence[tuple[str, int]] = TASKS) -> list[BenchRequest]:
    """Request i: task i % len(tasks), image (i // len(tasks)) % 5, so every task sees every image in turn."""
    images = {name: (images_dir / name).read_bytes() for name in IMAGE_FILES}
    requests = []
    for i in range(count):
        task, new_tokens = tasks[i % len(tasks)]
        name = IMAGE_FILES[(i // len(tasks)) % len(IMAGE_FILES)]
        requests.append(BenchRequest(i, task, new_tokens, name, images[name]))
    return requests


def call(stubs: florence_client.Stubs, stub: Any, request: BenchRequest, beams: int) -> Outcome:
    method, message = florence_client.build_typed_call(
        stubs, request.task, florence_client.Inputs(image=request.image, max_new_tokens=request.new_tokens,
                                                    min_new_tokens=request.new_tokens, num_beams=beams))
    start = time.perf_counter()
    try:
        response = getattr(stub, method)(message, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as e:
        return Outcome(request.index, request.task, e.code().name, e.details() or "",
                       time.perf_counter() - start)
    latency = time.perf_counter() - start
    r, u = response.result, response.result.usage
    return Outcome(request.index, request.task, "OK", "", latency, list(r.token_ids), u.generated_tokens,
                   u.queue_ms, u.encode_ms, u.decode_ms, u.encoder_batch_size)


def run_sequential(stubs: florence_client.Stubs, address: str, requests: Sequence[BenchRequest],
                   beams: int) -> tuple[float, list[Outcome]]:
    with grpc.insecure_channel(address) as channel:
        stub = stubs.pb2_grpc.FlorenceStub(channel)
        start = time.perf_counter()
        outcomes = [call(stubs, stub, r, beams) for r in requests]
        return time.perf_counter() - start, outcomes


def run_concurrent(stubs: florence_client.Stubs, address: str, requests: Sequence[BenchRequest], beams: int,
                   clients: int) -> tuple[float, list[Outcome]]:
    """`clients` threads, each with its own channel and connection, take requests in order from one list."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    next_index = iter(range(len(requests)))
    lock = threading.Lock()  # protects next_index
    # Channels are opened and connected before the clock starts: connection set-up is not the server's work.
    channels = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(clients)]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=30)
    ready = threading.Barrier(clients + 1)

    def client(channel: grpc.Channel) -> None:
        stub = stubs.pb2_grpc.FlorenceStub(channel)
        ready.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            outcomes[i] = call(stubs, stub, requests[i], beams)

    threads = [threading.Thread(target=client, args=(ch,)) for ch in channels]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for ch in channels:
        ch.close()
    return wall, [o for o in outcomes if o is not None]


# ---- Null work ------------------------------------------------------------------------------------------------

def _null_worker(address: str, inflight: int, start_at: float, measure_s: float, queue: Any) -> None:
    """One client process: `inflight` coroutines on one aio channel each send an empty CaptionRequest (b"")
    back to back from `start_at - 1 s` (warm-up) until the window [start_at, start_at + measure_s] ends;
    counts the calls that completed inside the window, by status code."""
    async def main() -> dict[str, Any]:
        counts: dict[str, int] = {}
        async with grpc.aio.insecure_channel(address) as channel:
            await channel.channel_ready()
            rpc = channel.unary_unary(NULL_METHOD)  # no serializers: bytes in, bytes out
            while time.time() < start_at - 1.0:
                await asyncio.sleep(0.01)
            end = start_at + measure_s

            async def loop() -> None:
                while True:
                    code = "OK"
                    try:
                        await rpc(b"", timeout=10)
                    except grpc.aio.AioRpcError as e:
                        code = e.code().name
                    now = time.time()
                    if now >= end:
                        return
                    if now >= start_at:
                        counts[code] = counts.get(code, 0) + 1

            cpu0 = time.process_time()
            await asyncio.gather(*(loop() for _ in range(inflight)))
            return {"counts": counts, "client_cpu_s": time.process_time() - cpu0}

    queue.put(asyncio.run(main()))


def null_work(address: str, server_pid: int, procs: int, inflight: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")  # never fork a process whose gRPC core is running
    queue = ctx.Queue()
    start_at = time.time() + 4.0  # spawn + import grpc + connect, then 1 s warm-up
    workers = [ctx.Process(target=_null_worker, args=(address, inflight, start_at, seconds, queue))
               for _ in range(procs)]
    for w in workers:
        w.start()
    server = psutil.Process(server_pid)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = server.cpu_times()
    time.sleep(seconds)
    cpu1 = server.cpu_times()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    counts: dict[str, int] = {}
    for r in results:
        for code, n in r["counts"].items():
            counts[code] = counts.get(code, 0) + n
    total = sum(counts.values())
    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "seconds": seconds, "client_processes": procs, "inflight_per_process": inflight,
        "calls": total, "codes": counts, "rpc_per_s": total / seconds,
        "server_cpu_s": server_cpu, "server_cpu_us_per_rpc": 1e6 * server_cpu / total if total else None,
        "server_cores_busy": server_cpu / seconds,
        "client_cpu_s": sum(r["client_cpu_s"] for r in results),
    }


# ---- Server and metrics ---------------------------------------------------------------------------------------

class Server:
    """florence2-server on 127.0.0.1:0 with /metrics on 127.0.0.1:0; the log goes to `log_path`."""

    def __init__(self, binary: Path, model: Path, max_batch: int, workdir: Path, log_path: Path,
                 extra_flags: Sequence[str] = ()) -> None:
        self.port_file, self.metrics_port_file = workdir / "server.port", workdir / "server.mport"
        self.command = [str(binary), "--model", str(model), "--address", "127.0.0.1:0",
                        "--port_file", str(self.port_file), "--metrics_address", "127.0.0.1:0",
                        "--metrics_port_file", str(self.metrics_port_file), "--max_batch", str(max_batch),
                        *extra_flags]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = self.metrics_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Starts the server and waits for health SERVING; returns the seconds that took."""
        for f in (self.port_file, self.metrics_port_file):
            f.unlink(missing_ok=True)
        start = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        self.port = self._port(self.port_file, deadline)
        self.metrics_port = self._port(self.metrics_port_file, deadline)
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive()
                try:
                    for r in stub.Watch(health_pb2.HealthCheckRequest(service=""),
                                        timeout=max(0.1, deadline - time.monotonic())):
                        if r.status == health_pb2.HealthCheckResponse.SERVING:
                            return time.perf_counter() - start
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"health not SERVING after {START_TIMEOUT_S} s; log: {self.log_path}")
                time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"florence2-server exited ({self.proc.returncode}); log: {self.log_path}\n"
                               + self.log_path.read_text(errors="replace")[-3000:])

    def _port(self, path: Path, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._check_alive()
            text = path.read_text() if path.is_file() else ""
            if text.endswith("\n") and text.strip().isdigit():
                return int(text)
            time.sleep(0.05)
        raise TimeoutError(f"no port in {path} after {START_TIMEOUT_S} s")

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read().decode()

    def invalid_arguments(self) -> int:
        """Caption calls answered INVALID_ARGUMENT so far (the null-work call), from /metrics."""
        return int(metric_totals(self.scrape()).get("caption_invalid_argument", 0))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def metric_totals(text: str) -> dict[str, float]:
    """Sums of the counters this benchmark reads: each histogram's _sum and _count, generated tokens, and
    the Caption INVALID_ARGUMENT count (the null-work call)."""
    totals: dict[str, float] = {}
    for name, labels, value in parse_metrics(text):
        for hist in HISTOGRAMS:
            if name in (f"{hist}_sum", f"{hist}_count"):
                totals[name] = totals.get(name, 0.0) + value
        if name == "florence_generated_tokens_total":
            totals[name] = totals.get(name, 0.0) + value
        if (name == "florence_requests_total" and labels.get("method") == "Caption"
                and labels.get("code") == "INVALID_ARGUMENT"):
            totals["caption_invalid_argument"] = totals.get("caption_invalid_argument", 0.0) + value
    return totals


def metric_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Per-phase means of the histograms (Δsum / Δcount) and their counts."""
    out: dict[str, Any] = {}
    for hist, short in HISTOGRAMS.items():
        n = after.get(f"{hist}_count", 0.0) - before.get(f"{hist}_count", 0.0)
        s = after.get(f"{hist}_sum", 0.0) - before.get(f"{hist}_sum", 0.0)
        out[f"{short}_count"] = int(n)
        out[f"{short}_mean"] = s / n if n else None
    for key in ("florence_generated_tokens_total", "caption_invalid_argument"):
        out[key] = after.get(key, 0.0) - before.get(key, 0.0)
    return out


# ---- Checks and report ----------------------------------------------------------------------------------------

def check_outcomes(phase: str, requests: Sequence[BenchRequest], outcomes: Sequence[Outcome]) -> list[str]:
    problems = []
    for r, o in zip(requests, outcomes):
        if o.code != "OK":
            problems.append(f"{phase}: request {r.index} ({r.task}, {r.image_name}) failed: {o.code} {o.details}")
        elif o.generated_tokens != r.new_tokens:
            problems.append(f"{phase}: request {r.index} ({r.task}) generated {o.generated_tokens} tokens, "
                            f"asked for exactly {r.new_tokens}")
    if len(outcomes) != len(requests):
        problems.append(f"{phase}: {len(outcomes)} outcomes for {len(requests)} requests")
    return problems


def compare_tokens(requests: Sequence[BenchRequest], seq: Sequence[Outcome],
                   conc: Sequence[Outcome]) -> list[str]:
    mismatches = []
    for r, a, b in zip(requests, seq, conc):
        if a.code == "OK" and b.code == "OK" and a.token_ids != b.token_ids:
            first = next((k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y),
                         min(len(a.token_ids), len(b.token_ids)))
            mismatches.append(f"request {r.index} ({r.task}, {r.image_name}): concurrent token_ids differ from "
                              f"sequential at position {first} (lengths {len(a.token_ids)} vs {len(b.token_ids)})")
    return mismatches


def phase_summary(wall: float, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.code == "OK"]
    tokens = sum(o.generated_tokens for o in ok)
    lat = [o.latency_s for o in ok]
    by_task = {}
    for task, _ in TASKS:
        t = [o.latency_s for o in ok if o.task == task]
        by_task[task] = {"n": len(t), "median_latency_s": statistics.median(t) if t else None}
    return {
        "wall_s": wall, "requests": len(outcomes), "ok": len(ok), "requests_per_s": len(outcomes) / wall,
        "generated_tokens": tokens, "generated_tokens_per_s": tokens / wall,
        "latency_s": {"median": statistics.median(lat) if lat else None, "max": max(lat) if lat else None},
        "by_task": by_task,
        "mean_queue_ms": statistics.mean(o.queue_ms for o in ok) if ok else None,
        "mean_encoder_batch_size_seen": statistics.mean(o.encoder_batch_size for o in ok) if ok else None,
    }


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "logical_cpus": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "memory_gib": round(
                psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "grpcio": grpc.__version__}


def load_snapshot() -> dict[str, Any]:
    """Load averages and the processes other than this benchmark and its server using CPU right now."""
    mine = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= 10.0 and p.pid not in mine:
            busy.append({"pid": p.pid, "cpu_percent": pct,
                         "cmd": " ".join(p.info.get("cmdline") or [p.info.get("name") or ""])[:160]})
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "other_busy_processes": busy}


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def server_memory_mib(pid: int) -> dict[str, float]:
    """The server's peak and current resident memory (VmHWM / VmRSS of /proc/PID/status), MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields["peak" if key == "VmHWM" else "now"] = int(value.split()[0]) / 1024
    return fields


def markdown(result: dict[str, Any]) -> str:
    m, s, c, n = result["machine"], result["sequential"], result["concurrent"], result.get("null_work")
    ms, mc = result["metrics"]["sequential"], result["metrics"]["concurrent"]
    lines = [
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} cores), "
        f"{m['memory_gib']} GiB. Load average before / after: {result['load_before']['loadavg']} / "
        f"{result['load_after']['loadavg']}.",
        f"Command: `{result['command']}`",
        f"Server: `{' '.join(result['server_command'])}`",
        f"Request set: {result['requests']} requests ({result['requests'] // 3} per task: caption 24, OD 128, "
        f"OCR-with-region 256 new tokens, forced), beam={result['num_beams']}.",
        "",
        "| phase | wall s | req/s | generated tok/s | median / max latency s | mean encoder batch "
        "| mean decode rows (seqs) per step | decode steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p, mp in (("sequential", s, ms), (f"{result['clients']} concurrent clients", c, mc)):
        lines.append(
            f"| {name} | {fmt(p['wall_s'], 1)} | {fmt(p['requests_per_s'], 3)} | {fmt(p['generated_tokens_per_s'], 1)} "
            f"| {fmt(p['latency_s']['median'], 1)} / {fmt(p['latency_s']['max'], 1)} "
            f"| {fmt(mp['encoder_batch_mean'])} ({mp['encoder_batch_count']} batches) "
            f"| {fmt(mp['decode_rows_mean'], 1)} ({fmt(mp['decode_sequences_mean'], 1)}) | {mp['decode_rows_count']} |")
    lines += [
        "",
        f"| result | value |",
        f"|---|---|",
        f"| throughput ratio concurrent / sequential | **{fmt(result['ratio'], 2)}x** (target >= 2x) |",
        f"| concurrent token_ids == sequential token_ids | {'all ' + str(result['requests']) if not result['mismatches'] else 'MISMATCH: ' + str(len(result['mismatches']))} |",
        f"| all responses OK with the forced length | {'yes' if not result['problems'] else 'NO: ' + str(len(result['problems']))} |",
    ]
    if n is not None:
        lines += [
        f"| null-work RPC/s (Caption, no image -> INVALID_ARGUMENT; {n['client_processes']} procs x "
        f"{n['inflight_per_process']} in flight, {fmt(n['seconds'], 0)} s) | **{fmt(n['rpc_per_s'], 0)}** |",
        f"| null-work server CPU per RPC | {fmt(n['server_cpu_us_per_rpc'], 1)} us ({fmt(n['server_cores_busy'], 2)} cores busy; "
        f"client CPU {fmt(n['client_cpu_s'], 1)} s) |",
        f"| null-work codes | {n['codes']} (server counted {int(result['metrics']['null_work']['caption_invalid_argument'])}"
        f" INVALID_ARGUMENT Captions in and around the window) |",
        ]
    lines += [
        f"| server resident memory, peak / at the end | {fmt(result['server_memory_mib'].get('peak'), 0)} / "
        f"{fmt(result['server_memory_mib'].get('now'), 0)} MiB |",
        f"| mean encoder batch / decode rows over the whole run (incl. warm-up) | "
        f"{fmt(result['metrics']['whole_run']['encoder_batch_mean'])} / {fmt(result['metrics']['whole_run']['decode_rows_mean'], 1)} |",
    ]
    return "\n".join(lines)


# ---- Main -----------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "florence2-base-random")
    ap.add_argument("--server-bin", type=Path, default=REPO / "build" / "server" / "florence2-server")
    ap.add_argument("--images", type=Path, default=REPO / "bench" / "results" / "images",
                    help="tools/test_images.py output; written there when missing")
    ap.add_argument("--requests", type=int, default=18, help="a multiple of 3 (one third per task)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--num-beams", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--null-seconds", type=float, default=5.0, help="0 leaves the null-work phase out")
    ap.add_argument("--null-procs", type=int, default=2)
    ap.add_argument("--null-inflight", type=int, default=32)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--server-flag", action="append", default=[], metavar="--FLAG=VALUE",
                    help="one more florence2-server flag (repeatable), e.g. --server-flag=--cpu_prepack=false")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "server_throughput.json")
    args = ap.parse_args()
    if args.requests <= 0 or args.requests % len(TASKS):
        ap.error("--requests must be a positive multiple of 3")
    for path, what in ((args.server_bin, "build it: cmake --build build -j2 --target florence2-server"),
                       (args.model / "manifest.json", "export it: .venv/bin/python tools/florence2_export.py "
                                                      f"--random base --seed 0 --out {args.model}")):
        if not path.exists():
            sys.exit(f"{path} missing; {what}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not all((args.images / f).is_file() for f in IMAGE_FILES):
        subprocess.run([sys.executable, str(REPO / "tools" / "test_images.py"), "--out", str(args.images)],
                       check=True)
    stubs = florence_client.load_stubs()
    requests = build_requests(args.images, args.requests)

    result: dict[str, Any] = {
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": machine(), "load_before": load_snapshot(), "requests": args.requests,
        "clients": args.clients, "num_beams": args.num_beams,
        "tasks": [{"task": t, "new_tokens": n} for t, n in TASKS],
        "request_set": [{"index": r.index, "task": r.task, "image": r.image_name} for r in requests],
    }
    print(f"load before: {result['load_before']}", file=sys.stderr, flush=True)
    log_path = args.out.with_suffix(".server.log")
    server = Server(args.server_bin, args.model, args.max_batch, args.out.parent, log_path, args.server_flag)
    result["server_command"] = server.command
    scrapes: dict[str, dict[str, float]] = {}
    try:
        result["server_start_s"] = server.start()
        print(f"server SERVING at {server.address} after {result['server_start_s']:.1f} s", file=sys.stderr,
              flush=True)
        scrapes["start"] = metric_totals(server.scrape())
        problems: list[str] = []
        if not args.no_warmup:
            # One short request per task: every task's prompt, parser and both model halves run once.
            warm = [BenchRequest(r.index, r.task, WARMUP_TOKENS, r.image_name, r.image)
                    for r in requests[:len(TASKS)]]
            t0 = time.perf_counter()
            _, outcomes = run_sequential(stubs, server.address, warm, args.num_beams)
            problems += check_outcomes("warm-up", warm, outcomes)
            result["warmup_s"] = time.perf_counter() - t0
            print(f"warm-up: {result['warmup_s']:.1f} s", file=sys.stderr, flush=True)
        scrapes["before_sequential"] = metric_totals(server.scrape())
        seq_wall, seq = run_sequential(stubs, server.address, requests, args.num_beams)
        print(f"sequential: {seq_wall:.1f} s", file=sys.stderr, flush=True)
        scrapes["after_sequential"] = metric_totals(server.scrape())
        conc_wall, conc = run_concurrent(stubs, server.address, requests, args.num_beams, args.clients)
        print(f"concurrent: {conc_wall:.1f} s", file=sys.stderr, flush=True)
        scrapes["after_concurrent"] = metric_totals(server.scrape())
        if args.null_seconds > 0:
            result["null_work"] = null_work(server.address, server.proc.pid, args.null_procs, args.null_inflight,
                                            args.null_seconds)
            print(f"null work: {result['null_work']['rpc_per_s']:.0f} RPC/s", file=sys.stderr, flush=True)
        final_text = server.scrape()
        scrapes["end"] = metric_totals(final_text)
        result["server_memory_mib"] = server_memory_mib(server.proc.pid)
    finally:
        result["server_exit_code"] = server.stop()
    result["load_after"] = load_snapshot()

    problems += check_outcomes("sequential", requests, seq) + check_outcomes("concurrent", requests, conc)
    mismatches = compare_tokens(requests, seq, conc)
    result["sequential"] = phase_summary(seq_wall, seq)
    result["concurrent"] = phase_summary(conc_wall, conc)
    result["ratio"] = result["concurrent"]["requests_per_s"] / result["sequential"]["requests_per_s"]
    result["metrics"] = {
        "sequential": metric_delta(scrapes["before_sequential"], scrapes["after_sequential"]),
        "concurrent": metric_delta(scrapes["after_sequential"], scrapes["after_concurrent"]),
        "null_work": metric_delta(scrapes["after_concurrent"], scrapes["end"]),
        "whole_run": metric_delta({}, scrapes["end"]),
    }
    result["outcomes"] = {"sequential": [asdict(o) | {"token_ids": len(o.token_ids)} for o in seq],
                          "concurrent": [asdict(o) | {"token_ids": len(o.token_ids)} for o in conc]}
    log = log_path.read_text(errors="replace").splitlines()
    result["server_log"] = {
        "path": str(log_path), "lines": len(log),
        "warnings_or_errors": [l for l in log if re.match(r"^\S+ (warning|error|critical) ", l)][:50],
    }
    result["problems"], result["mismatches"] = problems, mismatches
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(markdown(result))
    print(f"\nJSON: {args.out}; server log: {log_path}")
    for p in problems:
        print(f"PROBLEM: {p}")
    for m in mismatches:
        print(f"!!! TOKEN MISMATCH (batching changed an answer): {m}")
    if result["server_log"]["warnings_or_errors"]:
        print(f"server log has {len(result['server_log']['warnings_or_errors'])} warning/error lines, e.g.: "
              f"{result['server_log']['warnings_or_errors'][0]}")
    return 1 if problems or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
