"""Throughput of gpunet's loss + gradient step against its peers, beside the measured ceilings.

For each config (m, d, n, p, dtype) every contender (see gpunet.contenders)
gets the same weights and data and is timed on two steps: the gradient (J and
∂J/∂W1, b1, W2, b2) and a training step (the gradient and an SGD update).

FLOPs of one step, counting the GEMMs of the two-GEMM gradient only (the
elementwise work and the SGD update are left out):

    forward   Z = X W1ᵀ   2mdn        H = A W2ᵀ   2mnp
    backward  ∂W2 = Rᵀ A  2mnp        G = R W2    2mnp (p > 1; for p = 1 an outer product)
              ∂W1 = Δᵀ X  2mnd

The fewest bytes a step must move: X and Y read once, the parameters read and
their gradients written, s · (m(d + p) + 2(nd + n + pn + p)) for item size s.

The floor of a config is max(FLOPs / GEMM rate, fewest bytes / copy bandwidth),
with the GEMM rate (of the config's dtype) and the copy bandwidth measured in
the same run on the same device.

Method: each contender is first checked against gpunet in float64 on a small
problem and left out if it disagrees. Then, per config, the contenders run in
turn, round after round, so that noise on a shared machine falls on all of
them alike; warm-up steps first (the first one, with any compilation, is
reported apart), then the median over the timed repeats. On the CPU each
timed step follows a quarter of a second of the contender's own untimed
steps (SETTLE_SECONDS), so that it is timed as a step among steps, not
slowed by the threads another library left spinning or a core left idle. The
inputs rotate over several staged sets, together larger than the last-level
cache where memory allows, so that a step does not find its inputs in cache.
Host clocks on the CPU, CUDA events on the GPU. Threads are left as the
machine sets them, and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import importlib.metadata
import itertools
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpunet import backend
from gpunet.contenders import Contender, all_contenders, cupy_event_time, host_time
from gpunet.grad import loss_and_grad
from gpunet.model import PARAM_NAMES, Params

DEFAULT_SHAPES = ((65536, 1, 256), (65536, 16, 256), (65536, 64, 512), (16384, 784, 1024))
"""(m, d, n) of the default grid: the seed's scalar input, then wider inputs and layers."""
GPU_SAMPLES = tuple(2**k for k in range(20, 24))
"""The batch sizes a GPU is also timed at, for each (d, n) of the default grid with d ≤ 64."""
QUICK_SHAPES = ((65536, 1, 256), (65536, 16, 256), (16384, 784, 1024))
DTYPES = ("float32", "float64")
STEPS = ("gradient", "train")
CONFIG_KEYS = ("m", "d", "n", "p", "dtype")

CHECK_SHAPE = (64, 3, 7)
"""(m, d, n) of the float64 problem every contender's gradient is checked on."""
CHECK_RTOL = 1e-8
"""Largest relative error ‖g − g_gpunet‖ / ‖g_gpunet‖ a contender may show in float64."""
LEARNING_RATE = 1e-3
MAX_INPUT_SETS = 8
CEILING_SIZES = {"cpu": (2048, 2**29), "gpu": (8192, 2**31)}
"""By device: N of the N × N matmul timed for the GEMM rate, bytes of the array copied for
the bandwidth."""
SETTLE_SECONDS = {"cpu": 0.25, "gpu": 0.0}
"""Untimed steps, in seconds, before each timed step, by device. On the CPU a step is slowed
by what ran before it, for about 0.1 s: measured on the 2-core VM, gpunet's step at
(65536, 1, 256) took 25 ms for four steps after one of scikit-learn's (whose OpenBLAS
threads spin on the cores after a call), and for two steps after 0.3 s idle, then 13 ms.
So each timed step follows a quarter of a second of the contender's own steps: the
benchmark times steps in a row, as training runs them. CUDA events time the device alone."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One point of the grid: m samples, d features, n hidden units, p outputs, a dtype."""

    m: int
    d: int
    n: int
    p: int = 1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("m", "d", "n", "p"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config {name} must be a positive integer; got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"config dtype must be one of {DTYPES}; got {self.dtype!r}")

    @property
    def label(self) -> str:
        return f"({self.m}, {self.d}, {self.n}, {self.p}) {self.dtype}"

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure and how long: the steps, warm-up runs and timed repeats of each."""

    warmup: int = 2
    repeats: int = 7
    seed: int = 0
    steps: tuple[str, ...] = STEPS
    settle: float | None = None
    """Seconds of untimed steps a contender runs before each timed one (at least one step
    when positive); None for the device's default, SETTLE_SECONDS."""

    def __post_init__(self) -> None:
        unknown = set(self.steps) - set(STEPS)
        if unknown or not self.steps:
            raise ValueError(f"steps must be some of {STEPS}; got {self.steps!r}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"need repeats ≥ 1 and warmup ≥ 0; got {self.repeats}, {self.warmup}")
        if self.settle is not None and not 0 <= self.settle < math.inf:
            raise ValueError(f"settle must be ≥ 0 seconds and finite; got {self.settle!r}")

    def settle_seconds(self, device: str) -> float:
        return SETTLE_SECONDS[device] if self.settle is None else self.settle


QUICK = Settings(warmup=1, repeats=3, steps=("gradient",))


@dataclasses.dataclass
class Ceilings:
    """What the device can do at best, measured: GEMM FLOP/s by precision, copy bytes/s."""

    device: str
    gemm: dict[str, float]
    bandwidth: float
    method: dict[str, str]
    measurements: int = 1

    def best(self, other: Ceilings) -> Ceilings:
        """The higher of two measurements of each ceiling: a ceiling is a best case."""
        gemm = {k: max(self.gemm.get(k, 0.0), other.gemm.get(k, 0.0))
                for k in self.gemm | other.gemm}
        return Ceilings(self.device, gemm, max(self.bandwidth, other.bandwidth), self.method,
                        self.measurements + other.measurements)


@dataclasses.dataclass
class Result:
    """The timings of one contender on one step of one config, or why there are none."""

    config: Config
    contender: str
    step: str
    seconds: list[float] = dataclasses.field(default_factory=list)
    first: float | None = None
    error: str | None = None


# --- the grid --------------------------------------------------------------------------------


def default_grid(device: str) -> list[Config]:
    """The default configs, p = 1, float32 and float64; on a GPU also m = 2^20 … 2^23."""
    shapes = list(DEFAULT_SHAPES)
    if device == "gpu":
        shapes += [(m, d, n) for d, n in {(d, n) for _, d, n in DEFAULT_SHAPES if d <= 64}
                   for m in GPU_SAMPLES]
        shapes.sort(key=lambda s: (s[1], s[2], s[0]))
    return [Config(m, d, n, 1, dtype) for m, d, n in shapes for dtype in DTYPES]


def quick_grid() -> list[Config]:
    """A short run's configs: three shapes in float32 (QUICK times the gradient step only)."""
    return [Config(m, d, n, 1, "float32") for m, d, n in QUICK_SHAPES]


def load_grid(path: str | Path) -> tuple[list[Config], dict[str, Any]]:
    """The configs and settings in a JSON or TOML file.

    ``configs`` is a list of tables with keys m, d, n, p (default 1) and dtype
    (default float32); a list as a value stands for each of its entries, so
    ``{m = [1024, 4096], d = 8, n = 64, dtype = ["float32", "float64"]}`` gives
    four configs. Optional top-level keys: warmup, repeats, seed, settle
    (seconds, see Settings), steps (a list of "gradient", "train").
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    document = _parse_toml(text, path) if path.suffix == ".toml" else json.loads(text)
    entries = document.get("configs")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list 'configs' of {{m, d, n, p, dtype}}")
    configs = []
    for entry in entries:
        unknown = set(entry) - set(CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; use {CONFIG_KEYS}")
        axes = {k: v if isinstance(v, list) else [v] for k, v in entry.items()}
        configs += [Config(**dict(zip(axes, values, strict=True)))
                    for values in itertools.product(*axes.values())]
    settings = {k: document[k] for k in ("warmup", "repeats", "seed", "settle") if k in document}
    if "steps" in document:
        settings["steps"] = tuple(document["steps"])
    return configs, settings


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise RuntimeError(f"{path}: reading TOML needs Python ≥ 3.11 or `pip install "
                               "tomli`; or write the grid as JSON") from None
    return tomllib.loads(text)


# --- arithmetic of the floor -----------------------------------------------------------------


def gradient_flops(config: Config) -> int:
    """GEMM FLOPs of one gradient: 2mdn + 2mnp + 2mnp + 2mnd, and 2mnp more when p > 1."""
    m, d, n, p = config.m, config.d, config.n, config.p
    upstream = 2 * m * n * p if p > 1 else 0
    return 2 * m * d * n + 2 * m * n * p + 2 * m * n * p + upstream + 2 * m * n * d


def fewest_bytes(config: Config) -> int:
    """Bytes a step cannot avoid moving: s · (m(d + p) + 2(nd + n + pn + p))."""
    m, d, n, p = config.m, config.d, config.n, config.p
    return config.itemsize * (m * (d + p) + 2 * (n * d + n + p * n + p))


def floor_seconds(config: Config, ceilings: Ceilings) -> float:
    """max(FLOPs / GEMM rate of the dtype, fewest bytes / copy bandwidth)."""
    compute = gradient_flops(config) / ceilings.gemm[config.dtype]
    return max(compute, fewest_bytes(config) / ceilings.bandwidth)


# --- measuring -------------------------------------------------------------------------------


def fastest_seconds(run: Any, timer: Any, repeats: int) -> float:
    """The shortest of ``repeats`` timings after one warm-up: a ceiling is a best case."""
    run()
    return min(timer(run) for _ in range(repeats))


def measure_ceilings(device: str, repeats: int = 5) -> Ceilings:
    """The GEMM rate (float32, float64, and TF32 on a GPU) and the copy bandwidth of ``device``.

    GEMM: a square N × N product, 2N³ FLOPs, the fastest of ``repeats``.
    Bandwidth: a copy of one large array into another, counted as 2 × its bytes
    (read and write), the fastest of ``repeats``.
    """
    gpu = device == "gpu"
    xp = backend.array_module("cupy" if gpu else "numpy")
    timer = cupy_event_time if gpu else _host_timer
    size, copy_bytes = CEILING_SIZES[device]
    gemm = {dtype: _gemm_rate(xp, dtype, size, timer, repeats) for dtype in DTYPES}
    if gpu:
        with _cupy_tf32() as allowed:
            if allowed:
                gemm["tf32"] = _gemm_rate(xp, "float32", size, timer, repeats)
    source = xp.ones(copy_bytes // 8, dtype=np.float64)
    target = xp.empty_like(source)
    seconds = fastest_seconds(functools.partial(xp.copyto, target, source), timer, repeats)
    method = {"gemm": f"square {size}×{size} matmul, 2N³ FLOPs",
              "bandwidth": f"copy of {copy_bytes / 2**20:.0f} MiB, counted as read + write"}
    return Ceilings(device, gemm, 2 * source.nbytes / seconds, method)


def _gemm_rate(xp: Any, dtype: str, size: int, timer: Any, repeats: int) -> float:
    """FLOP/s of a (size × size) @ (size × size) product; GEMM speed does not depend on values."""
    a = xp.full((size, size), 0.5, dtype=dtype)
    product = functools.partial(xp.matmul, a, a, out=xp.empty_like(a))
    return 2 * size**3 / fastest_seconds(product, timer, repeats)


def _host_timer(run: Any) -> float:
    return host_time(run, wait=lambda _: None)


@contextlib.contextmanager
def _cupy_tf32() -> Iterator[bool]:
    """Inside the block, cuBLAS may use TF32 tensor cores for float32; False if CuPy can't."""
    try:
        from cupy._core import _routines_linalg as linalg  # a private CuPy API that may move

        previous = linalg.get_compute_type(np.float32)
        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
    except (ImportError, AttributeError):
        yield False
        return
    try:
        yield True
    finally:
        linalg.set_compute_type(np.float32, previous)


def last_level_cache_bytes(device: str) -> int:
    """The size of the CPU's largest cache, or the GPU's L2; 0 if unknown."""
    if device == "gpu":
        cupy = backend.array_module("cupy")
        return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["l2CacheSize"])
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=0)


def input_sets(config: Config, cache_bytes: int) -> int:
    """How many input sets to rotate over: together over twice the cache, 2 to MAX_INPUT_SETS."""
    one = config.itemsize * config.m * (config.d + config.p)
    return max(2, min(MAX_INPUT_SETS, math.ceil(2 * cache_bytes / one)))


def make_inputs(config: Config, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` sets of X (m, d) ~ N(0, 1) and Y (m, p) ~ N(0, 1) in the config's dtype."""
    rng = np.random.default_rng(seed)
    shape_x, shape_y = (config.m, config.d), (config.m, config.p)
    return [(rng.standard_normal(shape_x, dtype=config.dtype),
             rng.standard_normal(shape_y, dtype=config.dtype)) for _ in range(count)]


def check(contender: Contender, p: int, seed: int = 0) -> dict[str, float]:
    """Relative errors of a contender's loss and gradients against gpunet's, in float64.

    On a (m, d, n) = CHECK_SHAPE network with p outputs; the error of each
    quantity is ‖value − gpunet's‖ / ‖gpunet's‖.
    """
    m, d, n = CHECK_SHAPE
    config = Config(m, d, n, p, "float64")
    params = Params.init(d, n, p, dtype=np.float64, seed=seed, backend="numpy")
    (X, Y), = make_inputs(config, 1, seed)
    loss, grads = loss_and_grad(params, X, Y)
    contender.load(params, LEARNING_RATE)
    try:
        their_loss, their_grads = contender.to_host(contender.gradient(contender.stage(X, Y)))
    finally:
        contender.release()
    errors = {"loss": abs(their_loss - float(loss)) / abs(float(loss))}
    for name, ours, theirs in zip(PARAM_NAMES, grads, their_grads, strict=True):
        theirs = np.asarray(theirs)
        if theirs.shape != ours.shape:
            errors[name] = math.inf
        else:
            errors[name] = float(np.linalg.norm(theirs - ours) / np.linalg.norm(ours))
    return errors


def race(config: Config, contenders: Sequence[Contender], settings: Settings,
         cache_bytes: int) -> list[Result]:
    """Time each contender's gradient and training step on ``config``, round-robin."""
    params = Params.init(config.d, config.n, config.p, dtype=config.dtype, seed=settings.seed,
                         backend="numpy")
    host_inputs = make_inputs(config, input_sets(config, cache_bytes), settings.seed)
    staged = {}
    results = []
    for contender in contenders:
        try:
            contender.load(params, LEARNING_RATE)
            staged[contender.name] = [contender.stage(X, Y) for X, Y in host_inputs]
        except Exception as error:  # reported in the table, the other contenders go on
            results += [Result(config, contender.name, step, error=_describe(error))
                        for step in settings.steps]
            contender.release()
    ready = [c for c in contenders if c.name in staged]
    for step in settings.steps:
        results += _time_step(config, step, ready, staged, settings)
    for contender in ready:
        contender.release()
    return results


def _time_step(config: Config, step: str, contenders: Sequence[Contender],
               staged: dict[str, list[Any]], settings: Settings) -> list[Result]:
    results = {c.name: Result(config, c.name, step) for c in contenders}
    running = list(contenders)
    total = max(1, settings.warmup) + settings.repeats
    for index in range(total):
        timed = index >= max(1, settings.warmup)
        for contender in list(running):
            sets = staged[contender.name]
            run = contender.gradient if step == "gradient" else contender.train_step
            result = results[contender.name]
            try:
                if timed:  # untimed steps on the last round's inputs, not this round's
                    _run_for(settings.settle_seconds(contender.device), contender.timer(), run,
                             sets[(index - 1) % len(sets)])
                data = sets[index % len(sets)]
                seconds = contender.timer()(lambda run=run, data=data: run(data))
            except Exception as error:
                result.error = _describe(error)
                running.remove(contender)
                continue
            if index == 0:
                result.first = seconds
            elif timed:
                result.seconds.append(seconds)
    return list(results.values())


def _run_for(seconds: float, timer: Any, run: Any, data: Any) -> None:
    """Run steps on ``data`` until ``seconds`` have passed, at least one when seconds > 0."""
    spent = 0.0
    while spent < seconds:
        spent += timer(lambda: run(data))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


# --- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """Everything one benchmark run measured, and where."""

    environment: dict[str, Any]
    ceilings: Ceilings
    checks: dict[str, dict[str, Any]]
    results: list[Result]
    settings: Settings
    command: str

    def reference(self) -> str:
        return "gpunet-cupy" if self.ceilings.device == "gpu" else "gpunet-numpy"


def run_benchmark(
    configs: Sequence[Config],
    *,
    device: str = "cpu",
    contenders: Sequence[Contender] | None = None,
    settings: Settings = Settings(),
    ceilings: Ceilings | None = None,
    progress: Any = None,
    command: str = "",
) -> Report:
    """Check the contenders, measure the ceilings, then race the contenders over ``configs``.

    ``contenders`` defaults to all of them for ``device``; those not installed
    are reported as such, those whose gradients disagree with gpunet's are
    reported and not timed. ``ceilings`` are measured unless given.
    ``progress``, if given, is called with each line of progress and with the
    report so far after each config.

    Measured ceilings are measured again before each config, and the best of
    all measurements is kept: other jobs on a shared machine slow the ceilings
    down as they slow the contenders, and a ceiling is a best case.
    """
    say = progress or (lambda *_: None)
    candidates = list(all_contenders(device) if contenders is None else contenders)
    checks, admitted = {}, []
    for contender in candidates:
        checks[contender.name] = verdict = _admit(contender, {c.p for c in configs}, settings.seed)
        say(f"check {contender.name}: {verdict['status']} {verdict.get('detail', '')}".rstrip())
        if verdict["status"] == "ok":
            admitted.append(contender)
    measured = ceilings is None
    if measured:
        say("measuring the ceilings (GEMM rate, copy bandwidth)")
        ceilings = measure_ceilings(device)
    cache_bytes = last_level_cache_bytes(device)
    report = Report({}, ceilings, checks, [], settings, command)
    # Grouped by network, m ascending: a compiled contender compiles once per network.
    for config in sorted(configs, key=lambda c: (c.d, c.n, c.p, c.dtype, c.m)):
        start = time.perf_counter()
        if measured:  # a shared machine has quieter moments: keep the best the run sees
            report.ceilings = report.ceilings.best(measure_ceilings(device, repeats=2))
        report.results += race(config, admitted, settings, cache_bytes)
        say(f"{config.label}: {time.perf_counter() - start:.1f} s")
        report.environment = environment(device)
        say(report)
    report.environment = environment(device)
    return report


def _admit(contender: Contender, outputs: Iterable[int], seed: int) -> dict[str, Any]:
    """The cross-check's verdict: ok, missing (not installed) or rejected (disagrees or fails)."""
    reason = contender.missing()
    if reason is not None:
        return {"status": "missing", "detail": reason}
    worst: dict[str, float] = {}
    try:
        for p in sorted(outputs):
            for name, error in check(contender, p, seed).items():
                worst[name] = max(worst.get(name, 0.0), error)
    except Exception as error:
        return {"status": "rejected", "detail": _describe(error)}
    largest = max(worst.values())
    verdict = {"status": "ok" if largest <= CHECK_RTOL else "rejected", "errors": worst}
    if largest > CHECK_RTOL:
        name = max(worst, key=worst.get)
        verdict["detail"] = f"{name} differs from gpunet's by {largest:.1e} (relative, float64)"
    return verdict


def environment(device: str) -> dict[str, Any]:
    """Date, machine, versions, BLAS libraries and their threads, as the run found them."""
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "bench device": device,
        "cpu": backend.cpu_name(),
        "cpu cores": os.cpu_count(),
    }
    report.update(backend.info())
    for package in ("torch", "jax", "jaxlib", "scikit-learn", "threadpoolctl", "matplotlib"):
        try:
            report[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            report[package] = "not installed"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        report["torch threads"] = torch.get_num_threads()
        blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        report["torch blas"] = blas.group(1) if blas else "unknown"
    if "jax" in sys.modules:
        report["jax devices"] = [str(d) for d in sys.modules["jax"].devices()]
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        report["blas"] = "unknown (threadpoolctl is not installed)"
    else:
        report["blas"] = [
            {k: pool.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                       "architecture", "filepath")}
            for pool in threadpool_info()
        ]
    return report


# --- output ----------------------------------------------------------------------------------


def summarize(report: Report) -> list[dict[str, Any]]:
    """One row per result: ms (median, min, max), samples/s, GFLOP/s, floor, and ratios.

    ``x floor`` is the median time over the floor's; ``x gpunet`` is the median
    time over gpunet's on the same config and step (above 1: gpunet is faster).
    """
    reference = {(r.config, r.step): statistics.median(r.seconds)
                 for r in report.results if r.contender == report.reference() and r.seconds}
    rows = []
    for result in report.results:
        row: dict[str, Any] = {**dataclasses.asdict(result.config), "contender": result.contender,
                               "step": result.step, "flops": gradient_flops(result.config),
                               "fewest_bytes": fewest_bytes(result.config)}
        floor = floor_seconds(result.config, report.ceilings)
        row["floor_ms"] = 1e3 * floor
        if not result.seconds:
            row["error"] = result.error or "no timed repeats"
            rows.append(row)
            continue
        median = statistics.median(result.seconds)
        row.update(
            ms_median=1e3 * median, ms_min=1e3 * min(result.seconds),
            ms_max=1e3 * max(result.seconds), ms_all=[1e3 * s for s in result.seconds],
            ms_first=None if result.first is None else 1e3 * result.first,
            samples_per_s=result.config.m / median,
            gflops=gradient_flops(result.config) / median / 1e9,
            x_floor=median / floor,
        )
        base = reference.get((result.config, result.step))
        row["x_gpunet"] = median / base if base else None
        if result.error:
            row["error"] = result.error
        rows.append(row)
    return rows


COLUMNS = ("config", "contender", "step", "ms median (min–max)", "samples/s", "GFLOP/s",
           "floor ms", "× floor", "× gpunet")


def table_rows(report: Report) -> list[tuple[str, ...]]:
    """The summary as text cells in the order of COLUMNS."""
    cells = []
    for row in summarize(report):
        config = Config(row["m"], row["d"], row["n"], row["p"], row["dtype"]).label
        head = (config, row["contender"], row["step"])
        if "ms_median" not in row:
            cells.append((*head, row["error"], "", "", _ms(row["floor_ms"]), "", ""))
            continue
        ratio = "" if row["x_gpunet"] is None else f"{row['x_gpunet']:.2f}"
        cells.append((
            *head, f"{_ms(row['ms_median'])} ({_ms(row['ms_min'])}–{_ms(row['ms_max'])})",
            _si(row["samples_per_s"]), f"{row['gflops']:.3g}", _ms(row["floor_ms"]),
            f"{row['x_floor']:.1f}", ratio,
        ))
    return cells


def _ms(value: float) -> str:
    """Milliseconds to three significant figures, without an exponent."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _si(value: float) -> str:
    """A count with a k, M or G suffix, three significant figures: 1.97M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def ceiling_lines(report: Report) -> list[str]:
    c = report.ceilings
    gemm = ", ".join(f"{k} {v / 1e9:.4g} GFLOP/s" for k, v in c.gemm.items())
    best = f"the best of {c.measurements} measurements in the run"
    return [f"GEMM rate: {gemm} ({c.method['gemm']}; {best})",
            f"copy bandwidth: {c.bandwidth / 1e9:.4g} GB/s ({c.method['bandwidth']}; {best})"]


def check_lines(report: Report) -> list[str]:
    lines = []
    for name, verdict in report.checks.items():
        if verdict["status"] == "ok":
            worst = max(verdict["errors"].values())
            lines.append(f"{name}: agrees with gpunet (largest relative error {worst:.1e})")
        else:
            lines.append(f"{name}: {verdict['status']}, not timed: {verdict.get('detail', '')}")
    return lines


def machine_line(report: Report) -> str:
    env = report.environment
    blas = env.get("blas")
    if isinstance(blas, list):
        blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['num_threads']} threads, "
                         f"{b['architecture']}, {Path(b['filepath']).name})"
                         for b in blas if b["user_api"] == "blas")
    where = env.get("device") if report.ceilings.device == "gpu" else env.get("cpu")
    return (f"{where}, {env.get('cpu cores')} cores; BLAS: {blas}; PyTorch: "
            f"{env.get('torch blas', 'n/a')}, {env.get('torch threads', 'n/a')} threads")


def format_table(report: Report) -> str:
    """The results as a fixed-width text table, with the ceilings and the checks above it."""
    rows = [COLUMNS, *table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [*ceiling_lines(report), *check_lines(report), machine_line(report), ""]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def format_markdown(report: Report) -> str:
    """The results in markdown for bench/RESULTS.md: the machine, the command, the ceilings
    and checks, a side-by-side table per step, then every figure in one table."""
    env = report.environment
    lines = [f"Measured {env.get('date')} on {machine_line(report)}.", ""]
    if report.command:
        lines += [f"Command: `{report.command}`", ""]
    lines += [f"- {line}" for line in ceiling_lines(report) + check_lines(report)]
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("numpy", "torch", "jax", "scikit-learn"))
    lines += [f"- versions: gpunet {env.get('gpunet')}, {versions}",
              f"- FLOPs counted: the GEMMs of the two-GEMM gradient (2mdn + 2mnp + 2mnp "
              f"+ 2mnd, and 2mnp more when p > 1); × gpunet = time / {report.reference()}'s time"]
    for step in report.settings.steps:
        lines += ["", *side_by_side(report, step)]
    lines += ["", "All figures:", ""]
    for row in [COLUMNS, tuple("---" for _ in COLUMNS), *table_rows(report)]:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def side_by_side(report: Report, step: str) -> list[str]:
    """Markdown lines: one step, a row per config, a column per contender; each cell the
    median ms and, in parentheses, that time over gpunet's."""
    rows = [r for r in summarize(report) if r["step"] == step]
    names = list(dict.fromkeys(r["contender"] for r in rows))
    cells: dict[str, dict[str, str]] = {}
    for row in rows:
        label = Config(*(row[k] for k in CONFIG_KEYS)).label
        text = "failed" if "ms_median" not in row else _ms(row["ms_median"])
        if row.get("x_gpunet") is not None:
            text += f" ({row['x_gpunet']:.2f})"
        cells.setdefault(label, {})[row["contender"]] = text
    lines = [f"{step} step, median ms (time / {report.reference()}'s):", "",
             "| config | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += ["| " + " | ".join([label, *(by.get(name, "") for name in names)]) + " |"
              for label, by in cells.items()]
    return lines


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON data: environment, ceilings, checks, settings and rows."""
    return {
        "command": report.command,
        "environment": report.environment,
        "ceilings": dataclasses.asdict(report.ceilings),
        "checks": report.checks,
        "settings": dataclasses.asdict(report.settings),
        "flops_counted": "2mdn + 2mnp + 2mnp + 2mnd (+ 2mnp when p > 1): GEMMs of the gradient",
        "results": summarize(report),
    }


def report_from_json(data: dict[str, Any]) -> Report:
    """The Report that :func:`to_json` wrote (timings from ``ms_all``), to render it again."""
    results = []
    for row in data["results"]:
        first = row.get("ms_first")
        results.append(Result(
            Config(*(row[k] for k in CONFIG_KEYS)), row["contender"], row["step"],
            [ms / 1e3 for ms in row.get("ms_all", [])], None if first is None else first / 1e3,
            row.get("error"),
        ))
    settings = {**data["settings"], "steps": tuple(data["settings"]["steps"])}
    return Report(data["environment"], Ceilings(**data["ceilings"]), data["checks"], results,
                  Settings(**settings), data["command"])


def plot(report: Report, path: str | Path) -> bool:
    """Samples/s of the gradient step against m, one line per contender, one panel per
    (d, n, p, dtype); False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in summarize(report) if r["step"] == "gradient" and "ms_median" in r]
    panels = sorted({(r["d"], r["n"], r["p"], r["dtype"]) for r in rows})
    columns = min(4, max(1, len(panels)))
    figure, axes = plt.subplots(math.ceil(len(panels) / columns), columns, squeeze=False,
                                figsize=(4 * columns, 3.2 * math.ceil(len(panels) / columns)))
    for axis, panel in zip(axes.flat, panels, strict=False):
        for name in dict.fromkeys(r["contender"] for r in rows):
            points = sorted((r["m"], r["samples_per_s"]) for r in rows if r["contender"] == name
                            and (r["d"], r["n"], r["p"], r["dtype"]) == panel)
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=name)
        axis.set(xscale="log", yscale="log", xlabel="batch size m", ylabel="samples/s",
                 title="d={} n={} p={} {}".format(*panel))
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(f"gradient step, {report.environment.get('device', '')}", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# --- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gpunet bench`` (and of the bench/ scripts built on it)."""
    parser.add_argument("--quick", action="store_true",
                        help="a short run: the gradient step on three float32 shapes, 3 repeats")
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML grid (see load_grid)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                        help="where to race (default: the GPU if CuPy sees one)")
    parser.add_argument("--contenders", metavar="NAMES",
                        help="comma-separated subset, e.g. gpunet-numpy,jax.jit")
    parser.add_argument("--repeats", type=int, help="timed repeats per contender and step")
    parser.add_argument("--warmup", type=int, help="warm-up steps before timing")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a markdown table")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of samples/s against m")


def add_command(subparsers: Any) -> None:
    """Add ``gpunet bench`` to the ``gpunet`` command's subparsers."""
    parser = subparsers.add_parser(
        "bench", help="time the gradient step against PyTorch, JAX and scikit-learn",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(run=cmd_bench)


def settings_from(args: argparse.Namespace, overrides: dict[str, Any]) -> Settings:
    base = dataclasses.asdict(QUICK if args.quick else Settings())
    base.update(overrides)
    given = {k: getattr(args, k) for k in ("warmup", "repeats")}
    base.update({k: v for k, v in given.items() if v is not None})
    return Settings(**base)


def select_contenders(device: str, names: str | None) -> list[Contender]:
    everyone = all_contenders(device)
    if not names:
        return everyone
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {c.name: c for c in everyone}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; on {device}: {sorted(known)}")
    return [known[name] for name in wanted]


def cmd_bench(args: argparse.Namespace, configs: Sequence[Config] | None = None) -> int:
    """Run the benchmark the options describe; print the table and write the files asked for."""
    device = args.device if args.device != "auto" else (
        "gpu" if backend.gpu_available() else "cpu")
    if device == "gpu" and not backend.gpu_available():
        raise RuntimeError(f"--device gpu: CuPy sees no GPU ({backend.CUPY_INSTALL_HINT})")
    overrides: dict[str, Any] = {}
    if configs is None and args.config:
        configs, overrides = load_grid(args.config)
    if configs is None:
        configs = quick_grid() if args.quick else default_grid(device)
    settings = settings_from(args, overrides)
    command = command_line(sys.argv)
    start = time.perf_counter()

    def progress(item: Any) -> None:
        if isinstance(item, Report):
            if args.json:  # rewritten after each config, so a run cut short leaves its results
                write_json(item, args.json)
        else:
            print(item, file=sys.stderr, flush=True)

    report = run_benchmark(configs, device=device, contenders=select_contenders(
        device, args.contenders), settings=settings, progress=progress,
        command=command)
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(report), encoding="utf-8")
    if args.plot and not plot(report, args.plot):
        print("matplotlib is not installed (pip install gpunet[plot]): no plot written",
              file=sys.stderr)
    print(f"benchmark took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def command_line(argv: Sequence[str]) -> str:
    """The command that was run, as one would type it again."""
    program = Path(argv[0])
    if program.name == "gpunet":
        head = "gpunet"
    elif program.parent.name == "gpunet":  # python -m gpunet, python -m gpunet.bench
        head = "python -m gpunet" + ("" if program.stem == "__main__" else f".{program.stem}")
    else:
        head = f"python {argv[0]}"
    return " ".join([head, *map(shlex.quote, argv[1:])])


def write_json(report: Report, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(report), indent=1, default=str) + "\n",
                          encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpunet.bench",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
