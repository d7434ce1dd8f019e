"""florence2-server's initContainer: makes sure the model directory the server is about to load exists.

The target is the --model of the server's own flag file. If it holds manifest.json (the export tool writes that
file last) there is nothing to do. Otherwise tools/florence2_export.py runs with the arguments of --export-args
into a staging directory beside the target, and the finished directory is renamed into place: a server never
sees a half-written model, and replicas that start together on one shared volume never write into the same
directory (the first rename wins; the others drop their copy).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def model_flag(flags_file: Path) -> Path:
    """The last --model=DIR of an absl flag file (one flag a line; absl lets a later value win)."""
    dirs = [line.strip().split("=", 1)[1] for line in flags_file.read_text().splitlines()
            if line.strip().startswith("--model=")]
    if not dirs:
        raise SystemExit(f"model-init: {flags_file} sets no --model=DIR")
    return Path(dirs[-1])


def export_into_place(target: Path, export: list[str]) -> None:
    """Runs `export` (a command lacking only --out) into a staging directory and renames the result to target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
    try:
        out = staging / target.name
        command = [*export, "--out", str(out)]
        print(f"model-init: {shlex.join(command)}", flush=True)
        subprocess.run(command, check=True)
        if not (out / "manifest.json").is_file():
            raise SystemExit(f"model-init: the export wrote no {out / 'manifest.json'}")
        if target.exists() and not (target / "manifest.json").is_file():
            print(f"model-init: replacing {target}, which has no manifest.json (an unfinished export)", flush=True)
            shutil.rmtree(target)
        try:
            out.rename(target)
        except OSError:
            if not (target / "manifest.json").is_file():
                raise
            print(f"model-init: another replica exported {target} first; keeping that one", flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flags", type=Path, required=True, help="the server's flag file; its --model is the target")
    ap.add_argument("--export-args", type=Path, required=True,
                    help="file holding florence2_export.py's arguments but --out, e.g. --random base --seed 0")
    ap.add_argument("--app-dir", type=Path, default=Path("/opt/florence-serve"),
                    help="the image's copy of the repository (tools/florence2_export.py, .cache)")
    args = ap.parse_args(argv)

    target = model_flag(args.flags)
    if (target / "manifest.json").is_file():
        print(f"model-init: {target} has its manifest.json; nothing to export", flush=True)
        return 0
    export_args = shlex.split(args.export_args.read_text())
    if any(a == "--out" or a.startswith("--out=") for a in export_args):
        raise SystemExit(f"model-init: {args.export_args} must not set --out (the target is the server's --model)")
    # Registry downloads the export needs (the tokenizer's merges): the image's cache when it ships one (read
    # only, no network needed), else a cache on the model volume that later exports reuse.
    image_cache = args.app_dir / ".cache"
    cache = image_cache if image_cache.is_dir() else target.parent / ".cache"
    export_into_place(target, [sys.executable, str(args.app_dir / "tools" / "florence2_export.py"), *export_args,
                               "--cache-dir", str(cache)])
    print(f"model-init: exported {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
