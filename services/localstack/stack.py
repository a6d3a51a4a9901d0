"""The local stack: one Kafka broker plus the services, as background processes.

`reformspor up/down/demo` and the integration-test fixtures use this one class,
so the tests start the system exactly the way a user does. Every process is
recorded by pid under <home>/run and stopped by that pid.
"""
from __future__ import annotations

import sys
from pathlib import Path

from services.shared.config import Settings
from services.shared.kafka_security import secrets_dir
from services.localstack.kafka_local import LocalKafka
from services.localstack.processes import (PidFile, StartupError, http_ok, port_open, spawn, stop_pid,
                                           wait_until)
from services.shared.topics import ensure_topics
from services.shared.usererror import UserError

SERVICES = ("ingest", "budsjett", "milepael")


def require_kafka(settings: Settings) -> None:
    """Fail in one line, at once, when nothing listens at the bootstrap address (kafka-python would wait 30 s)."""
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    if not port.isdigit() or not port_open(int(port), host or "127.0.0.1"):
        raise UserError(f"Kafka is not reachable at {settings.kafka_bootstrap}; start it with `reformspor up` "
                        "(or set REFORMSPOR_KAFKA_BOOTSTRAP / --kafka)")


PORT_RELEASE_S = 10.0


class LocalStack:
    def __init__(self, settings: Settings):
        host, _, port = settings.kafka_bootstrap.rpartition(":")
        # The settings' security protocol decides the broker's: SASL_PLAINTEXT (default), SASL_SSL, PLAINTEXT.
        protocol = settings.kafka_security_protocol.upper()
        self.kafka = LocalKafka(settings.home / "kafka", port=int(port), controller_port=int(port) + 1,
                                secured=protocol != "PLAINTEXT", tls=protocol == "SASL_SSL",
                                secrets_dir=secrets_dir(settings))
        self.settings = self.kafka.client_settings(settings)  # with SASL_SSL: the CA clients must trust

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    def log_path(self, name: str) -> Path:
        return self.settings.home / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> PidFile:
        return PidFile(self.run_dir / f"{name}.pid")

    # --- Kafka ---------------------------------------------------------------

    def start_kafka(self) -> None:
        if self.kafka.pid_file.running_pid() is None and port_open(self.kafka.port):
            raise UserError(f"port {self.kafka.port} is in use by a process this stack (home {self.settings.home}) "
                            "did not start; stop it, or give this stack another port with "
                            "REFORMSPOR_KAFKA_BOOTSTRAP=127.0.0.1:<port> (or --kafka)")
        self.kafka.start()
        ensure_topics(self.settings)

    # --- services ------------------------------------------------------------

    def start_service(self, service: str, instance: str | None = None, port: int | None = None,
                      timeout_s: float = 90.0, extra_env: dict[str, str] | None = None,
                      supervise: bool = False) -> int:
        """Start one worker of a service and wait until its /readyz answers 200.

        `instance` and `port` let a second worker of the same service run beside
        the first (same consumer group, another web port). `supervise`: under a
        supervisor that starts it again whenever it fails (services.localstack.supervise);
        the pid file then holds the supervisor's pid, and stopping it stops both.
        """
        name = instance or service
        running = self.pid_file(name).running_pid()
        if running:
            return running
        settings = self.settings.model_copy(update={f"{service}_port": port}) if port else self.settings
        if port_open(settings.port(service)):
            # A worker just stopped (or killed) may still hold its port for a moment.
            try:
                wait_until(lambda: not port_open(settings.port(service)), PORT_RELEASE_S, "the port to be free")
            except TimeoutError:
                pass
        if port_open(settings.port(service)):
            raise UserError(f"port {settings.port(service)} for {name} is in use by a process this stack did not "
                            f"start; stop it, or set REFORMSPOR_{service.upper()}_PORT")
        # A worker's identity in its group (static membership, transactional id, state dir).
        env = {**settings.to_env(), **({"REFORMSPOR_INSTANCE": instance} if instance else {}), **(extra_env or {})}
        command = [sys.executable, "-m", "services.cli", service]
        if supervise:
            command = [sys.executable, "-m", "services.localstack.supervise", name, "--", *command]
        process = spawn(command, self.log_path(name), env=env)
        self.pid_file(name).write(process.pid)
        ready_url = f"http://127.0.0.1:{settings.port(service)}/readyz"
        try:
            wait_until(lambda: process.poll() is None and http_ok(ready_url), timeout_s, f"{name} at {ready_url}")
        except TimeoutError as error:
            stop_pid(process.pid, 5)
            self.pid_file(name).path.unlink(missing_ok=True)
            raise StartupError(f"{error}\n--- last lines of {self.log_path(name)} ---\n{self.tail_log(name)}") from None
        return process.pid

    def stop_service(self, name: str, hard: bool = False) -> bool:
        pid_file = self.pid_file(name)
        pid = pid_file.running_pid()
        if pid is None:
            pid_file.path.unlink(missing_ok=True)
            return False
        stop_pid(pid, 0 if hard else 20, hard=hard)
        pid_file.path.unlink(missing_ok=True)
        return True

    def tail_log(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def up(self, services: tuple[str, ...] = SERVICES, progress=print) -> None:
        if (kafka_pid := self.kafka.pid_file.running_pid()):
            progress(f"Kafka is already running on {self.settings.kafka_bootstrap} (pid {kafka_pid})")
            ensure_topics(self.settings)
        else:
            progress(f"Starting Kafka on {self.settings.kafka_bootstrap} …")
            self.start_kafka()
        for service in services:
            if (pid := self.pid_file(service).running_pid()):
                progress(f"{service} is already running on {self.settings.service_url(service)} (pid {pid})")
                continue
            progress(f"Starting {service} on {self.settings.service_url(service)} …")
            # Supervised, as systemd does in production: a worker that stops on purpose (an internal
            # error, or fenced after a broker outage) is started again.
            self.start_service(service, supervise=True)

    def running(self) -> dict[str, int]:
        names = [p.stem for p in self.run_dir.glob("*.pid")] if self.run_dir.exists() else []
        found = {name: pid for name in names if (pid := self.pid_file(name).running_pid())}
        if (kafka_pid := self.kafka.pid_file.running_pid()):
            found["kafka"] = kafka_pid
        return found

    def down(self, progress=print) -> list[str]:
        """Stop every service this stack started, then Kafka; by pid, never by name. Returns what it stopped."""
        stopped = []
        if self.run_dir.exists():
            for pid_path in sorted(self.run_dir.glob("*.pid")):
                if self.stop_service(pid_path.stem):
                    progress(f"Stopped {pid_path.stem}")
                    stopped.append(pid_path.stem)
        if self.kafka.stop():
            progress("Stopped Kafka")
            stopped.append("kafka")
        if not stopped:
            progress(f"Nothing to stop: no process of this stack (home {self.settings.home}) is running.")
        return stopped
