"""``cnnkit report RUN``: a run's ``report.html``, one self-contained page to look at rather than read.

Example::

    from cnnkit.tools.report import build_report

    build_report("runs/20261204-lenet")   # -> runs/20261204-lenet/report.html
"""

from cnnkit.tools.report.build import REPORT_FILE, build_report, build_sections
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section

__all__ = ["REPORT_FILE", "ReportContext", "Section", "build_report", "build_sections"]
