"""``build_report``: a run folder's ``report.html``, one self-contained file.

Each section is drawn on its own: one that fails (a moved dataset, a model the walker cannot trace)
becomes a short note naming the reason, and the rest of the report is still written. ``strict=True``
(the tests) raises instead.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import UserError
from cnnkit.tools.report import common
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, note, render_page
from cnnkit.tools.report.pages import TASK_PAGES, guarded

REPORT_FILE = "report.html"
#: The modules that register task pages (imported on first use: they pull in captum, matplotlib ...).
PAGE_MODULES = ("cnnkit.tools.report.classification", "cnnkit.tools.report.vision",
                "cnnkit.tools.report.sequences", "cnnkit.tools.report.generative")


def _load_pages() -> None:
    for name in PAGE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a page module is there but its own import failed: that is a bug
                raise


def build_sections(ctx: ReportContext) -> list[Section]:
    strict = ctx.strict
    sections = guarded("Run", lambda: common.overview(ctx), strict)
    sections += guarded("Learning curves", lambda: common.curves(ctx), strict)
    if ctx.has_model:
        sections += guarded("Architecture", lambda: common.architecture(ctx), strict)
        _load_pages()
        pages = TASK_PAGES.get(ctx.task_name)
        if pages is not None:
            sections += guarded(f"{ctx.task_name} results", lambda: pages(ctx), strict)
    elif ctx.raw_config.get("train", {}).get("cv_folds"):
        sections.append(Section("Folds", note("a cross-validation run: its final.json holds each metric's mean "
                                              "and spread over the folds; each fold is a run of its own in "
                                              "folds/ (cnnkit report FOLD)")))
    else:
        sections.append(Section("Model", note("no checkpoint yet: the architecture and the results on "
                                              "held-out data appear once the first epoch is saved")))
    sections += guarded("Configuration", lambda: common.config(ctx), strict)
    return sections


def build_report(run_path: str | Path, out: str | Path | None = None, *, max_items: int = 5000,
                 device: str = "cpu", strict: bool = False) -> Path:
    """Write ``RUN/report.html`` (or ``out``) atomically and return its path."""
    started = time.perf_counter()
    ctx = ReportContext(run_path, max_items=max_items, device=device, strict=strict)
    target = Path(out) if out is not None else ctx.path / REPORT_FILE
    if target.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {str(target)!r}: the report is an HTML file; give a name ending in .html")
    if not target.parent.is_dir():
        raise UserError(f"--out {str(target)!r}: folder {str(target.parent)!r} does not exist")
    sections = build_sections(ctx)
    took = time.perf_counter() - started
    subtitle = (f"{ctx.task_name} run {ctx.path.name} · {'finished' if ctx.finished else 'in progress'} · "
                f"report drawn in {took:.1f} s by cnnkit")
    atomic_write_text(target, render_page(f"cnnkit report: {ctx.path.name}", subtitle, sections))
    return target


__all__ = ["REPORT_FILE", "build_report", "build_sections"]
