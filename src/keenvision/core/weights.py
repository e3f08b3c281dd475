"""Weights on disk: safetensors only (never pickles), with SHA-256 checksums for the files we ship."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .io import write_atomic


class WeightsError(ValueError):
    """Weights that are missing, corrupt, or do not fit the model."""


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_weights(filename: str) -> Path:
    """Path of a weights file shipped in ``keenvision/weights/``, checked against ``checksums.json``."""
    folder = resources.files("keenvision") / "weights"
    path = Path(str(folder / filename))
    if not path.is_file():
        raise WeightsError(f"packaged weights {filename} are missing from {folder} (broken install?)")
    checksums = json.loads((folder / "checksums.json").read_text())
    expected = checksums.get(filename)
    if expected is not None and sha256(path) != expected:
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
