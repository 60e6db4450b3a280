"""Progress in log files: plain lines when stdout is not a terminal, the same lines in train.log."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from support import TINY, WITH_SUPPORT, run_cli

LINE = re.compile(
    r"\[(\d\d):(\d\d):(\d\d)\]\[seg\.training\.progress\] epoch \d+/\d+ \| step \d+ \| loss \d+\.\d+ \| "
    r"\d+\.\d img/s \| elapsed \d+:\d\d:\d\d \| (budget left|ETA) \d+:\d\d:\d\d"
)


def _seconds(match: re.Match[str]) -> int:
    hours, minutes, seconds = (int(g) for g in match.groups()[:3])
    return hours * 3600 + minutes * 60 + seconds


@pytest.mark.slow
def test_redirected_output_gets_a_progress_line_every_interval(tmp_path: Path, data_cache: Path) -> None:
    """``python -m seg.train ... > run.log 2>&1``, as nohup, SLURM and CI run it."""
    overrides = [o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.enable_progress_bar"))]
    result = run_cli(
        ["seg.train", *overrides, "trainer.max_epochs=4", "callbacks.progress_log.every_s=3",
         "+callbacks.slow._target_=support.probes.SlowSteps", "+callbacks.slow.seconds=0.2",
         f"paths.log_dir={tmp_path}", f"paths.data_dir={data_cache}"],
        cwd=tmp_path, env=WITH_SUPPORT, merge_stderr=True,
    )  # fmt: skip
    text = result.stdout  # what a file given both streams holds
    assert result.returncode == 0, text[-3000:]
    lines = list(LINE.finditer(text))
    # 4 epochs of 16 steps of at least 0.2 s: 13 s of training or more, a line every 3 s.
    assert len(lines) >= 3, text[-3000:]
    gaps = [_seconds(b) - _seconds(a) for a, b in itertools.pairwise(lines)]
    assert all(gap <= 6 for gap in gaps), gaps  # every 3 s, give or take a step and a validation
    assert "ETA" in lines[0].group(0)  # no time budget: the estimate from steps left
    assert len(re.findall(r"validation epoch \d+ step \d+: val/dice \d\.\d{4} \(best \d\.\d{4}\)", text)) == 4
    assert "\r" not in text  # no progress bar redrawing itself in a file
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    train_log = (run_dir / "train.log").read_text()
    assert [m.group(0) for m in LINE.finditer(train_log)] == [m.group(0) for m in lines]
