#!/usr/bin/env python3
"""fp32 matmul GFLOP/s of the torch build in .venv — the LibTorch the C++ engine links.

A torch on a reference BLAS measured ~3 GFLOP/s on this machine class against ~130 with an optimised one;
this number says which one we ship. Prints one JSON line.
"""
from __future__ import annotations

import json
import time

import torch


def gflops(n: int, threads: int, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    torch.set_num_threads(threads)
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    dt = time.perf_counter() - t0
    return 2 * n ** 3 * repeats / dt / 1e9


if __name__ == "__main__":
    threads = torch.get_num_threads()
    print(json.dumps({"torch": torch.__version__, "threads": threads,
                      "blas": torch.__config__.show().split("BLAS_INFO=")[1].split(",")[0]
                      if "BLAS_INFO=" in torch.__config__.show() else "unknown",
                      "gflops_fp32_2048": round(gflops(2048, threads), 1),
                      "gflops_fp32_1024_1thread": round(gflops(1024, 1), 1)}))
