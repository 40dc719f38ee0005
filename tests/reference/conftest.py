"""Test setup for the NumPy reference engine.

With ``CNNKIT_PRINT_ERRORS=1``, prints the largest error seen per check kind at the
end of the run.
"""

from __future__ import annotations

import os

import pytest

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
