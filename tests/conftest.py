"""Shared test set-up: a small, fixed thread count and a private cache folder."""

import os

import pytest
import torch

# Under pytest-xdist each worker gets one thread, so two workers fill two cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Decoded or downloaded data never lands in the user's ~/.cache during tests.
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
    # The end-of-run report.html costs seconds per run; the tests of the report turn it back on.
    monkeypatch.setenv("CNNKIT_REPORT", "0")
