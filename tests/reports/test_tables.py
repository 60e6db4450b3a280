"""The Markdown table writer every report uses."""

from __future__ import annotations

import math

from seg.reports.tables import Column, cell, is_number, markdown_table


def test_table_with_formats_alignment_missing_values_and_a_footer() -> None:
    rows = [
        {"name": "a|b", "rate": 3.14159, "share": 0.5, "calls": 7},
        {"name": "c", "rate": math.nan, "calls": None},
    ]
    columns = [
        "name",
        Column("rate", "images/s", "{:.1f}", "right"),
        Column("share", "%", lambda v: f"{100 * v:.0f}", "right"),
        Column("calls", align="right"),
    ]
    expected = (
        "| name | images/s | % | calls |\n"
        "| --- | ---: | ---: | ---: |\n"
        "| a/b | 3.1 | 50 | 7 |\n"
        "| c | - | - | - |\n"
        "| **total** | **3.1** |  |  |\n"
    )
    footer = {"name": "total", "rate": 3.14159}
    assert markdown_table(rows, columns, footer=footer) == expected


def test_table_wide_float_format_and_spelled_nan() -> None:
    rows = [{"job": 0, "score": 0.123456, "seconds": 12.345}, {"job": 1, "score": math.nan, "seconds": None}]
    columns = ["job", "score", Column("seconds", fmt="{:.1f}")]
    expected = "| job | score | seconds |\n| --- | --- | --- |\n| 0 | 0.1235 | 12.3 |\n| 1 | nan | - |\n"
    assert markdown_table(rows, columns, floats="{:.4f}", nan="nan") == expected


def test_cells_and_numbers() -> None:
    assert cell(0.71, "{:.0%}") == "71%"
    assert cell(None) == "-" and cell(math.nan, nan="nan") == "nan"
    assert cell("x", "`{}`") == "`x`"
    assert is_number(3) and is_number(2.5) and not is_number(math.nan)
    assert not is_number(True) and not is_number("1") and not is_number(None)
