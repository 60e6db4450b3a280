"""The one Markdown table writer: rows of dicts in, a GitHub-flavoured Markdown table out.

Every report (evaluation, sweep summary, benchmark) writes its tables here, so a missing value,
a NaN and a ``|`` inside a cell look the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: How a column shows a present value: a ``str.format`` pattern (``"{:.1f}"``) or a function.
Format = str | Callable[[Any], str]


def is_number(value: Any) -> bool:
    """True for an int or float that is not NaN (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class Column:
    """One column: the row key it shows, its heading, how values are written and aligned."""

    key: str
    title: str | None = None  # None: the key
    fmt: Format | None = None  # None: the table's float format for floats, str() for the rest
    align: Literal["left", "right"] = "left"


def cell(
    value: Any, fmt: Format | None = None, *, floats: str = "{}", missing: str = "-", nan: str = "-"
) -> str:
    """``value`` as the text of one cell: ``missing`` for None, ``nan`` for NaN, else formatted."""
    if value is None:
        return missing
    if isinstance(value, float) and math.isnan(value):
        return nan
    if fmt is None:
        fmt = floats if isinstance(value, float) else "{}"
    text = fmt(value) if callable(fmt) else fmt.format(value)
    return text.replace("|", "/")  # a bar would end the cell


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column | str],
    *,
    footer: Mapping[str, Any] | None = None,
    floats: str = "{}",
    missing: str = "-",
    nan: str = "-",
) -> str:
    """``rows`` as a Markdown table of ``columns`` (a plain string is a left-aligned column).

    ``footer`` is a last row in bold (totals, means); its columns without a key stay blank.
    ``floats`` formats floats of columns without their own format; ``missing`` and ``nan`` stand
    for None and NaN values.
    """
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def text(row: Mapping[str, Any], column: Column) -> str:
        return cell(row.get(column.key), column.fmt, floats=floats, missing=missing, nan=nan)

    lines = [
        line([c.title if c.title is not None else c.key for c in cols]),
        line(["---:" if c.align == "right" else "---" for c in cols]),
    ]
    lines += [line([text(row, c) for c in cols]) for row in rows]
    if footer is not None:
        lines.append(line([f"**{text(footer, c)}**" if c.key in footer else "" for c in cols]))
    return "\n".join(lines) + "\n"
