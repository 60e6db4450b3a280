"""seg.errors.first_line: what a one-line message quotes of the error it explains."""

from __future__ import annotations

import pytest

from seg.errors import first_line


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad value\nTraceback details"), "bad value"),
        (RuntimeError("  \n  leading blank lines\nmore"), "leading blank lines"),
        (KeyError("encoder.conv"), "encoder.conv"),  # str() of a KeyError adds quotes
        (OSError(), "OSError"),
    ],
)
def test_first_line(error: BaseException, expected: str) -> None:
    assert first_line(error) == expected
