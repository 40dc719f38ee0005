"""One strict registry type for models, datasets, optimisers, losses and more.

A duplicate name is an error, names are listed with shell wildcards, and an
unknown name raises a :class:`~cnnkit.errors.UserError` that lists what exists.

Example::

    MODELS = Registry("model")

    @MODELS.register("lenet5", "LeCun's LeNet-5 as drawn in the course")
    def lenet5(num_classes=10, in_chans=1): ...

    MODELS.get("lenet5")            # the builder
    MODELS.names("resnet*")          # ['resnet18', 'resnet34', ...]
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from cnnkit.errors import UserError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Names mapped to objects (usually builders), with a one-line description each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a duplicate name raises ValueError."""

        def deco(obj: T) -> T:
            self.add(name, obj, description, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str, **meta: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, obj, description, dict(meta))

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            allowed = ", ".join(sorted(self._entries))
            raise UserError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                f"known {self.kind}s: {allowed}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, filtered by a shell wildcard pattern such as ``'resnet*'``."""
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
