"""Throughput against batch size for one network shape, every contender, on gpunet's bench engine.

    python bench/throughput.py --features 16 --hidden 256 --samples 4096,16384,65536 \
        --plot throughput.png --json throughput.json

Takes the options of ``gpunet bench`` too (--device, --contenders, --repeats, ...);
with --config the grid comes from the file instead.
"""

from __future__ import annotations

import argparse
import sys

from gpunet import bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    parser.add_argument("--features", type=int, default=16, help="d (default 16)")
    parser.add_argument("--hidden", type=int, default=256, help="n (default 256)")
    parser.add_argument("--outputs", type=int, default=1, help="p (default 1)")
    parser.add_argument("--samples", default="1024,4096,16384,65536",
                        help="comma-separated batch sizes m")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,float64")
    args = parser.parse_args()
    configs = None
    if not args.config:
        configs = [bench.Config(int(m), args.features, args.hidden, args.outputs, dtype.strip())
                   for dtype in args.dtypes.split(",") for m in args.samples.split(",")]
    return bench.cmd_bench(args, configs)


if __name__ == "__main__":
    sys.exit(main())
