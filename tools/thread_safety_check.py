"""Clang's -Wthread-safety over every source that annotates its locks (ABSL_GUARDED_BY & co.).

The project builds with GCC, which ignores Abseil's lock annotations; this check compiles those files again,
syntax only, with clang and the exact flags of the build (compile_commands.json), and fails on any
thread-safety warning: a guarded field touched without its mutex, a lock-requiring function called without it.

    python tools/thread_safety_check.py --build-dir build
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKERS = ("ABSL_GUARDED_BY", "ABSL_EXCLUSIVE_LOCKS_REQUIRED", "ABSL_LOCKS_EXCLUDED")


def annotated(path: Path) -> bool:
    text = path.read_text(errors="replace")
    header = path.with_suffix(".h")
    if header.exists():
        text += header.read_text(errors="replace")
    return any(m in text for m in MARKERS)


def clang_args(command: str) -> list[str]:
    args, out, skip = shlex.split(command)[1:], [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "-MF", "-MT"):
            skip = True
        elif a not in ("-c", "-MD"):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=REPO / "build")
    parser.add_argument("--clang", default="clang++")
    args = parser.parse_args(argv)
    if shutil.which(args.clang) is None:
        print(f"{args.clang} not found (Debian: apt-get install clang)", file=sys.stderr)
        return 1
    entries = json.loads((args.build_dir / "compile_commands.json").read_text())
    checked, failed = 0, 0
    for e in entries:
        src = Path(e["file"])
        if REPO not in src.parents or "tests" in src.relative_to(REPO).parts or not annotated(src):
            continue
        cmd = [args.clang, "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
               "-Wno-unknown-warning-option"] + clang_args(e["command"])
        r = subprocess.run(cmd, cwd=e["directory"], capture_output=True, text=True)
        checked += 1
        if r.returncode != 0:
            failed += 1
            print(f"FAIL {src.relative_to(REPO)}\n{r.stderr}", file=sys.stderr)
        else:
            print(f"ok   {src.relative_to(REPO)}")
    print(f"{checked} annotated sources checked, {failed} with thread-safety errors")
    return 1 if failed or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
