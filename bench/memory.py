"""Peak memory and time of one exact gradient against m: streaming, two-GEMM, PyTorch.

Each measurement runs in a fresh process, so its peak RSS (and, on a GPU, its
peak device memory) is its own:

    python bench/memory.py sweep --samples 100000 1000000 4000000     # a Markdown table
    python bench/memory.py stream --samples 50000000 --data-dir /tmp/gpunet-50m --cold
    python bench/memory.py gemm --samples 1000000

``stream`` reads X and y from .npy files in ``--data-dir`` through
gpunet.streaming, writing them there first (chunk by chunk, with plain file
writes, so the writer never holds the data) unless they exist. ``gemm`` is
gpunet.loss_and_grad on X in memory; ``torch`` is PyTorch autograd on the same
model in eager mode (it stores the (m, n) hidden layer); ``fused`` is
gpunet's fused CUDA kernel (GPU only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("stream", "gemm", "torch", "fused")
WRITE_ROWS = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=(*MODES, "sweep"))
    parser.add_argument("--samples", type=float, nargs="+", default=[1e6])
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--modes", nargs="+", default=["stream", "gemm", "torch"])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/gpunet-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the .npy files afterwards")
    parser.add_argument("--cold", action="store_true",
                        help="drop the files from the page cache first, so they are read from disk")
    args = parser.parse_args()
    if args.mode == "sweep":
        sweep(args)
    else:
        print(json.dumps(measure(args.mode, int(args.samples[0]), args)))


def sweep(args: argparse.Namespace) -> None:
    """One fresh process per (m, mode); a Markdown table of the results."""
    print("| m | path | time (s) | peak RSS (MiB) | peak device (MiB) | loss |")
    print("|---|---|---|---|---|---|")
    for m in (int(m) for m in args.samples):
        for mode in args.modes:
            command = [sys.executable, __file__, mode, "--samples", str(m),
                       "--features", str(args.features), "--hidden", str(args.hidden),
                       "--dtype", args.dtype, "--backend", args.backend,
                       "--data-dir", str(args.data_dir), "--keep"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"| {m:,} | {mode} | — | — | — | {reason} |")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            device = f"{row['device_mib']:.0f}" if row["device_mib"] is not None else "—"
            print(f"| {m:,} | {mode} | {row['seconds']:.2f} | {row['rss_mib']:.0f} | "
                  f"{device} | {row['loss']:.6f} |", flush=True)
    if not args.keep:
        remove_data(args.data_dir)


def measure(mode: str, m: int, args: argparse.Namespace) -> dict:
    x_path, y_path = write_data(args.data_dir, m, args.features, args.dtype)
    if args.cold:
        for path in (x_path, y_path):
            evict(path)
    start = time.perf_counter()
    loss, device_bytes = RUNNERS[mode](x_path, y_path, args)
    seconds = time.perf_counter() - start
    if mode == "stream" and not args.keep:
        remove_data(args.data_dir)
    return {
        "mode": mode, "m": m, "d": args.features, "n": args.hidden, "dtype": args.dtype,
        "backend": args.backend, "seconds": seconds, "loss": loss,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_mib": None if device_bytes is None else device_bytes / 2**20,
    }


def run_stream(x_path: Path, y_path: Path, args: argparse.Namespace) -> tuple[float, int | None]:
    import gpunet
    from gpunet import streaming

    params = gpunet.Params.init(args.features, args.hidden, dtype=args.dtype, seed=0,
                                backend=args.backend)
    loss, _ = streaming.loss_and_grad(params, streaming.ArraySource.from_npy(x_path, y_path))
    return float(loss), cupy_pool_bytes(args.backend)


def run_gemm(x_path: Path, y_path: Path, args: argparse.Namespace) -> tuple[float, int | None]:
    return run_in_memory(x_path, y_path, args, path="gemm")


def run_fused(x_path: Path, y_path: Path, args: argparse.Namespace) -> tuple[float, int | None]:
    return run_in_memory(x_path, y_path, args, path="fused")


def run_in_memory(x_path: Path, y_path: Path, args: argparse.Namespace, path: str):
    import gpunet

    X = gpunet.to_backend(np.load(x_path), args.backend)
    y = gpunet.to_backend(np.load(y_path), args.backend)
    params = gpunet.Params.init(args.features, args.hidden, dtype=args.dtype, seed=0,
                                backend=args.backend)
    loss, _ = gpunet.loss_and_grad(params, X, y, path=path)
    return float(loss), cupy_pool_bytes(args.backend)


def run_torch(x_path: Path, y_path: Path, args: argparse.Namespace) -> tuple[float, int | None]:
    import torch

    import gpunet

    device = "cuda" if args.backend == "cupy" else "cpu"
    X = torch.from_numpy(np.load(x_path)).to(device)
    y = torch.from_numpy(np.load(y_path)).to(device).reshape(-1, 1)
    params = gpunet.Params.init(args.features, args.hidden, dtype=args.dtype, seed=0)
    w1, b1, w2, b2 = (torch.tensor(a, device=device, requires_grad=True) for a in params)
    residual = torch.sigmoid(X @ w1.T + b1) @ w2.T + b2 - y
    loss = (residual * residual).sum() / (2 * X.shape[0])
    loss.backward()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return float(loss), peak


RUNNERS = {"stream": run_stream, "gemm": run_gemm, "torch": run_torch, "fused": run_fused}


def cupy_pool_bytes(backend: str) -> int | None:
    """Bytes CuPy's memory pool holds: it keeps what it allocated, so this is the peak."""
    if backend != "cupy":
        return None
    import cupy

    return cupy.get_default_memory_pool().total_bytes()


def write_data(folder: Path, m: int, d: int, dtype: str) -> tuple[Path, Path]:
    """X (m, d) ~ N(0, 1) and y = Σ_j sin(x_j), as .npy files written chunk by chunk."""
    folder.mkdir(parents=True, exist_ok=True)
    x_path, y_path = folder / f"X-{m}-{d}-{dtype}.npy", folder / f"y-{m}-{d}-{dtype}.npy"
    if x_path.exists() and y_path.exists():
        return x_path, y_path
    rng = np.random.default_rng(0)
    with open(x_path, "wb") as x_file, open(y_path, "wb") as y_file:
        for file, shape in ((x_file, (m, d)), (y_file, (m,))):
            header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, m, WRITE_ROWS):
            X = rng.standard_normal((min(WRITE_ROWS, m - start), d), dtype=dtype)
            x_file.write(X.tobytes())
            y_file.write(np.sin(X).sum(axis=1).tobytes())
    return x_path, y_path


def evict(path: Path) -> None:
    """Write ``path`` to disk and drop its pages from the kernel's page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def remove_data(folder: Path) -> None:
    for path in folder.glob("[Xy]-*.npy"):
        path.unlink()


if __name__ == "__main__":
    main()
