"""What a report reads from a run, each piece loaded once and only when a section asks for it.

A run that is still training, or whose data moved, still gets a report: the sections that need
the model or the held-out data say why they are missing, the others (curves, config) are drawn.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.runs import RunFolder


def to_device(value: Any, device: str | torch.device) -> Any:
    """Tensors (also inside lists, tuples and dicts) detached and moved to ``device``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``): a sample that a split
    sorted by class does not fill with its first class."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


#: The most input bytes :attr:`ReportContext.outputs` keeps in memory.
INPUT_BYTES = 256 * 2 ** 20


class ReportContext:
    """A run folder seen by the report: config, metrics, final figures, and (lazily) its model, its
    held-out data and the model's outputs on it.

    ``max_items`` bounds the held-out items the data-driven sections score (evenly spaced over the
    split when it is larger, so that a split sorted by class keeps every class).
    """

    def __init__(self, run_path: str | Path, *, max_items: int = 5000, device: str | torch.device = "cpu",
                 strict: bool = False) -> None:
        self.run = RunFolder.open(run_path, need_checkpoint=False)
        self.path = self.run.path
        self.raw_config: dict[str, Any] = self.run.read_config()
        self.final: dict[str, Any] = self.run.read_final() if (self.path / "final.json").is_file() else {}
        self.history: list[dict[str, Any]] = (self.run.read_metrics() if (self.path / "metrics.jsonl").is_file()
                                               else [])
        self.task_name: str = self.final.get("task") or self.raw_config.get("task") or "classification"
        self.max_items = max_items
        self.device = torch.device(device)
        self.strict = strict  # a section that fails raises (tests) instead of becoming a note

    @property
    def finished(self) -> bool:
        return bool(self.final)

    @property
    def has_model(self) -> bool:
        return any(self.run.has_checkpoint(n) for n in ("best", "last"))

    # -- the trained model

    @cached_property
    def _loaded(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        from cnnkit.inference import load_run_model

        return load_run_model(self.path, device=self.device)

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded[0]

    @property
    def info(self) -> dict[str, Any]:
        """The checkpoint's meta (classes, input_shape, mean, std), its validated ``config`` and ``task``."""
        return self._loaded[1]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    # -- the held-out data and the model's outputs on it

    @cached_property
    def held_out(self) -> Any:
        """The run's held-out split (at most ``max_items`` of it), as training cut it."""
        from cnnkit.data.base import TensorData
        from cnnkit.inference import held_out_data

        data = held_out_data(self.info, "val")
        if isinstance(data, TensorData) and len(data) > self.max_items:
            data = data.subset(torch.tensor(spread(len(data), self.max_items)))
        return data

    def loader(self, data: Any = None, batch_size: int = 128) -> Any:
        from cnnkit.inference import ordered_loader

        return ordered_loader(self.info, self.held_out if data is None else data, self.device, batch_size)

    @cached_property
    def outputs(self) -> list[tuple[Any, Any, Any]]:
        """``(inputs, outputs, targets)`` per batch of the held-out data, on the CPU: the task's evaluation
        forward pass (its test-time augmentation included), outputs as float. Stops after ``max_items``, or
        once the inputs kept take :data:`INPUT_BYTES` (large images: a few hundred are plenty to look at)."""
        task, model = self.info["task"], self.model
        batches, seen, kept = [], 0, 0
        with torch.no_grad():
            for x, y in self.loader():
                out = task.to_float(task.eval_forward(model, x))
                batches.append((to_device(x, "cpu"), to_device(out, "cpu"), to_device(y, "cpu")))
                seen += len(y)
                kept += x.element_size() * x.nelement() if isinstance(x, torch.Tensor) else 0
                if seen >= self.max_items or kept >= INPUT_BYTES:
                    break
        return batches

    def denormalise(self, x: torch.Tensor) -> np.ndarray:
        """Normalised images ``(N, C, H, W)`` back to displayable ``(N, H, W, C)`` floats in [0, 1]."""
        mean = torch.as_tensor(self.info["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info["std"], dtype=torch.float32).view(1, -1, 1, 1)
        return (x.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


__all__ = ["ReportContext", "spread", "to_device"]
