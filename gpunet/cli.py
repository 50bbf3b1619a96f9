"""The ``gpunet`` command: train, predict, evaluate, gradcheck, info, demo."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gpunet import backend, checkpoint
from gpunet.datafiles import (
    BUILTIN,
    Data,
    DataError,
    Scaling,
    available_builtin,
    finite_rows,
    load_xy,
    read_table,
    select_features,
)
from gpunet.datasets import friedman1
from gpunet.grad import loss_and_grad
from gpunet.gradcheck import gradient_errors
from gpunet.metrics import mean_squared_error, r2_score
from gpunet.model import Params, loss, predict
from gpunet.progress import Progress
from gpunet.train import DIVERGENCE_POLICIES, DivergenceError, EpochReport, TrainConfig, Trainer

EXIT_INTERRUPTED = 130
# gpunet train's settings and defaults; a resumed run takes them from its checkpoint.
DEFAULTS = {"hidden": 32, "optimizer": "adam", "lr": 0.01, "batch_size": 64, "alpha": 1e-4,
            "tol": 1e-4, "dtype": "float64", "seed": 0, "validation_fraction": 0.2}


def cmd_info(args: argparse.Namespace) -> int:
    """Print the backend ``auto`` picks, the device and the versions."""
    report = backend.info()
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Check the gradients on a small network, then descend on built-in data."""
    xp = backend.array_module(args.backend)
    X, y = friedman1(args.samples, seed=args.seed)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = (y - y.mean()) / y.std()
    print(f"backend {xp.__name__}; data: Friedman #1, {X.shape[0]} samples, {X.shape[1]} features")

    small = Params.init(X.shape[1], 4, dtype=np.float64, seed=args.seed, backend="numpy")
    errors = gradient_errors(small, X[:50], y[:50])
    worst = max(errors.values())
    verdict = "ok" if worst <= 1e-6 else "FAILED"
    print(
        "gradient check (float64, central differences, 50 samples, 4 hidden): "
        + ", ".join(f"{name} {error:.1e}" for name, error in errors.items())
        + f" -> {verdict}"
    )

    params = Params.init(
        X.shape[1], args.hidden, dtype=args.dtype, seed=args.seed, backend=xp.__name__
    )
    X_dev, y_dev = xp.asarray(X, dtype=params.dtype), xp.asarray(y, dtype=params.dtype)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        loss, grads = loss_and_grad(params, X_dev, y_dev, check_finite=step == 0)
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:4d}  loss {float(loss):.5f}")
        for value, grad in zip(params, grads, strict=True):
            value -= args.lr * grad
    seconds = time.perf_counter() - start
    print(f"{args.steps} steps of full-batch gradient descent in {seconds:.2f} s")
    return 0 if worst <= 1e-6 else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Train on a data file or on each built-in set; report loss and R² on both splits."""
    sources = [args.data] if args.data else available_builtin()
    if len(sources) > 1:
        for flag in ("checkpoint", "resume", "plot"):
            if getattr(args, flag):
                raise DataError(
                    f"--{flag} needs one data set: name a file or one of {', '.join(BUILTIN)}"
                )
    if args.plot:
        _require_matplotlib()
    for number, source in enumerate(sources):
        if number:
            print()
        status = train_one(source, args)
        if status:
            return status
    return 0


def train_one(source: str, args: argparse.Namespace) -> int:
    """Train on one data set; 0, or EXIT_INTERRUPTED after Ctrl-C."""
    data = load_xy(source, args.target, drop_nan=args.drop_nan)
    X, Y, features, targets = data
    name = Path(source).stem if Path(source).suffix else source
    if data.dropped:
        print(f"dropped {data.dropped} of {data.dropped + len(X)} rows holding NaN or Inf")
    if args.resume:
        trainer, settings, scalings = _resumed(args, features, targets)
        train_rows, val_rows = _split(len(X), settings["validation_fraction"], settings["seed"])
    else:
        settings = {key: _given(args, key) for key in DEFAULTS}
        train_rows, val_rows = _split(len(X), settings["validation_fraction"], settings["seed"])
        scalings = Scaling.fit(X[train_rows]), Scaling.fit(Y[train_rows])
        trainer = _new_trainer(settings, X.shape[1], Y.shape[1], args.backend,
                               early_stopping=args.early_stopping and len(val_rows) > 1)
    if args.on_divergence:
        trainer.config = dataclasses.replace(trainer.config, on_divergence=args.on_divergence)
    train = _on_device(trainer.params, X, Y, train_rows, scalings)
    val = _on_device(trainer.params, X, Y, val_rows, scalings)
    _describe(name, trainer, len(train_rows), len(val_rows), features, targets)

    extra = {"data": str(source), "features": features, "targets": targets,
             "settings": settings, "x_scaling": scalings[0].to_dict(),
             "y_scaling": scalings[1].to_dict()}
    saver = Checkpointer(args.checkpoint, trainer, extra, args.checkpoint_every)
    first_epoch = trainer.history.epochs + 1
    try:
        reason, seconds, validation_curve = _run(trainer, train, val, args, saver)
    except DivergenceError:
        if saver.path:
            saver.save()
            print(f"the last good model (epoch {trainer.history.epochs}) is in {saver.path}",
                  file=sys.stderr)
        raise
    interrupted = reason == "callback"
    if interrupted and not saver.path:
        saver.path = f"gpunet-{name}.npz"
    if saver.path:
        saver.save()
    _summarise(trainer, reason, seconds, first_epoch, train, val)
    if args.plot:
        _plot(args.plot, trainer.history.loss_curve, validation_curve, first_epoch, name)
        print(f"loss curve written to {args.plot}")
    if saver.path:
        print(f"checkpoint written to {saver.path}")
    if interrupted:
        print(f"interrupted after epoch {trainer.history.epochs}; continue with: "
              f"gpunet train {source} --resume {saver.path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


class Checkpointer:
    """Saves a trainer to ``path``: at the end, and every ``every`` epochs while it trains.

    A periodic save that fails (a full disk) is reported and training goes
    on, since the previous checkpoint is intact and the next save may work;
    a final save that fails is an error.
    """

    def __init__(self, path: str | None, trainer: Trainer, extra: dict[str, Any],
                 every: int) -> None:
        self.path, self.trainer, self.extra, self.every = path, trainer, extra, every
        self.saved_epoch: int | None = None

    def save(self) -> None:
        checkpoint.save(self.path, self.trainer, self.extra)
        self.saved_epoch = self.trainer.history.epochs

    def after_epoch(self, epochs_run: int) -> None:
        if not self.path or epochs_run % self.every:
            return
        try:
            self.save()
        except checkpoint.CheckpointWriteError as error:
            last = f"epoch {self.saved_epoch}" if self.saved_epoch is not None else "none yet"
            print(f"warning: epoch {self.trainer.history.epochs}: {error} (last saved: {last}); "
                  "training goes on and saves again later", file=sys.stderr, flush=True)


def _given(args: argparse.Namespace, key: str) -> Any:
    value = getattr(args, key)
    return DEFAULTS[key] if value is None else value


def _new_trainer(settings: dict[str, Any], n_features: int, n_outputs: int,
                 backend_name: str | None, early_stopping: bool) -> Trainer:
    config = TrainConfig(solver=settings["optimizer"], learning_rate_init=settings["lr"],
                         batch_size=settings["batch_size"], alpha=settings["alpha"],
                         tol=settings["tol"], seed=settings["seed"],
                         early_stopping=early_stopping)
    params = Params.init(n_features, settings["hidden"], n_outputs, dtype=settings["dtype"],
                         seed=settings["seed"], backend=backend_name)
    return Trainer(params, config)


def _resumed(args: argparse.Namespace, features: list[str],
             targets: list[str]) -> tuple[Trainer, dict[str, Any], tuple[Scaling, Scaling]]:
    """The checkpoint's trainer, settings and scaling; it must fit the flags and the data."""
    trainer, meta = checkpoint.load(args.resume, backend=args.backend)
    extra = meta["extra"]
    if not {"settings", "features", "targets", "x_scaling", "y_scaling"} <= set(extra):
        raise checkpoint.CheckpointError(
            f"{args.resume} was not written by `gpunet train`: it lacks the data's settings"
        )
    settings = extra["settings"]
    for key, saved in settings.items():
        value = getattr(args, key, None)
        if value is not None and value != saved:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} {value} differs from the checkpoint's {saved}; a resumed run keeps "
                f"its checkpoint's settings: drop {flag}"
            )
    if (extra["features"], extra["targets"]) != (features, targets):
        raise DataError(
            f"the data's columns (features {features[:5]}..., targets {targets}) are not "
            f"those the checkpoint was trained on ({extra['features'][:5]}..., "
            f"targets {extra['targets']})"
        )
    scalings = Scaling.from_dict(extra["x_scaling"]), Scaling.from_dict(extra["y_scaling"])
    return trainer, settings, scalings


def _split(m: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices for training and validation, drawn from the seed."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--validation-fraction must be in [0, 1); got {fraction}")
    order = np.random.default_rng((seed, m)).permutation(m)
    n_val = int(fraction * m)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _on_device(params: Params, X: np.ndarray, Y: np.ndarray, rows: np.ndarray,
               scalings: tuple[Scaling, Scaling]) -> tuple[Any, Any]:
    """The chosen rows of X and Y, scaled, on the parameters' device and in their dtype."""
    return tuple(params.xp.asarray(scaling.apply(table[rows]), dtype=params.dtype)
                 for table, scaling in zip((X, Y), scalings, strict=True))


def _run(trainer: Trainer, train: tuple[Any, Any], val: tuple[Any, Any],
         args: argparse.Namespace, saver: Checkpointer) -> tuple[str, float, list[float | None]]:
    """Train with progress shown and checkpoints saved; why it ended, the seconds taken,
    the validation losses."""
    params, first_epoch = trainer.params, trainer.history.epochs + 1
    progress = Progress(args.epochs, quiet=args.quiet)
    validation_curve: list[float | None] = []
    with _stop_on_interrupt() as interrupt:

        def on_epoch(report: EpochReport) -> bool:
            value = float(loss(params, *val, check_finite=False)) if len(val[0]) else None
            validation_curve.append(value)
            saver.after_epoch(report.epoch - first_epoch + 1)
            progress.update(report, value, first_epoch)
            return interrupt.requested

        started = time.perf_counter()
        validation = val if trainer.config.early_stopping else None
        reason = trainer.fit(*train, args.epochs, on_epoch, validation)
        seconds = time.perf_counter() - started
    progress.close(trainer.history.epochs)
    return reason, seconds, validation_curve


def _describe(name: str, trainer: Trainer, n_train: int, n_val: int, features: list[str],
              targets: list[str]) -> None:
    params, config = trainer.params, trainer.config
    resumed = f", resuming after epoch {trainer.history.epochs}" if trainer.history.epochs else ""
    print(f"data: {name}, {n_train} training and {n_val} validation samples, "
          f"{len(features)} features -> {', '.join(targets)}")
    print(f"model: {params.n_features}-{params.n_hidden}-{params.n_outputs} sigmoid network, "
          f"{config.solver} lr {config.learning_rate_init}, batch {config.batch_size}, "
          f"alpha {config.alpha}, {params.backend} {params.dtype}{resumed}")


def _summarise(trainer: Trainer, reason: str, seconds: float, first_epoch: int,
               train: tuple[Any, Any], val: tuple[Any, Any]) -> None:
    epochs = trainer.history.epochs - first_epoch + 1
    stopped = "validation R² stopped improving; best weights kept" \
        if trainer.config.early_stopping else "loss stopped improving"
    why = {"converged": stopped, "max_iter": "all epochs run",
           "callback": "interrupted"}[reason]
    print(f"trained {epochs} epochs in {seconds:.2f} s ({why})")
    for label, (X, Y) in (("train", train), ("validation", val)):
        if len(X) == 0:
            continue
        value = float(loss(trainer.params, X, Y))
        r2 = float(r2_score(Y, predict(trainer.params, X)))
        print(f"{label:<10}  loss {value:.5f}  R² {r2:.4f}")


@contextmanager
def _stop_on_interrupt() -> Iterator[Any]:
    """The first Ctrl-C asks training to stop after the current epoch; a second one quits."""

    class Interrupt:
        requested = False

    state = Interrupt()

    def handler(signum: int, frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True
        print("\nstopping after this epoch to save a checkpoint (Ctrl-C again to quit now)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'gpunet[plot]'") from None


def _plot(path: str, train: list[float], val: list[float | None], first_epoch: int,
          title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.plot(range(1, len(train) + 1), train, label="training loss")
    if val and val[0] is not None:
        axes.plot(range(first_epoch, first_epoch + len(val)), val, label="validation loss")
    axes.set(xlabel="epoch", ylabel="loss J (standardised units)", yscale="log",
             title=f"gpunet: {title}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _load_model(path: str, backend_name: str | None) -> tuple[Params, dict[str, Any]]:
    trainer, meta = checkpoint.load(path, backend=backend_name)
    extra = meta["extra"]
    if not {"features", "x_scaling", "y_scaling"} <= set(extra):
        raise checkpoint.CheckpointError(
            f"{path} has no column names or scaling: it was not written by `gpunet train`"
        )
    return trainer.params, extra


def _features_and_targets(source: str, extra: dict[str, Any],
                          need_targets: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """X in the model's column order and, if the data has them, the target columns."""
    if str(source) in BUILTIN:
        X, Y, names, _ = load_xy(source)
        return select_features(names, X, extra["features"], source), Y
    if Path(source).suffix.lower() == ".npz":  # X and y by position
        X, Y, _, _ = load_xy(source)
        if X.shape[1] != len(extra["features"]):
            raise DataError(f"{source} has {X.shape[1]} features; the model takes "
                            f"{len(extra['features'])}")
        return X, Y
    names, table = read_table(source)
    X = select_features(names, table, extra["features"], source)
    if not set(extra["targets"]) <= set(names):
        if need_targets:
            raise DataError(f"{source} lacks the target column(s) {extra['targets']}")
        finite_rows(Data(X, X[:, :0], extra["features"], []), source, drop=False)
        return X, None
    Y = table[:, [names.index(t) for t in extra["targets"]]]
    finite_rows(Data(X, Y, extra["features"], extra["targets"]), source, drop=False)
    return X, Y


def _predict(params: Params, extra: dict[str, Any], X: np.ndarray) -> np.ndarray:
    scaling_x = Scaling.from_dict(extra["x_scaling"])
    scaling_y = Scaling.from_dict(extra["y_scaling"])
    inputs = params.xp.asarray(scaling_x.apply(X), dtype=params.dtype)
    outputs = backend.to_numpy(predict(params, inputs)).reshape(len(X), -1)
    return scaling_y.invert(outputs)


def cmd_predict(args: argparse.Namespace) -> int:
    """Write the model's predictions for a data file as CSV (or .npy)."""
    params, extra = _load_model(args.model, args.backend)
    X, _ = _features_and_targets(args.data, extra, need_targets=False)
    predictions = _predict(params, extra, X)
    if args.output and Path(args.output).suffix.lower() == ".npy":
        np.save(args.output, predictions)
        return 0
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        out.write(",".join(extra["targets"]) + "\n")
        np.savetxt(out, predictions, delimiter=",", fmt="%.10g")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the loss, RMSE and R² of a model on a data file that has the targets."""
    params, extra = _load_model(args.model, args.backend)
    X, Y = _features_and_targets(args.data, extra, need_targets=True)
    predictions = _predict(params, extra, X)
    scaling_y = Scaling.from_dict(extra["y_scaling"])
    residual = scaling_y.apply(predictions) - scaling_y.apply(Y)
    objective = 0.5 * float((residual**2).sum(axis=1).mean())
    print(f"samples     {len(X)}")
    print(f"loss        {objective:.6f}   (J = 1/(2m) Σ‖h(x) − y‖², standardised targets)")
    print(f"RMSE        {float(np.sqrt(mean_squared_error(Y, predictions))):.6g}")
    print(f"R²          {float(r2_score(Y, predictions)):.6f}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """Compare the analytic gradients with central finite differences on random data."""
    rng = np.random.default_rng(args.seed)
    params = Params.init(args.features, args.hidden, args.outputs, seed=args.seed,
                         backend="numpy")
    params = Params(*(rng.normal(0, 1.5, a.shape) for a in params))  # σ away from ½
    X = rng.normal(size=(args.samples, args.features))
    Y = rng.normal(size=(args.samples, args.outputs))
    errors = gradient_errors(params, X, Y)
    for name, error in errors.items():
        print(f"{name}  relative error {error:.2e}")
    worst = max(errors.values())
    print(f"{'ok' if worst <= args.tolerance else 'FAILED'}: worst {worst:.2e}, "
          f"tolerance {args.tolerance:.0e}")
    return 0 if worst <= args.tolerance else 1


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


TRAIN_EXAMPLES = """examples:
  gpunet train                                  built-in data: Friedman #1, then diabetes
  gpunet train data.csv --target price --hidden 64 --epochs 300 --plot loss.png
  gpunet train data.parquet --target y1 y2 --optimizer sgd --lr 0.05 --checkpoint model.npz
  gpunet train data.csv --target price --resume model.npz --epochs 100 --checkpoint model.npz
  gpunet train data.npz --backend cupy --dtype float32 --batch-size 256

Data: .csv (with a header row, or columns named 0, 1, ...), .npy (2-D; columns
named 0, 1, ...), .parquet (needs pyarrow), or .npz holding X and y. Features
and targets are standardised; the scaling is saved in the checkpoint.
Ctrl-C stops after the current epoch and saves a checkpoint; with --checkpoint,
one is also saved every --checkpoint-every epochs, so kill -9 loses at most that."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpunet",
        description="A one-hidden-layer sigmoid network on NumPy or CuPy.",
        epilog="examples:\n  gpunet train\n  gpunet train data.csv --target y --checkpoint m.npz\n"
        "  gpunet evaluate m.npz test.csv\n  gpunet predict m.npz new.csv --output p.csv\n"
        "  gpunet gradcheck\n  gpunet info\n  gpunet demo --backend numpy --steps 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train on a data file or on built-in data", epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("data", nargs="?", help=f"a data file, or one of {', '.join(BUILTIN)} "
                       "(default: every built-in set)")
    train.add_argument("--target", nargs="+", metavar="COLUMN",
                       help="the target column(s) (default: the last column)")
    train.add_argument("--hidden", type=_positive_int, help="hidden units (default: 32)")
    train.add_argument("--epochs", type=_positive_int, default=200,
                       help="epochs to run, at most; with --resume, more epochs (default: 200)")
    train.add_argument("--batch-size", type=_positive_int, help="samples per step (default: 64)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default: 0.01)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], help="(default: adam)")
    train.add_argument("--alpha", type=float, help="L2 penalty on the weights (default: 1e-4)")
    train.add_argument("--tol", type=float,
                       help="improvements smaller than this do not count (default: 1e-4)")
    train.add_argument("--validation-fraction", type=float,
                       help="share of the samples held out to report on (default: 0.2)")
    train.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                       help="train on without watching the validation R² (by default training "
                       "stops when it has not improved for 10 epochs, keeping the best weights)")
    train.add_argument("--backend", help="numpy, cupy or auto (default: auto)")
    train.add_argument("--dtype", choices=["float32", "float64"], help="(default: float64)")
    train.add_argument("--seed", type=int, help="seed for weights, split and shuffling (0)")
    train.add_argument("--checkpoint", metavar="PATH", help="save the model here (.npz)")
    train.add_argument("--checkpoint-every", type=_positive_int, default=10, metavar="EPOCHS",
                       help="with --checkpoint, also save every this many epochs, so a killed "
                       "run loses at most that much work (default: 10)")
    train.add_argument("--resume", metavar="PATH", help="continue from this checkpoint")
    train.add_argument("--on-divergence", choices=DIVERGENCE_POLICIES,
                       help="when a loss or gradient turns NaN or Inf: stop, keeping the last "
                       "good epoch's model (default), or skip those steps and count them")
    train.add_argument("--drop-nan", action="store_true",
                       help="drop data rows holding NaN, Inf or empty cells (and say how many) "
                       "instead of stopping at the first")
    train.add_argument("--plot", metavar="PNG", help="write the loss curve here (matplotlib)")
    train.add_argument("--quiet", action="store_true", help="no progress, only the results")
    train.set_defaults(run=cmd_train)

    for name, run, help_text in (
        ("predict", cmd_predict, "predictions of a trained model for a data file"),
        ("evaluate", cmd_evaluate, "loss, RMSE and R² of a trained model on a data file"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("model", help="a checkpoint written by gpunet train --checkpoint")
        command.add_argument("data", help=f"a data file with the model's feature columns, or one "
                             f"of {', '.join(BUILTIN)}")
        command.add_argument("--backend", help="numpy, cupy or auto (default: auto)")
        if name == "predict":
            command.add_argument("--output", metavar="PATH",
                                 help="write here (.csv or .npy) instead of standard output")
        command.set_defaults(run=run)

    gradcheck = commands.add_parser(
        "gradcheck", help="check the gradients against finite differences",
        description="Compare ∂J/∂(W1, b1, W2, b2) with central finite differences, in float64.",
    )
    gradcheck.add_argument("--features", type=_positive_int, default=3)
    gradcheck.add_argument("--hidden", type=_positive_int, default=5)
    gradcheck.add_argument("--outputs", type=_positive_int, default=2)
    gradcheck.add_argument("--samples", type=_positive_int, default=40)
    gradcheck.add_argument("--seed", type=int, default=0)
    gradcheck.add_argument("--tolerance", type=float, default=1e-6)
    gradcheck.set_defaults(run=cmd_gradcheck)

    info = commands.add_parser("info", help="backend, device and versions")
    info.set_defaults(run=cmd_info)

    demo = commands.add_parser(
        "demo", help="gradient check and a few descent steps on built-in data"
    )
    demo.add_argument("--backend", default=None, help="numpy, cupy or auto (default: auto)")
    demo.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    demo.add_argument("--samples", type=int, default=2000)
    demo.add_argument("--hidden", type=int, default=16)
    demo.add_argument("--steps", type=int, default=1000)
    demo.add_argument("--lr", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=cmd_demo)
    from gpunet.bench import add_command as add_bench_command
    add_bench_command(commands)
    return parser


def _positive(convert: Callable[[str], Any], noun: str, rule: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, which must be > 0 (``rule`` says so)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be {rule}")
        return value

    return parse


_positive_int = _positive(int, "a whole number", "at least 1")
_positive_float = _positive(float, "a number", "positive")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader went away (gpunet predict ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        print(f"gpunet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpunet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
