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

from gpunet import npyfile
from gpunet.backend import to_backend, to_numpy
from gpunet.model import PARAM_NAMES, Params
from gpunet.train import History, TrainConfig, Trainer

FORMAT = "gpunet-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a gpunet checkpoint, or a corrupt, truncated or mismatched one."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, no permission); the old one is intact."""


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
    """Write to a temporary file of a unique name beside ``path``, fsync, rename over ``path``.

    A reader, or a process killed at any moment, sees the old file or the new
    one, never a mix: os.replace is atomic, and two writers of one path each
    have their own temporary file. When writing fails (ENOSPC: a full disk),
    the temporary file is removed and the old file is left as it was.
    """
    folder = path.parent if str(path.parent) else Path(".")
    try:
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.",
                                             suffix=".tmp", delete=False)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        os.replace(handle.name, path)
    except BaseException as error:
        Path(handle.name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise
    _fsync_folder(folder)


def _write_error(path: Path, error: OSError) -> CheckpointWriteError:
    kept = ("the previous checkpoint there is intact" if path.exists()
            else "no checkpoint was written")
    return CheckpointWriteError(
        error.errno, f"could not write the checkpoint {path} ({error.strerror or error}); "
        f"{kept}: free some space or choose another path"
    )


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
    """The arrays and metadata of a checkpoint, checked against each other.

    The metadata is read and checked first (the format, and shapes that fit
    one network); then each array's header is checked against it before its
    data is read (gpunet.npyfile), so a crafted file allocates nothing.
    """
    try:
        with open(path, "rb") as file:
            if not zipfile.is_zipfile(file):
                raise CheckpointError(
                    f"{path} is not a complete .npz archive: not a gpunet checkpoint, "
                    "or one that was truncated"
                )
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                names = npyfile.member_names(archive)
                if "meta" not in names:
                    raise CheckpointError(
                        f"{path} is not a gpunet checkpoint: it has no 'meta' entry "
                        f"(entries: {', '.join(names[:8]) or 'none'})"
                    )
                meta = json.loads(str(npyfile.member_array(archive, "meta", (), kinds="U")[()]))
                shapes = _checked_meta(path, meta, set(names) - {"meta"})
                arrays = {
                    key: npyfile.member_array(archive, key, shape)
                    for key, shape in shapes.items()
                }
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except npyfile.NpyError as error:
        if "pickled" in str(error):
            raise CheckpointError(
                f"{path} holds pickled Python objects, which a gpunet checkpoint never does; "
                "it was not loaded (pickles can run code)"
            ) from None
        raise CheckpointError(
            f"{path} is corrupt or truncated, or not a gpunet checkpoint: {error}"
        ) from None
    except npyfile.ARCHIVE_ERRORS as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "use another checkpoint or train again"
        ) from None
    dtypes = {str(a.dtype) for a in arrays.values()}
    if dtypes != {meta["dtype"]}:
        raise CheckpointError(
            f"{path}: the arrays are {sorted(dtypes)} but the metadata says {meta['dtype']}"
        )
    return arrays, meta


def _checked_meta(path: Path, meta: Any, names: set[str]) -> dict[str, tuple[int, ...]]:
    """The arrays' shapes from the metadata, once they are known to describe one network.

    W1 (n, d), b1 (n,), W2 (p, n), b2 (p,) under params/, and best/, latest/
    alike; each optimizer moment is flat, n(d + p) + n + p long.
    """
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
    shapes = meta["shapes"]
    if not isinstance(shapes, dict) or not all(
        isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
        for shape in shapes.values()
    ):
        raise CheckpointError(f"{path}: the metadata's shapes are not lists of sizes: {shapes}")
    shapes = {key: tuple(shape) for key, shape in shapes.items()}
    if set(shapes) != names:
        raise CheckpointError(
            f"{path}: the arrays {sorted(names)} do not match the metadata {sorted(shapes)}"
        )
    if any(f"params/{name}" not in shapes for name in PARAM_NAMES):
        raise CheckpointError(f"{path} holds no parameters (params/w1 ... params/b2)")
    w1, w2 = shapes["params/w1"], shapes["params/w2"]
    if len(w1) != 2 or len(w2) != 2:
        raise CheckpointError(f"{path}: W1 and W2 must be 2-D; the metadata says {w1}, {w2}")
    (n, d), p = w1, w2[0]
    expected = {"w1": (n, d), "b1": (n,), "w2": (p, n), "b2": (p,)}
    size = n * (d + p) + n + p
    for key, shape in shapes.items():
        prefix, _, name = key.partition("/")
        want = (size,) if prefix == "optimizer" else expected.get(name)
        if prefix not in ("params", "best", "latest", "optimizer") or shape != want:
            raise CheckpointError(
                f"{path}: the metadata gives {key} shape {shape}; a {d}-{n}-{p} network "
                f"needs {want}"
            )
    return shapes
