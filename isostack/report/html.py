"""The self-contained HTML report: the same page and script as the live UI (``isostack ui``), with
the diagnosis embedded, so one file attached to a ticket shows the verdict, the service map, each
slow trace's waterfall (X) over the isolation-stack lanes (Y) and the kernel events behind every
finding — with no network access (ECharts is bundled in the package, see report/web/static/vendor).
"""

from __future__ import annotations

from typing import Any

import duckdb

from isostack.locate.model import Diagnosis
from isostack.report.view import report_view
from isostack.report.web import static_page


def render_html(con: duckdb.DuckDBPyConnection, diagnoses: list[Diagnosis], *, verdict: dict[str, Any] | None = None,
                since_ns: int | None = None, until_ns: int | None = None) -> str:
    """The whole report as one HTML string, built from the store behind ``con``."""
    return static_page(report_view(con, diagnoses, verdict=verdict, since_ns=since_ns, until_ns=until_ns))
