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

from services.localstack.kafka_tls import ensure_broker_tls
from services.localstack.processes import PidFile, port_open, spawn, stop_pid, wait_until
from services.shared.config import Settings
from services.shared.kafka_security import (ADMIN, BROKER, SCRAM_MECHANISM, SERVICES, KafkaCredential,
                                            credential_path, default_secrets_dir, generate_credential,
                                            read_credential, write_credential, write_private_file)

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
    """One KRaft broker+controller on loopback, its data and logs under `data_dir`.

    Secured by default: clients authenticate with SASL/SCRAM-SHA-512 on
    loopback (SASL_SSL with `tls=True`), the controller listener uses SASL
    PLAIN with the broker's own principal, and StandardAuthorizer with
    `allow.everyone.if.no.acl.found=false` lets nobody do anything the ACLs
    (deploy/kafka/acls.csv) do not grant. The broker's, admin's and services'
    passwords are generated once into 0600 files under `credentials_dir` and
    created in the metadata log when the storage is formatted.
    `secured=False` runs the old open PLAINTEXT broker (tests not yet moved).
    """

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    secured: bool = True
    tls: bool = False
    secrets_dir: Path | None = None  # default: <data_dir>/../secrets/kafka, i.e. <home>/secrets/kafka

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.data_dir / "kafka.pid")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def credentials_dir(self) -> Path:
        return self.secrets_dir or default_secrets_dir(self.data_dir.parent)

    @property
    def security_protocol(self) -> str:
        if not self.secured:
            return "PLAINTEXT"
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    @property
    def ca_file(self) -> Path | None:
        return self.data_dir / "tls" / "ca.pem" if self.secured and self.tls else None

    def client_settings(self, settings: Settings) -> Settings:
        """`settings` pointed at this broker: its address, protocol, CA and credentials directory."""
        return settings.model_copy(update=dict(
            kafka_bootstrap=self.bootstrap, kafka_security_protocol=self.security_protocol,
            kafka_ca_file=str(self.ca_file or ""), kafka_secrets_dir=str(self.credentials_dir)))

    def _write_config(self) -> Path:
        common = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            "controller.listener.names=CONTROLLER",
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
        ]
        listeners = self._security_lines() if self.secured else [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]
        # The file holds the broker's password (and the keystore's): only its owner may read it.
        return write_private_file(self.data_dir / "server.properties", "\n".join(common + listeners + [""]))

    def _security_lines(self) -> list[str]:
        broker = read_credential(credential_path(self.credentials_dir, BROKER))
        plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{broker.username}" '
                 f'password="{broker.password}" user_{broker.username}="{broker.password}";')
        scram = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{broker.username}" '
                 f'password="{broker.password}";')
        lines = [
            f"listeners=CLIENT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=CLIENT://127.0.0.1:{self.port}",
            f"listener.security.protocol.map=CLIENT:{self.security_protocol},CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name=CLIENT",
            # SCRAM credentials live in the metadata log, which the controller must read first:
            # so the controller listener authenticates with PLAIN against this file instead.
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain}",
            f"listener.name.client.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={scram}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            # A deleted user's open connections must re-authenticate, and fail, within 5 minutes.
            "connections.max.reauth.ms=300000",
            # The admin may alter ACLs and users, which is all power anyway: say so plainly.
            f"super.users=User:{broker.username};User:{ADMIN}",
        ]
        if self.tls:
            tls = ensure_broker_tls(self.data_dir / "tls")
            lines += [
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={tls.keystore}",
                f"ssl.keystore.password={tls.keystore_password}",
                f"ssl.key.password={tls.keystore_password}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={tls.ca_pem}",
                "ssl.endpoint.identification.algorithm=https",
            ]
        return lines

    def _ensure_credentials(self, formatted: bool) -> list[KafkaCredential]:
        """The broker's, admin's and services' credentials: read, or generated (0600) for a new storage."""
        paths = {principal: credential_path(self.credentials_dir, principal) for principal in (BROKER, ADMIN, *SERVICES)}
        missing = [principal for principal, path in paths.items() if not path.exists()]
        if formatted and missing:
            # New passwords would not match the users already in the metadata log.
            raise RuntimeError(f"the broker's storage {self.data_dir / 'logs'} exists but the credentials of "
                               f"{', '.join(missing)} are not in {self.credentials_dir}: restore them, or delete "
                               f"{self.data_dir} to start afresh (its topics are lost)")
        for principal in missing:
            write_credential(self.credentials_dir, generate_credential(principal))
        return [read_credential(path) for path in paths.values()]

    def _format_storage(self, config: Path, credentials: list[KafkaCredential]) -> None:
        """Format a new log directory; SCRAM users go in before the first start."""
        arguments = ["kafka.tools.StorageTool", "format", "--standalone", "-t", uuid.uuid4().hex[:22], "-c", str(config)]
        for credential in credentials if self.secured else []:
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={credential.username},password={credential.password}]"]
        result = run_java_tool(arguments, self.data_dir, heap="256m")
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

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
        formatted = (self.data_dir / "logs" / "meta.properties").exists()
        credentials = self._ensure_credentials(formatted) if self.secured else []
        config = self._write_config()
        if not formatted:
            self._format_storage(config, credentials)
        process = spawn(java_command("kafka.Kafka", str(config)), self.log_path)
        self.pid_file.write(process.pid)
        try:
            wait_until(lambda: process.poll() is None and port_open(self.port), timeout_s, f"Kafka on port {self.port}")
            probe = self.client_settings(Settings())
            wait_until(lambda: process.poll() is None and _metadata_ready(probe), timeout_s, "Kafka metadata")
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


def run_java_tool(arguments: list[str], work_dir: Path, heap: str = "256m") -> subprocess.CompletedProcess:
    """Run one of Kafka's tools with its arguments in a 0600 @argfile, so no secret shows in `ps`."""
    argfile = write_private_file(work_dir / f".java-args-{uuid.uuid4().hex[:8]}", "\n".join(arguments) + "\n")
    try:
        # The java launcher expands @files only up to the main class, so the class goes in the file too.
        command = java_command(f"@{argfile}", heap=heap)
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        argfile.unlink(missing_ok=True)


def _metadata_ready(settings: Settings) -> bool:
    from services.shared.topics import open_admin

    admin = open_admin(settings, timeout_s=3.0)
    try:
        return bool(admin.describe_cluster().get("brokers"))
    finally:
        admin.close()
