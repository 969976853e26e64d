"""What the commands that read print: a table for people, or with ``--json`` one
JSON document on stdout for scripts (errors still go to stderr, with the same
exit codes)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["JsonFlag", "print_json", "print_rows"]

JsonFlag = typer.Option(False, "--json", help="One JSON document on stdout, for scripts.")


def print_json(value: Any) -> None:
    # Plain print, not rich: no wrapping or markup inside the document.
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_rows(
    out: Console,
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, str],
    as_json: bool,
    *,
    empty: str = "",
) -> None:
    """``rows`` as a JSON array of objects, or a table of ``columns`` (key: heading)."""
    if as_json:
        print_json([dict(r) for r in rows])
        return
    if not rows and empty:
        out.print(empty)
        return
    table = Table(*columns.values())
    for r in rows:
        table.add_row(*(str(r[key]) for key in columns))
    out.print(table)
