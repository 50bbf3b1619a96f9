"""The fused gradient: its block partition and fixed-order sums modelled on the host,
its CUDA source compiled for sm_90 by nvcc, and (GPU tests) the kernels themselves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_grad import random_problem, relative_error

import gpunet
from gpunet import Params, fused

FUSED_HARNESS = Path(__file__).resolve().parent / "fused_harness.cu"
# (m, d, n, p): fewer samples than a tile, a partial last tile, several blocks, p > 1.
SHAPES = [(50, 3, 7, 1), (1000, 8, 33, 1), (4099, 5, 16, 3), (300, 16, 4, 4)]


@pytest.mark.parametrize("m", [1, 127, 128, 129, 5000, 33_792, 33_793, 10**6])
@pytest.mark.parametrize("max_blocks", [1, 7, 264])
def test_block_partition_covers_every_sample_once_in_whole_tiles(m, max_blocks):
    blocks, per_block = fused.block_partition(m, max_blocks)
    assert 1 <= blocks <= max_blocks
    assert per_block % fused.TILE == 0
    assert (blocks - 1) * per_block < m <= blocks * per_block  # no empty block, none left over


@pytest.mark.parametrize("m,d,n,p", SHAPES)
def test_host_model_equals_the_two_gemm_gradient(m, d, n, p):
    params, X, Y = random_problem(m, d, n, p, seed=m)
    loss, grads = gpunet.loss_and_grad(params, X, Y, path="fused")
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y, path="gemm")
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        assert got.shape == want.shape
        assert relative_error(got, want) < 1e-12


def test_host_model_in_float32():
    params, X, Y = random_problem(3000, 8, 32, 1, seed=21)
    params, X = params.astype(np.float32), X.astype(np.float32)
    loss, grads = gpunet.loss_and_grad(params, X, Y, path="fused")
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y, path="gemm")
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(got, want) < 1e-5


def test_partials_are_summed_per_block_then_in_block_order():
    # The model's totals are Σ_b (Σ_{tiles t of b} partial_t), b ascending: rebuild that
    # from single tiles and compare bit for bit; a different grouping rounds differently.
    params, X, Y = random_problem(1500, 4, 8, 2, seed=22)
    params, X, Y = params.astype(np.float32), X.astype(np.float32), Y.astype(np.float32)
    residual = fused._tile_terms(params, X, Y)[0]
    blocks, per_block = fused.block_partition(len(X), 3)
    assert (blocks, per_block) == (3, 512)
    tiles = [fused._tile_partial(params, X[s : s + 128], residual[s : s + 128])
             for s in range(0, len(X), 128)]
    per_block_tiles = per_block // 128
    expected = np.zeros_like(tiles[0])
    for b in range(blocks):
        expected += sum(tiles[b * per_block_tiles : (b + 1) * per_block_tiles],
                        np.zeros_like(tiles[0]))
    np.testing.assert_array_equal(fused.host_model(params, X, Y, 3), expected)
    flat = np.zeros_like(tiles[0])
    for tile in tiles:
        flat += tile
    assert not np.array_equal(flat, expected), "the test should tell the two orders apart"


def test_out_and_loss_layout():
    params, X, Y = random_problem(200, 2, 3, 2, seed=23)
    out = params.zeros_like()
    loss, grads = gpunet.loss_and_grad(params, X, Y, path="fused", out=out)
    assert grads is out
    assert float(loss) == pytest.approx(float(gpunet.loss(params, X, Y)), rel=1e-12)


def test_auto_takes_the_two_gemm_path():
    params, X, Y = random_problem(700, 3, 8, 1, seed=24)
    auto = gpunet.loss_and_grad(params, X, Y)
    gemm = gpunet.loss_and_grad(params, X, Y, path="gemm")
    assert float(auto[0]) == float(gemm[0])
    for a, g in zip(auto[1], gemm[1], strict=True):
        np.testing.assert_array_equal(a, g)


def test_unsupported_shapes_and_paths_say_what_to_do():
    params, X, Y = random_problem(10, 17, 4, 1)
    with pytest.raises(ValueError, match=r"up to 16 features.*use path='gemm'"):
        gpunet.loss_and_grad(params, X, Y, path="fused")
    with pytest.raises(ValueError, match="path must be one of"):
        gpunet.loss_and_grad(params, X, Y, path="fast")


def test_source_limits_match_the_python_constants():
    source = (gpunet.kernels.kernel_dir() / fused.SOURCE).read_text()
    defines = dict(re.findall(r"#define GPUNET_FUSED_(\w+) (\d+)", source))
    assert int(defines["MAX_FEATURES"]) == fused.MAX_FEATURES
    assert int(defines["MAX_OUTPUTS"]) == fused.MAX_OUTPUTS


def test_cuda_source_is_self_contained():
    source = fused.cuda_source()
    assert "#include" not in source.replace("#include <math.h>", "")
    assert gpunet.kernels.kernel_source() in source


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_fused_kernels_compile_for_sm90_without_spills(tmp_path):
    # The text NVRTC is given, with no include path: the splice must be complete.
    unit = tmp_path / "fused.cu"
    unit.write_text(fused.cuda_source() + FUSED_HARNESS.read_text())
    command = ["nvcc", "-arch=sm_90", "-cubin", "-Werror", "all-warnings", "-Xptxas", "-v",
               str(unit), "-o", str(tmp_path / "fused.cubin")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"fused_grad.cu does not compile for sm_90:\n{result.stderr}"
    for name in fused.KERNELS:
        assert result.stderr.count(f"{len(name)}{name}I") >= 2, f"{name} not compiled twice"
    spills = re.findall(r"(\d+) bytes spill stores", result.stderr)
    assert spills and all(s == "0" for s in spills), result.stderr


# On a GPU: the kernels against the two-GEMM path, and the same bits twice.

# float32: the kernel sums ~800 samples a thread in order, cuBLAS in its own order; with
# cancellation in Σ R (b2) the two can differ by more than float32's 6e-8 a sum.
@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-3), (np.float64, 1e-11)])
@pytest.mark.parametrize("m,d,n,p", [*SHAPES, (200_003, 8, 256, 1)])
def test_kernels_equal_the_two_gemm_gradient_on_the_gpu(m, d, n, p, dtype, rtol):
    params, X, Y = random_problem(m, d, n, p, seed=m, dtype=dtype)
    params, X, Y = params.to("cupy"), gpunet.to_backend(X, "cupy"), gpunet.to_backend(Y, "cupy")
    loss, grads = gpunet.loss_and_grad(params, X, Y, path="fused")
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y, path="gemm")
    assert float(loss) == pytest.approx(float(want_loss), rel=rtol)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(gpunet.to_numpy(got), gpunet.to_numpy(want)) < rtol
    again = gpunet.loss_and_grad(params, X, Y, path="fused")
    assert float(again[0]) == float(loss)
    for first, second in zip(grads, again[1], strict=True):
        np.testing.assert_array_equal(gpunet.to_numpy(first), gpunet.to_numpy(second))


@pytest.mark.gpu
def test_fused_memory_does_not_hold_the_hidden_layer():
    import cupy

    m, d, n = 2_000_000, 8, 256
    params = Params.init(d, n, dtype=np.float32, seed=0, backend="cupy")
    X = cupy.random.standard_normal((m, d), dtype=np.float32)
    y = cupy.random.standard_normal((m, 1), dtype=np.float32)
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.total_bytes()
    gpunet.loss_and_grad(params, X, y, path="fused", check_finite=False)
    assert pool.total_bytes() - before < m * n * 4 / 8  # R and the partials, not A (2 GB)
