"""The gpunet command."""

from __future__ import annotations

import re
import subprocess
import sys

from gpunet.cli import main


def test_info_prints_backend_and_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^backend \(auto\)\s+(numpy|cupy)$", out, re.M)
    assert re.search(r"^numpy\s+\d", out, re.M) and re.search(r"^device\s+\S", out, re.M)


def test_demo_checks_gradients_and_the_loss_falls(capsys):
    assert main(["demo", "--backend", "numpy", "--samples", "300", "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"gradient check .* -> ok", out)
    losses = [float(v) for v in re.findall(r"^step +\d+ +loss ([\d.]+)$", out, re.M)]
    assert len(losses) == 11 and losses[-1] < 0.8 * losses[0]


def test_bad_arguments_give_one_line_and_a_non_zero_exit():
    result = subprocess.run([sys.executable, "-m", "gpunet", "demo", "--backend", "tpu"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gpunet demo: error: backend must be one of 'auto', 'numpy', 'cupy'; got 'tpu'"
    )
