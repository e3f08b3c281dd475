"""Weights on disk: safetensors only (never pickles), with SHA-256 checksums for the files we ship."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .errors import WeightsError
from .io import write_atomic


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights(filename: str) -> Path:
    """Path of a weights file shipped in ``keenvision/weights/``, checked against its SHA-256 in the registry
    (`core.registry`); a file without a registry entry is refused."""
    folder = resources.files("keenvision") / "weights"
    path = Path(str(folder / filename))
    if not path.is_file():
        raise WeightsError(f"packaged weights {filename} are missing from {folder} (broken install?)")
    from .registry import expected_sha256

    expected = expected_sha256(filename)
    if expected is None:
        raise WeightsError(f"packaged weights {filename} have no entry in the registry (weights/registry.json)")
    if sha256(path) != expected:
        raise WeightsError(f"packaged weights {path} fail their checksum (corrupt install?)")
    return path


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write ``state`` as safetensors atomically; returns the file's SHA-256."""
    path = Path(path)
    write_atomic(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}, metadata=metadata))
    return sha256(path)


def load_weights(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Read a safetensors file; with ``prefix`` keep only keys under it, prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from None
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming ``source`` when they do not fit."""
    try:
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise WeightsError(f"{source} does not fit {type(module).__name__}: {detail}") from None


def resolve_weights(name_or_path: str | Path, shipped: Mapping[str, str] | str, what: str, how_to_train: str) -> Path:
    """The file behind a model argument: a shipped name (a key of `shipped`, checked against its checksum) or the
    path of a ``.safetensors`` export (or of any existing file, which the reader then checks). One-line errors: a
    shipped file not in this install says `how_to_train`; an export path that does not exist; anything else names
    the shipped choices.

    Args:
        name_or_path: e.g. ``"farsee-camvid"`` or ``"runs/x/model.safetensors"``.
        shipped: shipped name -> file name in ``keenvision/weights/``, or a system's name (its registry entries).
        what: the model family for messages (e.g. ``"FarSee-Net"``).
        how_to_train: the command that makes the missing shipped file.
    """
    if isinstance(shipped, str):
        from .registry import shipped_files

        shipped = shipped_files(shipped)
    name = str(name_or_path)
    if name in shipped:
        filename = shipped[name]
        if not Path(str(resources.files("keenvision") / "weights" / filename)).is_file():
            raise FileNotFoundError(f"{name}: the shipped weights {filename} are not in this install (train them with "
                                    f"{how_to_train} or give a .safetensors export)")
        return packaged_weights(filename)
    path = Path(name)
    if name.endswith(".safetensors") or path.is_file():  # an existing file of another name is read, and checked
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such weights file")
        return path
    raise ValueError(f"unknown {what} model {name!r}: give a .safetensors export or one of {sorted(shipped)}")


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file found and checked by `open_weights`: its path and its safetensors metadata."""

    path: Path
    metadata: dict[str, str]

    def state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The tensors (`load_weights`), with ``prefix`` only those under it, prefix removed."""
        return load_weights(self.path, prefix)


def open_weights(name_or_path: str | Path, system: str, what: str, how_to_train: str, format: str | None = None,
                 required: tuple[str, ...] = ()) -> ResolvedWeights:
    """The one resolver behind every system's ``load``: a shipped name of ``system`` (its registry entry, file
    checked against its SHA-256) or the path of a ``.safetensors`` export (`resolve_weights`), then its metadata
    read and checked: ``format`` the value of its ``format`` key, ``required`` keys it must have. One-line errors
    name the file."""
    path = resolve_weights(name_or_path, system, what, how_to_train)
    metadata = read_metadata(path)
    if format is not None and metadata.get("format") != format:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise WeightsError(f"{path} is not {article} {what} export (no {format} metadata)")
    missing = [key for key in required if key not in metadata]
    if missing:
        raise WeightsError(f"{path} lacks the {', '.join(missing)} metadata of a {what} export")
    return ResolvedWeights(path, metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file; a corrupt or non-safetensors file raises WeightsError (one line)."""
    try:
        with safe_open(str(path), "pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise WeightsError(f"{path} is not a readable safetensors file ({error})") from None
