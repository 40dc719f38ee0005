"""Errors a user can fix (exit code 2) versus failures while running (exit code 1)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad config, unknown name, missing file.

    The CLI prints ``error: <message>`` with no traceback and exits with code 2.
    The message must name the bad value and say what is allowed.
    """

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops (exit code 1), the checkpoints written before
    it are kept. One ``error:`` line, as for a UserError, since the cure is in the user's hands
    (a lower learning rate, gradient clipping)."""

    exit_code = 1


class ConfigError(UserError):
    """A config key, value or override that does not validate."""


class SpecError(UserError):
    """A declarative layer list whose layers or shapes do not fit."""


def did_you_mean(value: str, allowed) -> str:
    """Return ' (did you mean X?)' when a close match exists, else ''."""
    import difflib

    match = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
