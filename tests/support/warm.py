"""Commands started as processes of their own without importing torch, Lightning and ``seg`` each
time: that import takes 5 to 10 s of a test worker's core, which is most of what a short command
costs (an error line, a tiny evaluation).

``serve()``, in a process of its own, is a zygote: it imports what the commands import, then reads one request
per line from its stdin (the command, its folder, its environment, a time limit), forks a child
that becomes ``python -m <command>`` (its ``sys.argv``, folder, environment, stdout and stderr in
files, no stdin) and answers with the child's exit status. The child is a real process with its own
pid and exit code, as ``subprocess.run`` would give. Only what is read at import time differs, so
``support.run_cli`` sends a command with such an environment (``IMPORT_TIME_ENV``) to a fresh
interpreter instead, and ``tests/test_package.py`` checks the installed commands without it.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The libraries every command imports: imported once, by the zygote.
PRELOAD = (
    "torch",
    "pytorch_lightning",
    "hydra",
    "seg.command",
    "seg.training.pipeline",
    "seg.inference.evaluation",
    "seg.inference.formats",
)

#: Environment variables that a library reads when it is imported: a command given one of them
#: needs a fresh interpreter.
IMPORT_TIME_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _child(request: dict[str, Any]) -> int:
    """Become ``python -m <argv>`` in ``request['cwd']``: its exit status."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for extra in reversed(request["env"].get("PYTHONPATH", "").split(os.pathsep)):
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for source, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
    module, *args = request["argv"]
    sys.argv = [module, *args]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status (negative: the signal that ended it), or None once past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def serve() -> None:
    """The zygote's loop: one request in, one child, one answer out."""
    for name in PRELOAD:
        importlib.import_module(name)
    answers = sys.stdout
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        answers.flush()
        pid = os.fork()
        if pid == 0:
            code = _child(request)
            sys.stdout.flush()
            sys.stderr.flush()
            raise SystemExit(code)  # leaves the loop: the child exits as a process would
        print(json.dumps({"returncode": _wait(pid, request["timeout"])}), file=answers, flush=True)


class WarmCommands:
    """The test process's handle on its zygote, started on first use and again if it died."""

    def __init__(self) -> None:
        self._zygote: subprocess.Popen[str] | None = None
        self._outputs = Path(tempfile.mkdtemp(prefix="warm-commands-"))

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, '-m', *argv], ...)``, answered by a forked child."""
        zygote = self._started()
        assert zygote.stdin is not None and zygote.stdout is not None
        cwd = Path(cwd)
        out, err = self._outputs / "stdout", self._outputs / "stderr"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "timeout": timeout,
                   "stdout": str(out), "stderr": str(err)}  # fmt: skip
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        answer = json.loads(zygote.stdout.readline())
        stdout, stderr = out.read_text(), err.read_text()
        out.unlink()
        err.unlink()
        command = [sys.executable, "-m", *argv]
        if answer["returncode"] is None:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, answer["returncode"], stdout, stderr)

    def _started(self) -> subprocess.Popen[str]:
        if self._zygote is None or self._zygote.poll() is not None:
            tests = Path(__file__).resolve().parents[1]
            path = os.pathsep.join([str(tests.parent), str(tests)])
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", "from support.warm import serve; serve()"],
                env={**os.environ, "PYTHONPATH": path},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._zygote.stdout is not None
            assert json.loads(self._zygote.stdout.readline()) == {"ready": True}
        return self._zygote

