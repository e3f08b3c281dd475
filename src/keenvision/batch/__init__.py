"""Batch inference at scale: ``keen batch detect|segment|hallucinate`` over folders, globs, path lists or Parquet,
in this process or on a Ray cluster (the ``scale`` extra), one Parquet row per input, resumable.

Public API:
    run_batch      -- run a system over inputs into an output folder (in-process, or on Ray with ``ray=``)
    read_results   -- the rows of an output folder, one per input (de-duplicated), as a pyarrow Table
    list_inputs    -- the absolute input paths that folders, globs, lists and Parquet files name
    BatchRun       -- what a run did: counts and times
"""

from ..core.lazy import lazy_exports

# imported on first use: `keen --help` must not pay for pyarrow, Ray or torch
_EXPORTS = {
    "BatchRun": ".engine",
    "read_results": ".engine",
    "run_batch": ".engine",
    "list_inputs": ".inputs",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["BatchRun", "list_inputs", "read_results", "run_batch"]
