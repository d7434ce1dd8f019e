"""florence::decode_attention (engine/ops/, tools/florence2/ops.py): the native kernel against its definition
(torch's SDPA with the same mask), on the shapes a decode step gives it and the edge cases around them, for
both compiled kernels; and the exported decode step with it against the same artefact on SDPA."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools.florence2 import ops

from conftest import Artefact, decode_logits

REPO = Path(__file__).resolve().parents[2]
TOL = 2e-6  # float32 rounding of a 64-term dot product and a softmax over <= 600 keys (measured <= 4e-7)


@pytest.fixture(scope="module")
def native() -> str:
    # The test command builds the library first (make test-python depends on make build).
    return ops.load(require_native=True)


def cache_view(groups: int, heads: int, used: int, capacity: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """K or V as the engine holds it: the first ``used`` positions of a larger pool tensor (a strided view)."""
    return torch.randn(groups, heads, capacity, dim, generator=gen)[:, :, :used]


def prefix_mask(lengths: list[int], keys: int) -> torch.Tensor:
    return torch.arange(keys).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


CASES = {
    # self-attention: one query per row, each row's own decoded prefix of a 1024-position cache
    "self": dict(groups=5, heads=12, queries=1, keys=1024, dim=64, lengths=[1, 7, 8, 9, 151]),
    # cross-attention: three beams of a request as query rows, encoder lengths padded to the longest
    "cross": dict(groups=3, heads=12, queries=3, keys=590, dim=64, lengths=[590, 583, 17]),
    # other head sizes: the 32 / 128 register paths and the plain loops (48, 20)
    "dim32": dict(groups=2, heads=4, queries=2, keys=77, dim=32, lengths=[77, 40]),
    "dim128": dict(groups=2, heads=4, queries=2, keys=77, dim=128, lengths=[77, 3]),
    "dim48": dict(groups=2, heads=4, queries=2, keys=77, dim=48, lengths=[77, 31]),
    "dim20": dict(groups=2, heads=3, queries=1, keys=33, dim=20, lengths=[33, 1]),
}


def check_case(name: str, holes: bool = False) -> float:
    c = CASES[name]
    gen = torch.Generator().manual_seed(len(name))
    capacity = c["keys"] + 64
    k = cache_view(c["groups"], c["heads"], c["keys"], capacity, c["dim"], gen) * 3
    v = cache_view(c["groups"], c["heads"], c["keys"], capacity, c["dim"], gen)
    # q as decode_step builds it: [G, Q, H, D] transposed to [G, H, Q, D] (not contiguous)
    q = torch.randn(c["groups"], c["queries"], c["heads"], c["dim"], generator=gen).transpose(1, 2)
    mask = prefix_mask(c["lengths"], c["keys"])
    if holes:  # masked positions inside the attended range (aspect-preserving image padding)
        mask &= torch.rand(mask.shape, generator=gen) > 0.3
        mask[:, 0] = True
    scale = c["dim"] ** -0.5
    got = torch.ops.florence.decode_attention(q, k, v, mask, scale)
    want = ops.reference_decode_attention(q, k, v, mask, scale)
    assert got.shape == want.shape == (c["groups"], c["heads"], c["queries"], c["dim"])
    assert got.is_contiguous()
    return (got - want).abs().max().item()


@pytest.mark.parametrize("holes", [False, True], ids=["prefix", "holes"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_sdpa(native, name: str, holes: bool) -> None:
    assert check_case(name, holes) <= TOL


def test_generic_kernel_matches_sdpa(native) -> None:
    """The baseline-ISA kernel (what a CPU without AVX2 runs), forced by the environment in a fresh process."""
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests/tools']\n"
            "import test_ops, torch\n"
            "from tools.florence2 import ops\n"
            "assert ops.load(require_native=True) == 'generic', ops.kernel()\n"
            "worst = max(test_ops.check_case(n, h) for n in test_ops.CASES for h in (False, True))\n"
            "print('worst', worst)\n")
    env = dict(os.environ, FLORENCE_DECODE_ATTENTION_KERNEL="generic")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = float(proc.stdout.split("worst")[1])
    assert worst <= TOL


def test_fully_masked_row_gives_zeros(native) -> None:
    q = torch.randn(2, 2, 1, 64)
    k = torch.randn(2, 2, 9, 64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1] = False
    out = torch.ops.florence.decode_attention(q, k, k, mask, 0.125)
    assert torch.equal(out[1], torch.zeros(2, 1, 64))
    assert torch.allclose(out[0], ops.reference_decode_attention(q, k, k, mask, 0.125)[0], atol=TOL)


def test_non_contiguous_last_dim_and_integer_mask(native) -> None:
    q = torch.randn(2, 3, 2, 64)
    k = torch.randn(2, 3, 64, 40).transpose(2, 3)  # [2, 3, 40, 64] with stride 40 in the last dim
    v = torch.randn(2, 3, 40, 64)
    mask = prefix_mask([40, 25], 40).to(torch.int64)  # nonzero = attend, as cross_mask arrives
    got = torch.ops.florence.decode_attention(q, k, v, mask, 0.125)
    assert (got - ops.reference_decode_attention(q, k, v, mask, 0.125)).abs().max().item() <= TOL


@pytest.mark.parametrize("bad, message", [
    (dict(q=torch.randn(2, 3, 1, 64, dtype=torch.float64)), "q must be float32"),
    (dict(k=torch.randn(2, 3, 9, 32)), "does not match q"),
    (dict(v=torch.randn(2, 3, 8, 64)), "v [2, 3, 8, 64] != k"),
    (dict(mask=torch.ones(2, 8, dtype=torch.bool)), "mask must be [groups, keys] = [2, 9]"),
    (dict(q=torch.randn(2, 3, 64)), "q must be 4-D"),
])
def test_rejects_bad_inputs_with_a_message(native, bad: dict, message: str) -> None:
    args = dict(q=torch.randn(2, 3, 1, 64), k=torch.randn(2, 3, 9, 64), v=torch.randn(2, 3, 9, 64),
                mask=torch.ones(2, 9, dtype=torch.bool))
    args.update(bad)
    with pytest.raises(RuntimeError, match=None) as err:
        torch.ops.florence.decode_attention(args["q"], args["k"], args["v"], args["mask"], 0.125)
    assert message in str(err.value)


def test_exported_decode_step_fused_equals_sdpa(native, tiny_artefacts: list[Artefact]) -> None:
    """The artefact's decode step through the operator (its default on the CPU) against the same artefact with
    the attribute off (SDPA): beams sharing a cross row, a padded encoder row, 24 steps on the same tokens."""
    module = torch.jit.load(str(tiny_artefacts[0].dir / "model.ts")).eval()
    assert module.fused_decode_attention
    logits = {}
    for fused in (True, False):
        module.fused_decode_attention = fused
        logits[fused] = decode_logits(module)
    scale = logits[False].abs().max().item()
    assert (logits[True] - logits[False]).abs().max().item() <= 1e-5 * max(scale, 1.0)
