"""The ``gpunet`` command: ``gpunet info``, ``gpunet demo``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from gpunet import backend
from gpunet.datasets import friedman1
from gpunet.grad import loss_and_grad
from gpunet.gradcheck import gradient_errors
from gpunet.model import Params


def cmd_info(args: argparse.Namespace) -> int:
    """Print the backend ``auto`` picks, the device and the versions."""
    report = backend.info()
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Check the gradients on a small network, then descend on built-in data."""
    xp = backend.array_module(args.backend)
    X, y = friedman1(args.samples, seed=args.seed)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = (y - y.mean()) / y.std()
    print(f"backend {xp.__name__}; data: Friedman #1, {X.shape[0]} samples, {X.shape[1]} features")

    small = Params.init(X.shape[1], 4, dtype=np.float64, seed=args.seed, backend="numpy")
    errors = gradient_errors(small, X[:50], y[:50])
    worst = max(errors.values())
    verdict = "ok" if worst <= 1e-6 else "FAILED"
    print(
        "gradient check (float64, central differences, 50 samples, 4 hidden): "
        + ", ".join(f"{name} {error:.1e}" for name, error in errors.items())
        + f" -> {verdict}"
    )

    params = Params.init(
        X.shape[1], args.hidden, dtype=args.dtype, seed=args.seed, backend=xp.__name__
    )
    X_dev, y_dev = xp.asarray(X, dtype=params.dtype), xp.asarray(y, dtype=params.dtype)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        loss, grads = loss_and_grad(params, X_dev, y_dev, check_finite=step == 0)
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:4d}  loss {float(loss):.5f}")
        for value, grad in zip(params, grads, strict=True):
            value -= args.lr * grad
    seconds = time.perf_counter() - start
    print(f"{args.steps} steps of full-batch gradient descent in {seconds:.2f} s")
    return 0 if worst <= 1e-6 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpunet",
        description="A one-hidden-layer sigmoid network on NumPy or CuPy.",
        epilog="examples:\n  gpunet info\n  gpunet demo --backend numpy --steps 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="backend, device and versions")
    info.set_defaults(run=cmd_info)

    demo = commands.add_parser(
        "demo", help="gradient check and a few descent steps on built-in data"
    )
    demo.add_argument("--backend", default=None, help="numpy, cupy or auto (default: auto)")
    demo.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    demo.add_argument("--samples", type=int, default=2000)
    demo.add_argument("--hidden", type=int, default=16)
    demo.add_argument("--steps", type=int, default=1000)
    demo.add_argument("--lr", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo)
    from gpunet.bench import add_command as add_bench_command
    add_bench_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        print(f"gpunet {args.command}: error: {error}", file=sys.stderr)
        return 2
