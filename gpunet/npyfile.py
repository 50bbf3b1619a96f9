"""Reading ``.npy`` arrays from untrusted files: the header is checked before anything is allocated.

An ``.npy`` stream is a magic string, a header (dtype, shape, order) and
prod(shape) × itemsize bytes of data. ``np.load`` trusts the header: a few
bytes claiming shape (10⁶, 10⁶) make it try to allocate 8 TB, and an object
dtype makes it unpickle. Here the header is read first and refused unless the
dtype is a plain number (bool, integer or real float), the shape is what the
caller expects (when it says), and its bytes fit in what the stream can hold
(``max_bytes``: the bytes left in a file, or a bound for an archive member);
only then are exactly that many bytes read. Nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
import struct
import tokenize
import zipfile
import zlib
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

NUMERIC_KINDS = "biuf"
MAX_HEADER_BYTES = 10_000  # np.load's own default bound on the header's size
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand its input more than this
ARCHIVE_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
                  ValueError, zlib.error, struct.error)
"""What zipfile raises for damaged, encrypted or unsupported archives (found by fuzzing)."""


class NpyError(ValueError):
    """Not a plain numeric ``.npy`` array, or one whose header cannot be trusted."""


def read_header(
    stream: BinaryIO, kinds: str = NUMERIC_KINDS
) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) from an ``.npy`` stream, left at the start of the data."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            header = npy_format.read_array_header_1_0(stream, max_header_size=MAX_HEADER_BYTES)
        elif version == (2, 0):
            header = npy_format.read_array_header_2_0(stream, max_header_size=MAX_HEADER_BYTES)
        else:
            raise NpyError(f"is .npy format version {version}, which is not read; use np.save")
    except NpyError:
        raise
    # NumPy parses the header as a Python literal; damage surfaces as any of these.
    except (ValueError, EOFError, SyntaxError, TypeError, KeyError, IndexError,
            tokenize.TokenError, RecursionError, MemoryError) as error:
        raise NpyError(f"is not an .npy array, or its header is damaged ({error})") from None
    shape, fortran_order, dtype = header
    if dtype.hasobject:
        raise NpyError(f"holds pickled Python objects ({dtype}), which are never loaded: "
                       "unpickling can run code")
    if dtype.kind not in kinds or dtype.fields is not None:
        expected = "plain numbers (bool, int or float)" if kinds == NUMERIC_KINDS else "text"
        raise NpyError(f"holds {dtype} values; expected {expected}")
    return tuple(int(n) for n in shape), dtype, bool(fortran_order)


def read_array(
    stream: BinaryIO,
    max_bytes: int,
    shape: tuple[int, ...] | None = None,
    kinds: str = NUMERIC_KINDS,
) -> np.ndarray:
    """The array in an ``.npy`` stream, in native byte order.

    ``max_bytes`` bounds the data the header may claim (the bytes the stream
    can hold after the header); ``shape``, when given, is the shape it must
    have. Both are checked before the data is read, so a crafted header
    allocates nothing. ``kinds`` are the dtype kinds allowed (numbers; "U" for text).
    """
    header = read_header(stream, kinds)
    return read_data(stream, header, max_bytes, shape)


def read_data(
    stream: BinaryIO,
    header: tuple[tuple[int, ...], np.dtype, bool],
    max_bytes: int,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """The data after an ``.npy`` header (see :func:`read_array`)."""
    found, dtype, fortran_order = header
    if shape is not None and found != tuple(shape):
        raise NpyError(f"holds shape {found}; expected {tuple(shape)}")
    nbytes = math.prod(found) * dtype.itemsize
    if nbytes > max_bytes:
        raise NpyError(
            f"claims shape {found} of {dtype} ({nbytes:,} bytes) but at most "
            f"{max_bytes:,} bytes of data are there: truncated or crafted"
        )
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise NpyError(
            f"is truncated: shape {found} of {dtype} needs {nbytes:,} bytes of data; "
            f"there are {len(data):,}"
        )
    if stream.read(1):  # in an archive, reading to the end also checks the member's CRC
        raise NpyError(f"has bytes after its data (shape {found} of {dtype}): damaged")
    array = np.frombuffer(data, dtype=dtype).reshape(found, order="F" if fortran_order else "C")
    return array.astype(dtype.newbyteorder("="), copy=True)


def file_array(path: str | os.PathLike) -> np.ndarray:
    """The array in an ``.npy`` file; its header may claim no more data than the file holds."""
    with open(path, "rb") as stream:
        header = read_header(stream)
        return read_data(stream, header, os.fstat(stream.fileno()).st_size - stream.tell())


def file_memmap(path: str | os.PathLike) -> np.memmap:
    """The array in an ``.npy`` file as a read-only memmap, its header checked first.

    The header must describe plain numbers and no more data than the file holds,
    so only what is there is mapped and nothing is unpickled.
    """
    with open(path, "rb") as stream:
        shape, dtype, fortran_order = read_header(stream)
        offset, size = stream.tell(), os.fstat(stream.fileno()).st_size
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size - offset:
        raise NpyError(
            f"claims shape {shape} of {dtype} ({nbytes:,} bytes) but the file holds "
            f"{size - offset:,} bytes of data: truncated or crafted"
        )
    order = "F" if fortran_order else "C"
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order=order)


def member_array(
    archive: zipfile.ZipFile,
    name: str,
    shape: tuple[int, ...] | None = None,
    kinds: str = NUMERIC_KINDS,
) -> np.ndarray:
    """The array ``name`` of an ``.npz`` archive (the member ``name + ".npy"``).

    Its header may claim no more data than the member can decompress to: its
    stored size, and at most DEFLATE_MAX_RATIO times its compressed size.
    """
    try:
        info = archive.getinfo(name + ".npy")
    except KeyError:
        raise NpyError(f"has no array {name!r}") from None
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
    try:
        with archive.open(info) as member:
            header = read_header(member, kinds)
            room = min(info.file_size, ratio * info.compress_size) - member.tell()
            return read_data(member, header, room, shape)
    except NpyError as error:
        raise NpyError(f"array {name!r} {error}") from None
    except ARCHIVE_ERRORS as error:
        raise NpyError(f"array {name!r} cannot be read ({type(error).__name__}: {error}): the "
                       "archive is damaged") from None


def member_names(archive: zipfile.ZipFile) -> list[str]:
    """The names of an ``.npz`` archive's arrays, as np.savez gave them."""
    return [name.removesuffix(".npy") for name in archive.namelist()]
