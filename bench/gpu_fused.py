"""One gradient on a GPU: gpunet's fused kernel and two-GEMM path, PyTorch eager,
torch.compile and jax.jit; time, throughput and peak device memory.

    python bench/gpu_fused.py --samples 1000000 10000000 50000000 --features 8 --hidden 256

Every contender computes J and ∂J/∂(W1, b1, W2, b2) for the same X, y and
weights (drawn on the host from one seed) in the same dtype. Each time is the
median of ``--repeats`` calls after ``--warmup`` calls (compilation included in
the warm-up), timed with device synchronisation. Peak device memory is read
from each framework's allocator. A contender that is not installed or runs
out of memory prints its error in the table and the rest go on.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", nargs="+", default=list(CONTENDERS))
    args = parser.parse_args()

    print("| m | contender | median time (ms) | samples/s | peak device (MiB) | loss |")
    print("|---|---|---|---|---|---|")
    for m in (int(m) for m in args.samples):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((m, args.features), dtype=args.dtype)
        y = np.sin(X).sum(axis=1, dtype=args.dtype)
        for name in args.only:
            try:
                step, sync, peak = CONTENDERS[name](X, y, args)
                seconds, loss = timed(step, sync, args.repeats, args.warmup)
                print(f"| {m:,} | {name} | {seconds * 1e3:.2f} | {m / seconds:.3g} | "
                      f"{peak() / 2**20:.0f} | {loss:.6f} |", flush=True)
            except Exception as error:  # report and go on to the next contender
                print(f"| {m:,} | {name} | — | — | — | {type(error).__name__}: {error} |")


def timed(step: Callable, sync: Callable, repeats: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), float(loss)


def weights(args: argparse.Namespace) -> list[np.ndarray]:
    import gpunet

    return list(gpunet.Params.init(args.features, args.hidden, dtype=args.dtype, seed=0))


def gpunet_contender(path: str):
    def make(X: np.ndarray, y: np.ndarray, args: argparse.Namespace):
        import cupy

        import gpunet

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        params = gpunet.Params(*(cupy.asarray(a) for a in weights(args)))
        X_gpu, y_gpu = cupy.asarray(X), cupy.asarray(y)
        out = params.zeros_like()

        def step():
            return gpunet.loss_and_grad(params, X_gpu, y_gpu, path=path, check_finite=False,
                                        out=out)[0]

        return step, cupy.cuda.Device().synchronize, pool.total_bytes

    return make


def torch_contender(compiled: bool):
    def make(X: np.ndarray, y: np.ndarray, args: argparse.Namespace):
        import torch

        def loss_fn(X, y, w1, b1, w2, b2):
            residual = torch.sigmoid(X @ w1.T + b1) @ w2.T + b2 - y[:, None]
            return (residual * residual).sum() / (2 * X.shape[0])

        forward = torch.compile(loss_fn) if compiled else loss_fn
        params = [torch.tensor(a, device="cuda", requires_grad=True) for a in weights(args)]
        X_gpu, y_gpu = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
        torch.cuda.reset_peak_memory_stats()

        def step():
            loss = forward(X_gpu, y_gpu, *params)
            torch.autograd.grad(loss, params)
            return loss.detach()

        return step, torch.cuda.synchronize, torch.cuda.max_memory_allocated

    return make


def jax_contender(X: np.ndarray, y: np.ndarray, args: argparse.Namespace):
    import jax
    import jax.numpy as jnp

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    def loss_fn(params, X, y):
        w1, b1, w2, b2 = params
        residual = jax.nn.sigmoid(X @ w1.T + b1) @ w2.T + b2 - y[:, None]
        return jnp.sum(residual * residual) / (2 * X.shape[0])

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    device = jax.devices("gpu")[0]
    params = [jax.device_put(a, device) for a in weights(args)]
    X_gpu, y_gpu = jax.device_put(X, device), jax.device_put(y, device)
    last = {}

    def step():
        last["out"] = value_and_grad(params, X_gpu, y_gpu)
        return last["out"][0]

    def sync():
        jax.block_until_ready(last.get("out"))

    return step, sync, lambda: device.memory_stats()["peak_bytes_in_use"]


CONTENDERS = {
    "gpunet-fused": gpunet_contender("fused"),
    "gpunet-gemm": gpunet_contender("gemm"),
    "torch-eager": torch_contender(compiled=False),
    "torch-compile": torch_contender(compiled=True),
    "jax-jit": jax_contender,
}


if __name__ == "__main__":
    main()
