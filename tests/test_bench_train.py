"""bench/train_diabetes.py runs, and writes only its own section of RESULTS.md."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
from conftest import ROOT

pytest.importorskip("sklearn", reason="the benchmark compares with scikit-learn's MLPRegressor")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_diabetes", ROOT / "bench" /
                                                  "train_diabetes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_run_reports_both_models(bench):
    args = argparse.Namespace(hidden=4, solver="sgd", batch_size=64, lr=0.01, alpha=1e-4,
                              epochs=2, repeats=1, command="python bench/train_diabetes.py")
    section, _ = bench.report(args, bench.run(args))
    assert section.startswith(bench.HEADING)
    assert "| GPUNetRegressor |" in section and "| MLPRegressor(activation='logistic') |" in section


def test_writes_its_own_section_only(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Throughput\n\nkeep me\n")
    bench.write_section(path, f"{bench.HEADING}\n\nfirst\n")
    bench.write_section(path, f"{bench.HEADING}\n\nsecond\n")
    text = path.read_text()
    assert "## Throughput\n\nkeep me\n" in text and "first" not in text
    assert text.count(bench.HEADING) == 1 and text.endswith("second\n")
