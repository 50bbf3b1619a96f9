"""The wheel carries the CUDA sources, and an installed gpunet finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

pytest.importorskip("hatchling", reason="building the wheel needs hatchling (pip install .[test])")

HEADER = "gpunet/cuda_sources/gpunet_math.cuh"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "-q", "-w", str(out), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"building the wheel failed:\n{result.stderr}"
    (path,) = out.glob("gpunet-*.whl")
    return path


def test_wheel_holds_the_kernel_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert HEADER in names
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read(HEADER).decode()
    assert shipped == (ROOT / "kernels" / "gpunet_math.cuh").read_text()
    assert "gpunet/grad.py" in names and "gpunet/kernels.py" in names
    assert "gpunet/cuda_sources/fused_grad.cu" in names


def test_installed_package_finds_its_kernels_and_computes(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    script = (
        "import numpy as np, gpunet\n"
        "from gpunet.kernels import kernel_dir\n"
        "p = gpunet.Params.init(1, 8, seed=0, backend='numpy')\n"
        "X = np.linspace(-2, 2, 50)[:, None]\n"
        "loss, grads = gpunet.loss_and_grad(p, X, np.sin(X[:, 0]))\n"
        "print(gpunet.__file__); print(kernel_dir()); print(float(loss))\n"
    )
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", script], cwd=away, env=env,
                            capture_output=True, text=True, check=True)
    module, kernels, loss = result.stdout.split("\n")[:3]
    assert module.startswith(str(site)), module
    assert kernels == str(site / "gpunet" / "cuda_sources")
    assert 0 < float(loss) < 10
