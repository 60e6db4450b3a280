"""seg.overrides: every spelling of a Hydra override gives its key and value."""

from __future__ import annotations

import pytest

from seg.overrides import override_key, split_override


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.root=/a/b", ("data.root", "/a/b")),
        ("+callbacks.slow.seconds=0.2", ("callbacks.slow.seconds", "0.2")),
        ("++trainer.max_epochs=3", ("trainer.max_epochs", "3")),
        ("~logger", ("logger", "")),
        ("~logger=tensorboard", ("logger", "tensorboard")),
        ("model.net.encoder_weights=a=b.pth", ("model.net.encoder_weights", "a=b.pth")),
    ],
)
def test_split_override(override: str, expected: tuple[str, str]) -> None:
    assert split_override(override) == expected
    assert override_key(override) == expected[0]
