"""The benchmark engine on tiny configs: the floor's arithmetic, the cross-check, the outputs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from gpunet import bench, cli
from gpunet.contenders import Gpunet, all_contenders

TINY = [bench.Config(256, 3, 8, 1, "float32"), bench.Config(512, 3, 8, 1, "float64")]
FAST = bench.Settings(warmup=1, repeats=2, settle=0.0)
CEILINGS = bench.Ceilings("cpu", {"float32": 1e10, "float64": 5e9}, 1e10,
                          {"gemm": "made up for a test", "bandwidth": "made up for a test"})


def ceilings(gemm: float, bandwidth: float) -> bench.Ceilings:
    return bench.Ceilings("cpu", {"float32": gemm, "float64": gemm}, bandwidth, {})


def test_gradient_flops_counts_the_gemms():
    # m=2, d=3, n=4, p=1: X W1ᵀ 2·2·3·4 = 48, A W2ᵀ 2·2·4·1 = 16, Rᵀ A 16, Δᵀ X 48.
    assert bench.gradient_flops(bench.Config(2, 3, 4, 1)) == 128
    # p=2 doubles the two p terms (32 each) and adds R W2, 2·2·4·2 = 32.
    assert bench.gradient_flops(bench.Config(2, 3, 4, 2)) == 48 + 32 + 32 + 32 + 48


def test_fewest_bytes_reads_the_data_once_and_the_parameters_twice():
    # float64, m=10, d=3, n=4, p=1: data 10·(3+1) = 40 items; parameters
    # 12 + 4 + 4 + 1 = 21 items, read and their gradients written: 42; 82 · 8 bytes.
    assert bench.fewest_bytes(bench.Config(10, 3, 4, 1, "float64")) == 82 * 8


def test_floor_is_the_larger_of_compute_and_memory():
    config = bench.Config(2, 3, 4, 1, "float32")  # 128 FLOPs, 4 · (8 + 2 · 21) = 200 bytes
    assert bench.floor_seconds(config, ceilings(gemm=128.0, bandwidth=1e9)) == 1.0
    assert bench.floor_seconds(config, ceilings(gemm=1e9, bandwidth=100.0)) == 2.0


def test_input_sets_exceed_twice_the_cache_within_bounds():
    config = bench.Config(1000, 24, 8, 1, "float64")  # one set: 1000 · 25 · 8 = 200 kB
    assert bench.input_sets(config, cache_bytes=100_000) == 2  # one would do: at least two
    assert bench.input_sets(config, cache_bytes=250_000) == 3  # 2 · 250 kB / 200 kB → 3
    assert bench.input_sets(config, cache_bytes=10**9) == bench.MAX_INPUT_SETS


@pytest.mark.parametrize("contender", all_contenders("cpu"), ids=lambda c: c.name)
@pytest.mark.parametrize("outputs", [1, 3])
def test_installed_contenders_agree_with_gpunet(contender, outputs):
    reason = contender.missing()
    if reason is not None:
        pytest.skip(f"{contender.name}: {reason}")
    errors = bench.check(contender, outputs)
    assert max(errors.values()) <= bench.CHECK_RTOL, errors


class HalfW1(Gpunet):
    """gpunet with a bug planted: half the W1 gradient."""

    def __init__(self):
        super().__init__("numpy")
        self.name = "half-w1"

    def to_host(self, result):
        loss, grads = super().to_host(result)
        grads.w1 *= 0.5
        return loss, grads


def test_a_contender_that_disagrees_is_reported_and_not_timed():
    report = bench.run_benchmark(TINY[:1], contenders=[Gpunet("numpy"), HalfW1()],
                                 settings=FAST, ceilings=CEILINGS)
    verdict = report.checks["half-w1"]
    assert verdict["status"] == "rejected"
    assert "w1" in verdict["detail"]
    assert verdict["errors"]["w1"] == pytest.approx(0.5)
    assert {r.contender for r in report.results} == {"gpunet-numpy"}
    assert "half-w1: rejected, not timed" in bench.format_table(report)


def test_race_times_every_installed_fast_contender():
    names = [c.name for c in all_contenders("cpu")
             if c.missing() is None and c.name != "torch.compile"]  # compiling takes seconds
    contenders = [c for c in all_contenders("cpu") if c.name in names]
    report = bench.run_benchmark(TINY, contenders=contenders, settings=FAST, ceilings=CEILINGS)
    rows = bench.summarize(report)
    assert len(rows) == len(TINY) * len(names) * len(bench.STEPS)
    for row in rows:
        assert "error" not in row, row
        assert len(row["ms_all"]) == FAST.repeats
        assert row["ms_min"] <= row["ms_median"] <= row["ms_max"]
        assert row["samples_per_s"] == pytest.approx(row["m"] / (row["ms_median"] / 1e3))
        assert row["x_floor"] > 0
        if row["contender"] == "gpunet-numpy":
            assert row["x_gpunet"] == 1.0


def test_a_failing_step_is_reported_in_the_table():
    class Broken(Gpunet):
        def train_step(self, data):
            raise MemoryError("out of memory")

    broken = Broken("numpy")
    report = bench.run_benchmark(TINY[:1], contenders=[broken], settings=FAST, ceilings=CEILINGS)
    steps = {r.step: r for r in report.results}
    assert steps["gradient"].error is None and len(steps["gradient"].seconds) == 2
    assert steps["train"].error == "MemoryError: out of memory"
    assert "MemoryError: out of memory" in bench.format_markdown(report)


def test_each_timed_step_follows_settle_seconds_of_untimed_steps():
    started: list[float] = []

    class Counting(Gpunet):
        def gradient(self, data):
            started.append(time.perf_counter())
            return super().gradient(data)

    counting = Counting("numpy")
    settings = bench.Settings(warmup=1, repeats=2, settle=0.05, steps=("gradient",))
    report = bench.run_benchmark(TINY[:1], contenders=[counting], settings=settings,
                                 ceilings=CEILINGS)
    (result,) = report.results
    assert len(result.seconds) == 2
    # The check, the warm-up step, then per timed step: untimed steps for 0.05 s, itself.
    rounds = started[2:]
    assert rounds[-1] - rounds[0] >= 2 * 0.05
    assert len(rounds) > 2 * 2


@pytest.mark.parametrize("settle", [-1.0, float("nan"), float("inf")])
def test_settle_must_be_a_time(settle):
    with pytest.raises(ValueError, match="settle must be ≥ 0 seconds and finite"):
        bench.Settings(settle=settle)


def test_settle_defaults_by_device():
    assert bench.Settings().settle_seconds("cpu") == bench.SETTLE_SECONDS["cpu"] > 0
    assert bench.Settings(settle=0.0).settle_seconds("cpu") == 0.0


def test_load_grid_expands_lists(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('repeats = 4\n[[configs]]\nm = [64, 128]\nd = 2\nn = 4\n'
                    'dtype = ["float32", "float64"]\n')
    configs, settings = bench.load_grid(path)
    assert len(configs) == 4 and settings == {"repeats": 4}
    assert bench.Config(128, 2, 4, 1, "float64") in configs
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"configs": [{"m": 4, "d": 1, "n": 2, "hidden": 3}]}))
    with pytest.raises(ValueError, match="unknown config keys"):
        bench.load_grid(bad)


def test_default_grid_adds_large_batches_on_a_gpu():
    cpu, gpu = bench.default_grid("cpu"), bench.default_grid("gpu")
    assert len(cpu) == len(bench.DEFAULT_SHAPES) * 2
    assert {c.m for c in gpu} >= set(bench.GPU_SAMPLES)
    assert all(c.d <= 64 for c in gpu if c.m in bench.GPU_SAMPLES)


def test_ceilings_are_measured_rates():
    ceilings = bench.measure_ceilings("cpu", repeats=1)
    assert set(ceilings.gemm) == {"float32", "float64"}
    assert all(0 < rate < math.inf for rate in [*ceilings.gemm.values(), ceilings.bandwidth])
    assert "2048×2048" in ceilings.method["gemm"]


def test_the_best_of_two_ceiling_measurements_is_kept():
    quiet = bench.Ceilings("cpu", {"float32": 3.0, "float64": 1.0}, 5.0, {})
    busy = bench.Ceilings("cpu", {"float32": 2.0, "float64": 2.0}, 4.0, {})
    best = quiet.best(busy)
    assert best.gemm == {"float32": 3.0, "float64": 2.0}
    assert (best.bandwidth, best.measurements) == (5.0, 2)


def test_gpunet_bench_writes_json_and_markdown(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_ceilings", lambda device, repeats=5: CEILINGS)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"configs": [{"m": 128, "d": 2, "n": 4}], "repeats": 2,
                                "steps": ["gradient", "train"]}))
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = cli.main(["bench", "--device", "cpu", "--quick", "--config", str(grid),
                     "--contenders", "gpunet-numpy", "--json", str(out_json),
                     "--markdown", str(out_md)])
    assert code == 0
    assert "gpunet-numpy" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["ceilings"]["gemm"] == CEILINGS.gemm
    assert data["checks"]["gpunet-numpy"]["status"] == "ok"
    assert [r["step"] for r in data["results"]] == list(bench.STEPS)
    assert data["environment"]["cpu cores"] >= 1
    markdown = out_md.read_text()
    assert "| (128, 2, 4, 1) float32 | gpunet-numpy | gradient |" in markdown
    assert "GEMM rate" in markdown


def test_json_round_trip_renders_the_same_markdown():
    report = bench.run_benchmark(TINY, contenders=[Gpunet("numpy")], settings=FAST,
                                 ceilings=CEILINGS, command="gpunet bench --config tiny.toml")
    data = json.loads(json.dumps(bench.to_json(report)))
    markdown = bench.format_markdown(report)
    assert bench.format_markdown(bench.report_from_json(data)) == markdown
    assert "gradient step, median ms (time / gpunet-numpy's):" in markdown
    assert "| (256, 3, 8, 1) float32 | " in markdown and "(1.00) |" in markdown


def test_plot_writes_a_png_or_says_matplotlib_is_missing(tmp_path):
    report = bench.run_benchmark(TINY[:1], contenders=[Gpunet("numpy")], settings=FAST,
                                 ceilings=CEILINGS)
    path = tmp_path / "plot.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert bench.plot(report, path) is False and not path.exists()
    else:
        assert bench.plot(report, path) is True
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_command_line_is_what_one_would_type():
    assert bench.command_line(["/usr/bin/gpunet", "bench", "--quick"]) == "gpunet bench --quick"
    module = "/src/gpunet/__main__.py"
    assert bench.command_line([module, "bench", "--json", "a b.json"]) == (
        "python -m gpunet bench --json 'a b.json'")
    assert bench.command_line(["bench/throughput.py"]) == "python bench/throughput.py"


def test_unknown_contender_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown contenders"):
        bench.select_contenders("cpu", "gpunet-numpy,tensorflow")


def test_fresh_inputs_differ_between_sets():
    (x1, y1), (x2, _) = bench.make_inputs(TINY[0], 2, seed=0)
    assert x1.dtype == np.float32 and x1.shape == (256, 3) and y1.shape == (256, 1)
    assert not np.array_equal(x1, x2)


@pytest.fixture
def gpu_stand_in(host_cupy):
    """The CuPy stand-in with what the GPU benchmark asks of CuPy: events, device facts."""
    import types

    class Event:
        def record(self):
            self.at = time.perf_counter()

        def synchronize(self):
            pass

    runtime = types.SimpleNamespace(
        getDeviceProperties=lambda device: {"l2CacheSize": 2**20, "name": b"stand-in"},
        memGetInfo=lambda: (2**30, 2**31), runtimeGetVersion=lambda: 13000,
        driverGetVersion=lambda: 13000)
    host_cupy.cuda = types.SimpleNamespace(
        is_available=lambda: True, Event=Event, runtime=runtime,
        get_elapsed_time=lambda start, stop: (stop.at - start.at) * 1e3,
        Device=lambda: types.SimpleNamespace(id=0, compute_capability="90"))
    host_cupy.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    return host_cupy


def test_the_gpu_benchmark_runs_through_on_the_cupy_stand_in(gpu_stand_in):
    """Python-level faults of the GPU path show here, not in a GPU session's short time."""
    ceilings = bench.Ceilings("gpu", {"float32": 1e12, "float64": 1e11, "tf32": 2e12}, 1e12,
                              CEILINGS.method)
    gpu_contenders = [c for c in all_contenders("gpu") if c.name == "gpunet-cupy"]
    report = bench.run_benchmark(TINY, device="gpu", contenders=gpu_contenders,
                                 settings=bench.Settings(warmup=1, repeats=2), ceilings=ceilings)
    assert report.checks["gpunet-cupy"]["status"] == "ok"
    rows = bench.summarize(report)
    assert len(rows) == len(TINY) * len(bench.STEPS)
    assert all("error" not in row and len(row["ms_all"]) == 2 for row in rows), rows
    assert "| (256, 3, 8, 1) float32 | gpunet-cupy | gradient |" in bench.format_markdown(report)
    assert bench.environment("gpu")["device"] == "stand-in (cuda:0)"
    assert bench.last_level_cache_bytes("gpu") == 2**20


def test_gpunet_bench_on_the_gpu_stand_in_writes_its_files(gpu_stand_in, tmp_path, monkeypatch):
    ceilings = bench.Ceilings("gpu", {"float32": 1e12, "float64": 1e11}, 1e12, CEILINGS.method)
    monkeypatch.setattr(bench, "measure_ceilings", lambda device, repeats=5: ceilings)
    grid = tmp_path / "grid.toml"
    grid.write_text('repeats = 2\n[[configs]]\nm = 128\nd = 2\nn = 4\n'
                    'dtype = ["float32", "float64"]\n')
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = cli.main(["bench", "--device", "gpu", "--config", str(grid),
                     "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    data = json.loads(out_json.read_text())
    assert data["checks"]["gpunet-cupy"]["status"] == "ok"
    timed = {(r["contender"], r["step"]) for r in data["results"] if r.get("ms_all")}
    assert {("gpunet-cupy", step) for step in bench.STEPS} <= timed
    assert "| (128, 2, 4, 1) float64 | gpunet-cupy | train |" in out_md.read_text()


def test_the_gpu_check_grid_loads():
    configs, settings = bench.load_grid(Path(__file__).parent.parent / "bench" / "gpu.toml")
    assert settings["repeats"] >= 3 and {c.dtype for c in configs} == {"float32", "float64"}
    assert max(c.m for c in configs) == 2**23


def test_gpu_ceilings_are_measured_on_the_stand_in(gpu_stand_in, monkeypatch):
    monkeypatch.setitem(bench.CEILING_SIZES, "gpu", (64, 2**20))
    ceilings = bench.measure_ceilings("gpu", repeats=2)
    assert ceilings.device == "gpu" and set(ceilings.gemm) >= {"float32", "float64"}
    assert all(rate > 0 for rate in ceilings.gemm.values()) and ceilings.bandwidth > 0
