"""torch.export + AOTInductor packages of the four graph methods of ``Florence2ForServing``.

A second engine backend format next to the TorchScript artefact: one ``.pt2`` package per method, each run from
C++ by ``torch::inductor::AOTIModelPackageLoader`` (or from Python by ``torch._inductor.aoti_load_package``):

  <out>/image_features.pt2  (pixel_values)                                     -> features
  <out>/encode.pt2          (image_features, input_ids, attention_mask)        -> encoder_hidden
  <out>/cross_kv.pt2        (encoder_hidden)                                   -> (K, V)
  <out>/decode_step.pt2     (input_ids, positions, self_k, self_v, cross_k, cross_v, cross_mask, cross_rows,
                             self_len)                                         -> logits (self_k/self_v in place)

Inputs are positional, in exactly that order, with the dtypes and shapes of ``model.py``'s methods; outputs are
a tensor (a tuple of two for cross_kv). Each package carries string metadata (``florence.*`` keys, see
``metadata``; C++: ``AOTIModelPackageLoader::get_metadata()``) naming its method, the dynamic dimensions and
their bounds, and the decoder shape ``empty_self_cache`` needs (no graph: the caller allocates zeros). The graphs
come from the plain float32 module: ``pack_for_cpu`` is TorchScript's oneDNN path; inductor does its own CPU
codegen (linear layers become aten addmm calls, attention the CPU flash-attention kernel).

Input layout: the compiled code assumes every input contiguous. A strided view gives wrong results and, for the
caches, writes to the wrong places, with no error: ``AOTI_RUNTIME_CHECK_INPUTS=1`` makes a package check dtypes,
static sizes and dynamic-size bounds, but not the strides of dynamic-shaped inputs. Hence ``decode_step`` is the
graph of ``Florence2ForServing.decode_step_pooled`` (``DECODE_LAYOUT``): it takes whole KV-pool tensors and narrows
to the rows and positions in use inside the graph, so the server's pool views never reach it as views: the
caller passes the (contiguous) tensor a view was taken from (``pool_base``; C++: engine/aoti_model.cc), the used
cross rows and encoder positions as a small contiguous ``cross_mask`` [G, c], and the decoder positions in use as
the size of ``self_len`` [s]. It writes the caller's ``self_k``/``self_v`` in place, as the TorchScript method does.

Build host: g++ compiles the generated code with ``-march=native`` and the OpenMP thread count of the generated
loops fixed (``compile_all(threads=)``): compile on the CPU family that serves, for its thread count.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch._inductor.cpu_vec_isa import pick_vec_isa
from torch.export import Dim, ExportedProgram

from .config import Florence2Arch
from .model import Florence2ForServing

METHODS = ("image_features", "encode", "cross_kv", "decode_step")
AOTI_SUBDIR = "aoti"
PACKAGE_SUFFIX = ".pt2"
FORMAT = "florence-serve/aoti"
INTERFACE_VERSION = 2  # the same method interface as export.INTERFACE_VERSION's TorchScript artefact
DECODE_LAYOUT = "pool-1"  # decode_step takes whole pool tensors + self_len (decode_step_pooled); metadata key


# ----------------------------------------------------------------------------- one nn.Module per method
# torch.export traces ``forward``; these name the inputs (the graph's input names) and fix their order.


class ImageFeatures(nn.Module):
    def __init__(self, model: Florence2ForServing):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model.image_features(pixel_values)


class Encode(nn.Module):
    def __init__(self, model: Florence2ForServing):
        super().__init__()
        self.model = model

    def forward(self, image_features: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.encode(image_features, input_ids, attention_mask)


class CrossKv(nn.Module):
    def __init__(self, model: Florence2ForServing):
        super().__init__()
        self.model = model

    def forward(self, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.cross_kv(encoder_hidden)


class DecodeStep(nn.Module):
    def __init__(self, model: Florence2ForServing):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, positions: Tensor, self_k: Tensor, self_v: Tensor, cross_k: Tensor,
                cross_v: Tensor, cross_mask: Tensor, cross_rows: Tensor, self_len: Tensor) -> Tensor:
        return self.model.decode_step_pooled(input_ids, positions, self_k, self_v, cross_k, cross_v, cross_mask,
                                             cross_rows, self_len)


WRAPPERS = {"image_features": ImageFeatures, "encode": Encode, "cross_kv": CrossKv, "decode_step": DecodeStep}


# ----------------------------------------------------------------------------- dynamic dimensions


@dataclass(frozen=True)
class Limits:
    """Upper bounds of the dynamic dimensions; every lower bound is 1. A call outside them is undefined (checked
    only under AOTI_RUNTIME_CHECK_INPUTS=1), so they are generous; they cost nothing at run time."""

    batch: int = 256       # B of image_features / encode / cross_kv (images, encoded sequences)
    rows: int = 4096       # decode rows (B of decode_step: beams of every running request)
    cross_rows: int = 4096  # G of decode_step: encoded sequences in the KV pool


def _dims(arch: Florence2Arch, limits: Limits) -> dict[str, Dim]:
    n_img = arch.num_image_tokens()
    return {
        "batch": Dim("batch", min=1, max=limits.batch),
        "prompt": Dim("prompt", min=1, max=arch.max_position_embeddings - n_img),
        "enc": Dim("enc", min=1, max=arch.max_position_embeddings),
        "rows": Dim("rows", min=1, max=limits.rows),
        "cross_rows": Dim("cross_rows", min=1, max=limits.cross_rows),
        "self_len": Dim("self_len", min=1, max=arch.max_position_embeddings),
        # decode_step's whole pool tensors, narrowed inside the graph to rows / cross_rows / self_len / enc
        "pool_rows": Dim("pool_rows", min=1, max=limits.rows),
        "pool_cross_rows": Dim("pool_cross_rows", min=1, max=limits.cross_rows),
        "pool_self_len": Dim("pool_self_len", min=1, max=arch.max_position_embeddings),
        "pool_enc": Dim("pool_enc", min=1, max=arch.max_position_embeddings),
    }


def example_inputs(arch: Florence2Arch, limits: Limits = Limits()) -> dict[str, tuple[tuple, tuple]]:
    """Per method: (example args, dynamic_shapes). Example sizes are distinct and > 1, so that no two dimensions
    are mistaken for one and none is specialised to 0/1."""
    dims = _dims(arch, limits)
    n_img = arch.num_image_tokens()
    d, layers, heads, hd = arch.d_model, arch.decoder_layers, arch.decoder_attention_heads, arch.head_dim
    size = arch.image_size
    b, t = 2, 7
    rows, groups, enc, self_len = 3, 2, n_img + 5, 11
    pool_rows, pool_groups, pool_enc, pool_len = 7, 5, n_img + 9, 14  # the KV pool the decode_step views narrow
    long = dict(dtype=torch.long)
    return {
        "image_features": ((torch.randn(b, 3, size, size),), ({0: dims["batch"]},)),
        "encode": ((torch.randn(b, n_img, d), torch.randint(4, 100, (b, t)), torch.ones(b, n_img + t, **long)),
                   ({0: dims["batch"]}, {0: dims["batch"], 1: dims["prompt"]},
                    {0: dims["batch"], 1: dims["prompt"] + n_img})),
        "cross_kv": ((torch.randn(b, enc, d),), ({0: dims["batch"], 1: dims["enc"]},)),
        "decode_step": (
            (torch.randint(4, 100, (rows,)), torch.tensor([0, 4, 2]),
             torch.zeros(layers, pool_rows, heads, pool_len, hd), torch.zeros(layers, pool_rows, heads, pool_len, hd),
             torch.randn(layers, pool_groups, heads, pool_enc, hd),
             torch.randn(layers, pool_groups, heads, pool_enc, hd),
             torch.ones(groups, enc, **long), torch.tensor([0, 1, 0]), torch.empty(self_len, dtype=torch.uint8)),
            ({0: dims["rows"]}, {0: dims["rows"]},
             {1: dims["pool_rows"], 3: dims["pool_self_len"]}, {1: dims["pool_rows"], 3: dims["pool_self_len"]},
             {1: dims["pool_cross_rows"], 3: dims["pool_enc"]}, {1: dims["pool_cross_rows"], 3: dims["pool_enc"]},
             {0: dims["cross_rows"], 1: dims["enc"]}, {0: dims["rows"]}, {0: dims["self_len"]})),
    }


def metadata(method: str, arch: Florence2Arch, limits: Limits = Limits(), threads: int = 0) -> dict[str, str]:
    """What a C++ loader reads with get_metadata(): all values are strings (AOTInductor's metadata type)."""
    inputs = {
        "image_features": "pixel_values:float32[batch,3,{s},{s}]".format(s=arch.image_size),
        "encode": f"image_features:float32[batch,{arch.num_image_tokens()},{arch.d_model}],"
                  f"input_ids:int64[batch,prompt],attention_mask:int64[batch,{arch.num_image_tokens()}+prompt]",
        "cross_kv": f"encoder_hidden:float32[batch,enc,{arch.d_model}]",
        "decode_step": "input_ids:int64[rows],positions:int64[rows],"
                       "self_k:float32[L,pool_rows,H,pool_self_len,hd]!,"
                       "self_v:float32[L,pool_rows,H,pool_self_len,hd]!,"
                       "cross_k:float32[L,pool_cross_rows,H,pool_enc,hd],"
                       "cross_v:float32[L,pool_cross_rows,H,pool_enc,hd],"
                       "cross_mask:int64[cross_rows,enc],cross_rows:int64[rows],self_len:uint8[self_len]",
    }
    dims = _dims(arch, limits)
    return {
        "florence.format": FORMAT,
        "florence.interface_version": str(INTERFACE_VERSION),
        "florence.method": method,
        "florence.inputs": inputs[method],  # '!': written in place
        "florence.decode_layout": DECODE_LAYOUT,
        "florence.dims": json.dumps({k: [v.min, v.max] for k, v in dims.items()}),
        "florence.dtype": "float32",
        "florence.decoder_layers": str(arch.decoder_layers),
        "florence.decoder_heads": str(arch.decoder_attention_heads),
        "florence.head_dim": str(arch.head_dim),
        "florence.vocab_size": str(arch.vocab_size),
        "florence.image_size": str(arch.image_size),
        # Fixed at compile time: the generated loops' OpenMP thread count (the GEMMs they call follow the
        # process's setting) and the instruction set (g++ -march=native: run on the build machine's CPU family).
        "florence.omp_threads": str(threads or torch.get_num_threads()),
        "florence.cpu_isa": str(pick_vec_isa()),
    }


# ----------------------------------------------------------------------------- export and compile


def eager_model(arch: Florence2Arch, state_dict: dict[str, Tensor]) -> Florence2ForServing:
    """The plain float32 module holding ``state_dict`` (e.g. a TorchScript artefact's ``state_dict()``)."""
    if any(t.dtype != torch.float32 for t in state_dict.values()):
        raise ValueError("AOTI export takes float32 weights only")
    model = Florence2ForServing(arch).eval()
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if unexpected or missing:
        raise ValueError(f"state dict does not fit the architecture: missing {missing}, unexpected {unexpected}")
    return model


def from_model_dir(model_dir: Path) -> tuple[Florence2Arch, Florence2ForServing]:
    """Architecture and eager module of an exported TorchScript model directory (float32 only)."""
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("dtype", "float32") != "float32":
        raise ValueError(f"{model_dir} holds {config['dtype']} weights; AOTI export takes float32 only")
    arch = Florence2Arch.from_json(config["architecture"])
    scripted = torch.jit.load(str(model_dir / config.get("model_file", "model.ts")), map_location="cpu")
    return arch, eager_model(arch, dict(scripted.state_dict()))


def export_method(model: Florence2ForServing, arch: Florence2Arch, method: str,
                  limits: Limits = Limits()) -> ExportedProgram:
    args, dynamic_shapes = example_inputs(arch, limits)[method]
    with torch.no_grad():
        return torch.export.export(WRAPPERS[method](model).eval(), args, dynamic_shapes=dynamic_shapes,
                                   strict=False)


@dataclass
class CompileReport:
    method: str
    export_s: float
    compile_s: float
    package: Path
    bytes: int


def compile_all(model: Florence2ForServing, arch: Florence2Arch, out_dir: Path, methods=METHODS,
                limits: Limits = Limits(), threads: int = 0, inductor_configs: dict | None = None,
                log=None) -> list[CompileReport]:
    """Exports and AOT-compiles ``methods`` for the CPU into ``out_dir/<method>.pt2`` (the directory is created;
    packages already there are replaced). ``threads``: the OpenMP thread count compiled into the generated loops
    (0: this process's torch.get_num_threads()); set it to the serving host's intra-op thread count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for method in methods:
        t0 = time.perf_counter()
        program = export_method(model, arch, method, limits)
        t1 = time.perf_counter()
        configs = {"aot_inductor.metadata": metadata(method, arch, limits, threads),
                   "cpp.threads": threads or torch.get_num_threads(),
                   # Export traces dynamic sizes as >= 2 (backed_size_oblivious, which keeps 1, trips over SDPA's
                   # "mask batch == 1?" check); the graphs hold for 1 too (tests/tools/test_aoti.py runs batch 1
                   # and single rows), so the optional input checks must not reject it.
                   "aot_inductor.check_lowerbound": False,
                   **(inductor_configs or {})}
        path = out_dir / f"{method}{PACKAGE_SUFFIX}"
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
        t2 = time.perf_counter()
        reports.append(CompileReport(method, t1 - t0, t2 - t1, path, path.stat().st_size))
        if log:
            log(f"{method}: export {t1 - t0:.1f} s, compile {t2 - t1:.1f} s, {path.stat().st_size / 2**20:.1f} MiB")
    return reports


# ----------------------------------------------------------------------------- running the packages


def pool_base(t: Tensor, name: str = "tensor") -> Tensor:
    """The contiguous [L, R, H, S, hd] tensor whose view ``t[:, :n, :, :s]`` (storage offset 0) is ``t``, as a
    tensor on the same storage (``t`` itself when contiguous). ValueError for any other layout: the compiled
    code would read it wrongly. engine/aoti_model.cc's PoolBase is the same rule."""
    if t.dim() != 5:
        raise ValueError(f"decode_step: {name} must be 5-d, got {list(t.shape)}")
    if t.is_contiguous():
        return t
    layers, n, heads, s, hd = t.shape
    st = t.stride()
    ok = t.storage_offset() == 0 and st[4] == 1 and st[3] == hd and st[2] % hd == 0 and st[2] // hd >= s
    ok = ok and st[1] == heads * st[2]
    pool_rows = st[0] // st[1] if ok and layers > 1 else n
    ok = ok and (layers == 1 or (st[0] % st[1] == 0 and pool_rows >= n))
    if not ok:
        raise ValueError(f"decode_step: {name} (sizes {list(t.shape)}, strides {list(st)}, offset "
                         f"{t.storage_offset()}) is neither contiguous nor the first rows and positions of a "
                         "contiguous [L, R, H, S, hd] tensor")
    shape = [layers, pool_rows, heads, st[2] // hd, hd]
    base = t.as_strided(shape, torch.empty(shape, device="meta").stride(), 0)
    if base.untyped_storage().nbytes() < base.numel() * base.element_size():
        raise ValueError(f"decode_step: {name}'s storage is smaller than the tensor its strides imply")
    return base


def _readable(t: Tensor, name: str) -> Tensor:
    try:
        return pool_base(t, name)
    except ValueError:
        return t.contiguous()


class AotiModel:
    """The packages behind the scripted artefact's method names, so ``generate.prefill`` / ``generate.generate``
    (and anything else written against the TorchScript module) run on them unchanged."""

    def __init__(self, package_dir: Path, methods=METHODS, run_single_threaded: bool = False):
        self.runners = {m: torch._inductor.aoti_load_package(str(package_dir / f"{m}{PACKAGE_SUFFIX}"),
                                                             run_single_threaded=run_single_threaded)
                        for m in methods}
        meta = next(iter(self.runners.values())).get_metadata()  # every package names the decoder shape
        self.decoder_layers = int(meta["florence.decoder_layers"])
        self.decoder_heads = int(meta["florence.decoder_heads"])
        self.head_dim = int(meta["florence.head_dim"])

    def has(self, method: str) -> bool:
        return method in self.runners

    def metadata(self, method: str) -> dict[str, str]:
        return self.runners[method].get_metadata()

    def image_features(self, pixel_values: Tensor) -> Tensor:
        return self.runners["image_features"](pixel_values.float().contiguous())

    def encode(self, image_features: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.runners["encode"](image_features.contiguous(), input_ids.contiguous(),
                                      attention_mask.contiguous())

    def cross_kv(self, encoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.runners["cross_kv"](encoder_hidden.contiguous())
        return k, v

    def decode_step(self, input_ids: Tensor, positions: Tensor, self_k: Tensor, self_v: Tensor, cross_k: Tensor,
                    cross_v: Tensor, cross_mask: Tensor, cross_rows: Tensor) -> Tensor:
        """TorchScript's decode_step: the caches (written in place) must be contiguous tensors or views of the
        first rows and positions of contiguous ones (a KV pool's), else ValueError; cross K/V in any other
        layout are copied (the C++ backend refuses them instead)."""
        k, v = pool_base(self_k, "self_k"), pool_base(self_v, "self_v")
        ck, cv = _readable(cross_k, "cross_k"), _readable(cross_v, "cross_v")
        return self.runners["decode_step"](input_ids.contiguous(), positions.contiguous(), k, v, ck, cv,
                                           cross_mask.contiguous(), cross_rows.contiguous(),
                                           torch.empty(self_k.shape[3], dtype=torch.uint8))

    def empty_self_cache(self, batch: int, max_len: int) -> Tensor:
        return torch.zeros([self.decoder_layers, batch, self.decoder_heads, max_len, self.head_dim])
