"""Pid files: `down` stops what `up` started, and never a stranger that got the same pid after a reboot."""
from __future__ import annotations

import os
import subprocess
import sys

from services.localstack.processes import PidFile, create_time, pid_alive


def test_a_pid_file_finds_the_process_it_recorded(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = PidFile(tmp_path / "child.pid")
        pid_file.write(child.pid)
        assert pid_file.running_pid() == child.pid
        assert pid_file.stop(timeout_s=10) is True
        assert child.wait(timeout=10) is not None and not pid_alive(child.pid)
        assert not pid_file.path.exists()
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_reused_pid_is_not_ours_and_is_never_signalled(tmp_path):
    pid_file = PidFile(tmp_path / "stale.pid")
    # What a pid file from before a reboot looks like: a live pid (this test) that started at another time.
    pid_file.path.write_text(f"{os.getpid()} {create_time(os.getpid()) - 3600.0!r}\n")
    assert pid_file.read() is None and pid_file.running_pid() is None
    assert pid_file.stop(timeout_s=1) is False  # had it signalled, this test process would be gone
    assert not pid_file.path.exists()


def test_a_pid_file_of_a_process_that_is_gone(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    pid_file = PidFile(tmp_path / "gone.pid")
    pid_file.path.write_text(f"{child.pid} 1.0\n")
    assert pid_file.running_pid() is None and pid_file.stop() is False
