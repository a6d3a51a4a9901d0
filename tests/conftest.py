"""Shared fixtures: a real Kafka broker, the services as real processes, PostgreSQL.

Everything is started on free loopback ports and stopped by pid in a
finalizer, so a failing test leaves nothing running.
"""
from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from services.shared.config import Settings
from services.localstack.kafka_local import LocalKafka
from services.localstack.processes import free_port
from services.localstack.stack import LocalStack
from services.shared.topics import ensure_topics

_instance_counter = itertools.count()


@contextlib.contextmanager
def _running_broker(prefix: str, **security):
    """A broker in a fresh temporary directory; stopped by pid and its directory removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalKafka(data_dir / "kafka", port=free_port(), controller_port=free_port(),
                        secrets_dir=data_dir / "secrets", **security)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker():
    """One real single-node KRaft broker for the whole test session, secured as in production:
    SASL/SCRAM for every client, StandardAuthorizer, no ACL means no access."""
    with _running_broker("reformspor-kafka-") as broker:
        yield broker


def _test_settings(broker: LocalKafka, home: Path) -> Settings:
    """Settings for one test: its own topic prefix (isolation on the shared broker), ports and home."""
    return broker.client_settings(Settings(
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        home=home,
        ingest_port=free_port(),
        budsjett_port=free_port(),
        milepael_port=free_port(),
    ))


@pytest.fixture
def settings(kafka_broker, tmp_path) -> Settings:
    return _test_settings(kafka_broker, tmp_path / "home")


@pytest.fixture(scope="session")
def secure_kafka_broker(kafka_broker):
    """The session's broker: it is secured (one broker for the whole suite)."""
    return kafka_broker


@pytest.fixture
def secure_settings(secure_kafka_broker, tmp_path) -> Settings:
    """Settings on the secured broker, as the admin sees them; topics and the services' ACLs created."""
    settings = _test_settings(secure_kafka_broker, tmp_path / "home")
    ensure_topics(settings)
    return settings


@pytest.fixture
def stack(settings):
    """A LocalStack on the session broker; topics created; services started on demand and always stopped."""
    ensure_topics(settings)
    local = LocalStack(settings)
    try:
        yield local
    finally:
        for pid_file in sorted(local.run_dir.glob("*.pid")) if local.run_dir.exists() else []:
            local.stop_service(pid_file.stem, hard=False)


@pytest.fixture(scope="session")
def postgres_server():
    from tests.support.postgres import LocalPostgres

    server = LocalPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.create_database(f"t{next(_instance_counter)}_{uuid.uuid4().hex[:6]}")
