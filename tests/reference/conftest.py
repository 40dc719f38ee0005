"""Test setup for the NumPy reference engine.

Makes ``src/`` importable when cnnkit is not installed, keeps torch on one thread
(the oracle for most tests), and, with ``CNNKIT_PRINT_ERRORS=1``, prints the largest
error seen per check kind at the end of the run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

try:  # pragma: no cover - depends on how the package is installed
    import cnnkit  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

_MAX_ERRORS: dict[str, float] = {}


@pytest.fixture
def record_error():
    """``record_error(kind, value)`` keeps the largest value per kind for the summary."""

    def record(kind, value):
        _MAX_ERRORS[kind] = max(_MAX_ERRORS.get(kind, 0.0), float(value))
        return value

    return record


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("CNNKIT_PRINT_ERRORS") and _MAX_ERRORS:
        terminalreporter.write_sep("-", "largest normalised errors (reference engine)")
        for kind in sorted(_MAX_ERRORS):
            terminalreporter.write_line(f"{kind:40s} {_MAX_ERRORS[kind]:.3e}")
