"""The task seam: how a batch becomes loss, metrics and predictions.

One training loop serves every application of the course; what differs between
them (how targets are collated, the loss, the metrics, what ``predict`` prints
and ``eval`` reports, which metric "best" means) is a :class:`Task`, chosen by
the config key ``task``.

Example::

    task = create_task(cfg, classes=bundle.classes)
    loss = task.loss(model(x), y)
"""

from __future__ import annotations

from cnnkit.tasks.base import TASKS, Task, create_task, list_tasks, register_task, task_class

# Importing a task module registers it (cnnkit.tasks is always imported before its submodules).
from cnnkit.tasks import (classification, detection, forecast, instance, segmentation, text,  # noqa: E402,F401
                          timeseries, video, frames, gan, reconstruction)

__all__ = ["TASKS", "Task", "create_task", "list_tasks", "register_task", "task_class"]
