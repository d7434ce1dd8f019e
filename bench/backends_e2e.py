#!/usr/bin/env python3
"""florence2-run end to end with --backend torchscript and --backend aoti, side by side: same images, tasks and
beams; the token ids must match, and the per-image times (florence2-run's timings_ms, model load excluded) are
reported per backend.

  # the check ctest runs (aoti.florence2_run_parity): tiny model, forced length, exit 1 on any token difference
  bench/backends_e2e.py --model build/models/tiny --run-bin build/engine/florence2-run \\
      --cases caption:1,od:3 --tokens 32 --check
  # the measurement (base model; compile its packages first: tools/florence2_export_aoti.py --model-dir DIR)
  bench/backends_e2e.py --model models/florence2-base-random --run-bin build/engine/florence2-run \\
      --cases caption:1,od:3 --tokens 64 --repeat 3 --threads 2 --json /tmp/backends.json

One florence2-run process per (backend, case), all images in it; --repeat R passes every image R times and
keeps each image's fastest run (the first pass includes TorchScript's profiling runs and first-call set-up).
Images: tools/test_images.py's five real photographs / scans, written to a temporary directory unless --images.
florence2-run serves one request at a time (GenerateOne), so this measures unbatched latency; the batched path
(the server's KV pool) is what bench/aoti_vs_torchscript.py's per-method row counts and a server benchmark show.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("torchscript", "aoti")


def run(bin_: Path, model: Path, backend: str, task: str, beams: int, tokens: int, threads: int,
        images: list[Path]) -> list[dict]:
    cmd = [str(bin_), "--model", str(model), "--task", task, "--num-beams", str(beams), "--backend", backend,
           "--max-new-tokens", str(tokens), "--min-new-tokens", str(tokens)]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd + [str(p) for p in images], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model directory with aoti/ packages")
    ap.add_argument("--run-bin", type=Path, default=REPO / "build" / "engine" / "florence2-run")
    ap.add_argument("--images", type=Path, help="folder of images (default: tools/test_images.py's, temporary)")
    ap.add_argument("--cases", default="caption:1,od:3", help="task:beams,... (florence2-run task names)")
    ap.add_argument("--tokens", type=int, default=32, help="forced generated length (min = max new tokens)")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the images; each image's fastest is kept")
    ap.add_argument("--threads", type=int, default=0, help="florence2-run --threads (0: Torch's default)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every token id sequence matches")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.images
        if folder is None:
            folder = Path(tmp) / "images"
            subprocess.run([sys.executable, str(REPO / "tools" / "test_images.py"), "--out", str(folder)],
                           check=True, capture_output=True)
        images = sorted(p for p in folder.iterdir() if p.is_file())
        if not images:
            raise SystemExit(f"no images in {folder}")
        results, mismatches = [], []
        for case in args.cases.split(","):
            task, beams = case.split(":")
            per_backend = {}
            for backend in BACKENDS:
                lines = run(args.run_bin, args.model, backend, task, int(beams), args.tokens, args.threads,
                            images * args.repeat)
                best: dict[str, dict] = {}
                for line in lines:
                    prev = best.get(line["image"])
                    if prev is not None and prev["token_ids"] != line["token_ids"]:
                        mismatches.append(f"{backend} {case} {line['image']}: repeats differ")
                    if prev is None or line["timings_ms"]["total"] < prev["timings_ms"]["total"]:
                        best[line["image"]] = line
                per_backend[backend] = best
            for image in per_backend["torchscript"]:
                ts, ao = per_backend["torchscript"][image], per_backend["aoti"][image]
                same = ts["token_ids"] == ao["token_ids"]
                if not same:
                    mismatches.append(f"{case} {Path(image).name}: torchscript {ts['token_ids']} != aoti "
                                      f"{ao['token_ids']}")
                results.append({"case": case, "image": Path(image).name, "same_tokens": same,
                                "generated": len(ts["token_ids"]),
                                **{f"{b}_ms": {k: per_backend[b][image]["timings_ms"][k]
                                               for k in ("encode", "decode", "total")} for b in BACKENDS}})
    print(f"{'case':<12} {'image':<14} {'same':<5} {'ts enc':>8} {'ao enc':>8} {'ts dec':>8} {'ao dec':>8} "
          f"{'ts tot':>8} {'ao tot':>8}  (ms)")
    for r in results:
        t, a = r["torchscript_ms"], r["aoti_ms"]
        print(f"{r['case']:<12} {r['image']:<14} {str(r['same_tokens']):<5} {t['encode']:8.1f} {a['encode']:8.1f} "
              f"{t['decode']:8.1f} {a['decode']:8.1f} {t['total']:8.1f} {a['total']:8.1f}")
    for case in dict.fromkeys(r["case"] for r in results):
        rows = [r for r in results if r["case"] == case]
        for part in ("encode", "decode", "total"):
            ratio = statistics.median(r["aoti_ms"][part] / r["torchscript_ms"][part] for r in rows)
            print(f"{case}: median aoti / torchscript {part} = {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "tokens": args.tokens, "repeat": args.repeat,
                                         "threads": args.threads, "results": results}, indent=1))
    if mismatches:
        print("\n".join(["token ids differ:"] + mismatches), file=sys.stderr)
        return 1 if args.check else 0
    print(f"token ids identical in all {len(results)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
