"""Helpers every command uses, so all of them look and behave alike."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, ConsoleDimensions
from rich.table import Table

if TYPE_CHECKING:  # imported lazily in get_store: pyarrow/duckdb cost ~0.3 s that `where` must not pay
    from isostack.store import Store

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")

# Wider than any line isostack prints: in a pipe or a file nothing is ever wrapped.
UNWRAPPED_WIDTH = 1_000_000


class _Console(Console):
    """rich's Console, except that output going to a pipe or a file is never hard-wrapped.

    On a terminal rich wraps at the window width, which is what a reader wants. Elsewhere it wraps at
    80 columns (or $COLUMNS), and `isostack where virtio-fs | grep` split regexes mid-pattern, `audit
    seal > f` split a hash and `diagnose | less` the chain line. There the width is unbounded instead:
    tables keep their natural width and every line stays whole; separators (rules) stay short.
    $COLUMNS (which rich honours even in a pipe, and which test runners and CI set) is ignored there.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._explicit_width = kwargs.get("width") is not None

    def _wraps(self) -> bool:
        return self.is_terminal or self._explicit_width

    @property
    def size(self) -> ConsoleDimensions:
        if self._wraps():
            return super().size
        return ConsoleDimensions(UNWRAPPED_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
        self._explicit_width = True

    def rule(self, *args: Any, **kwargs: Any) -> None:
        if self._wraps():
            super().rule(*args, **kwargs)
            return
        from rich.rule import Rule

        self.print(Rule(*args, **kwargs), width=80)  # a separator, not content: nothing to keep whole


# Human output goes to stdout; progress and warnings to stderr so they never pollute --json.
console = _Console(highlight=False, soft_wrap=False)
# soft_wrap: an error or warning stays one line however narrow the terminal (or pipe) is
err_console = _Console(stderr=True, highlight=False, soft_wrap=True)


def get_store(ctx: click.Context) -> Store:
    """The store selected by the global ``--store`` (a ClickHouse URL or a folder), else ``--data-dir``."""
    from isostack.store import Store, open_store

    root = ctx.find_root()
    url = root.obj.get("store_url") if root.obj else None
    if url:
        return open_store(url)
    data_dir: Path = root.obj["data_dir"] if root.obj else Path(".")
    return Store(data_dir)


def _default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, Decimal):  # DuckDB returns sum() of integer columns as DECIMAL
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent, default=_default)


def emit_json(obj: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(dumps(obj) + "\n")


def emit_jsonl(obj: Any) -> None:
    """One JSON Lines record on stdout."""
    sys.stdout.write(dumps(obj, indent=None) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table with isostack's look."""
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def warn(message: str) -> None:
    err_console.print(f"[yellow]isostack: warning:[/] {message}")
