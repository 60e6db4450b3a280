"""docs/configuration.md is generated from conf/ and must match it."""

from __future__ import annotations

from seg.reports.config_docs import PAGE, render, yaml_comments


def test_configuration_page_is_up_to_date() -> None:
    assert PAGE.read_text() == render(), "docs/configuration.md is stale: run `make docs` and commit it"


def test_yaml_comments_take_the_line_comment_else_the_lines_above() -> None:
    text = """# @package _global_
# The trainer.
trainer:
  # Steps between two log lines,
  # counted in batches.
  log_every_n_steps: 50
  precision: "16#mixed"   # a '#' inside quotes is not a comment

  devices: 1
net:
  width: 16 # channels
"""
    assert yaml_comments(text, "x.") == {
        "x.trainer": "The trainer.",
        "x.trainer.log_every_n_steps": "Steps between two log lines, counted in batches.",
        "x.trainer.precision": "a '#' inside quotes is not a comment",
        "x.net.width": "channels",
    }


def test_a_wrapped_line_comment_stays_with_its_key() -> None:
    text = """val_sequences: null   # validate on these sequences (name up to the
                      # first _), held out of train
split_seed: 0
mean: 0.5             # input normalisation,
  # not a continuation: another column
std: 0.25
"""
    assert yaml_comments(text) == {
        "val_sequences": "validate on these sequences (name up to the first _), held out of train",
        "mean": "input normalisation,",
        "std": "not a continuation: another column",
    }
