"""Commands started as processes of their own without importing torch, Lightning and ``seg`` each
time: that import takes 5 to 10 s of a test worker's core, which is most of what a short command
costs (an error line, a tiny evaluation).

``serve()``, in a process of its own, is a zygote: it imports what the commands import, then reads
one request per line from its stdin. ``start`` forks a child that becomes ``python -m <command>``
(its ``sys.argv``, folder and environment; stdout and stderr in files, or both in one; no stdin);
``wait`` answers with a child's exit status. The child is a real process with its own pid,
signals and exit code, so ``WarmProcess`` does for the tests what ``subprocess.Popen`` did. Only
what is read at import time differs, so ``support.run_cli`` sends a command with such an
environment (``IMPORT_TIME_ENV``), and every command on macOS and Windows, to a fresh interpreter
instead (``serves``); ``tests/test_package.py`` checks the installed commands without the zygote.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import runpy
import shutil
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


def serves(env: dict[str, str] | None) -> bool:
    """Whether a command with ``env`` added can be a zygote's child: on Linux (macOS does not
    allow forking once these libraries are loaded, Windows cannot fork), with nothing in ``env``
    that is read at import time."""
    return sys.platform.startswith("linux") and not set(env or ()) & set(IMPORT_TIME_ENV)


_KEPT: list[Any] = []


def _text_stream(fd: int, unbuffered: bool) -> io.TextIOWrapper:
    """``sys.stdout`` or ``sys.stderr`` on ``fd`` as a new interpreter makes it: written through
    at once under ``PYTHONUNBUFFERED`` (so merged streams keep their order), else buffered (by
    line for stderr)."""
    raw = io.FileIO(fd, "w", closefd=False)
    if unbuffered:
        return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace", line_buffering=fd == 2
    )


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
    for source, target in ((null, 0), (out, 1), (out if request["merge"] else err, 2)):
        os.dup2(source, target)
    _KEPT.extend((sys.stdout, sys.stderr))  # the zygote's streams: collected, they would close fd 1, 2
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    sys.stdout = sys.__stdout__ = _text_stream(1, unbuffered)
    sys.stderr = sys.__stderr__ = _text_stream(2, unbuffered)
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


def _wait(pid: int, timeout: float | None) -> int | None:
    """The child's exit status (negative: the signal that ended it), or None if it is still
    running after ``timeout`` seconds (0: do not wait; None: wait for as long as it takes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def serve() -> None:
    """The zygote's loop: ``start`` forks a child and answers its pid, ``wait`` answers a child's
    exit status (None while it runs past the request's timeout)."""
    for name in PRELOAD:
        importlib.import_module(name)
    answers = sys.stdout
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "wait":
            answer = {"returncode": _wait(request["pid"], request["timeout"])}
        else:
            answers.flush()
            pid = os.fork()
            if pid == 0:
                code = _child(request)
                for stream in (sys.stdout, sys.stderr):
                    if not stream.closed:  # a command may close them (json.tool does)
                        stream.flush()
                raise SystemExit(code)  # leaves the loop: the child exits as a process would
            answer = {"pid": pid}
        print(json.dumps(answer), file=answers, flush=True)


class WarmProcess:
    """What the tests use of ``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``send_signal``,
    ``kill``, ``communicate``, ``returncode``) for a child of the zygote."""

    def __init__(self, zygote: WarmCommands, argv: list[str], pid: int, outputs: Path) -> None:
        self.args = [sys.executable, "-m", *argv]
        self.pid = pid
        self.returncode: int | None = None
        self._zygote, self.outputs = zygote, outputs

    def poll(self) -> int | None:
        return self._ask_exit(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._ask_exit(timeout) is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end, then its stdout and stderr (a child past ``timeout`` is killed)."""
        if self._ask_exit(timeout) is None:
            self.kill()
            self.wait()
            out, err = self._read()
            raise subprocess.TimeoutExpired(self.args, timeout or 0, out, err)
        return self._read()

    def _ask_exit(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.ask({"op": "wait", "pid": self.pid, "timeout": timeout})[
                "returncode"
            ]
        return self.returncode

    def _read(self) -> tuple[str, str]:
        out, err = (self.outputs / name for name in ("stdout", "stderr"))
        return out.read_text(), err.read_text()


class WarmCommands:
    """The test process's handle on its zygote, started on first use and again if it died."""

    def __init__(self) -> None:
        self._zygote: subprocess.Popen[str] | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="warm-commands-"))

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], merge: bool = False) -> WarmProcess:
        """``subprocess.Popen([python, '-m', *argv], ...)`` with stdout and stderr captured (with
        ``merge``, stderr goes to stdout, as ``2>&1``)."""
        outputs = Path(tempfile.mkdtemp(dir=self._folder))
        request = {"op": "start", "argv": argv, "cwd": str(cwd), "env": env, "merge": merge,
                   "stdout": str(outputs / "stdout"), "stderr": str(outputs / "stderr")}  # fmt: skip
        return WarmProcess(self, argv, self.ask(request)["pid"], outputs)

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float, merge: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, '-m', *argv], ...)`` with stdout and stderr captured."""
        process = self.start(argv, cwd, env, merge)
        try:
            stdout, stderr = process.communicate(timeout)
        finally:
            shutil.rmtree(process.outputs)
        assert process.returncode is not None
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request to the zygote (started on first use, again if it died): its answer."""
        zygote = self._started()
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        return json.loads(zygote.stdout.readline())

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
