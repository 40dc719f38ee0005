"""The registry of each task's own report pages: ``@task_pages("segmentation")`` on a function that turns a
:class:`ReportContext` into sections (masks overlaid, boxes drawn, n-grams highlighted ...).

The pages live here, above the tasks, rather than as a ``Task.report`` method: they draw figures, run
Grad-CAM and the glass box's feature maps, which the task layer must not import.
"""

from __future__ import annotations

from typing import Callable

from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section

PageBuilder = Callable[[ReportContext], list[Section]]
TASK_PAGES: dict[str, PageBuilder] = {}


def task_pages(*tasks: str) -> Callable[[PageBuilder], PageBuilder]:
    def deco(fn: PageBuilder) -> PageBuilder:
        for t in tasks:
            TASK_PAGES[t] = fn
        return fn
    return deco


__all__ = ["PageBuilder", "TASK_PAGES", "task_pages"]
