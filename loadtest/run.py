#!/usr/bin/env python3
"""Load test of florence2-server with ghz: start the server on loopback, warm it up, run the scenarios of
loadtest/scenarios/, stop it, write results and a report.

  loadtest/run [--model models/florence2-base-random] [--quick] [--out loadtest/results] [--only caption,...]

Scenarios (loadtest/scenarios/*.json): a typed RPC (or Run, server-streaming) with one real image and a forced
output length (min = max new tokens, so random weights do the same work every call), and a schedule:
  concurrency  closed loop: `requests_per_level` calls at each concurrency level (throughput vs concurrency);
  rate         open loop: constant offered load at each level (requests/s) for `seconds_per_level`, with at
               most `concurrency` calls in flight (latency percentiles vs offered load);
  mix          the named scenarios' requests at once, one ghz process each, concurrency split evenly;
  open         open loop at fractions of the capacity measured earlier in the same run (`capacity_from`: the
               best req/s of that scenario's concurrency levels), for `seconds_per_level` each: p50/p99 vs
               load, and the targets at 50% load (p99 <= 2 x p50), below saturation (every call OK) and above it
               (only RESOURCE_EXHAUSTED). ghz offers whole requests/s only, and one base-model caption takes
               seconds on 2 cores, so these levels (fractions of a request per second) are driven by the
               runner's own grpc.aio client: constant inter-arrival times like ghz's `--rps`, the same binary
               request file, a ghz-shaped result (`<out>/open/<level>.result.json`; latencies of OK calls).
`quick` overrides levels, counts and lengths for the smoke run (`--quick`, under 3 minutes on the tiny model).

Each level is one ghz run from a generated ghz config file (`<out>/ghz/<scenario>-<level>.json`: the call, the
loopback host, the binary request file, the schedule; `ghz --config FILE` repeats it by hand). Request messages
are serialized protobuf files (`<out>/requests/*.bin`, ghz's binary data file) built from the proto with the
Python stubs: large images never pass through a command line or a JSON template.

ghz exits 0 even when calls fail, so every run's statusCodeDistribution is checked: any code other than OK
fails the load test loudly (below saturation nothing else is expected; RESOURCE_EXHAUSTED is allowed only with
--allow-exhausted, for runs meant to cross saturation). /metrics is scraped around every level: encoder batch
sizes and decode rows per step come from the server's own histograms.

Writes <out>/results.json (every level's ghz summary and metric deltas), <out>/report.md (tables) and PNG
plots: throughput vs concurrency, latency percentiles vs offered load, batch-size distributions. Traffic goes
to 127.0.0.1 only; every run is bounded in requests (concurrency levels) or time (rate levels, plus a ghz
timeout per call).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "clients" / "python"))
import florence_client  # noqa: E402
import server_throughput as bench  # noqa: E402  (Server, parse_metrics)

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_GHZ = REPO / ".tools" / "bin" / "ghz"
# Server histograms summarised per level: (metric, short name).
HISTOGRAMS = (("florence_encoder_batch_size", "encoder_batch"), ("florence_decode_step_rows", "decode_rows"))


@dataclass
class Level:
    scenario: str
    call: str
    kind: str           # concurrency | rate
    level: float        # concurrency, or offered requests/s
    requests: int       # concurrency runs: total calls
    seconds: float      # rate runs: duration
    concurrency: int
    binary: Path
    ghz: dict[str, Any]
    capacity_from: str = ""   # open levels: the scenario whose best concurrency rps is 100% load
    fraction: float = 0.0     # open levels: the fraction of that capacity offered
    timeout_s: float = 0.0    # open levels: per-call deadline


# ---- Inputs -----------------------------------------------------------------------------------------------------

def ensure_images(images_dir: Path) -> None:
    needed = ("astronaut.jpg", "coffee.png", "chelsea.webp", "rocket.bmp", "page.tiff")
    if all((images_dir / n).is_file() for n in needed):
        return
    subprocess.run([sys.executable, str(REPO / "tools" / "test_images.py"), "--out", str(images_dir)], check=True)


def write_request(stubs: florence_client.Stubs, spec: dict[str, Any], images_dir: Path, new_tokens: int,
                  beams: int, out: Path) -> Path:
    """Serializes the scenario's request message (typed request, or TaskRequest for Run) to a binary file."""
    inputs = florence_client.Inputs(image=(images_dir / spec["image"]).read_bytes(), max_new_tokens=new_tokens,
                                    min_new_tokens=new_tokens, num_beams=beams)
    if spec.get("stream"):
        message = florence_client.build_task_request(stubs, spec["task"], inputs)
    else:
        _, message = florence_client.build_typed_call(stubs, spec["task"], inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(message.SerializeToString())
    return out


def load_scenarios(names: list[str] | None) -> dict[str, dict[str, Any]]:
    scenarios = {p.stem: json.loads(p.read_text()) for p in sorted(SCENARIOS_DIR.glob("*.json"))}
    if names:
        unknown = [n for n in names if n not in scenarios]
        if unknown:
            raise SystemExit(f"unknown scenario(s) {unknown}; known: {sorted(scenarios)}")
        scenarios = {n: scenarios[n] for n in names}
    return scenarios


def plan(scenarios: dict[str, dict[str, Any]], all_scenarios: dict[str, dict[str, Any]], quick: bool,
         stubs: florence_client.Stubs, images_dir: Path, beams: int, out: Path) -> list[list[Level]]:
    """Every ghz run to make, grouped: the runs of one group go at once (a mix), groups one after another."""
    groups: list[list[Level]] = []
    for name, sc in scenarios.items():
        sched = dict(sc["schedule"])
        if quick:
            sched.update({k: v for k, v in sc.get("quick", {}).items() if k != "new_tokens"})
        members = sc.get("mix", [name])
        if sched["kind"] == "rate" and any(lv < 1 or lv != int(lv) for lv in sched["levels"]):
            raise SystemExit(f"{name}: ghz offers whole requests/s; rate levels {sched['levels']}")
        if sched["kind"] == "open":
            if sched["capacity_from"] not in scenarios:
                raise SystemExit(f"{name}: its capacity comes from scenario {sched['capacity_from']!r}, "
                                 f"which must run first in the same run (--only {sched['capacity_from']},{name})")
            tokens = (sc.get("quick", {}).get("new_tokens") if quick else None) or sc["request"]["new_tokens"]
            binary = write_request(stubs, sc["request"], images_dir, tokens, beams,
                                   out / "requests" / f"{name}-{tokens}.bin")
            for fraction in sched["levels_of_capacity"]:
                groups.append([Level(name, sc["call"], "open", 0.0, 0, float(sched["seconds_per_level"]), 0,
                                     binary, dict(sc.get("ghz", {})), capacity_from=sched["capacity_from"],
                                     fraction=float(fraction), timeout_s=float(sched.get("timeout_s", 300)))])
            continue
        for level in sched["levels"]:
            group = []
            for member in members:
                msc = all_scenarios[member]
                tokens = sc.get("quick", {}).get("new_tokens") if quick else None
                tokens = tokens or (msc.get("quick", {}).get("new_tokens") if quick else None) \
                    or msc["request"]["new_tokens"]
                binary = write_request(stubs, msc["request"], images_dir, tokens, beams,
                                       out / "requests" / f"{member}-{tokens}.bin")
                share = max(1, round(level / len(members))) if sched["kind"] == "concurrency" else 0
                if sched["kind"] == "concurrency":
                    group.append(Level(name if len(members) == 1 else f"{name}:{member}", msc["call"],
                                       "concurrency", level,
                                       max(share, round(sched["requests_per_level"] / len(members))), 0.0,
                                       share, binary, dict(msc.get("ghz", {}))))
                else:
                    group.append(Level(name, msc["call"], "rate", level, 0, float(sched["seconds_per_level"]),
                                       int(sched["concurrency"]), binary, dict(msc.get("ghz", {}))))
            groups.append(group)
    return groups


# ---- Running ----------------------------------------------------------------------------------------------------

def ghz_config(lv: Level, host: str, output: Path) -> dict[str, Any]:
    cfg = {"name": f"{lv.scenario} @ {lv.level:g}", "call": lv.call, "host": host, "binary-file": str(lv.binary),
           "format": "json", "output": str(output), **lv.ghz}
    if lv.kind == "concurrency":
        cfg.update({"concurrency": lv.concurrency, "total": lv.requests})
    else:  # ghz's rate is a whole number of requests/s (plan() checks)
        cfg.update({"concurrency": lv.concurrency, "rps": int(lv.level), "duration": f"{lv.seconds:g}s",
                    "duration-stop": "wait"})
    cfg["connections"] = min(int(cfg.get("connections", 1)), int(cfg["concurrency"]))
    return cfg


GHZ_CODE_NAMES = {"CANCELLED": "Canceled"}  # ghz prints Go's names; Go spells this one differently


def open_loop(lv: Level, host: str, rate: float) -> dict[str, Any]:
    """`rate` calls/s for lv.seconds with constant inter-arrival times, each with lv.timeout_s, over
    ghz's connection count; waits for every call. Returns a ghz-shaped summary (latencies of OK calls)."""
    import asyncio

    import grpc

    service, method = lv.call.rsplit(".", 1)
    payload = lv.binary.read_bytes()
    n = max(1, round(rate * lv.seconds))

    async def drive() -> tuple[list[tuple[str, float]], float]:
        channels = [grpc.aio.insecure_channel(host, options=[("grpc.use_local_subchannel_pool", 1),
                                                             ("grpc.max_send_message_length", 64 << 20)])
                    for _ in range(max(1, int(lv.ghz.get("connections", 1))))]
        stubs = [ch.unary_unary(f"/{service}/{method}") for ch in channels]  # bytes in, bytes out
        results: list[tuple[str, float]] = []

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                await stubs[i % len(stubs)](payload, timeout=lv.timeout_s)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = GHZ_CODE_NAMES.get(e.code().name) or "".join(w.capitalize() for w in e.code().name.split("_"))
            results.append((code, time.perf_counter() - t0))

        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        total = time.perf_counter() - start
        for ch in channels:
            await ch.close()
        return results, total

    results, total = asyncio.run(drive())
    ok = sorted(t for code, t in results if code == "OK")
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1

    def pct(p: float) -> float:
        return ok[min(len(ok) - 1, max(0, int(round(p / 100 * len(ok) + 0.5)) - 1))] if ok else 0.0

    return {"count": len(results), "total": int(total * 1e9), "rps": len(results) / total,
            "average": int(sum(ok) / len(ok) * 1e9) if ok else 0,
            "latencyDistribution": [{"percentage": p, "latency": int(pct(p) * 1e9)} for p in (50, 90, 99)],
            "statusCodeDistribution": codes, "errorDistribution": {},
            "offered_rps": rate, "calls_offered": n, "client": "loadtest/run.py open loop (grpc.aio)"}


def run_open(lv: Level, host: str, out: Path, capacity: float) -> dict[str, Any]:
    rate = lv.fraction * capacity
    tag = f"{lv.scenario}-{lv.fraction:g}"
    cfg_path, result_path = out / "open" / f"{tag}.json", out / "open" / f"{tag}.result.json"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {"call": lv.call, "host": host, "binary-file": str(lv.binary), "rate_rps": rate, "seconds": lv.seconds,
           "timeout_s": lv.timeout_s, "capacity_from": lv.capacity_from, "capacity_rps": capacity,
           "fraction_of_capacity": lv.fraction, "connections": int(lv.ghz.get("connections", 1))}
    cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
    lv.level = rate
    result = open_loop(lv, host, rate)
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    return {"level": lv, "config": str(cfg_path.relative_to(out)), "ghz": result}


def run_group(ghz: Path, group: list[Level], host: str, out: Path) -> list[dict[str, Any]]:
    procs = []
    for lv in group:
        tag = f"{lv.scenario.replace(':', '-')}-{lv.level:g}"
        cfg_path, result_path = out / "ghz" / f"{tag}.json", out / "ghz" / f"{tag}.result.json"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(ghz_config(lv, host, result_path), indent=1) + "\n")
        procs.append((lv, cfg_path, result_path,
                      subprocess.Popen([str(ghz), "--config", str(cfg_path)], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)))
    results = []
    for lv, cfg_path, result_path, proc in procs:
        text, _ = proc.communicate()
        if proc.returncode != 0 or not result_path.is_file():
            raise RuntimeError(f"ghz failed ({proc.returncode}) for {cfg_path}:\n{text.decode(errors='replace')}")
        results.append({"level": lv, "config": str(cfg_path.relative_to(out)),
                        "ghz": json.loads(result_path.read_text())})
    return results


def histogram_counts(text: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts (le -> count) of the summarised histograms."""
    out: dict[str, dict[float, float]] = {short: {} for _, short in HISTOGRAMS}
    for name, labels, value in bench.parse_metrics(text):
        for metric, short in HISTOGRAMS:
            if name == f"{metric}_bucket":
                le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
                out[short][le] = out[short].get(le, 0.0) + value
    return out


def bucket_delta(before: dict[float, float], after: dict[float, float]) -> list[tuple[float, float]]:
    """Per-bucket (non-cumulative) counts between two scrapes."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0.0) for le in les]
    return [(le, c - (cum[i - 1] if i else 0.0)) for i, (le, c) in enumerate(zip(les, cum))]


def summarize(entry: dict[str, Any]) -> dict[str, Any]:
    lv: Level = entry["level"]
    g = entry["ghz"]
    lat = {d["percentage"]: d["latency"] / 1e9 for d in g.get("latencyDistribution") or []}
    return {"scenario": lv.scenario, "call": lv.call, "kind": lv.kind, "level": lv.level,
            "concurrency": lv.concurrency, "count": g["count"], "rps": g["rps"], "total_s": g["total"] / 1e9,
            "average_s": g["average"] / 1e9, "p50_s": lat.get(50), "p90_s": lat.get(90), "p99_s": lat.get(99),
            "status": g.get("statusCodeDistribution") or {}, "errors": g.get("errorDistribution") or {},
            "config": entry["config"], "fraction_of_capacity": lv.fraction if lv.kind == "open" else None}


def check(summary: dict[str, Any], allow_exhausted: bool) -> list[str]:
    problems = []
    above = summary["kind"] == "open" and summary["fraction_of_capacity"] > 1.0  # past saturation by design
    allowed = {"OK"} | ({"ResourceExhausted"} if allow_exhausted or above else set())
    bad = {code: n for code, n in summary["status"].items() if code not in allowed}
    if bad or summary["errors"]:
        problems.append(f"{summary['scenario']} @ {summary['level']:g}: unexpected statuses {bad} "
                        f"errors {summary['errors']}")
    if summary["count"] == 0 or summary["status"].get("OK", 0) == 0:
        problems.append(f"{summary['scenario']} @ {summary['level']:g}: no successful call")
    return problems


# ---- Report -----------------------------------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 5's load targets, from the open-loop levels: p99 <= 2 x p50 at 50% of the capacity, every call OK
    below saturation, only RESOURCE_EXHAUSTED (besides OK) above it."""
    open_rows = [r for r in rows if r["kind"] == "open"]
    if not open_rows:
        return []
    lines = ["", "| target (open-loop levels) | measured | met |", "|---|---|---|"]
    half = [r for r in open_rows if abs(r["fraction_of_capacity"] - 0.5) < 1e-9]
    for r in half:
        ratio = r["p99_s"] / r["p50_s"] if r["p50_s"] else float("inf")
        lines.append(f"| {r['scenario']}: p99 ≤ 2 × p50 at 50% of capacity ({r['level']:.3g} req/s, {r['count']} calls) "
                     f"| p50 {fmt(r['p50_s'])} s, p99 {fmt(r['p99_s'])} s = {ratio:.2f}x | {'yes' if ratio <= 2 else 'no'} |")
    def names(rs: list[dict[str, Any]]) -> str:
        return ", ".join("%gx" % r["fraction_of_capacity"] for r in rs)

    below = [r for r in open_rows if r["fraction_of_capacity"] <= 1.0]
    bad = {"%gx" % r["fraction_of_capacity"]: r["status"] for r in below if set(r["status"]) - {"OK"}}
    lines.append(f"| zero failed calls below saturation ({names(below)}) "
                 f"| {sum(r['count'] for r in below)} calls, failures {bad or 'none'} | {'no' if bad else 'yes'} |")
    above = [r for r in open_rows if r["fraction_of_capacity"] > 1.0]
    if above:
        codes: dict[str, int] = {}
        for r in above:
            for c, n in r["status"].items():
                codes[c] = codes.get(c, 0) + n
        ok = set(codes) <= {"OK", "ResourceExhausted"}
        lines.append(f"| above saturation only RESOURCE_EXHAUSTED ({names(above)}) | {codes} | {'yes' if ok else 'no'} |")
    return lines


def write_report(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]],
                 batches: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Writes report.md and the plots; returns the names of the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# florence2-server load test", "",
             f"Command: `{meta['command']}`  ", f"Model: `{meta['model']}`; server: `{' '.join(meta['server'])}`  ",
             f"Machine: {meta['machine']}; ghz {meta['ghz_version']}; {meta['when']}", "",
             "| scenario | schedule | level | calls | OK | req/s | p50 s | p90 s | p99 s | statuses |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "in flight" if r["kind"] == "concurrency" else "req/s offered"
        if r["kind"] == "open":
            unit += f" ({r['fraction_of_capacity']:g} x capacity)"
        lines.append(f"| {r['scenario']} | {r['kind']} | {r['level']:.3g} {unit} | {r['count']} | "
                     f"{r['status'].get('OK', 0)} | {r['rps']:.3f} | {fmt(r['p50_s'])} | {fmt(r['p90_s'])} | "
                     f"{fmt(r['p99_s'])} | {r['status']} |")
    lines += targets(rows)
    lines += ["", "Server histograms over the whole run (from /metrics):", ""]
    for short, buckets in batches.items():
        shown = ", ".join(f"≤{le:g}: {int(n)}" for le, n in buckets if n)
        lines.append(f"- {short}: {shown or 'none'}")

    plots = []
    conc = [r for r in rows if r["kind"] == "concurrency"]
    if conc:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in dict.fromkeys(r["scenario"] for r in conc):
            pts = sorted((r["level"], r["rps"]) for r in conc if r["scenario"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("concurrent calls"), ax.set_ylabel("completed requests/s"), ax.set_xscale("log", base=2)
        ax.set_title("Throughput vs concurrency"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
        fig.tight_layout(), fig.savefig(out / "throughput_vs_concurrency.png", dpi=110), plt.close(fig)
        plots.append("throughput_vs_concurrency.png")
    if rows:
        # Open loop (rate levels): x = the offered rate; closed loop (concurrency levels): x = the throughput
        # the level sustained, which is the load it offered.
        fig, ax = plt.subplots(figsize=(8, 4))
        for k, name in enumerate(dict.fromkeys(r["scenario"] for r in rows)):
            pts = sorted((r["level"] if r["kind"] != "concurrency" else r["rps"], r["p50_s"], r["p90_s"], r["p99_s"])
                         for r in rows if r["scenario"] == name)
            for i, style in ((1, "-"), (2, "--"), (3, ":")):
                ax.plot([p[0] for p in pts], [p[i] or 0 for p in pts], marker="o", linestyle=style,
                        color=f"C{k}", label=name if i == 1 else None)
        ax.set_xlabel("offered load (requests/s)"), ax.set_ylabel("latency (s)")
        ax.set_title("Latency vs offered load (solid p50, dashed p90, dotted p99)", fontsize=10)
        ax.grid(alpha=0.3), ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.savefig(out / "latency_vs_load.png", dpi=110, bbox_inches="tight"), plt.close(fig)
        plots.append("latency_vs_load.png")
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.5))
    for ax, (short, buckets) in zip(axes if len(batches) > 1 else [axes], batches.items()):
        finite = [(le, n) for le, n in buckets if le != float("inf")]
        ax.bar([str(int(le)) for le, _ in finite], [n for _, n in finite])
        ax.set_title(f"{short} (upper bucket bound)"), ax.set_ylabel("count")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
    fig.tight_layout(), fig.savefig(out / "batch_sizes.png", dpi=110), plt.close(fig)
    plots.append("batch_sizes.png")
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return ["report.md"] + plots


# ---- Main -------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "florence2-base-random")
    ap.add_argument("--server-bin", type=Path, default=REPO / "build" / "server" / "florence2-server")
    ap.add_argument("--ghz", type=Path, default=Path(os.environ.get("GHZ", DEFAULT_GHZ)))
    ap.add_argument("--images", type=Path, default=REPO / "bench" / "results" / "images")
    ap.add_argument("--out", type=Path, default=REPO / "loadtest" / "results")
    ap.add_argument("--quick", action="store_true", help="smoke run: short levels, 8 new tokens")
    ap.add_argument("--only", help="comma-separated scenario names (default: all)")
    ap.add_argument("--num-beams", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-queue", type=int, default=None,
                    help="florence2-server --max_queue (default 16, --quick 64): no concurrency level exceeds "
                         "it, so only the open-loop levels past saturation fill it (RESOURCE_EXHAUSTED); the "
                         "smoke run keeps clear of it even when a busy CI machine stalls the server")
    ap.add_argument("--allow-exhausted", action="store_true",
                    help="accept RESOURCE_EXHAUSTED (runs meant to cross saturation)")
    args = ap.parse_args(argv)

    ghz = args.ghz if args.ghz.is_file() else Path(shutil.which("ghz") or args.ghz)
    if not ghz.is_file():
        print(f"loadtest: ghz not found at {args.ghz} (tools/setup/go_tools.sh installs it)", file=sys.stderr)
        return 2
    for needed in (args.server_bin, args.model / "config.json"):
        if not needed.is_file():
            print(f"loadtest: missing {needed}", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_images(args.images)
    stubs = florence_client.load_stubs()
    all_scenarios = load_scenarios(None)
    scenarios = load_scenarios(args.only.split(",") if args.only else None)
    groups = plan(scenarios, all_scenarios, args.quick, stubs, args.images, args.num_beams, args.out)

    server = bench.Server(args.server_bin, args.model, args.max_batch, args.out, args.out / "server.log",
                          extra_flags=[f"--max_queue={args.max_queue or (64 if args.quick else 16)}"])
    started = time.perf_counter()
    entries, problems = [], []
    try:
        server.start()
        host = server.address
        # Warm-up: one call of every scenario's request, not measured.
        warm = [Level(g.scenario, g.call, "concurrency", 1, 1, 0.0, 1, g.binary, g.ghz)
                for g in {lv.binary: lv for grp in groups for lv in grp}.values()]
        run_group(ghz, warm, host, args.out / "warmup")
        first = histogram_counts(server.scrape())
        for group in groups:
            before = histogram_counts(server.scrape())
            if group[0].kind == "open":
                source = group[0].capacity_from
                capacity = max((e["ghz"]["rps"] for e in entries
                                if e["level"].scenario == source and e["level"].kind == "concurrency"), default=0.0)
                if capacity <= 0:
                    raise RuntimeError(f"{group[0].scenario}: no capacity measured for {source}")
                results = [run_open(group[0], host, args.out, capacity)]
            else:
                results = run_group(ghz, group, host, args.out)
            after = histogram_counts(server.scrape())
            for entry in results:
                entry["batches"] = {k: bucket_delta(before[k], after[k]) for k in before}
                entries.append(entry)
        last = histogram_counts(server.scrape())
    finally:
        code = server.stop()
    rows = [summarize(e) for e in entries]
    for r in rows:
        problems += check(r, args.allow_exhausted)
    if code != 0:
        problems.append(f"florence2-server exited with {code}")
    batches = {k: bucket_delta(first[k], last[k]) for k in first}
    stamp = ghz.parent / ".ghz.version"  # the pinned module go_tools.sh installed ("dev" from --version)
    version = stamp.read_text().strip() if stamp.is_file() else subprocess.run(
        [str(ghz), "--version"], capture_output=True, text=True).stdout.strip()
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "model": str(args.model), "server": server.command, "ghz_version": version,
            "machine": f"{os.cpu_count()} logical CPUs", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.perf_counter() - started, "quick": args.quick}
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "levels": rows, "batches": batches, "problems": problems}, indent=1) + "\n")
    written = write_report(args.out, meta, rows, batches)
    for f in written:
        if not (args.out / f).is_file() or (args.out / f).stat().st_size == 0:
            problems.append(f"report file {f} was not written")
    print((args.out / "report.md").read_text())
    print(f"loadtest: {len(rows)} ghz runs in {meta['wall_s']:.0f} s; results in {args.out}")
    if problems:
        print("loadtest: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
