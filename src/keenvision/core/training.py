"""What the Lightning trainers share: precision, checkpoints kept also outside the working tree, resuming.

Checkpoints go to ``<run_dir>/checkpoints/last.ckpt`` and to a mirror under ``KEEN_RUNS`` (default
``~/.cache/keenvision/runs``): a checkout is often new at each sitting while the home folder may be kept, so the
mirror is what carries the optimiser state of a run longer than one sitting. `resume_checkpoint` takes the newer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def runs_root() -> Path:
    """``$KEEN_RUNS``, else ``~/.cache/keenvision/runs``: where checkpoints outlive a working tree."""
    configured = os.environ.get("KEEN_RUNS")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "keenvision" / "runs"


def mirrored_run_dir(run_dir: str | Path) -> Path:
    """The run's folder under `runs_root`: ``runs/farsee/camvid`` -> ``<KEEN_RUNS>/farsee/camvid`` (a relative
    run_dir keeps its path below a leading ``runs/``; an absolute one keeps its last two parts)."""
    run_dir = Path(run_dir)
    parts = run_dir.parts[-2:] if run_dir.is_absolute() else run_dir.parts
    if parts and parts[0] == "runs":
        parts = parts[1:]
    return runs_root().joinpath(*parts) if parts else runs_root()


def resolve_precision(config: dict) -> str:
    """``auto`` -> 16-mixed when training will run on a GPU, else 32-true (no AMP on the CPU)."""
    if config["precision"] != "auto":
        return str(config["precision"])
    on_gpu = torch.cuda.is_available() and config["accelerator"] in ("auto", "gpu", "cuda")
    return "16-mixed" if on_gpu else "32-true"


class LastCheckpoints(Callback):
    """Writes ``last.ckpt`` into each of ``folders`` every ``every_n_steps`` steps and after the last step
    (``max_steps``) or epoch (``max_epochs``), from inside the loop as ModelCheckpoint does, so a resume continues
    exactly where training stopped even when the stop does not fall on a multiple. Each file is written beside its
    target and renamed over it: an interrupted save never leaves a half-written checkpoint."""

    def __init__(self, *folders: str | Path, every_n_steps: int = 0):
        self.folders = [Path(folder) for folder in folders]
        self.every_n_steps = int(every_n_steps)
        self._saved_at = -1

    def save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved_at:
            return
        self._saved_at = trainer.global_step
        for folder in self.folders:
            partial = folder / "last.ckpt.partial"
            trainer.save_checkpoint(partial, weights_only=False)  # every rank takes part; rank 0 writes
            if trainer.is_global_zero and partial.is_file():
                os.replace(partial, folder / "last.ckpt")

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = trainer.global_step
        if (self.every_n_steps and step % self.every_n_steps == 0) or 0 < trainer.max_steps <= step:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs:
            self.save(trainer)


def checkpoint_callbacks(run_dir: str | Path, every_n_steps: int, mirror: bool = True) -> list[Callback]:
    """``last.ckpt`` every ``every_n_steps`` and at the end, in ``<run_dir>/checkpoints`` and (``mirror``) in the
    `mirrored_run_dir`'s ``checkpoints``. Pass ``enable_checkpointing=False`` to the Trainer beside them, or
    Lightning adds its own ModelCheckpoint under the logger's folder."""
    folders = [Path(run_dir) / "checkpoints"] + ([mirrored_run_dir(run_dir) / "checkpoints"] if mirror else [])
    return [LastCheckpoints(*folders, every_n_steps=every_n_steps)]


def checkpoint_entry(path: str | Path, key: str, default=None):
    """One top-level entry of a Lightning checkpoint (``global_step``, a module's own ``start_step``...), read
    memory-mapped so the tensors are not loaded; ``default`` when the file cannot be read or lacks the key."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(key, default)
    except Exception:  # torch raises several types (UnpicklingError, RuntimeError, ...) for a damaged file
        return default


def checkpoint_step(path: str | Path) -> int:
    """The global step stored in a Lightning checkpoint (-1 when it cannot be read)."""
    return int(checkpoint_entry(path, "global_step", -1))


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``last.ckpt`` to resume ``run_dir`` from: of the run's own and its `mirrored_run_dir` copy, the one
    with more steps (the working tree's on a tie); None when neither exists."""
    candidates = [path for path in (Path(run_dir) / "checkpoints" / "last.ckpt",
                                    mirrored_run_dir(run_dir) / "checkpoints" / "last.ckpt") if path.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: (checkpoint_step(path), -candidates.index(path)))


def fp16_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``module``'s state with floating tensors in fp16 (what every shipped export stores), keys under ``prefix``."""
    return {prefix + key: value.half() if value.is_floating_point() else value
            for key, value in module.state_dict().items()}


def read_checkpoint(path: str | Path, prefix: str | None = "model.") -> tuple[dict, dict, int]:
    """A Lightning checkpoint of ours, without unpickling code (``weights_only``): ``(state, hyper_parameters,
    global_step)``; with ``prefix`` the state holds only the keys under it, the prefix removed (a LightningModule's
    ``self.model``), else the whole state dict."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    if prefix is not None:
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return state, checkpoint.get("hyper_parameters", {}), int(checkpoint.get("global_step", 0))


class StepProgress(L.Callback):
    """A bar over the run's optimiser steps on stderr (`keenvision.core.progress`: terminals only unless
    ``KEEN_PROGRESS=1``), starting at the resumed step, with the last logged loss. Lightning's own bar writes to
    stdout and counts batches per epoch; ours counts what ``max_steps`` counts."""

    def __init__(self):
        self.bar = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            from .progress import progress_bar

            total = trainer.estimated_stepping_batches  # max_steps, or epochs x batches when run by epochs
            total = total if math.isfinite(total) else None
            self.bar = progress_bar(desc="train", unit="step", total=total, initial=trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.bar is None:
            return
        losses = {name: value for name, value in trainer.callback_metrics.items() if "loss" in name}
        if losses:
            name, value = next(iter(losses.items()))
            self.bar.set_postfix({name: f"{float(value):.4f}"}, refresh=False)
        self.bar.update(trainer.global_step - self.bar.n)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def build_trainer(config, run_dir: str | Path | None, checkpoint_every: int = 0, progress: bool = True,
                  **options) -> L.Trainer:
    """The one place a Lightning Trainer is built: ``max_steps`` (None: unbounded, e.g. a fit by epochs),
    accelerator, devices, nodes and precision (`resolve_precision`) from the recipe (a dict or a typed recipe), our
    `StepProgress` bar on stderr (``progress``) instead of Lightning's, no summary or sanity validation.

    With a ``run_dir``: our `checkpoint_callbacks` (and none of Lightning's own) and a CSV logger in
    ``<run_dir>/logs``. With None: a fit that leaves no files (DiffRate's search, the engagement ensemble's
    seconds-long models). ``options`` add or override Trainer arguments (epochs, validation interval, ...)."""
    max_steps = config["max_steps"] if "max_steps" in config else None
    arguments = dict(max_steps=-1 if max_steps is None else int(max_steps), accelerator=config["accelerator"],
                     devices=config["devices"] if "devices" in config else 1,
                     num_nodes=config["num_nodes"] if "num_nodes" in config else 1,
                     precision=resolve_precision(config), callbacks=[StepProgress()] if progress else [],
                     enable_checkpointing=False, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0)
    if run_dir is not None:
        arguments.update(callbacks=[*checkpoint_callbacks(run_dir, checkpoint_every), *arguments["callbacks"]],
                         default_root_dir=run_dir, logger=L.pytorch.loggers.CSVLogger(run_dir, name="logs"))
    arguments.update(options)
    return L.Trainer(**arguments)
