"""Topic and ACL administration with kafka-python (the synchronous side of the system)."""
from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka import errors as kafka_errors

from services.shared.acls import load_matrix, matrix_path, service_bindings, sync_bindings
from services.shared.config import Settings
from services.shared.kafka_security import ADMIN, SASL_PROTOCOLS, kafka_python_options
from services.shared.ministries import default_registry


def open_admin(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    """kafka-python's admin client, authenticated as the admin principal."""
    if _loopback_only(settings.kafka_bootstrap):
        # SCRAM over SASL_PLAINTEXT on loopback is the design, not a finding: keep the CLI's stderr clean.
        logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)
    return KafkaAdminClient(client_id="reformspor-admin", request_timeout_ms=int(timeout_s * 1000),
                            **kafka_python_options(settings, ADMIN))


def _loopback_only(bootstrap: str) -> bool:
    hosts = {server.rpartition(":")[0].strip("[]") for server in bootstrap.split(",")}
    return hosts <= {"127.0.0.1", "localhost", "::1"}


def wanted_topics(settings: Settings) -> list[str]:
    """Every topic the system uses: the fixed ones and each registered ministry's inbound topic."""
    topics = settings.topics
    return topics.all() + [topics.inbound_for(code) for code in default_registry().codes()]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic the system uses and, on a secured broker, sync the services' ACLs (idempotent).

    Returns the topics created. Topics are created up front with the
    configured partition count: a stream's state changelog must have as many
    partitions as its source.
    """
    admin = open_admin(settings, timeout_s)
    try:
        created = create_missing_topics(admin, settings, wanted_topics(settings), timeout_s)
        if settings.kafka_security_protocol.upper() in SASL_PROTOCOLS:
            wanted = service_bindings(load_matrix(matrix_path(settings)), settings)
            sync_bindings(admin, wanted, settings.topic_prefix)
        return created
    finally:
        admin.close()


def create_missing_topics(admin: KafkaAdminClient, settings: Settings, names: list[str],
                          timeout_s: float = 30.0) -> list[str]:
    """Create those of `names` that do not exist yet, in one request; returns the ones created."""
    existing = set(admin.list_topics())
    missing = {name: _topic_options(settings, name) for name in names if name not in existing}
    if not missing:
        return []
    result = admin.create_topics(missing, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    created = []
    for topic in result["topics"]:
        error = kafka_errors.for_code(topic["error_code"])
        if error is kafka_errors.NoError:
            created.append(topic["name"])
        elif error is not kafka_errors.TopicAlreadyExistsError:  # another admin got there first: fine
            raise error(f"creating topic {topic['name']}: {topic.get('error_message') or error.__name__}")
    return created


def _topic_options(settings: Settings, name: str) -> dict:
    topics = settings.topics
    if name in topics.compacted():
        config = {"cleanup.policy": "compact"}
    elif name in topics.short_lived():
        config = {"retention.ms": str(24 * 3600 * 1000)}
    else:
        config = {"retention.ms": "-1"}  # the log of record keeps everything
    # The catalogue is a handful of records (one per fiscal year) that every reader takes whole: one partition.
    partitions = 1 if name == topics.catalogue else settings.partitions
    return {"num_partitions": partitions, "replication_factor": 1, "configs": config}
