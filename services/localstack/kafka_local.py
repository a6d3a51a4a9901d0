"""A real single-node Apache Kafka (KRaft) for the local stack and the tests.

The broker comes from Maven Central's `org.apache.kafka:kafka_2.13` artifacts,
fetched once with Maven into a cache (`~/.cache/reformspor/kafka-<version>`),
and runs from that class path with a generated config. No Docker, no tarball.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.localstack.processes import PidFile, port_open, spawn, stop_pid, wait_until

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"

# The published POM does not bring a logging backend: log4j2 and an slf4j 2
# binding are added here (checked with `mvn dependency:tree`).
_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>no.reformspor</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{SLF4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
"""


def cache_dir() -> Path:
    base = os.environ.get("REFORMSPOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "reformspor"
    )
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def libs_dir() -> Path:
    return cache_dir() / "libs"


def is_fetched() -> bool:
    marker = cache_dir() / "FETCHED"
    return marker.exists() and any(libs_dir().glob(f"kafka_2.13-{KAFKA_VERSION}.jar"))


def fetch(quiet: bool = False) -> Path:
    """Download the broker's jars with Maven into the cache (a no-op when cached)."""
    if is_fetched():
        return libs_dir()
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("Kafka needs Java 17+ and Maven (mvn) on PATH to fetch and run the broker")
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(_POM)
    if not quiet:
        print(f"Fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {target} (once)…", file=sys.stderr, flush=True)
    staging = target / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    command = ["mvn", "-B", "-q", "-f", str(target / "pom.xml"), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Maven could not fetch Kafka {KAFKA_VERSION}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    shutil.rmtree(libs_dir(), ignore_errors=True)
    staging.rename(libs_dir())
    (target / "log4j2.properties").write_text(_LOG4J2)
    (target / "FETCHED").write_text(KAFKA_VERSION + "\n")
    return libs_dir()


def java_command(main_class: str, *args: str, heap: str = "512m") -> list[str]:
    """A java command line on the cached Kafka class path (also for Kafka's own tools)."""
    return [
        "java",
        f"-Xmx{heap}",
        f"-Dlog4j2.configurationFile={cache_dir() / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir()}/*",
        main_class,
        *args,
    ]


@dataclass
class LocalKafka:
    """One KRaft broker+controller on loopback, its data and logs under `data_dir`."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.data_dir / "kafka.pid")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kafka.log"

    def _write_config(self) -> Path:
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir / 'logs'}",
                    # One node: internal topics cannot have more replicas than brokers.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # Topics are created by `reformspor kafka topics`, with the right partitions.
                    "auto.create.topics.enable=false",
                    "num.partitions=4",
                    "log.retention.hours=-1",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout_s: float = 60.0) -> int:
        """Format storage if new, start the broker, wait until it accepts connections."""
        running = self.pid_file.running_pid()
        if running:
            return running
        if port_open(self.port):
            # A broker we just stopped may still hold the port for a moment.
            try:
                wait_until(lambda: not port_open(self.port), 10, f"port {self.port} to be free")
            except TimeoutError:
                pass
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use by another process; pick another with --port")
        fetch()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            result = subprocess.run(
                java_command("kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(config), heap="256m"),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
        process = spawn(java_command("kafka.Kafka", str(config)), self.log_path)
        self.pid_file.write(process.pid)
        try:
            wait_until(lambda: process.poll() is None and port_open(self.port), timeout_s, f"Kafka on port {self.port}")
            wait_until(lambda: process.poll() is None and _metadata_ready(self.bootstrap), timeout_s, "Kafka metadata")
        except TimeoutError as error:
            stop_pid(process.pid, 5)
            self.pid_file.path.unlink(missing_ok=True)
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{error}; broker log {self.log_path}:\n{tail}") from None
        return process.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        return self.pid_file.stop(timeout_s)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        pid = self.pid_file.read()
        if pid:
            stop_pid(pid, 0, hard=True)
        self.pid_file.path.unlink(missing_ok=True)


def _metadata_ready(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="reformspor-probe")
    try:
        return bool(admin.describe_cluster().get("brokers"))
    finally:
        admin.close()
