"""Start, watch and stop the local stack's processes (by pid, never by name).

psutil answers "is this pid alive, and is it still the process we started"
(its create time), which replaces reading /proc by hand.

Used by `reformspor up/down`, the demo and the test fixtures, so all of them
start and stop things the same way.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

import psutil


class StartupError(RuntimeError):
    """A process did not become ready in time; the message names its log."""


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll `condition` until it returns something truthy, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # the condition may fail until the thing is up
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(interval_s)


# Below Linux's ephemeral range (32768–60999): a client reconnecting to a
# stopped server on an ephemeral port can be handed that very port as its own
# source port (TCP self-connect), and the restarted server then cannot bind.
_FREE_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A loopback port that nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_FREE_PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            if not port_open(port):
                return port
    raise RuntimeError(f"no free port in {_FREE_PORT_RANGE}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def spawn(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a process in its own session (so stopping it also stops its children)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_pid(pid: int, timeout_s: float = 15.0, hard: bool = False) -> None:
    """Stop a process group by its leader's pid: SIGTERM, then SIGKILL after timeout_s."""
    if not pid_alive(pid):
        return
    sig = signal.SIGKILL if hard else signal.SIGTERM
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_until(lambda: (_reap(pid), not pid_alive(pid))[1], 10, f"pid {pid} to exit after SIGKILL")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class PidFile:
    """A pid recorded on disk with its process's start time, so `reformspor down` can stop what `up` started.

    After a reboot (or long enough) the same pid may belong to a stranger: the
    start time (psutil's create_time) tells them apart, so a stale pid file
    never leads to signalling someone else's process.
    """

    CREATE_TIME_TOLERANCE_S = 0.01

    def __init__(self, path: Path):
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = create_time(pid)
        self.path.write_text(f"{pid} {started!r}\n" if started is not None else f"{pid}\n")

    def read(self) -> int | None:
        """The recorded pid while that very process lives; None if it is gone or the pid now names another."""
        try:
            fields = self.path.read_text().split()
            pid = int(fields[0])
            recorded = float(fields[1]) if len(fields) > 1 else None
        except (OSError, ValueError, IndexError):
            return None
        started = create_time(pid)
        if started is None:
            return None
        if recorded is not None and abs(started - recorded) > self.CREATE_TIME_TOLERANCE_S:
            return None  # the pid was reused: not ours
        return pid

    def running_pid(self) -> int | None:
        pid = self.read()
        return pid if pid is not None and pid_alive(pid) else None

    def stop(self, timeout_s: float = 15.0) -> bool:
        pid = self.running_pid()
        if pid is not None:
            stop_pid(pid, timeout_s)
        self.path.unlink(missing_ok=True)
        return pid is not None
