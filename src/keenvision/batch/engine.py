"""Batch inference over many images, in this process or on a Ray cluster, writing Parquet rows that survive reruns
and killed workers.

Layout of an output folder ``DIR``::

    DIR/batch.json              the system and model options of the rows (a rerun must match them)
    DIR/results/part-*.parquet  one file ("block") per batch of inputs, one row per input
    DIR/images/ labels/ crops/  files the rows point to (annotated images, label PNGs, face crops)

Every input gets exactly one row, whatever stops a run:

- a worker processes a batch of paths (decoding the images itself), then writes the batch's rows as one block,
  atomically (a temporary file renamed into place): a block is either whole or absent;
- a block's name is a hash of its paths, so a batch retried after its worker died rewrites the same file;
- a rerun lists the paths that already have rows and skips them; a batch that was lost is simply done again;
- reading de-duplicates by path (a row with status ``"ok"`` wins over an error, then the newest block), which
  covers the one case left: the same path in two differently composed blocks.

In Ray mode (`run_batch` with ``ray=``), the paths go into a Ray Data dataset, one block per batch, and
``map_batches`` runs `BatchWorker` in a pool of actors, each of which loads the model once. Without Ray the same
`BatchWorker` runs the same batches here, so both modes write the same rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UsageError
from ..core.io import is_video, write_atomic
from .inputs import SCALE_EXTRA_HINT, list_inputs
from .systems import SYSTEMS, Outputs, error_row

RESULTS = "results"
MANIFEST = "batch.json"
CONNECT_TIMEOUT_S = 30.0  # an unreachable --ray ADDRESS is reported after this long at most
MESSAGES_PER_BLOCK = 10   # error messages a block reports back for the console (all of them are in its rows)


@dataclass(frozen=True)
class Job:
    """What every worker of a run needs: ``system`` (a key of `SYSTEMS`), its model ``options`` (keyword arguments
    of the system's loader, plus its ``call_options``), the output folder and whether to write images."""

    system: str
    options: dict
    out: str
    save_images: bool = False


# --- packages -----------------------------------------------------------------------------------------------------

def require_pyarrow() -> None:
    """One-line `UsageError` with the pip command when the ``scale`` extra's Parquet package is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(f"keen batch writes Parquet and needs pyarrow: {SCALE_EXTRA_HINT}") from None


def require_ray() -> None:
    """One-line `UsageError` with the pip command when Ray (Ray Data) is missing."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--ray needs Ray Data: {SCALE_EXTRA_HINT}") from None


# --- the output folder --------------------------------------------------------------------------------------------

def prepare_output(out: str | Path) -> Path:
    """Create ``out/results`` and prove it writable (a file created and removed there), before any work starts;
    anything else is a one-line `UsageError`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a folder")
    try:
        (out / RESULTS).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out / RESULTS, prefix=".probe-"):
            pass
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    return out


def check_manifest(out: str | Path, system: str, options: dict) -> None:
    """Write ``out/batch.json`` on the first run; on a rerun, refuse (one line) rows of another system or of other
    model options in the same folder, which would mix two kinds of results under one key."""
    path = Path(out) / MANIFEST
    wanted = json.loads(json.dumps({"system": system, "options": options}))  # tuples -> lists, as read back
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise UsageError(f"{path}: unreadable; remove it or use another --out") from None
        if found.get("system") != system:
            raise UsageError(f"--out {out} holds `keen batch {found.get('system')}` results; use another --out")
        for key in sorted(set(found.get("options", {})) | set(wanted["options"])):
            before, now = found.get("options", {}).get(key), wanted["options"].get(key)
            if before != now:
                raise UsageError(f"--out {out} holds results made with {key}={before!r}, this run has "
                                 f"{key}={now!r}; use another --out")
        return
    write_atomic(path, (json.dumps(wanted, indent=1) + "\n").encode())


# --- blocks -------------------------------------------------------------------------------------------------------

def block_name(paths: Sequence[str]) -> str:
    """``part-<hash>.parquet``: the same batch of paths always has the same name, so a retried batch replaces its
    own block instead of adding a second copy."""
    return f"part-{hashlib.sha1(chr(0).join(paths).encode()).hexdigest()[:24]}.parquet"


def write_block(out: str | Path, rows: list[dict], schema) -> str:
    """Write ``rows`` (one batch) as ``out/results/<block_name>``, atomically; returns the file name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    name = block_name([row["path"] for row in rows])
    write_atomic(Path(out) / RESULTS / name, sink.getvalue().to_pybytes())
    return name


def result_files(out: str | Path) -> list[Path]:
    """The blocks of ``out``, oldest first (temporary files of writes in progress are not blocks)."""
    folder = Path(out) / RESULTS
    if not folder.is_dir():
        return []
    files = [path for path in folder.glob("*.parquet") if not path.name.startswith(".")]
    return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))


def read_results(out: str | Path, columns: Sequence[str] | None = None):
    """The rows of an output folder, one per input path, sorted by path.

    Args:
        out: the ``--out`` folder of `run_batch` / ``keen batch``.
        columns: the columns to read (``path`` and ``status`` always come too); None: all.

    Returns:
        pyarrow.Table: one row per path; where blocks hold a path twice, the row with status ``"ok"`` is kept over
        an error, then the one of the newest block. ``.to_pylist()`` gives dicts, ``.to_pandas()`` a DataFrame.
    """
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(dict.fromkeys(["path", "status", *columns]))
    tables = []
    for order, path in enumerate(result_files(out)):
        table = pq.read_table(path, columns=wanted)
        tables.append(table.append_column("_block", pa.array([order] * table.num_rows, pa.int64())))
    if not tables:
        schema = pa.schema([("path", pa.string()), ("status", pa.string())])
        return schema.empty_table()
    table = pa.concat_tables(tables)
    table = table.append_column("_ok", pc.equal(table.column("status"), "ok"))
    table = table.take(pc.sort_indices(table, [("path", "ascending"), ("_ok", "descending"),
                                               ("_block", "descending")]))
    paths = table.column("path")
    if table.num_rows > 1:
        first = pc.not_equal(paths.slice(1), paths.slice(0, table.num_rows - 1))
        table = table.filter(pa.concat_arrays([pa.array([True]), *first.chunks]))
    return table.drop_columns(["_block", "_ok"])


def done_paths(out: str | Path, retry_errors: bool = False) -> set[str]:
    """The paths that already have a row (with ``retry_errors``: a row with status ``"ok"``)."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for path in result_files(out):
        table = pq.read_table(path, columns=["path", "status"])
        statuses = table.column("status").to_pylist()
        done.update(p for p, status in zip(table.column("path").to_pylist(), statuses)
                    if status == "ok" or not retry_errors)
    return done


# --- the worker ---------------------------------------------------------------------------------------------------

def process_paths(job: Job, model, paths: list[str]) -> list[dict]:
    """One row per path, in order. Inputs that are not image files get an error row without reaching the model;
    an exception in a batch is retried path by path, and a path that still raises gets an error row, so one bad
    input never costs its neighbours their rows, nor the run."""
    system = SYSTEMS[job.system]
    outputs = Outputs(job.out, job.save_images)
    call_options = {key: job.options[key] for key in system.call_options if key in job.options}
    rows: dict[str, dict] = {}
    images = []
    for path in paths:
        if os.path.isdir(path):
            rows[path] = error_row(path, f"{path}: a folder; name it as an INPUT to take its images")
        elif is_video(path):
            where = "" if job.system == "hallucinate" else f" (keen {job.system} reads videos frame by frame)"
            rows[path] = error_row(path, f"{path}: a video; keen batch reads images{where}")
        else:
            images.append(path)

    def run(chunk: list[str]) -> list[dict]:
        produced = system.rows(model, chunk, outputs, **call_options)
        if [row["path"] for row in produced] != chunk:  # one row per path, in order: the contract rows rely on
            raise RuntimeError(f"keen batch {job.system}: {len(produced)} rows for {len(chunk)} inputs")
        return produced

    try:
        produced = run(images) if images else []
    except Exception:  # noqa: BLE001 - find the input that raised; the others keep their rows
        produced = []
        for path in images:
            try:
                produced += run([path])
            except Exception as error:  # noqa: BLE001 - an input the system cannot handle: its row says why
                produced.append(error_row(path, f"{path}: {type(error).__name__}: {error}"))
    rows.update((row["path"], row) for row in produced)
    return [rows[path] for path in paths]


class BatchWorker:
    """A worker of a run: loads the system's model once, then each call processes one batch of paths and writes its
    rows as one block. Ray Data's ``map_batches`` holds one per actor; the in-process mode holds one.

    Args:
        job: the run's `Job`.
        threads: torch (and OpenCV) threads for this worker; None leaves the process's setting.
        device: where the model runs (``"cpu"``, ``"cuda"``; None: CUDA when available).
    """

    def __init__(self, job: Job, threads: int | None = None, device: str | None = None):
        started = time.time()
        if threads:
            import cv2
            import torch

            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        self.job = job
        self.system = SYSTEMS[job.system]
        self.schema = self.system.schema()
        model_options = {key: value for key, value in job.options.items() if key not in self.system.call_options}
        self.model = self.system.load(model_options, device)
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.load_s = time.time() - started

    def __call__(self, batch: dict) -> dict:
        """``{"path": array of str [B]}`` -> a one-row summary of arrays: ``block`` (file name), ``rows``,
        ``errors``, ``messages`` (JSON list of the first error messages), ``started``, ``finished`` (Unix
        seconds), ``compute_s`` (seconds decoding and running the model), ``worker`` (host:pid), ``load_s``."""
        import numpy as np

        paths = [str(path) for path in batch["path"]]
        started = time.time()
        rows = process_paths(self.job, self.model, paths)
        computed = time.time()
        name = write_block(self.job.out, rows, self.schema)
        messages = [row["error"] for row in rows if row["status"] == "error"]
        return {"block": np.array([name]), "rows": np.array([len(rows)]), "errors": np.array([len(messages)]),
                "messages": np.array([json.dumps(messages[:MESSAGES_PER_BLOCK])]), "started": np.array([started]),
                "finished": np.array([time.time()]), "compute_s": np.array([computed - started]),
                "worker": np.array([self.where]), "load_s": np.array([self.load_s])}


# --- Ray ----------------------------------------------------------------------------------------------------------

def _check_reachable(address: str, timeout: float) -> None:
    """``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) answers as a Ray cluster within ``timeout`` seconds, else
    one line. First a TCP connection (a refused or unroutable address fails at once); then a Ray connection in a
    child process that is killed at the deadline: Ray's own attempt retries for about 20 s and logs a line per
    try, where a port answers that is not Ray's."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: expected local, auto, HOST:PORT or ray://HOST:PORT")
    deadline = time.monotonic() + timeout
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise UsageError(f"--ray {address}: cannot reach a Ray cluster there within {timeout:g} s ({reason})") from None
    probe = ("import logging, sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, "
             "logging_level=logging.ERROR); ray.shutdown()")
    try:
        result = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                                timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise UsageError(f"--ray {address}: no Ray cluster answered there within {timeout:g} s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise UsageError(f"--ray {address}: {lines[-1] if lines else 'cannot connect'}")


def connect_ray(address: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Connect this process to Ray: ``"local"`` starts a cluster on this machine for the run, ``"auto"`` joins the one
    ``ray start`` runs here (or ``RAY_ADDRESS``), anything else is a cluster's address, checked first within
    ``timeout`` seconds. A process already connected (``ray.init`` called before, e.g. by a test or a notebook)
    keeps its connection. Returns whether this call connected (and so should disconnect when done)."""
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    if address not in ("local", "auto"):
        _check_reachable(address, timeout)
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        ray.init(address=address, **options)  # "local": a new cluster for this run, even beside a running one
    except ConnectionError as error:
        hint = " (start one with `ray start --head`, or use --ray local)" if address == "auto" else ""
        first = str(error).strip().splitlines()[0] if str(error).strip() else "connection failed"
        raise UsageError(f"--ray {address}: {first}{hint}") from None
    return True


def _ray_cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised, out of Ray's wrappers (which carry the remote traceback in their text)."""
    seen = 0
    while getattr(error, "cause", None) is not None and seen < 8:
        error, seen = error.cause, seen + 1
    return error


def _run_ray(job: Job, todo: list[str], batch_size: int, workers: int, cpus_per_worker: float,
             gpus_per_worker: float, on_block: Callable[[dict], None]) -> None:
    import pyarrow as pa
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images; Ray's would interleave with it on stderr
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # it narrates every execution, and warns of our settings
    # one block per batch: every batch is its own task, retried alone when its worker dies
    blocks = [pa.table({"path": pa.array(todo[start:start + batch_size], pa.string())})
              for start in range(0, len(todo), batch_size)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        BatchWorker, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"job": job, "threads": max(1, round(cpus_per_worker)),
                               "device": "cuda" if gpus_per_worker else "cpu"},
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None)
    try:
        for summary in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index in range(len(summary["block"])):
                on_block({key: values[index] for key, values in summary.items()})
    except Exception as error:
        cause = _ray_cause(error)
        if isinstance(cause, UsageError | ValueError | FileNotFoundError):  # e.g. unloadable weights: one line
            raise cause from None
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()  # Ray colours its messages
        first = text.splitlines()[0] if text else ""
        raise RuntimeError(f"the Ray run stopped: {type(cause).__name__}: {first}") from None


# --- a run --------------------------------------------------------------------------------------------------------

@dataclass
class BatchRun:
    """What one `run_batch` call did. ``inputs`` = ``skipped`` (had rows already) + ``processed`` (= ``ok`` +
    ``errors``); ``worker_processes``: how many worker processes wrote blocks (a restarted worker counts anew).
    Times in seconds: ``seconds`` from the start of processing (after listing and connecting) to the
    last block, ``connect_s`` connecting to Ray, ``startup_s`` until the first worker started its first batch
    (model loading), ``compute_s`` summed over workers inside the system's code (decoding, model, image files)."""

    system: str
    out: str
    mode: str
    workers: int
    inputs: int
    worker_processes: int = 0
    skipped: int = 0
    processed: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    connect_s: float = 0.0
    startup_s: float = 0.0
    processing_s: float = 0.0
    compute_s: float = 0.0
    blocks: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Processed images over ``seconds`` (worker start-up included)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """Processed images over ``processing_s`` (once the first worker had started)."""
        return self.processed / self.processing_s if self.processing_s > 0 else 0.0

    @property
    def overhead_per_image_s(self) -> float:
        """Worker seconds per image spent outside the system's code: ``(workers * processing_s - compute_s) /
        processed``."""
        return (self.workers * self.processing_s - self.compute_s) / self.processed if self.processed else 0.0

    def as_dict(self) -> dict:
        record = {key: value for key, value in vars(self).items() if key != "blocks"}
        record["blocks_written"] = len(self.blocks)
        for name in ("images_per_second", "steady_images_per_second", "overhead_per_image_s"):
            record[name] = getattr(self, name)
        return record


def run_batch(system: str, inputs: Sequence[str | Path], out: str | Path, options: dict | None = None, *,
              ray: str | None = None, workers: int | None = None, batch_size: int = 64, cpus_per_worker: float = 1,
              gpus_per_worker: float = 0, device: str | None = None, save_images: bool = False,
              retry_errors: bool = False, path_column: str = "path", progress: bool = True) -> BatchRun:
    """Run ``system`` over every input that has no row yet in ``out`` and write their rows.

    Args:
        system: ``"detect"`` (MTCNN), ``"segment"`` (FarSee-Net) or ``"hallucinate"`` (SICNN).
        inputs: folders, globs, text files of paths, Parquet files with a ``path_column``, image files
            (`list_inputs`).
        out: the output folder (see the module docstring for its layout).
        options: keyword arguments of the system's model (e.g. ``{"min_face_size": 40}`` for MTCNN) and its call
            options (``alpha`` for segment, ``all_faces`` for hallucinate); they are recorded in ``out/batch.json``
            and a rerun must give the same.
        ray: None runs here, in this process; ``"local"``, ``"auto"`` or an address runs on Ray (`connect_ray`).
        workers: Ray actors, each with its own model (default: as many as the cluster's CPUs, or GPUs with
            ``gpus_per_worker``, allow).
        batch_size: images per worker call and per block file.
        cpus_per_worker: CPUs Ray reserves per actor; also its torch threads.
        gpus_per_worker: GPUs per actor (fractions share one); the model then runs on CUDA.
        device: the device of the in-process mode (default: CUDA when available).
        save_images: also write annotated images / overlays / comparison strips under ``out/images``.
        retry_errors: process again the inputs whose rows say ``"error"``.
        path_column: the column of Parquet inputs that holds the paths.
        progress: a progress bar over images on stderr.

    Returns:
        BatchRun: counts and times; the rows themselves are read with `read_results`.
    """
    if system not in SYSTEMS:
        raise UsageError(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise UsageError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
    if ray is None and (workers is not None or gpus_per_worker):
        raise UsageError("--workers and --gpus-per-worker need --ray (without it the run is in this process)")
    require_pyarrow()
    if ray is not None:
        require_ray()
    out = prepare_output(out)
    options = dict(options or {})
    paths = list_inputs(inputs, path_column)
    if not paths:
        raise UsageError("no inputs: the folders named hold no image")
    check_manifest(out, system, options)
    done = done_paths(out, retry_errors)
    todo = [path for path in paths if path not in done]
    job = Job(system, options, str(out), save_images)
    run = BatchRun(system, str(out), "in-process" if ray is None else "ray", 1, len(paths), skipped=len(paths)
                   - len(todo))
    if not todo:
        return run
    connected = False
    if ray is not None:
        # the model once here, on the CPU: bad weights or options are one line now, not a dead worker per retry
        check = SYSTEMS[system]
        check.load({key: value for key, value in options.items() if key not in check.call_options}, "cpu")
    try:
        if ray is not None:
            started = time.perf_counter()
            connected = connect_ray(ray)
            run.connect_s = time.perf_counter() - started
            batches = -(-len(todo) // batch_size)
            run.workers = min(workers or _default_workers(cpus_per_worker, gpus_per_worker), batches)  # none idle
            _warn_if_too_many(run.workers, cpus_per_worker, gpus_per_worker)
        from ..core.progress import progress_bar

        bar = progress_bar(desc=f"batch {system}", unit="img", total=len(todo), enabled=progress)
        first_started, last_finished = None, None
        writers: set[str] = set()
        begin = time.time()

        def on_block(summary: dict) -> None:
            nonlocal first_started, last_finished
            rows, errors = int(summary["rows"]), int(summary["errors"])
            run.processed += rows
            run.errors += errors
            run.ok += rows - errors
            run.compute_s += float(summary["compute_s"])
            run.blocks.append(str(summary["block"]))
            writers.add(str(summary["worker"]))
            run.worker_processes = len(writers)
            first_started = min(first_started or float("inf"), float(summary["started"]))
            last_finished = max(last_finished or 0.0, float(summary["finished"]))
            if len(run.error_messages) < 10:
                run.error_messages += json.loads(str(summary["messages"]))[: 10 - len(run.error_messages)]
            bar.update(rows)

        try:
            if ray is None:
                worker = BatchWorker(job, device=device)
                for start in range(0, len(todo), batch_size):
                    on_block({key: values[0] for key, values in
                              worker({"path": todo[start:start + batch_size]}).items()})
            else:
                _run_ray(job, todo, batch_size, run.workers, cpus_per_worker, gpus_per_worker, on_block)
        finally:
            bar.close()
        run.seconds = time.time() - begin
        if first_started is not None:
            run.startup_s, run.processing_s = first_started - begin, last_finished - first_started
    finally:
        if connected:
            import ray as ray_module

            ray_module.shutdown()
    return run


def _default_workers(cpus_per_worker: float, gpus_per_worker: float) -> int:
    """As many actors as the cluster's CPUs (or GPUs, for GPU workers) hold, at least one."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker))


def _warn_if_too_many(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """A line on stderr when the cluster cannot hold all the workers now: Ray then waits for resources (an
    autoscaling cluster adds nodes; a fixed one runs fewer workers, or none with too large a request)."""
    import ray

    resources = ray.cluster_resources()
    for name, each in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)):
        if each and workers * each > resources.get(name, 0):
            print(f"keen batch: {workers} worker(s) x {each:g} {name} but the cluster has "
                  f"{resources.get(name, 0):g} {name} now; Ray waits for more", file=sys.stderr)
