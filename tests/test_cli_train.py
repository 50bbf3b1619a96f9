"""gpunet train, predict, evaluate, gradcheck: files in, results and checkpoints out."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpunet import checkpoint
from gpunet.cli import main
from gpunet.datasets import friedman1
from gpunet.progress import Progress
from gpunet.train import EpochReport

FAST = ["--epochs", "8", "--hidden", "8", "--quiet"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Friedman #1 as a CSV with a header, a text target column named 'target'."""
    folder = tmp_path_factory.mktemp("data")
    X, y = friedman1(400, n_features=5, seed=3)
    path = folder / "train.csv"
    header = "a,b,c,d,e,target"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")
    return path, X, y


def run(*argv):
    """The command as a user runs it: a separate process, its exit status and output."""
    return subprocess.run([sys.executable, "-m", "gpunet", *argv], capture_output=True, text=True)


def test_built_in_data_with_no_arguments_reports_both_sets(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gpunet", "train", "--epochs", "3"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "data: friedman1, 8000 training and 2000 validation samples" in out
    assert "data: diabetes, 354 training and 88 validation samples" in out
    assert len(re.findall(r"^validation  loss [\d.]+  R² -?[\d.]+$", out, re.M)) == 2
    assert re.search(r"^epoch +1  loss [\d.]+  val [\d.]+ +[\d,]+ samples/s$", out, re.M)


def test_train_evaluate_predict_on_a_csv(table, tmp_path, capsys):
    path, X, y = table
    model = tmp_path / "model.npz"
    assert main(["train", str(path), "--target", "target", "--checkpoint", str(model), *FAST]) == 0
    out = capsys.readouterr().out
    assert "5 features -> target" in out and f"checkpoint written to {model}" in out

    assert main(["evaluate", str(model), str(path)]) == 0
    report = capsys.readouterr().out
    r2 = float(re.search(r"^R² +(\S+)$", report, re.M).group(1))
    rmse = float(re.search(r"^RMSE +(\S+)$", report, re.M).group(1))

    features_only = tmp_path / "new.csv"  # columns in another order, no target
    np.savetxt(features_only, X[:, ::-1], delimiter=",", header="e,d,c,b,a", comments="")
    predictions = tmp_path / "p.csv"
    assert main(["predict", str(model), str(features_only), "--output", str(predictions)]) == 0
    predicted = np.loadtxt(predictions, delimiter=",", skiprows=1)
    assert predictions.read_text().startswith("target\n") and predicted.shape == (400,)
    assert np.sqrt(np.mean((predicted - y) ** 2)) == pytest.approx(rmse, rel=1e-5)
    assert 1 - ((predicted - y) ** 2).sum() / ((y - y.mean()) ** 2).sum() == pytest.approx(r2, 1e-5)


def test_npy_npz_and_parquet(table, tmp_path, capsys):
    _, X, y = table
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    np.savez(tmp_path / "d.npz", X=X, y=y)
    files = [tmp_path / "d.npy", tmp_path / "d.npz"]
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    columns = {name: X[:, i] for i, name in enumerate("abcde")} | {"target": y}
    parquet.write_table(pyarrow.table(columns), tmp_path / "d.parquet")
    files.append(tmp_path / "d.parquet")
    for file in files:
        assert main(["train", str(file), *FAST]) == 0, file
        assert "5 features" in capsys.readouterr().out


def test_resumed_run_equals_uninterrupted_run(table, tmp_path):
    path = str(table[0])
    settings = ["--batch-size", "32", "--no-early-stopping", *FAST[2:]]
    whole, part = tmp_path / "whole.npz", tmp_path / "part.npz"
    assert main(["train", path, "--epochs", "5", "--checkpoint", str(whole), *settings]) == 0
    assert main(["train", path, "--epochs", "3", "--checkpoint", str(part), *settings]) == 0
    assert main(["train", path, "--epochs", "2", "--resume", str(part), "--checkpoint",
                 str(part), "--quiet"]) == 0
    resumed, meta = checkpoint.load(part)
    uninterrupted, _ = checkpoint.load(whole)
    np.testing.assert_array_equal(resumed.flat, uninterrupted.flat)
    assert resumed.history == uninterrupted.history and meta["step"] == 5


def test_resume_refuses_other_settings_or_columns(table, tmp_path, capsys):
    path, X, y = table
    model = tmp_path / "m.npz"
    main(["train", str(path), "--checkpoint", str(model), *FAST])
    capsys.readouterr()
    assert main(["train", str(path), "--resume", str(model), "--hidden", "64"]) == 2
    assert capsys.readouterr().err == (
        "gpunet train: error: --hidden 64 differs from the checkpoint's 8; a resumed run keeps "
        "its checkpoint's settings: drop --hidden\n"
    )
    np.savez(tmp_path / "other.npz", X=X[:, :3], y=y)
    assert main(["train", str(tmp_path / "other.npz"), "--resume", str(model)]) == 2
    assert "not those the checkpoint was trained on" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "missing.csv"], "gpunet train: error: missing.csv: no such file"),
        (["train", "{bad}", "--target", "nope"], "has no column 'nope'; its columns are a, b"),
        (["train", "{text}"], "line 3, column 'b': 'seven' is not a number"),
        (["train", "{bad}", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
        (["train", "data.xlsx"], "data.xlsx: no such file"),
        (["train", "diabetes", "--target", "age"], "--target does not apply to diabetes"),
        (["train", "{bad}", "--resume", "{bad}"], "is not a complete .npz archive"),
        (["evaluate", "{pickle}", "{bad}"], "holds pickled Python objects"),
    ],
)
def test_bad_input_gives_one_line_and_exit_status_2(tmp_path, argv, message):
    files = {"{bad}": tmp_path / "ok.csv", "{text}": tmp_path / "text.csv",
             "{pickle}": tmp_path / "evil.npz"}
    files["{bad}"].write_text("a,b,c\n1,2,3\n4,5,6\n")
    files["{text}"].write_text("a,b\n1,2\n3,seven\n")
    np.savez(files["{pickle}"], meta=np.array([{"x": 1}], dtype=object))
    result = run(*(str(files.get(a, a)) for a in argv))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unknown_format_is_named(tmp_path, capsys):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    assert main(["train", str(tmp_path / "data.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "unknown format '.xlsx'; gpunet reads .csv, .npy, .npz, .parquet" in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics differ on Windows")
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    command = [sys.executable, "-m", "gpunet", "train", "friedman1", "--epochs", "500",
               "--no-early-stopping", "--batch-size", "16"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # wait for the first epoch
        if line.startswith("epoch"):
            break
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume gpunet-friedman1.npz" in err
    _, meta = checkpoint.load(tmp_path / "gpunet-friedman1.npz")
    assert 1 <= meta["step"] < 500 and "checkpoint written to gpunet-friedman1.npz" in out


def test_plot_writes_a_png(table, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    assert main(["train", str(table[0]), "--plot", str(png), *FAST]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_gradcheck_passes(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^w1  relative error \d\.\d\de-\d\d$", out, re.M)
    assert out.splitlines()[-1].startswith("ok: worst ")


def test_help_shows_examples():
    result = run("train", "--help")
    assert result.returncode == 0 and "gpunet train data.csv --target price" in result.stdout


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    reports = [EpochReport(e, 1.0 / e, None, 0.01, 1000, 0.01) for e in range(1, 21)]
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress(20, stream)
        for report in reports:
            progress.update(report, 0.5, first_epoch=1)
        progress.close(20)
    assert terminal.getvalue().count("\r[") == 20 and "[########################] 20/20" in \
        terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert [int(line.split()[1]) for line in lines] == [1, *range(2, 21, 2)]
    assert lines[-1] == "epoch   20  loss 0.05000  val 0.50000     100,000 samples/s"


def test_checkpoints_get_ordinary_file_permissions(table, tmp_path):
    model = tmp_path / "m.npz"
    main(["train", str(table[0]), "--checkpoint", str(model), *FAST])
    umask = os.umask(0)
    os.umask(umask)
    assert model.stat().st_mode & 0o777 == 0o666 & ~umask


def test_predict_into_a_closed_pipe_stops_quietly(table, tmp_path):
    model = tmp_path / "m.npz"
    main(["train", str(table[0]), "--checkpoint", str(model), *FAST])
    X = np.tile(table[1], (100, 1))  # enough rows to overflow the pipe's buffer
    np.savez(tmp_path / "many.npz", X=X, y=np.zeros(len(X)))
    command = f"{sys.executable} -m gpunet predict {model} {tmp_path / 'many.npz'} | head -1"
    result = subprocess.run(command, shell=True, capture_output=True, text=True)
    assert result.stdout == "target\n" and result.stderr == ""
