"""The project's Torch operators on the Python side: ``torch.ops.florence.decode_attention`` and
``torch.ops.florence.pack_linear`` / ``packed_linear``.

The exported TorchScript decode step calls ``florence::decode_attention`` (a fused attention for a decode
step's few query rows: each (row, head)'s K and V are read once; engine/ops/), and its ``pack_for_cpu`` packs
the decoder's and lm_head's weights for ``florence::packed_linear`` (a GEMM for a decode step's few rows on
weights packed once into 16-column panels) where ``florence::packed_linear_kernel()`` recommends it. Every
process that scripts or loads an artefact needs the operators registered first; importing ``tools.florence2``
does that by calling ``load()``, which registers, once per process, the first of:

1. the native library ``libflorence_ops.so`` that CMake builds (engine/ops/), from ``$FLORENCE_OPS_LIBRARY``
   or the repository's ``build/engine/ops/``: the kernels the C++ server runs;
2. otherwise reference implementations in Python (torch's scaled_dot_product_attention and linear with the
   same semantics; ``packed_linear_kernel()`` then says "onednn"), so that exporting works before the C++
   build exists. Artefacts do not depend on which one exported them: they name the operators, and each loader
   supplies its own.

``kernel()`` tells which one is active: "avx2" / "generic" (native, by the CPU's instruction set) or
"reference". Benchmarks and the kernel's parity test require the native one (``load(require_native=True)``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

LIBRARY_ENV = "FLORENCE_OPS_LIBRARY"
LIBRARY_NAME = "libflorence_ops.so"
_REPO = Path(__file__).resolve().parents[2]

_loaded: Optional[str] = None  # the library path, or "reference"
_reference_lib = None  # keeps the Python registration alive


def library_path() -> Optional[Path]:
    """The native library to load: $FLORENCE_OPS_LIBRARY, else the default build tree's, if it exists."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env)
    path = _REPO / "build" / "engine" / "ops" / LIBRARY_NAME
    return path if path.exists() else None


def reference_decode_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """The operator's definition: softmax(q k^T * scale) v over the keys where ``mask`` [G, S] is true, for
    q [G, H, Q, D] and k/v [G, H, S, D]; a row with no unmasked key gives zeros."""
    m = mask.to(torch.bool)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None, None, :], scale=scale)
    return torch.where(m.any(dim=1)[:, None, None, None], out, torch.zeros_like(out))


PANEL = 16  # output columns per packed panel (engine/ops/packed_linear_args.h)


def reference_pack_linear(weight: Tensor) -> Tensor:
    """weight [out, in] -> [ceil(out / 16), in, 16]: panel p holds output columns 16p..16p+15 interleaved per
    input element, zero columns padding the last panel."""
    out, inp = weight.shape
    panels = (out + PANEL - 1) // PANEL
    padded = F.pad(weight, (0, 0, 0, panels * PANEL - out))
    return padded.view(panels, PANEL, inp).transpose(1, 2).contiguous()


def reference_packed_linear(x: Tensor, packed: Tensor, bias: Optional[Tensor], out_features: int) -> Tensor:
    """The operator's definition: ``F.linear(x, W, bias)`` for the W that ``pack_linear`` packed."""
    panels, inp, _ = packed.shape
    weight = packed.transpose(1, 2).reshape(panels * PANEL, inp)[:out_features]
    return F.linear(x, weight, bias)


def _register_reference() -> None:
    global _reference_lib
    lib = torch.library.Library("florence", "DEF")
    lib.define("decode_attention(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> Tensor")
    lib.define("decode_attention_kernel() -> str")
    lib.impl("decode_attention", reference_decode_attention, "CompositeExplicitAutograd")
    lib.impl("decode_attention_kernel", lambda: "reference", "CompositeExplicitAutograd")
    lib.define("pack_linear(Tensor weight) -> Tensor")
    lib.define("packed_linear(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor")
    lib.define("packed_linear_kernel() -> str")
    lib.impl("pack_linear", reference_pack_linear, "CompositeExplicitAutograd")
    lib.impl("packed_linear", reference_packed_linear, "CompositeExplicitAutograd")
    lib.impl("packed_linear_kernel", lambda: "onednn", "CompositeExplicitAutograd")
    _reference_lib = lib


def load(require_native: bool = False) -> str:
    """Registers the operators (idempotent) and returns ``kernel()``. ``require_native``: raise unless the
    native library is (or can be) the one registered."""
    global _loaded
    if _loaded is None:
        path = library_path()
        if path is not None:
            torch.ops.load_library(str(path))
            _loaded = str(path)
        else:
            _register_reference()
            _loaded = "reference"
    active = kernel()
    if require_native and active == "reference":
        raise RuntimeError(f"the native {LIBRARY_NAME} is not loaded (build it with `make build`, or set "
                           f"{LIBRARY_ENV}); this process registered the Python reference instead")
    return active


def kernel() -> str:
    return str(torch.ops.florence.decode_attention_kernel())


def linear_kernel() -> str:
    """The kernel ``pack_for_cpu`` packs the decode linears for: "avx2" / "generic" (florence::packed_linear) or
    "onednn" (the native library's recommendation for this CPU, or the Python reference's)."""
    return str(torch.ops.florence.packed_linear_kernel())
