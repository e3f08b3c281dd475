"""Per-block kept-token counts of a DiffRate compression schedule, with JSON I/O.

A schedule holds, for every transformer block, how many tokens are kept after the block's prune step and after its
merge step. Counts always include the prefix tokens (class token, and register/distillation tokens where a model
has them), as in the public `compression_rate.json` of DiffRate (Chen et al., ICCV 2023).

Formats read by :meth:`Schedule.load`:

* ours: ``{"format": "keenvision.diffrate.schedule", "version": 1, "prune_kept": [...], "merge_kept": [...]}``;
* one public entry: ``{"prune_kept_num": "[197, ...]", "merge_kept_num": "[197, ...]"}`` (lists given as strings,
  or as lists);
* a whole public ``compression_rate.json`` with a selector: ``"path/compression_rate.json#ViT-S-DeiT/2.9"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT_NAME = "keenvision.diffrate.schedule"
FORMAT_VERSION = 1
PUBLISHED_SCHEDULES_FILE = "published_schedules.json"
# Schedules the project searched for its own shipped models (same layout as the public compression_rate.json).
SHIPPED_SCHEDULES_FILE = "shipped_schedules.json"


def _as_count_tuple(values: Any, field: str) -> tuple[int, ...]:
    """Check that `values` is a non-empty sequence of positive Python/JSON integers; return it as a tuple."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"schedule field '{field}' must be a list of integers, got {type(values).__name__}")
    counts = list(values)
    if not counts:
        raise ValueError(f"schedule field '{field}' is empty")
    for position, count in enumerate(counts):
        # bool is an int subclass; a True/False count is always a mistake.
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"schedule field '{field}'[{position}] = {count!r} is not an integer")
        if count < 1:
            raise ValueError(f"schedule field '{field}'[{position}] = {count} must be >= 1 (class token included)")
    return tuple(counts)


@dataclass(frozen=True)
class Schedule:
    """Kept-token counts per block, after the prune step and after the merge step (prefix tokens included).

    Attributes:
        prune_kept: ``prune_kept[l]`` = tokens kept after block ``l`` prunes, one entry per block.
        merge_kept: ``merge_kept[l]`` = tokens kept after block ``l`` merges, one entry per block.

    The counts need not be monotone: the effective count after block ``l`` is
    ``N_l = min(N_{l-1}, prune_kept[l], merge_kept[l])`` (notes invariant 3; the public code's ste_min).
    """

    prune_kept: tuple[int, ...]
    merge_kept: tuple[int, ...]

    def __post_init__(self) -> None:
        prune_kept = _as_count_tuple(self.prune_kept, "prune_kept")
        merge_kept = _as_count_tuple(self.merge_kept, "merge_kept")
        if len(prune_kept) != len(merge_kept):
            raise ValueError(
                f"schedule has {len(prune_kept)} prune counts but {len(merge_kept)} merge counts; need one per block"
            )
        # frozen dataclass: normalise lists to tuples through object.__setattr__.
        object.__setattr__(self, "prune_kept", prune_kept)
        object.__setattr__(self, "merge_kept", merge_kept)

    @property
    def depth(self) -> int:
        """Number of blocks the schedule covers."""
        return len(self.prune_kept)

    @classmethod
    def keep_all(cls, model_or_depth: Any, tokens: int | None = None) -> Schedule:
        """The schedule that compresses nothing.

        Args:
            model_or_depth: a timm ``VisionTransformer`` (depth and token count are read from it) or a block count.
            tokens: tokens entering the first block (patches + prefix tokens); required when a depth is given.
        """
        if isinstance(model_or_depth, int) and not isinstance(model_or_depth, bool):
            depth = model_or_depth
            if tokens is None:
                raise ValueError("Schedule.keep_all(depth) needs tokens= (patches + prefix tokens)")
        else:
            depth, model_tokens = model_depth_and_tokens(model_or_depth)
            tokens = model_tokens if tokens is None else tokens
        if depth < 1 or tokens < 1:
            raise ValueError(f"keep_all needs depth >= 1 and tokens >= 1, got depth={depth}, tokens={tokens}")
        return cls((tokens,) * depth, (tokens,) * depth)

    def kept_tokens_per_block(self, tokens: int) -> list[int]:
        """Effective token count after each block, ``N_l = min(N_{l-1}, k_p, k_m)`` with ``N_{-1} = tokens``."""
        counts = []
        current = tokens
        for prune_count, merge_count in zip(self.prune_kept, self.merge_kept):
            current = min(current, prune_count, merge_count)
            counts.append(current)
        return counts

    def validate(self, depth: int, tokens: int, min_tokens: int = 1) -> Schedule:
        """Check the schedule against a model with `depth` blocks and `tokens` input tokens; return self.

        Args:
            depth: number of transformer blocks.
            tokens: tokens entering the first block (patches + prefix tokens).
            min_tokens: smallest allowed count (the number of prefix tokens, which are never removed).
        """
        if self.depth != depth:
            raise ValueError(f"schedule has {self.depth} blocks but the model has {depth}")
        for field, counts in (("prune_kept", self.prune_kept), ("merge_kept", self.merge_kept)):
            for block, count in enumerate(counts):
                if count > tokens:
                    raise ValueError(f"schedule {field}[{block}] = {count} exceeds the model's {tokens} tokens")
                if count < min_tokens:
                    raise ValueError(
                        f"schedule {field}[{block}] = {count} is below the model's {min_tokens} prefix tokens"
                    )
        return self

    # --- serialisation -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Our JSON format (plain lists, a format tag and a version)."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "prune_kept": list(self.prune_kept),
            "merge_kept": list(self.merge_kept),
        }

    def to_public_dict(self) -> dict[str, str]:
        """The public DiffRate entry format (lists written as strings)."""
        return {
            "prune_kept_num": json.dumps(list(self.prune_kept)),
            "merge_kept_num": json.dumps(list(self.merge_kept)),
        }

    def save(self, path: str | Path) -> Path:
        """Write the schedule as JSON in our format, atomically (a search's result is never half-written); return the
        path."""
        from ...core.io import write_atomic

        path = Path(path)
        write_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "schedule") -> Schedule:
        """Read our format or one public entry (``prune_kept_num`` / ``merge_kept_num``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if "prune_kept" in data or "merge_kept" in data:
            if data.get("format", FORMAT_NAME) != FORMAT_NAME:
                raise ValueError(f"{source}: unknown format {data.get('format')!r}")
            return cls._checked(data.get("prune_kept"), data.get("merge_kept"), source)
        if "prune_kept_num" in data or "merge_kept_num" in data:
            return cls.from_public_entry(data, source)
        raise ValueError(
            f"{source}: no schedule found (expected prune_kept/merge_kept or prune_kept_num/merge_kept_num; "
            f"for a whole compression_rate.json add a selector such as FILE#ViT-S-DeiT/2.9)"
        )

    @classmethod
    def from_public_entry(cls, entry: Mapping[str, Any], source: str = "schedule") -> Schedule:
        """Read one public entry; list fields may be JSON strings (as in the public file) or lists.

        A ``"None"`` prune list (used by the public CAFormer entries) means no pruning: prune counts are set to
        the merge counts' first value (the token count entering the network).
        """
        prune_raw = _parse_public_list(entry.get("prune_kept_num"), "prune_kept_num", source)
        merge_raw = _parse_public_list(entry.get("merge_kept_num"), "merge_kept_num", source)
        if merge_raw is None:
            raise ValueError(f"{source}: merge_kept_num is missing or None")
        if prune_raw is None:
            if not merge_raw or not isinstance(merge_raw, list):
                raise ValueError(f"{source}: merge_kept_num must be a non-empty list")
            prune_raw = [merge_raw[0]] * len(merge_raw)
        return cls._checked(prune_raw, merge_raw, source)

    @classmethod
    def _checked(cls, prune_kept: Any, merge_kept: Any, source: str) -> Schedule:
        """Build a schedule, prefixing any validation message with where the data came from."""
        if prune_kept is None or merge_kept is None:
            raise ValueError(f"{source}: both prune and merge counts are required")
        try:
            return cls(prune_kept, merge_kept)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path_and_selector: str | Path) -> Schedule:
        """Load a schedule file: ours, one public entry, or ``compression_rate.json#MODEL/GFLOPS``."""
        text = str(path_and_selector)
        selector = None
        if "#" in text:
            text, selector = text.rsplit("#", 1)
        path = Path(text)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"schedule file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"schedule file {path} cannot be read: {error}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"schedule file {path} is not valid JSON: {error.msg} (line {error.lineno})") from None
        if selector is not None:
            return cls.from_dict(_select_public_entry(data, selector, str(path)), f"{path}#{selector}")
        return cls.from_dict(data, str(path))


def _parse_public_list(value: Any, field: str, source: str) -> list | None:
    """Public lists are strings such as ``"[197, 196]"``; ``"None"`` (or null) means absent."""
    if value is None or (isinstance(value, str) and value.strip() == "None"):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{source}: {field} = {value!r} is not a list of integers") from None
    if not isinstance(value, list):
        raise ValueError(f"{source}: {field} must be a list of integers, got {type(value).__name__}")
    return value


def _select_public_entry(data: Any, selector: str, source: str) -> Mapping[str, Any]:
    """Pick ``MODEL/GFLOPS`` (for example ``ViT-S-DeiT/2.9``) out of a whole public compression_rate.json."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object keyed by model name")
    model_key, slash, gflops_key = selector.partition("/")
    if not slash or not model_key or not gflops_key:
        raise ValueError(f"{source}: selector {selector!r} must look like MODEL/GFLOPS, e.g. ViT-S-DeiT/2.9")
    if model_key not in data or not isinstance(data[model_key], Mapping):
        raise ValueError(f"{source}: no model {model_key!r}; available: {', '.join(map(str, data))}")
    entries = data[model_key]
    if gflops_key not in entries:
        raise ValueError(f"{source}: {model_key} has no entry {gflops_key!r}; available: {', '.join(entries)}")
    return entries[gflops_key]


def published_schedules(file: str = PUBLISHED_SCHEDULES_FILE) -> dict[str, list[str]]:
    """Model name -> GFLOPs keys of the schedules in a packaged file (default: the public DiffRate release)."""
    data = json.loads(resources.files("keenvision.diffrate").joinpath(file).read_text())
    return {model: list(entries) for model, entries in data.items()}


def published_schedule(model: str, gflops: str | float, file: str = PUBLISHED_SCHEDULES_FILE) -> Schedule:
    """A schedule from the public DiffRate ``compression_rate.json`` (subset shipped with the package).

    Args:
        model: public model key, e.g. ``"ViT-S-DeiT"``, ``"ViT-B-DeiT"``, ``"ViT-L-MAE"``, ``"ViT-H-MAE"``.
        gflops: public GFLOPs key, e.g. ``"2.9"`` (a float is formatted with one decimal).
        file: the packaged file; :data:`SHIPPED_SCHEDULES_FILE` holds our searches for our shipped models
            (e.g. ``shipped_schedule("cifar10-vit", "0.11")``).
    """
    key = gflops if isinstance(gflops, str) else f"{gflops:.1f}"
    data = json.loads(resources.files("keenvision.diffrate").joinpath(file).read_text())
    return Schedule.from_dict(_select_public_entry(data, f"{model}/{key}", file), f"{file}#{model}/{key}")


def shipped_schedule(model: str, gflops: str) -> Schedule:
    """A schedule the project searched for one of its shipped models (``shipped_schedules.json``)."""
    return published_schedule(model, gflops, SHIPPED_SCHEDULES_FILE)


def model_depth_and_tokens(model: Any) -> tuple[int, int]:
    """(number of blocks, tokens entering the first block) of a timm ViT-like model."""
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if not isinstance(blocks, Sequence | Iterable) or patch_embed is None or not hasattr(patch_embed, "num_patches"):
        raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer (needs .blocks and .patch_embed)")
    num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
    return len(blocks), int(patch_embed.num_patches) + num_prefix_tokens
