"""The dataset registry. A builder takes the ``data`` config section and returns
a :class:`~cnnkit.data.base.DataBundle` whose ``train`` is the pool that the
validation split is cut from (``val`` None), and ``test`` if the dataset has one."""

from __future__ import annotations

from typing import Callable

from cnnkit.registry import Registry

DATASETS: Registry[Callable] = Registry("dataset")


def register_dataset(name: str, description: str):
    return DATASETS.register(name, description)
