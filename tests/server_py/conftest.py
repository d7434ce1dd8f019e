"""Fixtures of the process-level server tests (see server_harness.py): the exported models, images and
stubs, and servers started on demand and stopped at the end of the session."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .server_harness import REPO, Assets, ServerProcess, florence_client, run_tool, server_binary


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    server_binary()  # fail before spending time on exports
    tmp = tmp_path_factory.mktemp("server_py")
    tiny = REPO / "build" / "models" / "tiny"
    if not (tiny / "manifest.json").is_file():
        tiny = tmp / "models" / "tiny"
        run_tool(["tools/florence2_export.py", "--random", "tiny", "--seed", "0", "--out", str(tiny)])
    run_tool(["tools/loc_prone_model.py", "--model", str(tiny), "--out-dir", str(tmp / "models")])
    run_tool(["tools/test_images.py", "--out", str(tmp / "images")])
    stubs_cache = tmp / "stubs"
    return Assets(tiny=tiny, tiny_locs=tmp / "models" / "tiny-0-locs", images=tmp / "images",
                  stubs_cache=stubs_cache, tmp=tmp)


@pytest.fixture(scope="session")
def stubs(assets: Assets) -> florence_client.Stubs:
    return florence_client.load_stubs(cache_dir=assets.stubs_cache)


@pytest.fixture(scope="session")
def start_server(assets: Assets) -> Iterator:
    """start_server(name, model=..., **ServerProcess fields) -> a SERVING ServerProcess, stopped at session end
    (or earlier by the test)."""
    started: list[ServerProcess] = []

    def start(name: str, model: Path | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(name=name, model=model or assets.tiny, workdir=assets.tmp / "servers", **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, assets: Assets) -> ServerProcess:
    """The shared plaintext server with a /metrics endpoint, serving the location-prone tiny model (so box
    tasks return boxes)."""
    return start_server("shared", model=assets.tiny_locs, metrics=True)
