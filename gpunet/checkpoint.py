"""Checkpoints: the model, the optimizer and the training state, in a file that runs no code.

A checkpoint is an ``.npz`` archive read with ``allow_pickle=False``: plain
arrays and one JSON text, so a file from an untrusted source can hold data
but never code. It holds

    params/w1 params/b1 params/w2 params/b2   the parameters, (n, d) (n,) (p, n) (p,)
    optimizer/<moment>.0                      the optimizer's moments, flat (see gpunet.train)
    best/w1 ... best/b2                       early stopping: the best weights so far,
    latest/w1 ... latest/b2                   and the last ones, which a resumed run goes on from
    meta                                      JSON: format, gpunet version, dtype, shapes,
                                              step (epochs), loss, config, history,
                                              optimizer scalars, and the caller's extra

Writes are atomic: the archive goes to a temporary file in the same folder,
is flushed to disk, then renamed over the target, so a crash never leaves a
half-written file under the final name. Loading checks everything against the
metadata and raises :class:`CheckpointError` saying what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.backend import to_backend, to_numpy
from gpunet.model import PARAM_NAMES, Params
from gpunet.train import History, TrainConfig, Trainer

FORMAT = "gpunet-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a gpunet checkpoint, or a corrupt, truncated or mismatched one."""


def save(path: str | os.PathLike, trainer: Trainer, extra: dict[str, Any] | None = None) -> None:
    """Write ``trainer``'s parameters, optimizer and history to ``path``, atomically.

    ``extra`` is any JSON-serialisable metadata of the caller's (data columns,
    scaling), given back by :func:`load`.
    """
    from gpunet import __version__

    params, history = trainer.params, trainer.history
    arrays = {f"params/{name}": a for name, a in zip(PARAM_NAMES, params, strict=True)}
    scalars = {}
    for key, value in trainer.optimizer.state_dict().items():
        if hasattr(value, "shape"):
            arrays[f"optimizer/{key}"] = value
        else:
            scalars[key] = value
    for prefix, extra_params in (("best", trainer.best_params), ("latest", trainer.latest_params)):
        if extra_params is not None:
            arrays.update({f"{prefix}/{name}": a
                           for name, a in zip(PARAM_NAMES, extra_params, strict=True)})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gpunet": __version__,
        "dtype": str(params.dtype),
        "shapes": {key: list(a.shape) for key, a in arrays.items()},
        "step": history.epochs,
        "loss": history.loss_curve[-1] if history.loss_curve else None,
        "config": dataclasses.asdict(trainer.config),
        "history": dataclasses.asdict(history),
        "optimizer": scalars,
        "extra": extra or {},
    }
    host = {key: to_numpy(a) for key, a in arrays.items()}
    host["meta"] = np.array(json.dumps(meta))
    _write_atomically(Path(path), host)


def load(path: str | os.PathLike, backend: str | None = None) -> tuple[Trainer, dict[str, Any]]:
    """A Trainer restored from ``path`` on ``backend`` (see gpunet.resolve_backend),
    and the checkpoint's metadata (its ``"extra"`` is what :func:`save` was given)."""
    arrays, meta = _read(Path(path))
    on_device = {key: to_backend(a, backend) for key, a in arrays.items()}
    try:
        params, best, latest = (
            Params(*(on_device[f"{prefix}/{name}"] for name in PARAM_NAMES))
            if f"{prefix}/w1" in on_device else None
            for prefix in ("params", "best", "latest")
        )
        config = TrainConfig(**meta["config"])
        history = History(**meta["history"])
        trainer = Trainer(params, config, history, best, latest)
        optimizer_state = {
            key.removeprefix("optimizer/"): a
            for key, a in on_device.items()
            if key.startswith("optimizer/")
        }
        trainer.optimizer.load_state_dict({**meta["optimizer"], **optimizer_state})
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path}: the checkpoint's contents do not fit together: {error}"
        ) from None
    return trainer, meta


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of a checkpoint, checked against each other."""
    try:
        with open(path, "rb") as file:
            if not zipfile.is_zipfile(file):
                raise CheckpointError(
                    f"{path} is not a complete .npz archive: not a gpunet checkpoint, "
                    "or one that was truncated"
                )
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                if "meta" not in archive.files:
                    raise CheckpointError(
                        f"{path} is not a gpunet checkpoint: it has no 'meta' entry "
                        f"(entries: {', '.join(archive.files[:8]) or 'none'})"
                    )
                meta = json.loads(str(archive["meta"][()]))
                arrays = {key: archive[key] for key in archive.files if key != "meta"}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise CheckpointError(
                f"{path} holds pickled Python objects, which a gpunet checkpoint never does; "
                "it was not loaded (pickles can run code)"
            ) from None
        raise CheckpointError(f"{path} is not a readable gpunet checkpoint: {error}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "use another checkpoint or train again"
        ) from None
    _check(path, arrays, meta)
    return arrays, meta


def _check(path: Path, arrays: dict[str, np.ndarray], meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gpunet checkpoint (no '{FORMAT}' marker)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format {meta.get('format_version')!r}, written by gpunet "
            f"{meta.get('gpunet')}; this gpunet reads format {FORMAT_VERSION}"
        )
    missing = {"config", "history", "optimizer", "shapes", "dtype"} - set(meta)
    if missing:
        raise CheckpointError(f"{path}: the metadata lacks {', '.join(sorted(missing))}")
    expected = {key: tuple(shape) for key, shape in meta["shapes"].items()}
    found = {key: a.shape for key, a in arrays.items()}
    if expected != found:
        raise CheckpointError(f"{path}: the arrays {found} do not match the metadata {expected}")
    if any(f"params/{name}" not in arrays for name in PARAM_NAMES):
        raise CheckpointError(f"{path} holds no parameters (params/w1 ... params/b2)")
    dtypes = {str(a.dtype) for a in arrays.values()}
    if dtypes != {meta["dtype"]}:
        raise CheckpointError(
            f"{path}: the arrays are {sorted(dtypes)} but the metadata says {meta['dtype']}"
        )
