"""seg.errors: what a one-line message quotes of the error it explains (``first_line``), and the
config path ``building`` puts in front of a component's own option."""

from __future__ import annotations

from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seg.errors import OptionError, building, first_line
from seg.training.pipeline import build_module


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


def test_an_option_is_named_by_the_full_key_of_the_node_that_raised_it() -> None:
    """Hydra knows the key of a node nested in the one built; a node built apart takes the key
    ``building`` was given; an error already located is not prefixed again."""
    cfg = OmegaConf.create(
        {"a": {"_target_": "builtins.dict", "net": {"_target_": "seg.models.unet.UNet", "upsample": "x"}}}
    )
    with (
        pytest.raises(
            OptionError, match=r"^a\.net\.upsample='x' is not valid: expected transpose or bilinear$"
        ),
        building("somewhere"),
    ):
        instantiate(cfg.a)
    apart = OmegaConf.create(OmegaConf.to_container(cfg.a.net))
    located = pytest.raises(OptionError, match=r"^model\.net\.upsample='x' is not valid")
    with located, building("outer"), building("model.net"):
        instantiate(apart)
    with pytest.raises(OptionError, match=r"^upsample='x' is not valid"), building():
        instantiate(apart)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=focal", "loss.gamma=-1"], r"^loss\.gamma=-1 is not valid: expected a number >= 0$"),
        (["loss=combo", "loss.weights.focal=1", "loss.terms.focal.gamma=-1"],
         r"^loss\.terms\.focal\.gamma=-1 is not valid"),
        (["loss=combo", "loss.class_weights=[0,0,0,0,0,0,0,0,0,0,0,0,0]"], r"^loss\.class_weights=\[0, 0,"),
        (["loss=combo", "loss.weights.ce=0", "loss.weights.dice=0"], r"^loss\.weights: every value is 0"),
    ],
)  # fmt: skip
def test_a_loss_option_is_named_by_its_key_in_the_run_config(
    make_cfg: Any, overrides: list[str], message: str
) -> None:
    cfg = make_cfg(*overrides)
    OmegaConf.resolve(cfg)
    datamodule = instantiate(cfg.data)
    with pytest.raises(OptionError, match=message):
        build_module(cfg, datamodule)
