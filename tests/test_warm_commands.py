"""``support.warm``: the commands the tests run are real processes with their own pid, folder,
exit status, signals and output, as ``subprocess`` gave them; a test that trusts a command's exit
status trusts this."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from support import cli_environ
from support.warm import WarmCommands, serves

pytestmark = pytest.mark.skipif(not serves(None), reason="commands are forked from a zygote on Linux only")


@pytest.fixture(scope="module")
def warm() -> WarmCommands:
    return WarmCommands()


def test_a_child_has_its_folder_output_and_exit_status(warm: WarmCommands, tmp_path: Path) -> None:
    done = warm.run(["this"], tmp_path, cli_environ(), timeout=60)
    assert done.returncode == 0 and "Beautiful is better than ugly." in done.stdout and done.stderr == ""
    failed = warm.run(["json.tool", "missing.json"], tmp_path, cli_environ(), timeout=60)
    assert failed.returncode == 2  # argparse's usage error
    assert "can't open 'missing.json'" in failed.stderr and failed.stdout == ""
    (tmp_path / "found.json").write_text('{"b": 1}')
    found = warm.run(["json.tool", "found.json"], tmp_path, cli_environ(), timeout=60)
    assert found.returncode == 0 and '"b": 1' in found.stdout  # read from its own folder


def test_merged_output_keeps_the_order_it_was_written_in(warm: WarmCommands, tmp_path: Path) -> None:
    script = tmp_path / "both.py"
    script.write_text("import sys\nfor i in range(3):\n    print(i)\n    print(f'e{i}', file=sys.stderr)\n")
    environ = {**cli_environ(), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path)}
    result = warm.run(["both"], tmp_path, environ, timeout=60, merge=True)
    assert result.stdout.split() == ["0", "e0", "1", "e1", "2", "e2"]


def test_a_child_is_its_own_process_for_signals_and_time_limits(warm: WarmCommands, tmp_path: Path) -> None:
    sleeper = ["timeit", "-n", "1", "-r", "1", "import time; time.sleep(60)"]
    process = warm.start(sleeper, tmp_path, cli_environ())
    assert process.pid != os.getpid() and process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run(sleeper, tmp_path, cli_environ(), timeout=1)
