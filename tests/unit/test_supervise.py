"""`reformspor up` keeps each service running: a worker that stops on purpose (exit 70 after the
broker fenced it, or killed) is started again, and `down` stops the supervisor and its worker."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from services.localstack.processes import pid_alive, spawn, stop_pid, wait_until
from services.localstack.supervise import FIRST_DELAY_S, HEALTHY_RUN_S, MAX_DELAY_S, next_delay_s, should_restart

# A stand-in worker: writes its pid, then waits to be stopped, or exits with the code in exit_with.txt.
WORKER = """
import os, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
(folder / f"{os.getpid()}.started").write_text("")
code = folder / "exit_with.txt"
while True:
    if code.exists():
        sys.exit(int(code.read_text()))
    time.sleep(0.05)
"""


def started_workers(folder: Path) -> list[int]:
    return sorted(int(path.stem) for path in folder.glob("*.started"))


def supervise(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return spawn([sys.executable, "-m", "services.localstack.supervise", "worker", "--",
                  sys.executable, str(script), str(tmp_path)], tmp_path / "worker.log")


def test_a_killed_worker_is_started_again_and_stopping_the_supervisor_stops_both(tmp_path):
    supervisor = supervise(tmp_path)
    try:
        wait_until(lambda: len(started_workers(tmp_path)) == 1, 30, "the worker to start")
        (first,) = started_workers(tmp_path)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(started_workers(tmp_path)) == 2, 30, "the worker to be started again")
        second = next(pid for pid in started_workers(tmp_path) if pid != first)
        assert "worker was killed by SIGKILL" in (tmp_path / "worker.log").read_text()

        stop_pid(supervisor.pid, timeout_s=10)  # what `reformspor down` does: SIGTERM to the group
        assert supervisor.wait(timeout=10) == 0
        wait_until(lambda: not pid_alive(second), 10, "the worker to stop with its supervisor")
        assert len(started_workers(tmp_path)) == 2, "nothing is started again while stopping"
    finally:
        stop_pid(supervisor.pid, timeout_s=5, hard=True)


def test_a_worker_that_exits_with_a_usage_error_is_not_started_again(tmp_path):
    (tmp_path / "exit_with.txt").write_text("2")
    supervisor = supervise(tmp_path)
    try:
        assert supervisor.wait(timeout=30) == 2, "the supervisor passes the worker's exit code on"
        assert len(started_workers(tmp_path)) == 1
    finally:
        stop_pid(supervisor.pid, timeout_s=5, hard=True)


def test_restarts_back_off_from_one_second_to_thirty_and_start_over_after_a_healthy_run():
    delays = [next_delay_s(0.0, 0.5)]
    for _ in range(8):
        delays.append(next_delay_s(delays[-1], 0.5))
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and delays[-1] == MAX_DELAY_S
    assert next_delay_s(MAX_DELAY_S, HEALTHY_RUN_S) == FIRST_DELAY_S


def test_what_is_restarted():
    assert should_restart(70, stopping=False)  # fenced or internal error: nothing was committed
    assert should_restart(-9, stopping=False)
    assert not should_restart(70, stopping=True)
    assert not should_restart(0, stopping=False) and not should_restart(2, stopping=False)
