"""florence::pack_linear / florence::packed_linear (engine/ops/, tools/florence2/ops.py): the native kernel
against its definition (a float64 linear of the same weights) on decode-step shapes and the edges of its
register tiles, panels and input chunks, for both compiled kernels; the per-CPU recommendation; refusals; and
the exported decode step on these packed weights against oneDNN's and against the unpacked module."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tools.florence2 import ops

from conftest import Artefact, decode_logits

REPO = Path(__file__).resolve().parents[2]
# float32 rounding of each output's sum relative to the sum of its terms' magnitudes (measured <= 2e-7; a
# dropped or doubled term of a 3072-term sum is ~3e-4).
REL_TOL = 1e-5

# (rows, in, out): rows across the 6-row tiles and the chunking regimes (1-2 rows whole panels; 3-6 rows one tile
# over 128-element chunks; 7-12 rows two tiles over 64; more, 128), inputs with a partial last chunk or shorter
# than one, outputs with a partial last panel or a single column.
SHAPES = [(1, 768, 768), (2, 768, 2304), (3, 768, 1005), (5, 300, 17), (6, 64, 16), (7, 3072, 768),
          (9, 300, 33), (13, 768, 1), (32, 768, 3072), (54, 520, 250)]


@pytest.fixture(scope="module")
def native() -> str:
    # The test command builds the library first (make test-python depends on make build).
    return ops.load(require_native=True)


def worst_error(rows: int, inp: int, out: int, bias: bool = True) -> float:
    """The largest error of packed_linear on random data, relative to each output's sum of |terms|."""
    gen = torch.Generator().manual_seed(rows * 7919 + inp * 31 + out)
    w = torch.randn(out, inp, generator=gen) / inp ** 0.5
    b = torch.randn(out, generator=gen) if bias else None
    x = torch.randn(rows, 1, inp, generator=gen)  # [B, 1, in] as decode_step passes it
    got = torch.ops.florence.packed_linear(x, torch.ops.florence.pack_linear(w), b, out)
    assert got.shape == (rows, 1, out) and got.dtype == torch.float32
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    magnitude = F.linear(x.double().abs(), w.double().abs()) + (0 if b is None else b.double().abs())
    return ((got.double() - want).abs() / magnitude).max().item()


@pytest.mark.parametrize("rows, inp, out", SHAPES)
def test_matches_linear(native, rows: int, inp: int, out: int) -> None:
    assert worst_error(rows, inp, out) <= REL_TOL


def test_without_bias_and_with_no_rows(native) -> None:
    assert worst_error(4, 96, 40, bias=False) <= REL_TOL
    w = torch.randn(40, 96)
    empty = torch.ops.florence.packed_linear(torch.zeros(0, 96), torch.ops.florence.pack_linear(w), None, 40)
    assert empty.shape == (0, 40)


def test_pack_layout_is_the_reference_layout(native) -> None:
    w = torch.randn(37, 24)
    packed = torch.ops.florence.pack_linear(w)
    assert packed.shape == (3, 24, 16)
    assert torch.equal(packed, ops.reference_pack_linear(w))
    assert torch.equal(packed[1, 5, 3], w[19, 5])  # panel 1, input 5, column 16 + 3
    assert torch.equal(packed[2, :, 5:], torch.zeros(24, 11))  # the padding columns of the last panel


def run_with_env(env_value: str, code: str) -> str:
    """Runs ``code`` in a fresh process with FLORENCE_PACKED_LINEAR=env_value; returns its stdout."""
    prologue = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests/tools']\n"
                "import test_packed_linear as t, torch\n"
                "from tools.florence2 import ops\n"
                "ops.load(require_native=True)\n")
    env = dict(os.environ, FLORENCE_PACKED_LINEAR=env_value)
    proc = subprocess.run([sys.executable, "-c", prologue + code, str(REPO)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_generic_kernel_matches_linear(native) -> None:
    """The baseline-ISA kernel (what a CPU without AVX2 runs), forced by the environment in a fresh process."""
    out = run_with_env("generic", "assert ops.linear_kernel() == 'generic', ops.linear_kernel()\n"
                                  "print('worst', max(t.worst_error(*s) for s in t.SHAPES))\n")
    assert float(out.split("worst")[1]) <= REL_TOL


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_recommendation_follows_the_cpu_and_the_environment(native) -> None:
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    avx2_only = {"avx2", "fma"} <= flags and "avx512f" not in flags
    assert ops.linear_kernel() == ("avx2" if avx2_only else "onednn")
    assert run_with_env("onednn", "print(ops.linear_kernel())").strip() == "onednn"
    assert run_with_env("generic", "print(ops.linear_kernel())").strip() == "generic"


@pytest.mark.parametrize("call, message", [
    (lambda w, p: torch.ops.florence.packed_linear(torch.randn(2, 24, dtype=torch.float64), p, None, 37),
     "x must be CPU float32"),
    (lambda w, p: torch.ops.florence.packed_linear(torch.randn(2, 25), p, None, 37), "x has 25 input features"),
    (lambda w, p: torch.ops.florence.packed_linear(torch.randn(2, 24), p, None, 32), "out_features 32"),
    (lambda w, p: torch.ops.florence.packed_linear(torch.randn(2, 24), p, torch.randn(36), 37),
     "bias must be CPU float32 with 37 entries"),
    (lambda w, p: torch.ops.florence.packed_linear(torch.randn(2, 24), w, None, 37), "from florence::pack_linear"),
    (lambda w, p: torch.ops.florence.pack_linear(w.half()), "weight must be CPU float32"),
    (lambda w, p: torch.ops.florence.pack_linear(w[0]), "weight must be 2-D"),
])
def test_rejects_bad_inputs_with_a_message(native, call, message: str) -> None:
    w = torch.randn(37, 24)
    with pytest.raises(RuntimeError) as err:
        call(w, torch.ops.florence.pack_linear(w))
    assert message in str(err.value)


def test_exported_decode_step_on_packed_weights(native, tiny_artefacts: list[Artefact]) -> None:
    """pack_for_cpu's florence packing against oneDNN's and against the unpacked artefact, same inputs."""
    path = str(tiny_artefacts[0].dir / "model.ts")
    logits = {}
    for choice in ("plain", "florence", "onednn"):
        module = torch.jit.load(path).eval()
        assert module.decode_linear == "auto"
        if choice != "plain":
            module.decode_linear = choice
            assert module.pack_for_cpu(32)
            assert module.decode_linear_packing == choice
        logits[choice] = decode_logits(module)
    scale = max(logits["plain"].abs().max().item(), 1.0)
    assert (logits["florence"] - logits["plain"]).abs().max().item() <= 1e-5 * scale
    assert (logits["florence"] - logits["onednn"]).abs().max().item() <= 1e-5 * scale
    auto = torch.jit.load(path).eval()
    assert auto.pack_for_cpu(32)
    assert auto.decode_linear_packing == ("florence" if ops.linear_kernel() != "onednn" else "onednn")
    bogus = torch.jit.load(path).eval()
    bogus.decode_linear = "mkl"
    with pytest.raises(Exception, match="decode_linear must be auto, florence or onednn"):
        bogus.pack_for_cpu(32)
