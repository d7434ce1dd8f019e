#!/usr/bin/env python3
"""Time to the first streamed detection against the full response time (issue 5: ≤ 30%).

  .venv/bin/python tools/loc_prone_model.py --model models/florence2-base-random --out-dir models
  .venv/bin/python bench/first_item.py --model models/base-0-locs [--task od] [--new-tokens 128] [--num-beams 3]

Random weights rarely emit `<loc_N>` tokens, so a plain random model streams no detections at all; the
location-prone copy (tools/loc_prone_model.py: the `<loc_N>` embedding rows scaled up) mixes words and location
groups the way a detector's output does. florence2-server on loopback; one warm-up request; then, one request at
a time, the streaming `Run` RPC over each image of tools/test_images.py with the length forced
(min = max new tokens): the time from sending to the first streamed item (detection / OCR region), and to the
final result. Prints a Markdown table and the median ratio; exit status 1 if a stream carried no item or ended
without a result.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import server_throughput as st  # noqa: E402

ITEM_EVENTS = ("detection", "ocr_region", "instance")


def stream_once(stub, request, timeout: float) -> tuple[float | None, float, int]:
    """(seconds to the first item or None, seconds to the result, items streamed)."""
    start = time.perf_counter()
    first, items = None, 0
    for event in stub.Run(request, timeout=timeout):
        kind = event.WhichOneof("event")
        if kind in ITEM_EVENTS:
            items += 1
            if first is None:
                first = time.perf_counter() - start
        elif kind == "result":
            return first, time.perf_counter() - start, items
    raise RuntimeError("the stream ended without a result event")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "base-0-locs")
    ap.add_argument("--server-bin", type=Path, default=REPO / "build" / "server" / "florence2-server")
    ap.add_argument("--images", type=Path, default=REPO / "bench" / "results" / "images")
    ap.add_argument("--task", default="od", choices=["od", "ocr_with_region", "dense_region_caption"])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--num-beams", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    if not (args.model / "model.ts").is_file():
        sys.exit(f"{args.model} missing; make it with: .venv/bin/python tools/loc_prone_model.py "
                 f"--model models/florence2-base-random --out-dir models")
    if not all((args.images / f).is_file() for f in st.IMAGE_FILES):
        import subprocess
        subprocess.run([sys.executable, str(REPO / "tools" / "test_images.py"), "--out", str(args.images)],
                       check=True)
    stubs = st.florence_client.load_stubs()
    server = st.Server(args.server_bin, args.model, 8, args.out_dir, args.out_dir / "first_item.server.log")
    server.start()
    rows, failures = [], []
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.FlorenceStub(channel)

            def request(image: bytes, tokens: int):
                return st.florence_client.build_task_request(
                    stubs, args.task, st.florence_client.Inputs(image=image, max_new_tokens=tokens,
                                                               min_new_tokens=tokens, num_beams=args.num_beams))

            first_image = (args.images / st.IMAGE_FILES[0]).read_bytes()
            stream_once(stub, request(first_image, st.WARMUP_TOKENS), st.RPC_TIMEOUT_S)
            for name in st.IMAGE_FILES:
                first, total, items = stream_once(stub, request((args.images / name).read_bytes(),
                                                                args.new_tokens), st.RPC_TIMEOUT_S)
                rows.append((name, first, total, items))
                if first is None:
                    failures.append(f"{name}: no item streamed")
    finally:
        server.stop()
    print(f"Task {args.task}, {args.new_tokens} new tokens (forced), beam {args.num_beams}, model {args.model.name}, "
          f"one request at a time.\n")
    print("| image | first item s | result s | first ÷ result | items |\n|---|---|---|---|---|")
    for name, first, total, items in rows:
        ratio = f"{100 * first / total:.0f}%" if first is not None else "—"
        print(f"| {name} | {first if first is not None else float('nan'):.2f} | {total:.2f} | {ratio} | {items} |")
    ratios = [first / total for _, first, total, _ in rows if first is not None]
    if ratios:
        print(f"\nMedian first-item time: {100 * statistics.median(ratios):.0f}% of the full response "
              f"(max {100 * max(ratios):.0f}%; target ≤ 30%).")
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
