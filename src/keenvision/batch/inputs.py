"""The inputs of ``keen batch``: folders, globs, text files of paths and Parquet files with a path column, turned
into one list of absolute paths, each once, in the order given.

Paths are made absolute so that a row's ``path`` is the same key whatever folder a run (or a rerun, or a worker on
another node) starts in: resuming and de-duplicating join on it. A relative path inside a list or a Parquet file is
taken relative to that file's folder, so a list travels with its images.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import UsageError
from ..core.io import expand_paths

SCALE_EXTRA_HINT = "pip install 'keenvision[scale]'"  # the Ray and Parquet packages of `keen batch`
LIST_SUFFIXES = {".txt", ".lst"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
_GLOB_CHARACTERS = set("*?[")


def _absolute(path: str | Path, base: str | Path | None = None) -> str:
    """``path`` as an absolute, normalised string (symlinks kept: the user's name for a file is the key)."""
    path = os.path.expanduser(str(path))
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.abspath(path)


def read_path_list(path: str | Path) -> list[str]:
    """The paths of a text file, one a line; blank lines and ``#`` comments are skipped."""
    base = os.path.dirname(_absolute(path))
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file of paths (UTF-8, one a line)") from None
    return [_absolute(line.strip(), base) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_path_column(path: str | Path, column: str = "path") -> list[str]:
    """The ``column`` of a Parquet file (strings; nulls skipped), relative entries taken from the file's folder."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{path}: reading Parquet needs pyarrow: {SCALE_EXTRA_HINT}") from None
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...: one line naming the file
        raise UsageError(f"{path}: not a readable Parquet file ({type(error).__name__})") from None
    if column not in schema.names:
        raise UsageError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); see --path-column")
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    base = os.path.dirname(_absolute(path))
    return [_absolute(value, base) for value in values if value is not None and str(value).strip()]


def list_inputs(sources: Iterable[str | Path], path_column: str = "path") -> list[str]:
    """Absolute paths of every input named by ``sources``, each once, in order.

    Args:
        sources: each one of: a folder (its images and videos, recursively, sorted; hidden files skipped), a glob
            pattern (``photos/**/*.jpg``; folders it matches are expanded), a text file of paths (``.txt``,
            ``.lst``), a Parquet file (``.parquet``, ``.pq``) with a column of paths, or any other file (taken as
            an image; one that cannot be read gives an error row later, not here).
        path_column: the column of Parquet inputs that holds the paths.

    Returns:
        list[str]: absolute paths. A source that names nothing (missing, or a glob that matches no file) is a
        `UsageError`: most likely a typo, caught before any work starts. Paths *inside* lists that do not exist
        are kept: they become rows with status ``"error"``.
    """
    found: list[str] = []
    for source in map(str, sources):
        if os.path.isdir(source):
            found += [_absolute(path) for path in expand_paths([source])]
        elif os.path.isfile(source):
            suffix = Path(source).suffix.lower()
            if suffix in LIST_SUFFIXES:
                found += read_path_list(source)
            elif suffix in PARQUET_SUFFIXES:
                found += read_path_column(source, path_column)
            else:
                found.append(_absolute(source))
        elif _GLOB_CHARACTERS & set(source):
            matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
            if not matches:
                raise UsageError(f"{source}: the pattern matches no file")
            found += [_absolute(path) for path in expand_paths(matches)]
        else:
            raise UsageError(f"{source}: no such file or folder")
    return list(dict.fromkeys(found))  # each input once: a path named twice would give two rows
