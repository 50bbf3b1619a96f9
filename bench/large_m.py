"""One exact gradient over many samples: time and peak memory (run under /usr/bin/time -v).

    python bench/large_m.py --samples 10000000 --features 8 --hidden 256
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import gpunet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="numpy")
    args = parser.parse_args()

    xp = gpunet.array_module(args.backend)
    rng = np.random.default_rng(0)
    X = xp.asarray(rng.standard_normal((args.samples, args.features), dtype=args.dtype))
    y = xp.asarray(rng.standard_normal(args.samples, dtype=args.dtype))
    params = gpunet.Params.init(args.features, args.hidden, dtype=args.dtype, seed=0,
                                backend=args.backend)
    data_mib = (X.nbytes + y.nbytes) / 2**20
    start = time.perf_counter()
    loss = float(gpunet.loss_and_grad(params, X, y)[0])  # float() waits for the device
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"m={args.samples} d={args.features} n={args.hidden} {args.dtype} on {args.backend}: "
          f"loss {loss:.6f} in {seconds:.1f} s; data {data_mib:.0f} MiB, "
          f"peak RSS {peak_mib:.0f} MiB (default work budget "
          f"{gpunet.DEFAULT_WORK_BYTES / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
