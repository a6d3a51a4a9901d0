"""Topic administration with kafka-python (the synchronous side of the system)."""
from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.shared.config import Settings


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic the system uses (idempotent); returns the ones created.

    Topics are created up front with the configured partition count: Faust
    tables require their changelog to have as many partitions as the source.
    """
    topics = settings.topics
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="reformspor-admin",
                             request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        wanted = []
        for name in topics.all():
            if name in existing:
                continue
            if name in topics.compacted():
                config = {"cleanup.policy": "compact"}
            elif name in topics.short_lived():
                config = {"retention.ms": str(24 * 3600 * 1000)}
            else:
                config = {"retention.ms": "-1"}  # the log of record keeps everything
            wanted.append(NewTopic(name, num_partitions=settings.partitions, replication_factor=1, topic_configs=config))
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
