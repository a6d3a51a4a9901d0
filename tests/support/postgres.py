"""A throwaway PostgreSQL server (Debian's package) for integration tests.

initdb refuses to run as root, so when the tests run as root (CI does) the
server runs as the `postgres` system user that Debian's package creates.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from services.localstack.processes import free_port, pid_alive, stop_pid, wait_until


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's postgresql package (make setup does)")
    return str(candidates[0])


class LocalPostgres:
    def __init__(self):
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="reformspor-pg-"))
        self.data_dir = self.root / "data"
        self.pid: int | None = None
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, text=True)

    def start(self) -> "LocalPostgres":
        if self._as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )
        self.pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        wait_until(lambda: self._query("select 1"), 30, "PostgreSQL to accept connections")
        return self

    def _query(self, sql: str) -> bool:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql)
        return True

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.pid and pid_alive(self.pid):
            stop_pid(self.pid, 20)
        shutil.rmtree(self.root, ignore_errors=True)
