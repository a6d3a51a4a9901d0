"""Topic and ACL administration with kafka-python (the synchronous side of the system)."""
from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.shared.acls import apply_bindings, load_matrix, matrix_path, service_bindings
from services.shared.config import Settings
from services.shared.kafka_security import ADMIN, SASL_PROTOCOLS, kafka_python_options
from services.shared.ministries import default_registry


def open_admin(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    """kafka-python's admin client, authenticated as the admin principal."""
    return KafkaAdminClient(client_id="reformspor-admin", request_timeout_ms=int(timeout_s * 1000),
                            **kafka_python_options(settings, ADMIN))


def wanted_topics(settings: Settings) -> list[str]:
    """Every topic the system uses: the fixed ones and each registered ministry's inbound topic."""
    topics = settings.topics
    return topics.all() + [topics.inbound_for(code) for code in default_registry().codes()]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic the system uses and, on a secured broker, the services' ACLs (idempotent).

    Returns the topics created. Topics are created up front with the
    configured partition count: a stream's state changelog must have as many
    partitions as its source.
    """
    admin = open_admin(settings, timeout_s)
    try:
        existing = set(admin.list_topics())
        created = []
        for topic in [_new_topic(settings, name) for name in wanted_topics(settings) if name not in existing]:
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if settings.kafka_security_protocol.upper() in SASL_PROTOCOLS:
            apply_bindings(admin, service_bindings(load_matrix(matrix_path(settings)), settings))
        return created
    finally:
        admin.close()


def _new_topic(settings: Settings, name: str) -> NewTopic:
    topics = settings.topics
    if name in topics.compacted():
        config = {"cleanup.policy": "compact"}
    elif name in topics.short_lived():
        config = {"retention.ms": str(24 * 3600 * 1000)}
    else:
        config = {"retention.ms": "-1"}  # the log of record keeps everything
    return NewTopic(name, num_partitions=settings.partitions, replication_factor=1, topic_configs=config)
