"""The registry of each task's own report pages: ``@task_pages("segmentation")`` on a function that turns a
:class:`ReportContext` into sections (masks overlaid, boxes drawn, n-grams highlighted ...).

The pages live here, above the tasks, rather than as a ``Task.report`` method: they draw figures, run
Grad-CAM and the glass box's feature maps, which the task layer must not import.
"""

from __future__ import annotations

import sys
from typing import Callable

from cnnkit.errors import UserError
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, note

PageBuilder = Callable[[ReportContext], list[Section]]
TASK_PAGES: dict[str, PageBuilder] = {}


def task_pages(*tasks: str) -> Callable[[PageBuilder], PageBuilder]:
    def deco(fn: PageBuilder) -> PageBuilder:
        for t in tasks:
            TASK_PAGES[t] = fn
        return fn
    return deco


def guarded(title: str, make: Callable[[], Section | list[Section]], strict: bool = False) -> list[Section]:
    """``make()``'s sections, or, when it fails, one section titled ``title`` saying why: what a network cannot
    show (a :class:`UserError`, e.g. Grad-CAM of an MLP) in its own words, anything else as a left-out
    section with a warning on stderr. ``strict`` (the tests) raises the unexpected failures instead."""
    try:
        made = make()
    except UserError as e:
        return [Section(title, note(str(e)))]
    except Exception as e:
        if strict:
            raise
        reason = f"{type(e).__name__}: {e}"
        print(f"warning: report section {title!r} left out: {reason}", file=sys.stderr)
        return [Section(title, note(f"this section could not be drawn: {reason}"))]
    return made if isinstance(made, list) else [made]


__all__ = ["PageBuilder", "TASK_PAGES", "guarded", "task_pages"]
