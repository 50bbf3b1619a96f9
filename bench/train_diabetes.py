"""GPUNetRegressor against MLPRegressor(activation="logistic") on scikit-learn's diabetes data.

Same architecture, solver, batch size, learning rate and number of epochs;
X and y standardised on the training part of a fixed split. Reports the test
R² of both and the median training time over a few repeats, and checks the
two claims: R² within 0.03, and gpunet at most half of MLPRegressor's time.

    python bench/train_diabetes.py [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

import gpunet
from gpunet.backend import cpu_name
from gpunet.estimator import GPUNetRegressor

HEADING = "## Training: GPUNetRegressor vs MLPRegressor (diabetes)"


def data(seed: int = 0):
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed)
    x_scaler = StandardScaler().fit(X_train)
    y_mean, y_std = y_train.mean(), y_train.std()
    return (x_scaler.transform(X_train), (y_train - y_mean) / y_std,
            x_scaler.transform(X_test), (y_test - y_mean) / y_std)


def models(args: argparse.Namespace, seed: int):
    shared = dict(solver=args.solver, batch_size=args.batch_size,
                  learning_rate_init=args.lr, max_iter=args.epochs, alpha=args.alpha,
                  # no early stop: both run exactly args.epochs epochs
                  tol=0.0, n_iter_no_change=args.epochs, random_state=seed)
    return {
        "gpunet": GPUNetRegressor(n_hidden=args.hidden, **shared),
        "sklearn": MLPRegressor(hidden_layer_sizes=(args.hidden,), activation="logistic",
                                **shared),
    }


def run(args: argparse.Namespace) -> dict:
    X_train, y_train, X_test, y_test = data()
    times = {"gpunet": [], "sklearn": []}
    scores = {"gpunet": [], "sklearn": []}
    for repeat in range(args.repeats):
        for name, model in models(args, seed=repeat).items():  # interleaved: same load
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # all epochs run by design
                start = time.perf_counter()
                model.fit(X_train, y_train)
                times[name].append(time.perf_counter() - start)
            assert model.n_iter_ == args.epochs
            scores[name].append(r2_score(y_test, model.predict(X_test)))
    results = {name: {"seconds": statistics.median(times[name]),
                      "r2": statistics.median(scores[name])} for name in times}
    results["largest_gap"] = max(abs(a - b) for a, b in zip(*scores.values(), strict=True))
    return results


def report(args: argparse.Namespace, results: dict) -> tuple[str, bool]:
    ours, theirs = results["gpunet"], results["sklearn"]
    r2_gap = abs(ours["r2"] - theirs["r2"])
    ratio = ours["seconds"] / theirs["seconds"]
    ok = r2_gap <= 0.03 and ratio <= 0.5
    import sklearn

    lines = [
        HEADING,
        "",
        f"Command: `{args.command}`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, gpunet {gpunet.__version__}.",
        "",
        f"Data: scikit-learn's diabetes (442 × 10), split 75/25 with random_state=0, X and y "
        f"standardised on the training part. Both: {args.hidden} logistic hidden units, "
        f"solver {args.solver}, batch {args.batch_size}, learning rate {args.lr}, alpha "
        f"{args.alpha}, exactly {args.epochs} epochs (tol=0, no early stop), float64. "
        f"Medians over {args.repeats} repeats (seeds 0..{args.repeats - 1}), run interleaved.",
        "",
        "| model | test R² (median) | training time (median) |",
        "|---|---|---|",
        f"| GPUNetRegressor | {ours['r2']:.4f} | {ours['seconds']:.3f} s |",
        f"| MLPRegressor(activation='logistic') | {theirs['r2']:.4f} | {theirs['seconds']:.3f} s |",
        "",
        f"R² gap {r2_gap:.4f} between the medians (must be ≤ 0.03; the largest gap for one "
        f"seed is {results['largest_gap']:.4f}); time ratio gpunet / MLPRegressor "
        f"{ratio:.2f} (must be ≤ 0.5): {'both hold' if ok else 'NOT MET'}.",
        "",
    ]
    return "\n".join(lines), ok


def write_section(path: Path, section: str) -> None:
    """Put ``section`` under its heading in ``path``, leaving other sections alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--solver", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path, help="put the results into this Markdown file")
    args = parser.parse_args()
    args.command = "python bench/train_diabetes.py " + " ".join(sys.argv[1:])
    results = run(args)
    section, ok = report(args, results)
    print(section)
    if args.write:
        write_section(args.write, section)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
