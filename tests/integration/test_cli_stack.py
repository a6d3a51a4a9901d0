"""`reformspor up` in one folder, `down` in another: one stack home per user, found the same way from anywhere;
and a service that stops is started again."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from services.localstack import kafka_local
from services.localstack.processes import free_port, http_ok, wait_until
from services.localstack.stack import LocalStack
from services.shared.config import Settings

pytestmark = pytest.mark.integration


def test_up_in_one_folder_and_down_in_another(tmp_path):
    kafka_port, ingest_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFORMSPOR_", "XDG_DATA_HOME"))}
    env.update(HOME=str(tmp_path / "user"), REFORMSPOR_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
               REFORMSPOR_INGEST_PORT=str(ingest_port), REFORMSPOR_TOPIC_PREFIX="clistack.",
               REFORMSPOR_CACHE=str(kafka_local.cache_dir().parent))  # the Kafka jars already fetched, not a new HOME's
    home = tmp_path / "user/.local/share/reformspor"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    def reformspor(*args: str, cwd: Path):
        return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=240)

    try:
        up = reformspor("up", "--services", "ingest", cwd=first)
        assert up.returncode == 0, up.stdout + up.stderr
        assert http_ok(f"http://127.0.0.1:{ingest_port}/readyz")
        # A worker that stops (here: killed) is started again by the supervisor `up` runs it under.
        supervisor = LocalStack(Settings(home=home)).pid_file("ingest").running_pid()
        (worker,) = psutil.Process(supervisor).children()
        worker.kill()
        worker.wait(timeout=10)
        wait_until(lambda: [p.pid for p in psutil.Process(supervisor).children()] not in ([], [worker.pid])
                   and http_ok(f"http://127.0.0.1:{ingest_port}/readyz"), 90, "ingest to be started again")
        again = reformspor("up", "--services", "ingest", cwd=second)
        assert again.returncode == 0, again.stderr
        assert f"Kafka is already running on 127.0.0.1:{kafka_port}" in again.stdout
        assert "ingest is already running" in again.stdout

        down = reformspor("down", cwd=second)
        assert down.returncode == 0, down.stderr
        assert "Stopped ingest" in down.stdout and "Stopped Kafka" in down.stdout
        assert not http_ok(f"http://127.0.0.1:{ingest_port}/readyz")
    finally:
        # Whatever happened above, nothing this test started keeps running (stopped by pid).
        LocalStack(Settings(home=home, kafka_bootstrap=f"127.0.0.1:{kafka_port}")).down(progress=lambda line: None)
