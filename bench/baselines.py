#!/usr/bin/env python3
"""florence-serve against what a Florence-2 user runs today, side by side in one run, same weights, same images.

  .venv/bin/python bench/baselines.py --model models/florence2-base-random [--requests 18] [--clients 16]
      [--num-beams 3] [--mix decode-heavy|caption] [--batch-sizes 3,6] [--skip c] [--out bench/results/baselines.json]

A model exported with `--dtype bfloat16` or `int8` (opt-in reduced precision) runs ours in that precision against
the baselines in fp32 on the same, rounded (int8: dequantized), weights; token agreement with (a) is then the
parity figure, not a failure.

The workload is server_throughput.py's request set: one third each of Caption (24 new tokens), Detect <OD>
(128) and Ocr with regions (256), lengths forced (min = max new tokens: random weights never stop on their own),
over four photos and a scanned page. Phases, each alone on the machine, in this order:

- **machine limits**: fp32 matmul GFLOP/s (bench/matmul_gflops.py; also in the vision tower's dtype when it was
  exported in another, `--vision-dtype`), memory bandwidth (a 512 MiB copy: bytes
  read + written per second), the vision tower's FLOPs per image (torch's FlopCounterMode over the exported
  model) and its time at batch 1 on the engine's CPU path (after pack_for_cpu, as TorchScriptModel does; the
  plain-GEMM time alongside) (→ achieved GFLOP/s ÷ matmul peak), and one decode step at batch 1 against
  its bandwidth bound (decoder + lm_head weights + one request's cross-attention K/V ÷ bandwidth).
- **ours**: florence2-server on loopback, one warm-up request per task, then the set from `--clients`
  concurrent clients (server_throughput.run_concurrent); null work: an empty Caption (INVALID_ARGUMENT) from
  ghz, 128 calls in flight, for --null-seconds; then the same call from h2load (nghttp2's HTTP/2 load
  generator, one C thread, 128 in flight), whose per-call CPU is small enough that the server, not the
  client, sets the rate on 2 cores (ghz's ~90 µs per call caps both servers' rates well below what ours
  serves). Both servers' own counts of INVALID_ARGUMENT answers are checked against h2load's.
- **(a)** transformers `generate()` one request at a time, in this process (processor included in the time).
- **(b)** transformers batched `generate()`: requests of one task batched together (same prompt, same forced
  length) at each of `--batch-sizes`; the best one is the baseline.
- **(c)** bench/hf_grpc_server.py — a grpcio server wrapping transformers, generate() under a lock — driven by
  the same clients as ours, and its null work.

Checks: every call OK with exactly the requested tokens; (a)'s token ids against ours request by request
(transformers and florence-serve must agree on the same weights). Output: a Markdown table on stdout with the
ratios, and everything in --out (JSON). Exit status 1 on a failed call or a token mismatch.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "tools"))

import hf_florence  # noqa: E402
import server_throughput as st  # noqa: E402
from matmul_gflops import gflops  # noqa: E402

PROMPTS = {"caption": "<CAPTION>", "od": "<OD>", "ocr_with_region": "<OCR_WITH_REGION>"}
# Request mixes (--mix): (task, forced new tokens), taken in turn.
MIXES = {"decode-heavy": st.TASKS, "caption": (("caption", 24),)}


# ---- Machine limits -------------------------------------------------------------------------------------------

def median_ms(fn, repeats: int, warmup: int = 1, sync=None) -> float:
    """Median wall ms of fn(); `sync` (torch.cuda.synchronize on a GPU) is called before each clock read."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def gpu_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda: a @ b, 10, warmup=3, sync=torch.cuda.synchronize)
    return 2 * n ** 3 / (ms / 1000) / 1e12


def machine_limits(model_dir: Path, threads: int, device: str = "cpu") -> dict[str, Any]:
    """The machine's limits and the engine's distance to them. On a GPU: matmul peak in the model's dtype,
    device memory bandwidth, and the same vision-tower and decode-step probes on the device."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    model = torch.jit.load(str(model_dir / "model.ts"), map_location=dev).eval()
    dtype = model.final_logits_bias.dtype
    limits: dict[str, Any] = {"threads": threads, "device": device}
    if cuda:
        limits["matmul_tflops_fp32"] = gpu_matmul_tflops(dev, torch.float32)  # TF32 off: torch's default
        limits["matmul_tflops_model_dtype"] = peak_t = gpu_matmul_tflops(dev, dtype)
        peak = peak_t * 1000  # GFLOP/s
    else:
        peak = max(gflops(2048, threads, repeats=5) for _ in range(3))
    n = 512 * 1024 * 1024 // 4
    src, dst = torch.randn(n, device=dev), torch.empty(n, device=dev)
    copy_ms = min(median_ms(lambda: dst.copy_(src), 5, sync=sync) for _ in range(2))
    bandwidth = 2 * n * 4 / (copy_ms / 1000) / 1e9  # GB/s, read + write
    read_ms = min(median_ms(lambda: src.sum(), 5, sync=sync) for _ in range(2))
    read_bandwidth = n * 4 / (read_ms / 1000) / 1e9  # GB/s, read only (what a decode step mostly does)
    src = dst = None  # 1 GiB back before the model phases

    config = json.loads((model_dir / "config.json").read_text())
    size = int(config["preprocess"]["size"])  # square input, pixels per side
    # A tower exported in another dtype (--vision-dtype bfloat16: AMX on this class of CPU) is held to the
    # matmul peak of that dtype, not fp32's.
    vision_dtype = config.get("vision_dtype", "float32" if config["dtype"] == "int8" else config["dtype"])
    vision_peak = peak
    if not cuda and vision_dtype != "float32":
        limits["matmul_gflops_vision_dtype"] = vision_peak = max(
            gflops(2048, threads, repeats=5, dtype=getattr(torch, vision_dtype)) for _ in range(3))
    limits["vision_dtype"] = vision_dtype
    with torch.inference_mode():
        pixels = torch.randn(1, 3, size, size, device=dev)
        with FlopCounterMode(display=False) as counter:
            model.image_features(pixels)
        vision_flops = counter.get_total_flops()  # counted on the plain path: the packed ops are not counted
        vision_ms_plain = median_ms(lambda: model.image_features(pixels), 3, sync=sync)
        # The engine's CPU path from here on (TorchScriptModel calls pack_for_cpu after loading).
        engine_packed = bool(model.pack_for_cpu(32)) if not cuda and hasattr(model, "pack_for_cpu") else False
        vision_ms = median_ms(lambda: model.image_features(pixels), 3, sync=sync)

        # One decode step, one row, at position 100 over 577 image + 10 prompt encoder positions.
        probe = model.empty_self_cache(1, 1)
        layers, _, heads, _, head_dim = probe.shape
        enc_len, pos = 587, 100
        self_k, self_v = model.empty_self_cache(1, pos + 1), model.empty_self_cache(1, pos + 1)
        cross_k = torch.randn(layers, 1, heads, enc_len, head_dim, dtype=probe.dtype, device=dev)
        cross_v = torch.randn_like(cross_k)
        mask = torch.ones(1, enc_len, dtype=torch.long, device=dev)
        ids, positions, rows = (torch.tensor([v], device=dev) for v in (500, pos, 0))
        step_ms = median_ms(lambda: model.decode_step(ids, positions, self_k, self_v, cross_k, cross_v, mask, rows),
                            9, warmup=2, sync=sync)
    state = model.state_dict()
    decoder_bytes = sum(t.numel() * t.element_size() for k, t in state.items()
                        if ".decoder." in k and "embed_positions" not in k)
    lm_head = state.get("lm_head.weight_int8", state["model.language_model.shared.weight"])  # int8, or tied
    lm_head_bytes = lm_head.numel() * lm_head.element_size()  # read in full
    cache_bytes = 2 * (cross_k.numel() + self_k.numel()) * cross_k.element_size()
    step_bytes = decoder_bytes + lm_head_bytes + cache_bytes
    bound_ms = step_bytes / (max(bandwidth, read_bandwidth) * 1e9) * 1000
    return limits | {
        "matmul_gflops": peak, "copy_bandwidth_gbs": bandwidth, "read_bandwidth_gbs": read_bandwidth,
        "engine_cpu_prepack": engine_packed, "vision_ms_batch1_plain_gemm": vision_ms_plain,
        "vision_gflop_per_image": vision_flops / 1e9, "vision_ms_batch1": vision_ms,
        "vision_gflops": vision_flops / 1e9 / (vision_ms / 1000),
        "vision_fraction_of_peak": vision_flops / 1e9 / (vision_ms / 1000) / vision_peak,
        "decode_step_bytes": step_bytes, "decode_step_ms_batch1": step_ms,
        "decode_step_bound_ms": bound_ms, "decode_fraction_of_bound": bound_ms / step_ms,
    }


# ---- transformers in this process -----------------------------------------------------------------------------

class Hf:
    def __init__(self, model_dir: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.model, self.processor = hf_florence.load(model_dir, device, dtype)

    def generate(self, task: str, images: list[Image.Image], new_tokens: int, beams: int) -> list[list[int]]:
        inputs = self.processor(text=[PROMPTS[task]] * len(images), images=images, return_tensors="pt")
        out = hf_florence.generate(self.model, inputs, beams, new_tokens, new_tokens)
        return [row.tolist() for row in out]


def pil(request: st.BenchRequest) -> Image.Image:
    import io
    return Image.open(io.BytesIO(request.image)).convert("RGB")


def run_one_at_a_time(hf: Hf, requests: list[st.BenchRequest], beams: int) -> tuple[float, list[list[int]]]:
    hf.generate("caption", [pil(requests[0])], st.WARMUP_TOKENS, beams)  # warm-up
    start = time.perf_counter()
    tokens = [hf.generate(r.task, [pil(r)], r.new_tokens, beams)[0] for r in requests]
    return time.perf_counter() - start, tokens


def run_batched(hf: Hf, requests: list[st.BenchRequest], beams: int, batch: int) -> tuple[float, list[list[int]]]:
    """Requests of one task in batches of `batch`, in request order within the task."""
    tokens: list[list[int]] = [[] for _ in requests]
    start = time.perf_counter()
    for task, _ in st.TASKS:
        mine = [r for r in requests if r.task == task]
        for i in range(0, len(mine), batch):
            chunk = mine[i:i + batch]
            out = hf.generate(task, [pil(r) for r in chunk], chunk[0].new_tokens, beams)
            for r, t in zip(chunk, out):
                tokens[r.index] = t
    return time.perf_counter() - start, tokens


def token_agreement(a: list[int], b: list[int]) -> float:
    """Fraction of positions (over the longer sequence) where the two token sequences agree."""
    n = max(len(a), len(b))
    return sum(x == y for x, y in zip(a, b)) / n if n else 1.0


def strip_pad(tokens: list[int], pad: int = 1) -> list[int]:
    while tokens and tokens[-1] == pad:
        tokens = tokens[:-1]
    return tokens


# ---- gRPC phases ----------------------------------------------------------------------------------------------

def grpc_phase(stubs, address: str, requests, beams: int, clients: int) -> tuple[float, list[st.Outcome]]:
    warm = [st.BenchRequest(-1, task, st.WARMUP_TOKENS, requests[0].image_name, requests[0].image)
            for task, _ in st.TASKS]
    st.run_sequential(stubs, address, warm, beams)
    return st.run_concurrent(stubs, address, requests, beams, clients)


class HfGrpcServer:
    def __init__(self, model_dir: Path, workdir: Path, threads: int, device: str = "cpu",
                 dtype: str = "float32") -> None:
        self.port_file = workdir / "hf_server.port"
        self.port_file.unlink(missing_ok=True)
        self.log = (workdir / "hf_grpc_server.log").open("wb")
        self.stats_file = workdir / "hf_server.stats.json"
        self.stats_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "hf_grpc_server.py"), "--model",
                                      str(model_dir), "--port-file", str(self.port_file), "--threads", str(threads),
                                      "--stats-file", str(self.stats_file),
                                      "--device", device, "--dtype", dtype],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + st.START_TIMEOUT_S
        while not (self.port_file.is_file() and self.port_file.read_text().endswith("\n")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hf_grpc_server did not start; log: {self.log.name}")
            time.sleep(0.1)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"
        with grpc.insecure_channel(self.address) as ch:
            grpc.channel_ready_future(ch).result(timeout=60)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()

    def invalid_arguments(self) -> int:
        """Calls it answered INVALID_ARGUMENT for a missing image (written at exit: after stop())."""
        return json.loads(self.stats_file.read_text())["invalid_argument_no_image"]


def null_work_ghz(address: str, pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """An empty CaptionRequest (INVALID_ARGUMENT: no image) from ghz, 128 in flight over 4 connections for
    `seconds`: the front end's cost per call with a client that is not the bottleneck (one Go process)."""
    import psutil

    ghz = REPO / ".tools" / "bin" / "ghz"
    server = psutil.Process(pid)
    cpu0 = server.cpu_times()
    subprocess.run([str(ghz), "--insecure", "--proto", str(REPO / "proto" / "florence" / "v1" / "florence.proto"),
                    "--import-paths", str(REPO / "proto"), "--call", "florence.v1.Florence/Caption", "-d", "{}",
                    "-c", "128", "--connections", "4", "-z", f"{seconds}s", "-O", "json", "-o", str(out),
                    address], check=True, stdout=subprocess.DEVNULL)
    cpu1 = server.cpu_times()
    report = json.loads(out.read_text())
    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    codes = report.get("statusCodeDistribution", {})
    return {"seconds": seconds, "client": "ghz -c 128 --connections 4", "calls": report["count"], "codes": codes,
            "rpc_per_s": report["rps"],
            "server_cpu_us_per_rpc": 1e6 * server_cpu / report["count"] if report["count"] else None}


H2LOAD = "h2load"  # nghttp2's HTTP/2 load generator (Debian nghttp2-client), installed by tools/setup/apt.sh
H2LOAD_CLIENT = ["-t", "1", "-c", "4", "-m", "32"]  # one client thread, 4 connections x 32 streams = 128 in flight


def null_work_h2load(address: str, pid: int, calls: int, out: Path) -> dict[str, Any]:
    """The same empty CaptionRequest as null_work_ghz, as `calls` raw gRPC POSTs from h2load: one C thread,
    128 in flight, at a few µs of client CPU per call against ghz's ~90, so the server, not the client, is what
    it measures. h2load checks HTTP, not gRPC: it counts the HTTP/2 responses (a gRPC error is a trailers-only
    HTTP 200), and the caller checks the servers' own counts of INVALID_ARGUMENT answers against `done`."""
    import psutil
    import re

    body = out.with_suffix(".body")
    body.write_bytes(b"\x00\x00\x00\x00\x00")  # gRPC message frame: not compressed, 0 bytes (an empty message)
    server = psutil.Process(pid)
    cpu0 = server.cpu_times()
    start = time.perf_counter()
    text = subprocess.run([H2LOAD, "-n", str(calls), *H2LOAD_CLIENT, "-d", str(body),
                           "-H", "content-type: application/grpc", "-H", "te: trailers",
                           f"http://{address}/florence.v1.Florence/Caption"],
                          check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    cpu1 = server.cpu_times()
    out.write_text(text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", text)
    if not req or not rate:
        raise RuntimeError(f"unexpected h2load output (in {out}):\n{text}")
    done, succeeded = int(req.group(3)), int(req.group(4))
    server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {"client": "h2load " + " ".join(H2LOAD_CLIENT), "calls": calls, "done": done,
            "http_2xx": succeeded, "rpc_per_s": float(rate.group(1)), "wall_s": wall,
            "server_cpu_us_per_rpc": 1e6 * server_cpu / done if done else None}


# ---- Report ---------------------------------------------------------------------------------------------------

def markdown(r: dict[str, Any]) -> str:
    lim, rows = r.get("limits"), []
    ours = r["ours"]["requests_per_s"]
    mix = " / ".join("%s %d" % (t["task"], t["new_tokens"]) for t in r.get("tasks", []))
    gpu = f"; GPU {r['machine']['gpu']}: ours {r['dtype']}, transformers {r['hf_dtype']}" if "gpu" in r["machine"] else ""
    lines = [f"Machine: {r['machine']['cpu_model']}, {r['machine']['logical_cpus']} CPUs{gpu}; torch {torch.__version__}; "
             f"{r['requests']} requests ({mix} tokens), beam {r['num_beams']}.",
             "", "| side | wall s | req/s | ours ÷ side |", "|---|---|---|---|"]
    rows.append(("**ours** (florence2-server, %d clients)" % r["clients"], r["ours"]["wall_s"], ours))
    if "a" in r:
        rows.append(("(a) transformers generate, one at a time", r["a"]["wall_s"], r["a"]["requests_per_s"]))
    if "b" in r:
        for bs, v in sorted(r["b"]["by_batch"].items(), key=lambda kv: int(kv[0])):
            best = " (best)" if int(bs) == r["b"]["best_batch"] else ""
            rows.append((f"(b) transformers batched generate, batch {bs}{best}", v["wall_s"], v["requests_per_s"]))
    if "c" in r:
        rows.append(("(c) grpcio server wrapping transformers, %d clients" % r["clients"], r["c"]["wall_s"],
                     r["c"]["requests_per_s"]))
    for name, wall, rps in rows:
        lines.append(f"| {name} | {wall:.1f} | {rps:.4f} | {ours / rps:.2f}x |")
    if "c_null" in r:
        lines += ["", f"Null work (empty Caption → INVALID_ARGUMENT, ghz -c 128): ours {r['ours_null']['rpc_per_s']:.0f} RPC/s, "
                  f"(c) {r['c_null']['rpc_per_s']:.0f} RPC/s → {r['ours_null']['rpc_per_s'] / r['c_null']['rpc_per_s']:.1f}x; "
                  f"server CPU per call: ours {r['ours_null']['server_cpu_us_per_rpc']:.0f} µs, "
                  f"(c) {r['c_null']['server_cpu_us_per_rpc']:.0f} µs → "
                  f"{r['c_null']['server_cpu_us_per_rpc'] / r['ours_null']['server_cpu_us_per_rpc']:.1f}x less."]
    if "c_null_h2load" in r:
        o, c = r["ours_null_h2load"], r["c_null_h2load"]
        lines += [f"Null work, h2load ({o['client']}): ours {o['rpc_per_s']:.0f} RPC/s, (c) {c['rpc_per_s']:.0f} RPC/s → "
                  f"{o['rpc_per_s'] / c['rpc_per_s']:.1f}x; server CPU per call: ours {o['server_cpu_us_per_rpc']:.0f} µs, "
                  f"(c) {c['server_cpu_us_per_rpc']:.0f} µs."]
    if "a" in r:
        lines += ["", f"Token ids, (a) vs ours ({r.get('dtype', 'float32')}): {r['a']['token_matches']}/{r['requests']} "
                  f"requests identical, {100 * r['a']['token_agreement']:.1f}% of token positions agree."]
    if lim:
        gpu_peaks = (f" (GPU, {r['dtype']}; fp32 without TF32 {1000 * lim['matmul_tflops_fp32']:.0f})"
                     if "matmul_tflops_fp32" in lim else "")
        lines += ["", f"Limits: matmul {lim['matmul_gflops']:.0f} GFLOP/s{gpu_peaks}; copy bandwidth "
                  f"{lim['copy_bandwidth_gbs']:.1f} GB/s, read {lim['read_bandwidth_gbs']:.1f} GB/s; vision tower {lim['vision_gflop_per_image']:.0f} GFLOP/image in "
                  f"{lim['vision_ms_batch1']:.0f} ms = {lim['vision_gflops']:.0f} GFLOP/s = "
                  f"{100 * lim['vision_fraction_of_peak']:.0f}% of the matmul peak"
                  f"{' in ' + lim['vision_dtype'] + ' (' + format(lim['matmul_gflops_vision_dtype'], '.0f') + ' GFLOP/s)' if 'matmul_gflops_vision_dtype' in lim else ''} "
                  f"({'engine CPU path, prepacked; ' if lim.get('engine_cpu_prepack') else ''}"
                  f"plain GEMMs {lim.get('vision_ms_batch1_plain_gemm', float('nan')):.0f} ms); decode step (1 row) "
                  f"{lim['decode_step_ms_batch1']:.1f} ms vs bandwidth bound {lim['decode_step_bound_ms']:.1f} ms "
                  f"({lim['decode_step_bytes'] / 1e6:.0f} MB) = {100 * lim['decode_fraction_of_bound']:.0f}% of bound."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "florence2-base-random")
    ap.add_argument("--server-bin", type=Path, default=REPO / "build" / "server" / "florence2-server")
    ap.add_argument("--images", type=Path, default=REPO / "bench" / "results" / "images")
    ap.add_argument("--requests", type=int, default=18, help="a multiple of 3 (the mix's tasks in turn)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--num-beams", type=int, default=3)
    ap.add_argument("--mix", choices=sorted(MIXES), default="decode-heavy",
                    help="decode-heavy: caption 24 / OD 128 / OCR-with-region 256 tokens in turn; caption: caption 24 only")
    ap.add_argument("--max-batch", type=int, default=8, help="florence2-server --max_batch")
    ap.add_argument("--batch-sizes", default="3,6", help="baseline (b): batch sizes tried")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the Python sides")
    ap.add_argument("--null-seconds", type=float, default=5.0, help="0 leaves the null-work phases out")
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda: ours serves with --device cuda, transformers runs on the same GPU")
    ap.add_argument("--hf-dtype", choices=["float32", "float16", "bfloat16"], default=None,
                    help="transformers' dtype (default: float32 on cpu, float16 on cuda: what users run there)")
    ap.add_argument("--skip", default="", help="comma list of phases to leave out: limits,a,b,c")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "baselines.json")
    args = ap.parse_args()
    if args.requests % 3:
        ap.error("--requests must be a multiple of 3")
    skip = {s for s in args.skip.split(",") if s}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, what in ((args.server_bin, "build it: cmake --build build -j2 --target florence2-server"),
                       (args.model / "manifest.json", "export it: .venv/bin/python tools/florence2_export.py "
                                                      f"--random base --seed 0 --out {args.model}")):
        if not path.exists():
            sys.exit(f"{path} missing; {what}")
    if not all((args.images / f).is_file() for f in st.IMAGE_FILES):
        subprocess.run([sys.executable, str(REPO / "tools" / "test_images.py"), "--out", str(args.images)],
                       check=True)
    requests = st.build_requests(args.images, args.requests, MIXES[args.mix])
    stubs = st.florence_client.load_stubs()
    result: dict[str, Any] = {"machine": st.machine(), "requests": args.requests, "clients": args.clients,
                              "num_beams": args.num_beams, "model": str(args.model.name), "mix": args.mix,
                              "tasks": [{"task": t, "new_tokens": n} for t, n in MIXES[args.mix]],
                              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    problems: list[str] = []
    torch.set_num_threads(args.threads)
    dtype = json.loads((args.model / "config.json").read_text())["dtype"]
    hf_dtype = args.hf_dtype or ("float16" if args.device.startswith("cuda") else "float32")
    result.update(dtype=dtype, device=args.device, hf_dtype=hf_dtype)
    if args.device.startswith("cuda"):
        result["machine"]["gpu"] = torch.cuda.get_device_name(args.device)
    # fp32: transformers and ours must agree token for token. A reduced-precision side (an opt-in export, or
    # transformers in fp16 on a GPU) is compared on the same (rounded) weights, and its agreement is the
    # parity figure.
    exact = dtype == "float32" and hf_dtype == "float32"

    if "limits" not in skip:
        print("== machine limits", flush=True)
        result["limits"] = machine_limits(args.model, args.threads, args.device)

    def server_phase(name: str, server: Any) -> list[st.Outcome]:
        """The request set from the clients, then null work, against a started server; stops it."""
        try:
            wall, outcomes = grpc_phase(stubs, server.address, requests, args.num_beams, args.clients)
            problems.extend(st.check_outcomes(name, requests, outcomes))
            result[name] = st.phase_summary(wall, outcomes)
            if args.null_seconds > 0:
                ghz = result[f"{name}_null"] = null_work_ghz(server.address, server.proc.pid, args.null_seconds,
                                                             args.out.parent / f"null_{name}.json")
                before = server.invalid_arguments() if isinstance(server, st.Server) else None
                # h2load runs a fixed count (so the servers' counts can be checked exactly): ~2x ghz's duration
                # at ghz's rate, about --null-seconds at h2load's.
                calls = max(1000, int(2 * ghz["rpc_per_s"] * args.null_seconds))
                h2 = result[f"{name}_null_h2load"] = null_work_h2load(server.address, server.proc.pid, calls,
                                                                      args.out.parent / f"null_{name}_h2load.txt")
                if isinstance(server, st.Server):
                    h2["server_counted"] = int(server.invalid_arguments() - before)
        finally:
            server.stop()
        if args.null_seconds > 0:
            h2, ghz = result[f"{name}_null_h2load"], result[f"{name}_null"]
            if isinstance(server, HfGrpcServer):
                # Counted over both clients: ghz's INVALID_ARGUMENT answers, h2load's, and up to the 128 calls
                # ghz had in flight at its deadline, which the server may still have answered.
                ghz_ia = ghz["codes"].get("InvalidArgument", 0)
                h2["server_counted"] = server.invalid_arguments() - ghz_ia
                slack = 128
            else:
                slack = 0
            if not (h2["http_2xx"] == h2["calls"] and 0 <= h2["server_counted"] - h2["done"] <= slack):
                problems.append(f"{name} null work: h2load sent {h2['calls']}, {h2['http_2xx']} HTTP 2xx, but the "
                                f"server answered {h2['server_counted']} with INVALID_ARGUMENT")
        return outcomes

    print("== ours", flush=True)
    server = st.Server(args.server_bin, args.model, args.max_batch, args.out.parent,
                       args.out.parent / "baselines_server.log", extra_flags=["--device", args.device])
    server.start()
    ours = server_phase("ours", server)
    ours_tokens = {o.index: o.token_ids for o in ours}

    if not {"a", "b"} <= skip:
        hf = Hf(args.model, args.device, getattr(torch, hf_dtype))
        if "a" not in skip:
            print("== (a) transformers one at a time", flush=True)
            wall, tokens = run_one_at_a_time(hf, requests, args.num_beams)
            matches = sum(strip_pad(t) == ours_tokens.get(r.index) for r, t in zip(requests, tokens))
            agree = [token_agreement(strip_pad(t), ours_tokens.get(r.index, [])) for r, t in zip(requests, tokens)]
            for r, t in zip(requests, tokens):
                t, mine = strip_pad(t), ours_tokens.get(r.index, [])
                if len(t) - 1 != r.new_tokens:  # the decoder start token, then the generated ones
                    problems.append(f"(a) request {r.index} ({r.task}): transformers generated {len(t) - 1} tokens, "
                                    f"asked for exactly {r.new_tokens}")
                if t != mine and exact:
                    first = next((k for k, (x, y) in enumerate(zip(t, mine)) if x != y), min(len(t), len(mine)))
                    problems.append(f"(a) request {r.index} ({r.task}, {r.image_name}): transformers' tokens "
                                    f"differ from ours from position {first} of {len(t)}")
            result["a"] = {"wall_s": wall, "requests_per_s": len(requests) / wall, "token_matches": matches,
                           "token_agreement": statistics.mean(agree)}
        if "b" not in skip:
            by_batch = {}
            for bs in [int(b) for b in args.batch_sizes.split(",")]:
                print(f"== (b) transformers batched, batch {bs}", flush=True)
                wall, tokens = run_batched(hf, requests, args.num_beams, bs)
                same = sum(strip_pad(t) == ours_tokens.get(r.index) for r, t in zip(requests, tokens))
                by_batch[str(bs)] = {"wall_s": wall, "requests_per_s": len(requests) / wall, "token_matches": same}
            best = max(by_batch, key=lambda k: by_batch[k]["requests_per_s"])
            result["b"] = {"by_batch": by_batch, "best_batch": int(best),
                           "requests_per_s": by_batch[best]["requests_per_s"]}
        del hf

    if "c" not in skip:
        print("== (c) grpcio server wrapping transformers", flush=True)
        server_phase("c", HfGrpcServer(args.model, args.out.parent, args.threads, args.device, hf_dtype))

    ours_rps = result["ours"]["requests_per_s"]
    result["ratios"] = {k: ours_rps / result[k]["requests_per_s"] for k in ("a", "b", "c") if k in result}
    if "c_null" in result:
        result["ratios"]["null_work_vs_c"] = result["ours_null"]["rpc_per_s"] / result["c_null"]["rpc_per_s"]
        result["ratios"]["null_cpu_per_call_c_over_ours"] = (result["c_null"]["server_cpu_us_per_rpc"]
                                                             / result["ours_null"]["server_cpu_us_per_rpc"])
    if "c_null_h2load" in result:
        result["ratios"]["null_work_vs_c_h2load"] = (result["ours_null_h2load"]["rpc_per_s"]
                                                     / result["c_null_h2load"]["rpc_per_s"])
    result["problems"] = problems
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    for p in problems:
        print("!!!", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
