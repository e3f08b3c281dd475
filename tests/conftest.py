"""Shared fixtures. Real data comes from KEEN_DATA (default ../shared/data); under CI=true it must exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from keenvision.core.data import data_root

torch.set_num_threads(2)


def pytest_sessionstart(session):
    if os.environ.get("CI", "").lower() == "true" and not data_root().is_dir():
        raise pytest.UsageError(f"CI=true but the shared data folder {data_root()} does not exist (set KEEN_DATA)")


@pytest.fixture(scope="session", autouse=True)
def runs_outside_home(tmp_path_factory):
    """Training runs mirror their checkpoints under KEEN_RUNS (default ~/.cache/keenvision/runs): tests keep
    theirs in a temporary folder, never in the user's."""
    previous = os.environ.get("KEEN_RUNS")
    os.environ["KEEN_RUNS"] = str(tmp_path_factory.mktemp("keen_runs"))
    yield Path(os.environ["KEEN_RUNS"])
    if previous is None:
        os.environ.pop("KEEN_RUNS", None)
    else:
        os.environ["KEEN_RUNS"] = previous


@pytest.fixture(scope="session")
def data_dir():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set KEEN_DATA)")
    return root


@pytest.fixture(scope="session")
def detector():
    from keenvision.mtcnn import MTCNN

    return MTCNN(device="cpu")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread (small models: threads cost more than they give on 2 cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
