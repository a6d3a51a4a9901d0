"""Start, watch and stop the local stack's processes (by pid, never by name).

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


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
    """A pid recorded on disk, so `reformspor down` can stop what `up` started."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        pid = self.read()
        return pid if pid is not None and pid_alive(pid) else None

    def stop(self, timeout_s: float = 15.0) -> bool:
        pid = self.read()
        stopped = False
        if pid is not None and pid_alive(pid):
            stop_pid(pid, timeout_s)
            stopped = True
        self.path.unlink(missing_ok=True)
        return stopped
