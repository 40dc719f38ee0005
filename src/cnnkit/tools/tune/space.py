"""The search space: the space file's entries (choices or ranges), checked against the config, and the grid."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnkit.config import apply_overrides, load_yaml_file, validate
from cnnkit.errors import ConfigError, UserError

_RANGE_KEYS = {"low", "high", "log", "step"}
_SPACE_FORMS = ("a list of choices, e.g. [16, 32, 64], or a range {low: 1.0e-4, high: 0.1, log: true} "
                "(int when both bounds are ints; optional step)")
# PyYAML (YAML 1.1) reads 1e-4 as a string; a space file means a number.
_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _number(v: Any) -> Any:
    if isinstance(v, str) and _EXP_FLOAT.match(v.strip()):
        return float(v)
    return v


def _yaml_inline(value: Any) -> str:
    """A value as one line of YAML that reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_yaml_inline(v)}" for k, v in values.items())


@dataclass
class Param:
    """One entry of the space file: a categorical list or a numeric range."""

    key: str
    kind: str  # "choice" | "int" | "float"
    choices: list[Any] | None = None
    encoded: bool = False  # choices that Optuna cannot hold (lists, dicts) travel as JSON text
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    def describe(self) -> Any:
        if self.kind == "choice":
            return self.choices
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step, "kind": self.kind}

    def grid_values(self) -> list[Any]:
        """The Optuna-level values of this entry on a grid (a range needs a step)."""
        if self.kind == "choice":
            return [json.dumps(c) if self.encoded else c for c in self.choices]
        assert self.step is not None
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def suggest(self, trial: Any, grid: bool) -> Any:
        if grid or self.kind == "choice":
            values = self.grid_values()
            return trial.suggest_categorical(self.key, values)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value

    def config_values(self) -> list[Any]:
        """Values to check against the config: every choice, or both bounds."""
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]


def _with_params(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a config dict) with ``{dotted.key: value}`` applied as overrides."""
    return apply_overrides(base, [f"{k}={_yaml_inline(v)}" for k, v in values.items()])


def parse_space(data: Any, source: str = "space file") -> list[Param]:
    """Turn the space file's mapping into :class:`Param` entries (shape only, not config keys)."""
    if data is None or (isinstance(data, dict) and not data):
        raise UserError(f"{source} has no entries; map config keys to {_SPACE_FORMS}")
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of dotted config keys (e.g. optim.lr) to {_SPACE_FORMS}; "
                        f"got {type(data).__name__}")
    params = []
    for key, spec in data.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise UserError(f"{source}: key {key!r} is not a dotted config key like optim.lr")
        if key in ("train.runs_dir", "train.name"):
            raise UserError(f"{source}: {key} is set for each trial by cnnkit tune (runs go to <runs_dir>/<study>/); "
                            "remove it from the space")
        bad = f"{source}: entry {key!r} must be {_SPACE_FORMS}; got {spec!r}"
        if isinstance(spec, list):
            if not spec:
                raise UserError(f"{source}: entry {key!r} is an empty list; it must be {_SPACE_FORMS}")
            choices = [_number(c) for c in spec]
            encoded = any(isinstance(c, (list, dict)) for c in choices)
            keys = [json.dumps(c, sort_keys=True) if encoded else repr((type(c).__name__, c)) for c in choices]
            if len(set(keys)) != len(keys):
                raise UserError(f"{source}: entry {key!r} lists a choice twice: {spec!r}")
            params.append(Param(key, "choice", choices=choices, encoded=encoded))
        elif isinstance(spec, dict):
            unknown = set(spec) - _RANGE_KEYS
            if unknown or not {"low", "high"} <= set(spec):
                raise UserError(bad)
            low, high, step = _number(spec["low"]), _number(spec["high"]), _number(spec.get("step"))
            log = spec.get("log", False)
            nums = [v for v in (low, high, step) if v is not None]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in nums):
                raise UserError(bad + " (low, high and step must be numbers)")
            if not isinstance(log, bool):
                raise UserError(f"{source}: entry {key!r}: log must be true or false; got {log!r}")
            if not low < high:
                raise UserError(f"{source}: entry {key!r}: low ({low}) must be below high ({high})")
            if step is not None and step <= 0:
                raise UserError(f"{source}: entry {key!r}: step must be positive; got {step}")
            if log and step is not None:
                raise UserError(f"{source}: entry {key!r}: a log range cannot have a step; drop one of them")
            if log and low <= 0:
                raise UserError(f"{source}: entry {key!r}: a log range needs low > 0; got {low}")
            kind = "int" if all(isinstance(v, int) for v in nums) else "float"
            if kind == "float":
                low, high = float(low), float(high)
                step = float(step) if step is not None else None
            params.append(Param(key, kind, low=low, high=high, step=step, log=log))
        else:
            raise UserError(bad)
    return params


def load_space(path: str | os.PathLike, base: dict[str, Any], grid: bool) -> list[Param]:
    """Read and check a space file against the resolved base config ``base``.

    Each key is checked by validating the config with that key set to each of its
    choices (or both bounds), so an unknown key or a bad value gives the config
    loader's own error.
    """
    p = Path(path)
    data = load_yaml_file(p, "space file")
    params = parse_space(data, f"space file {str(p)!r}")
    for prm in params:
        for v in prm.config_values():
            try:
                validate(_with_params(base, {prm.key: v}))
            except ConfigError as e:
                raise ConfigError(f"space file {str(p)!r}, entry {prm.key!r} = {v!r}: {e}") from None
        if grid and prm.kind != "choice" and prm.step is None:
            raise UserError(f"space file {str(p)!r}: grid search needs every entry to be a list of choices or a "
                            f"range with a step; {prm.key!r} is a range without step "
                            f"(write e.g. {{low: {prm.low}, high: {prm.high}, step: ...}} or a list)")
    return params


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every point of the grid, as Optuna-level values, in a fixed order."""
    keys = [p.key for p in params]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.grid_values() for p in params))]


def grid_key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)
